"""A real Prometheus for the tests: Debian's ``prometheus`` package (``prometheus`` and
``promtool``), which ``.ci/run`` installs where it can.

:func:`tool` finds a binary or skips the test saying how to get it; :class:`Prometheus` runs
one server on 127.0.0.1 with the test's own config and a temporary storage folder (never
the package's service or its ``/var/lib/prometheus``) and reads its HTTP API.
:func:`scaled_rules` writes a copy of the shipped alert rules whose ``for:`` durations, and
nothing else, are divided by 60 (5m -> 5s), so that a test can watch an alert fire.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

RULES = Path(__file__).parents[2] / "contrib" / "prometheus" / "lmsupervisor.rules.yml"
RULE_TESTS = Path(__file__).parents[2] / "contrib" / "prometheus" / "tests" / "lmsupervisor.rules.test.yml"
T = TypeVar("T")


def tool(name: str) -> str:
    """The path of ``name`` (``prometheus`` or ``promtool``); skips the test when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(
            f"{name} is not installed: it comes with Debian's `prometheus` package "
            "(`apt-get install prometheus`; .ci/run installs it where apt-get runs as root or with sudo -n)"
        )
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a program that cannot report
    the port it picked for port 0, as Prometheus cannot)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seconds(duration: str) -> int:
    """A Prometheus duration of one unit (``"5m"``, ``"0m"``, ``"30s"``, ``"1h"``) in seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    if len(duration) < 2 or duration[-1] not in units or not duration[:-1].isdigit():
        raise ValueError(f"expected a duration like 5m, got {duration!r}")
    return int(duration[:-1]) * units[duration[-1]]


def scaled_rules(source: Path, target: Path) -> dict[str, tuple[str, str]]:
    """Write ``source``'s rules to ``target`` with every ``for:`` divided by 60 (a minute
    becomes a second; expressions, labels and annotations untouched). Returns
    ``{alert: (shipped for, written for)}``."""
    doc = yaml.safe_load(source.read_text(encoding="utf-8"))
    changed: dict[str, tuple[str, str]] = {}
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                scaled = f"{seconds(rule['for']) // 60}s"
                changed[rule["alert"]] = (rule["for"], scaled)
                rule["for"] = scaled
    target.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return changed


def until(check: Callable[[], T | None], deadline: float, what: str, interval: float = 0.25) -> T:
    """Call ``check`` every ``interval`` seconds until it returns something other than None,
    at most until the monotonic ``deadline``; fails the test naming ``what`` otherwise."""
    while True:
        found = check()
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(interval)


class Prometheus:
    """``prometheus`` on 127.0.0.1 with ``config`` (YAML text), its data in ``folder``.
    :meth:`start`, then :meth:`stop` (also at teardown)."""

    def __init__(self, folder: Path, config: str) -> None:
        self.folder = folder
        self.config = folder / "prometheus.yml"
        self.config.write_text(config, encoding="utf-8")
        self.log = folder / "prometheus.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        """Start it and wait until ``/-/ready`` answers 200; fails the test with its log otherwise."""
        argv = [
            tool("prometheus"),
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.console.templates=",
            "--web.console.libraries=",
            "--log.level=warn",
        ]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)

        def ready() -> bool | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"prometheus exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    return True if response.status == 200 else None
            except (OSError, urllib.error.URLError):
                return None

        until(ready, time.monotonic() + timeout, "prometheus to be ready")

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of ``GET /api/v1/<path>?params`` (raises on a transport error or a
        non-success answer)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=5) as response:
            body = json.loads(response.read())
        if body.get("status") != "success":
            raise AssertionError(body)
        return body["data"]

    def alerts(self) -> list[dict[str, Any]]:
        """The active alerts (pending and firing) of ``/api/v1/alerts``: ``labels``,
        ``annotations``, ``state``, ``activeAt``, ``value``."""
        found: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return found

    def query(self, expr: str) -> dict[str, float]:
        """An instant query's vector as ``{host label: value}``."""
        return {r["metric"].get("host", ""): float(r["value"][1]) for r in self.api("query", query=expr)["result"]}

    def stop(self) -> None:
        """Terminate it (kill after 10 s)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
