"""The config's outward sections (design §9): ``[proxy]`` and ``[metrics]`` (the TCP front
doors), ``[dashboard]`` and ``[[notify]]`` (the face and the voice). Their dataclasses and
their readers, each bad value a :class:`~lmsupervisor.errors.ConfigError` naming its key;
:mod:`lmsupervisor.config` assembles them into :class:`~lmsupervisor.config.Config` and
exports every name here (its import path is the public one)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmsupervisor.configvalues import (
    abs_path,
    boolean,
    fail,
    http_url,
    is_loopback,
    keys,
    listen,
    listen_address,
    number,
    string,
    table,
)
from lmsupervisor.errors import ConfigError

NOTIFY_KINDS = ("webhook", "ntfy", "discord", "slack")  # [[notify]] kind: the body each service expects
NOTIFY_EVENTS = (  # [[notify]] events (design §9), what lmsupervisor.notify sends
    "down",
    "recovered",
    "model_failed",
    "model_slow",
    "gpu_missing",
    "config_rejected",
    "app_hung",
    "restarts_climbing",
)


@dataclass(frozen=True)
class ProxyConfig:
    """``[proxy]``: the holding OpenAI-compatible proxy (design §9, :mod:`lmsupervisor.proxy`).

    ``listen`` is ``"host:port"`` (``""``: off; port 0 picks a free one, shown in the
    status); a host that is not loopback needs ``allow_remote``. ``hold_timeout`` is the
    seconds a request may wait for LM Studio and its model (then 503); ``resend_unanswered``
    sends again, once, after recovery a request that got no byte back; ``keepalive`` is the
    seconds between SSE comments to a held stream (0: none).
    """

    listen: str = ""
    allow_remote: bool = False
    hold_timeout: float = 120.0  # seconds
    resend_unanswered: bool = True
    keepalive: float = 10.0  # seconds, 0: no SSE comments while held

    @property
    def address(self) -> tuple[str, int] | None:
        """``(host, port)`` of :attr:`listen`, None when off."""
        return listen_address(self.listen)


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: the read-only ``/metrics`` and ``/healthz`` listener over TCP (design §9).

    ``listen`` is ``"host:port"`` (``""``: off; any host: it serves nothing but those two).
    With ``tls_cert_file`` and ``tls_key_file`` it speaks TLS; ``client_ca_file`` then
    requires client certificates signed by it; ``basic_auth_users_file`` holds
    ``user:sha256-hex-of-password`` lines, one user a line, and makes basic auth required.
    """

    listen: str = ""
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    client_ca_file: Path | None = None
    basic_auth_users_file: Path | None = None

    @property
    def address(self) -> tuple[str, int] | None:
        """``(host, port)`` of :attr:`listen`, None when off."""
        return listen_address(self.listen)


@dataclass(frozen=True)
class DashboardConfig:
    """``[dashboard]``: the local web page (design §9, :mod:`lmsupervisor.dashboard`).

    ``listen`` is ``"host:port"`` on a loopback address (port 0: the system picks one,
    written with the token beside the status socket), ``""`` turns it off. Read at start.
    """

    listen: str = "127.0.0.1:0"


@dataclass(frozen=True)
class NotifyConfig:
    """One ``[[notify]]`` target (design §9, :mod:`lmsupervisor.notify`).

    ``kind`` one of :data:`NOTIFY_KINDS` (the body each service expects; ``webhook`` posts
    the event JSON); ``url`` the receiver, or ``url_file`` a file whose first line is it
    (for secrets such as a Discord webhook; read at each delivery); ``events`` those of
    :data:`NOTIFY_EVENTS` to send; ``after`` the seconds a condition must last before it is
    sent (and its end before ``recovered`` is).
    """

    kind: str = "webhook"
    url: str = field(default="", repr=False)  # may hold a secret (a webhook's token)
    url_file: Path | None = None
    events: tuple[str, ...] = ("down", "recovered", "model_failed")
    after: float = 30.0  # seconds


