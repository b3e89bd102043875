"""A fleet watched by a real Prometheus: three `lmsupervisor run` processes, each with its own
simulated LM Studio (own home and ports) and its own ``[metrics] listen`` port on loopback,
scraped every second by a Prometheus that loads the shipped alert rules."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest

from lmsupervisor.simulator.home import SimInstall
from tests.integration.prometheus import RULES, Prometheus, scaled_rules, tool, until
from tests.integration.test_proxy import listening
from tests.integration.test_run import BASE_CONFIG, Running
from tests.unit.test_grafana_dashboard import load, queries
from tests.unit.test_metrics import selectors

pytestmark = pytest.mark.integration

HOSTS = ("gpu-a", "gpu-b", "gpu-c")
BROKEN = "gpu-b"
FLEET_CONFIG = (
    BASE_CONFIG
    + """
[[models]]
key = "qwen/qwen3-4b"
[metrics]
listen = "127.0.0.1:0"
[proxy]
listen = "127.0.0.1:0"
"""
)
# Exported only with data: an answer latency needs deep readiness, a problem needs a problem.
ONLY_WITH_DATA = {"lmsupervisor_model_answer_latency_seconds", "lmsupervisor_problem"}
# Generous for three supervisors, three simulated daemons and a Prometheus on a busy 2-core machine.
DEADLINE = 180.0


def prometheus_config(targets: dict[str, str], rules: Path) -> str:
    """Scrape and evaluate every second; each target labelled ``host``."""
    statics = "".join(
        f"      - targets: ['{address}']\n        labels: {{host: {host}}}\n" for host, address in targets.items()
    )
    return (
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        f"rule_files: ['{rules}']\n"
        f"scrape_configs:\n  - job_name: lmsupervisor\n    static_configs:\n{statics}"
    )


@contextlib.contextmanager
def removed(sim: SimInstall) -> Iterator[None]:
    """LM Studio's install disappears under a running supervisor (its home moved away, its
    daemon killed), so every restart finds nothing to start; put back on leaving."""
    pid = sim.daemon_pid()
    assert pid is not None
    aside = sim.home.with_name(sim.home.name + ".removed")
    sim.home.rename(aside)
    try:
        os.kill(pid, signal.SIGKILL)
        yield
    finally:
        aside.rename(sim.home)


def not_ready_alerts(prometheus: Prometheus) -> list[dict[str, Any]]:
    return [a for a in prometheus.alerts() if a["labels"]["alertname"] == "LMStudioNotReady"]


def dashboard_queries_run(prometheus: Prometheus) -> None:
    """Every query of the Grafana dashboard is accepted by this Prometheus (``$instance``:
    every host), and names metrics it has scraped from the fleet."""
    dashboard = [q.replace("$instance", ".*") for q in queries(load())]
    for query in dashboard:
        prometheus.api("query", query=query)  # raises unless Prometheus evaluates it
    scraped = set(prometheus.api("label/__name__/values"))
    named = {name for q in dashboard for name in selectors(promql_parser.parse(q))}
    assert named - scraped <= ONLY_WITH_DATA, named - scraped


def all_ready(prometheus: Prometheus) -> dict[str, float] | None:
    """``lmsupervisor_ready`` of every host once Prometheus has scraped 1 from each, else None."""
    ready = prometheus.query("lmsupervisor_ready")
    return ready if ready == dict.fromkeys(HOSTS, 1.0) else None


@pytest.mark.timeout(3 * DEADLINE)
def test_a_host_that_fails_for_good_fires_not_ready_then_resolves(
    make_sim: Callable[..., SimInstall], short_dir: Path, tmp_path: Path
) -> None:
    """One host of three loses its LM Studio install for good: Prometheus, scraping each
    supervisor's metrics port, fires LMStudioNotReady for that host alone (read from
    /api/v1/alerts), and resolves it once the install is back and the host is ready again.
    Every query of the Grafana dashboard runs on that Prometheus too.

    The rules are the shipped ones with each ``for:`` divided by 60 (5m -> 5s); the
    expressions are the shipped ones. Prints the time to firing and to resolved."""
    tool("prometheus")
    changed = scaled_rules(RULES, tmp_path / "rules.yml")
    assert changed["LMStudioNotReady"] == ("5m", "5s")
    sims = {host: make_sim(host) for host in HOSTS}
    with contextlib.ExitStack() as stack:
        runs: dict[str, Running] = {}
        for i, (host, sim) in enumerate(sims.items()):
            config = tmp_path / f"{host}.toml"
            config.write_text(FLEET_CONFIG)
            runs[host] = Running(sim, short_dir / f"s{i}.sock", config)
            stack.callback(runs[host].stop)
        for run in runs.values():
            run.wait_state("ready", timeout=DEADLINE)
        targets = {host: listening(run, "metrics_listening") for host, run in runs.items()}
        prometheus = Prometheus(tmp_path, prometheus_config(targets, tmp_path / "rules.yml"))
        stack.callback(prometheus.stop)
        prometheus.start()
        until(lambda: all_ready(prometheus), time.monotonic() + DEADLINE, "Prometheus to scrape every host ready")
        assert (prometheus.query("up"), not_ready_alerts(prometheus)) == (dict.fromkeys(HOSTS, 1.0), [])
        dashboard_queries_run(prometheus)

        broken = runs[BROKEN]
        with removed(sims[BROKEN]):
            failed_at = time.monotonic()
            firing = until(
                lambda: [a for a in not_ready_alerts(prometheus) if a["state"] == "firing"] or None,
                failed_at + DEADLINE,
                f"LMStudioNotReady to fire for {BROKEN}",
            )
            to_firing = time.monotonic() - failed_at
            assert [(a["labels"]["host"], a["labels"]["instance"]) for a in firing] == [(BROKEN, targets[BROKEN])]
            assert {a["labels"]["host"] for a in not_ready_alerts(prometheus)} == {BROKEN}  # not even pending
            assert (broken.status() or {}).get("ready") is False  # the supervisor is alive and says so
            assert prometheus.query("up") == dict.fromkeys(HOSTS, 1.0)  # a failing host, not a lost target
        fixed_at = time.monotonic()
        until(
            lambda: True if not not_ready_alerts(prometheus) else None,
            fixed_at + DEADLINE,
            f"LMStudioNotReady to resolve for {BROKEN}",
        )
        to_resolved = time.monotonic() - fixed_at
        # resolved because the host is ready again, not because its series went away
        assert prometheus.query("lmsupervisor_ready") == dict.fromkeys(HOSTS, 1.0)
        assert broken.wait_state("ready")["ready"] is True
        print(f"\nfleet: LMStudioNotReady (for: 5s) firing {to_firing:.1f} s after {BROKEN}'s install was removed;")
        print(f"fleet: resolved {to_resolved:.1f} s after it was put back (scrape and evaluation every 1 s)")
