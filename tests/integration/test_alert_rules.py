"""The shipped alert rules under Prometheus's own tool: ``promtool check rules`` and the unit
tests in ``contrib/prometheus/tests`` (``promtool test rules``), which must fail when an
alert is broken."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.prometheus import RULE_TESTS, RULES, tool

pytestmark = pytest.mark.integration


def alerts() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


ALERTS = [rule["alert"] for rule in alerts()]


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool"), *map(str, args)], capture_output=True, text=True, timeout=60, check=False)


def test_promtool_checks_the_shipped_rules() -> None:
    """`promtool check rules` accepts the file and counts every rule in it."""
    result = promtool("check", "rules", RULES)
    assert (result.returncode, f"SUCCESS: {len(ALERTS)} rules found" in result.stdout) == (0, True), result


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    """`promtool test rules` runs every case of contrib/prometheus/tests and all pass."""
    result = promtool("test", "rules", RULE_TESTS)
    assert (result.returncode, "SUCCESS" in result.stdout) == (0, True), result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    """Each shipped alert is tested at a time it fires and at a time it does not."""
    doc = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    cases = [case for test in doc["tests"] for case in test["alert_rule_test"]]
    firing = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert (sorted(firing), sorted(quiet)) == (sorted(ALERTS), sorted(ALERTS))


def mutated(tmp_path: Path, alert: str, **changes: str) -> Path:
    """A copy of the rule tests whose rule file has ``changes`` applied to ``alert``."""
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    for group in doc["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                rule.update(changes)
    (tmp_path / RULES.name).write_text(yaml.safe_dump(doc), encoding="utf-8")
    (tmp_path / "tests").mkdir()
    return Path(shutil.copy(RULE_TESTS, tmp_path / "tests" / RULE_TESTS.name))


@pytest.mark.parametrize("alert", ALERTS)
def test_the_unit_tests_catch_an_alert_that_never_fires(tmp_path: Path, alert: str) -> None:
    """The checks are not vacuous: with ``alert``'s expression made never true, its firing
    case fails."""
    result = promtool("test", "rules", mutated(tmp_path, alert, expr="vector(1) == 0"))
    assert (result.returncode, f"alertname: {alert}," in result.stderr) == (1, True), result.stderr


@pytest.mark.parametrize("alert", [rule["alert"] for rule in alerts() if rule.get("for", "0m") not in ("0m", "0s")])
def test_the_unit_tests_catch_an_alert_that_fires_without_waiting(tmp_path: Path, alert: str) -> None:
    """With ``alert``'s ``for:`` dropped, its case before that duration has passed fails."""
    result = promtool("test", "rules", mutated(tmp_path, alert, **{"for": "0m"}))
    assert (result.returncode, f"alertname: {alert}," in result.stderr) == (1, True), result.stderr
