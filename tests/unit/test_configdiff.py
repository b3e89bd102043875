"""config_diff (pure): what a reload means, key by key."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from lmsupervisor.config import (
    Config,
    DashboardConfig,
    HealthConfig,
    LogConfig,
    MetricsConfig,
    ModelConfig,
    ProxyConfig,
    ServerConfig,
    StatusConfig,
)
from lmsupervisor.core.configdiff import ConfigDiff, config_diff

BASE = Config(models=(ModelConfig("a/one"), ModelConfig("b/two", identifier="two")))


def test_same_config_changes_nothing() -> None:
    """Equal configs give an empty diff."""
    assert config_diff(BASE, BASE) == ConfigDiff()


def test_timing_keys_need_nothing() -> None:
    """[health] and server.start_timeout apply by themselves: no restart, no reconcile."""
    new = replace(BASE, health=HealthConfig(interval=1), server=ServerConfig(start_timeout=5))
    assert config_diff(BASE, new).empty


def test_server_settings_restart_the_server() -> None:
    """bind, port or CORS restart LM Studio's server."""
    for server in (ServerConfig(bind="0.0.0.0"), ServerConfig(port=4321), ServerConfig(cors=True)):
        assert config_diff(BASE, replace(BASE, server=server)).restart_server


def test_models_added_removed_and_rekeyed() -> None:
    """Names are identifiers, else keys; a new key under an existing identifier is rekeyed."""
    new = replace(BASE, models=(ModelConfig("c/three"), ModelConfig("d/four", identifier="two")))
    diff = config_diff(BASE, new)
    assert (diff.reconcile_models, diff.added, diff.removed, diff.rekeyed) == (True, ("c/three",), ("a/one",), ("two",))


def test_log_is_live_and_status_needs_a_restart() -> None:
    """[log] applies live; status.* only at the next start of lmsupervisor."""
    new = replace(BASE, log=LogConfig(level="debug"), status=StatusConfig(group="wheel"))
    diff = config_diff(BASE, new)
    assert (diff.relog, diff.needs_restart, diff.restart_server) == (True, ("status.group",), False)


def test_listeners_bound_at_start_need_a_restart_and_the_proxys_timing_is_live() -> None:
    """[proxy] listen, every [metrics] key and [dashboard] listen are read when `run` starts
    (a socket is bound, a TLS context and the users file are read): a reload names them as
    needing a restart instead of leaving them silently unapplied. The proxy's hold_timeout,
    keepalive and resend_unanswered are read per request: live."""
    new = replace(
        BASE,
        proxy=ProxyConfig(listen="127.0.0.1:1235", hold_timeout=5, keepalive=0, resend_unanswered=False),
        metrics=MetricsConfig(listen="127.0.0.1:9464", basic_auth_users_file=Path("/etc/users")),
        dashboard=DashboardConfig(listen=""),
    )
    diff = config_diff(BASE, new)
    assert diff.needs_restart == ("proxy.listen", "metrics.listen", "metrics.basic_auth_users_file", "dashboard.listen")
    live = replace(BASE, proxy=ProxyConfig(hold_timeout=5, keepalive=0, resend_unanswered=False))
    assert config_diff(BASE, live).empty
