"""``GET /healthz`` and the read-only metrics port (design §9).

``/healthz`` is the one thing the proxy and metrics ports say about the supervisor without
a token, for Docker, Kubernetes and uptime monitors. :class:`MetricsListener` serves
``[metrics] listen``: ``GET /metrics`` (the supervisor's registry, exposed by
``prometheus_client``: text 0.0.4, or OpenMetrics when the scraper asks for it) and
``GET /healthz``, nothing else, never a control verb; optional TLS (and client
certificates) and basic auth from ``[metrics]``.

It is served by aiohttp, like the proxy, rather than by ``prometheus_client``'s own
``start_http_server``: that one answers the registry on every path (no ``/healthz``, no
404), has no basic auth, and runs in a thread beside the event loop that owns the
snapshot.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from lmsupervisor.config import MetricsConfig, ProxyConfig, is_loopback
from lmsupervisor.core.problems import Problem
from lmsupervisor.core.snapshot import Snapshot
from lmsupervisor.errors import ConfigError
from lmsupervisor.proxy.hold import view_of

REALM = 'Basic realm="lmsupervisor metrics"'


def healthz(snap: Snapshot) -> tuple[int, dict[str, Any]]:
    """``(200, {"ready": true, "state": "ready"})`` when ready, else ``(503, {"ready":
    false, "state": ...})`` with the supervisor's state (design §5)."""
    view = view_of(snap)
    return (200 if view.ready else 503), {"ready": view.ready, "state": view.state}


def remote_proxy_problem(proxy: ProxyConfig) -> Problem | None:
    """The ``doctor`` warning for a proxy other machines can reach (``allow_remote``):
    they use LM Studio through it, with whatever token LM Studio asks of them."""
    address = proxy.address
    if address is None or is_loopback(address[0]):
        return None
    return Problem(
        "proxy_remote",
        f"the holding proxy listens on {proxy.listen}: other machines reach LM Studio through it",
        "turn on LM Studio's Require Authentication, or set proxy.listen to 127.0.0.1:<port>",
        severity="warning",
    )


def read_users(path: Path) -> dict[str, str]:
    """``basic_auth_users_file``: ``user:sha256-hex`` lines (``#`` comments and blank lines
    skipped) as ``{user: hex}``. Raises :class:`ConfigError` naming the key and line."""
    key = "metrics.basic_auth_users_file"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc}", key=key) from exc
    users: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, _, digest = line.partition(":")
        if not user or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
            raise ConfigError(f"{key}: {path} line {number}: expected user:<sha256 hex of the password>", key=key)
        users[user] = digest.lower()
    return users


def tls_context(cfg: MetricsConfig) -> ssl.SSLContext | None:
    """The server TLS context of ``[metrics]`` (None without ``tls_cert_file``); with
    ``client_ca_file`` a client certificate signed by it is required. Raises
    :class:`ConfigError` naming the key of an unreadable or invalid file."""
    if cfg.tls_cert_file is None or cfg.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"metrics.tls_cert_file: cannot use {cfg.tls_cert_file}: {exc}", key="metrics.tls_cert_file"
        ) from exc
    if cfg.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=cfg.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"metrics.client_ca_file: cannot use {cfg.client_ca_file}: {exc}", key="metrics.client_ca_file"
            ) from exc
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class MetricsListener:
    """``[metrics] listen``: :meth:`start`, then :meth:`close`. ``registry`` is exposed on
    ``/metrics``; ``health`` answers ``/healthz`` (:func:`healthz`)."""

    def __init__(
        self, cfg: MetricsConfig, registry: CollectorRegistry, health: Callable[[], tuple[int, dict[str, Any]]]
    ) -> None:
        self.cfg = cfg
        self.registry = registry
        self.health = health
        self.listen: str | None = None
        self._users: dict[str, str] | None = None
        self._runner: web.ServerRunner | None = None

    async def start(self) -> None:
        """Listen; raises :class:`ConfigError` (``metrics.*``) for an unusable file or address."""
        address = self.cfg.address
        if address is None:
            raise ConfigError("metrics.listen: not set", key="metrics.listen")
        context = tls_context(self.cfg)
        if self.cfg.basic_auth_users_file is not None:
            self._users = read_users(self.cfg.basic_auth_users_file)
        self._runner = web.ServerRunner(web.Server(self._handle, access_log=None), handle_signals=False)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, address[0], address[1], ssl_context=context).start()
        except OSError as exc:
            await self.close()
            raise ConfigError(
                f"metrics.listen: cannot listen on {self.cfg.listen}: {exc}", key="metrics.listen"
            ) from exc
        host, port = self._runner.addresses[0][:2]
        self.listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        structlog.get_logger("lmsupervisor").info("metrics_listening", listen=self.listen, tls=context is not None)

    async def close(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path not in ("/metrics", "/healthz"):
            return web.json_response({"error": f"no such endpoint: {request.path}"}, status=404)
        if request.method not in ("GET", "HEAD"):
            return web.json_response({"error": "read-only"}, status=405, headers={"Allow": "GET, HEAD"})
        if self._users is not None and not self._authorized(request.headers.get("Authorization", "")):
            return web.json_response({"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": REALM})
        if request.path == "/healthz":
            status, body = self.health()
            return web.json_response(body, status=status)
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        response = web.Response(body=encoder(self.registry))
        response.headers["Content-Type"] = content_type
        return response

    def _authorized(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or self._users is None:
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        digest = hashlib.sha256(password.encode()).hexdigest()
        return hmac.compare_digest(self._users.get(user, "-" * 64), digest)