# -- [proxy] and [metrics]: the TCP front doors (design §9) -------------------------
def front(top: Mapping[str, Any]) -> tuple[ProxyConfig, MetricsConfig]:
    """``[proxy]`` and ``[metrics]``, each key checked and named on bad input."""
    px = table("proxy", top.get("proxy", {}), keys(ProxyConfig))
    d = ProxyConfig()
    proxy = ProxyConfig(
        listen=listen("proxy.listen", px.get("listen", "")),
        allow_remote=boolean("proxy.allow_remote", px.get("allow_remote", d.allow_remote)),
        hold_timeout=number("proxy.hold_timeout", px.get("hold_timeout", d.hold_timeout), positive=True),
        resend_unanswered=boolean("proxy.resend_unanswered", px.get("resend_unanswered", d.resend_unanswered)),
        keepalive=number("proxy.keepalive", px.get("keepalive", d.keepalive), maximum=3600),
    )
    if proxy.address is not None and not is_loopback(proxy.address[0]) and not proxy.allow_remote:
        raise ConfigError(
            f"proxy.listen: {proxy.listen} is reachable from other machines, which then use LM Studio "
            "through it; set proxy.allow_remote = true to mean it, or listen on 127.0.0.1",
            key="proxy.listen",
        )
    mt = table("metrics", top.get("metrics", {}), keys(MetricsConfig))
    files = {k: abs_path(f"metrics.{k}", mt[k]) if k in mt else None for k in keys(MetricsConfig) - {"listen"}}
    metrics = MetricsConfig(listen=listen("metrics.listen", mt.get("listen", "")), **files)
    if (metrics.tls_cert_file is None) != (metrics.tls_key_file is None):
        raise ConfigError(
            "metrics.tls_key_file: TLS needs both tls_cert_file and tls_key_file", key="metrics.tls_key_file"
        )
    if metrics.client_ca_file is not None and metrics.tls_cert_file is None:
        raise ConfigError(
            "metrics.client_ca_file: client certificates need TLS (tls_cert_file)", key="metrics.client_ca_file"
        )
    return proxy, metrics


def face_and_voice(top: Mapping[str, Any]) -> tuple[DashboardConfig, tuple[NotifyConfig, ...]]:
    """``[dashboard]`` and ``[[notify]]`` (design §9), each key checked and named on bad input."""
    db = table("dashboard", top.get("dashboard", {}), keys(DashboardConfig))
    dashboard = DashboardConfig(
        listen=listen("dashboard.listen", db.get("listen", DashboardConfig.listen), loopback_only=True)
    )
    raw = top.get("notify", [])
    if not isinstance(raw, list):
        raise fail("notify", "an array of tables ([[notify]])", raw)
    return dashboard, tuple(_notify(f"notify[{i}]", n) for i, n in enumerate(raw))


def _notify(key: str, raw: Any) -> NotifyConfig:
    entry = table(key, raw, keys(NotifyConfig))
    d = NotifyConfig()
    url = http_url(f"{key}.url", entry["url"]) if "url" in entry else ""
    url_file = abs_path(f"{key}.url_file", entry["url_file"]) if "url_file" in entry else None
    if bool(url) == (url_file is not None):
        raise ConfigError(f"{key}.url: set either url or url_file (one receiver a table)", key=f"{key}.url")
    events = entry.get("events", list(d.events))
    if not isinstance(events, list) or not events:
        raise fail(f"{key}.events", "a non-empty array of event names", events)
    for i, name in enumerate(events):
        string(f"{key}.events[{i}]", name, NOTIFY_EVENTS)
    return NotifyConfig(
        kind=string(f"{key}.kind", entry.get("kind", d.kind), NOTIFY_KINDS),
        url=url,
        url_file=url_file,
        events=tuple(dict.fromkeys(events)),
        after=number(f"{key}.after", entry.get("after", d.after)),
    )
