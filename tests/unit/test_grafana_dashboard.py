"""The Grafana dashboard in contrib/grafana: every query in it is valid PromQL over metrics
lmsupervisor exports (the supervisor's and the holding proxy's, one registry in `run`)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lmsupervisor.proxy.server import ProxyMetrics
from tests.unit.test_metrics import exported_names, selectors

DASHBOARD = Path(__file__).parents[2] / "contrib" / "grafana" / "lmsupervisor.json"
# Grafana's interval variables, as Grafana would fill them in for a 6-hour range
INTERVALS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "6h"}
LABEL_VALUES = re.compile(r"^label_values\((?P<expr>.+),\s*\w+\)$")


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return dashboard


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panels(panel) if "panels" in panel else [])
    return out


def queries(dashboard: dict[str, Any], interval: dict[str, str] = INTERVALS) -> list[str]:
    """Every PromQL query of ``dashboard`` (panel targets, and the expression inside a
    ``label_values(expr, label)`` variable), Grafana's interval variables filled in
    (``interval``); ``$instance`` stays, inside its label matcher's string."""
    found = [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = LABEL_VALUES.match(variable["query"]["query"])
            assert match, variable
            found.append(match["expr"])
    for name, value in interval.items():
        found = [q.replace(name, value) for q in found]
    return found


def exported() -> set[str]:
    """Every sample name `run`'s registry can export: the supervisor's and the proxy's."""
    registry = CollectorRegistry()
    ProxyMetrics(registry).hold.observe(1.0)
    text = generate_latest(registry).decode()
    proxy = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    return exported_names() | proxy


def test_every_query_is_promql_over_exported_metrics() -> None:
    """Each query parses and selects only metrics lmsupervisor exports."""
    names = exported()
    for query in queries(load()):
        selected = set(selectors(promql_parser.parse(query)))
        assert selected, query
        assert selected <= names, (query, selected - names)


def test_the_dashboard_shows_what_a_fleet_needs() -> None:
    """State, restarts, probe latency, models loaded, proxy outcomes and hold time each have a panel."""
    selected = {name for q in queries(load()) for name in selectors(promql_parser.parse(q))}
    assert {
        "lmsupervisor_ready",
        "lmsupervisor_state",
        "lmsupervisor_restarts_total",
        "lmsupervisor_probe_latency_seconds_bucket",
        "lmsupervisor_model_loaded",
        "lmsupervisor_proxy_requests_total",
        "lmsupervisor_proxy_hold_seconds_bucket",
    } <= selected


def test_panels_have_unique_ids_and_queries_on_the_chosen_prometheus() -> None:
    """Every panel has its own id; every non-row panel queries the ``$datasource`` variable's
    Prometheus and filters on the ``$instance`` variable."""
    every = panels(load())
    assert len({p["id"] for p in every}) == len(every)
    for panel in (p for p in every if p["type"] != "row"):
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert 'instance=~"$instance"' in target["expr"], (panel["title"], target["expr"])


def test_the_check_catches_a_metric_we_do_not_export() -> None:
    """Not vacuous: a misspelt metric in a panel is found."""
    dashboard = {
        "panels": [
            {"type": "timeseries", "targets": [{"expr": "rate(lmsupervisor_proxy_request_total[$__rate_interval])"}]}
        ],
        "templating": {"list": []},
    }
    (query,) = queries(dashboard)
    assert set(selectors(promql_parser.parse(query))) - exported() == {"lmsupervisor_proxy_request_total"}
