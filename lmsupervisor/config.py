"""The configuration: frozen dataclasses parsed strictly from TOML (design §4).

Every key is optional; unknown keys and wrong types are :class:`ConfigError` naming
the TOML path and what was expected (``models[1].ttl: expected seconds as a number,
got "10m"``). Durations are seconds (int or float). A server setting left out is
``None``, meaning "inherit LM Studio's ``http-server-config.json``, else its default".

Where the file is looked for: ``--config``, else ``$LMSUPERVISOR_CONFIG``, else the
per-user config dir (``~/.config/lmsupervisor/config.toml`` on Linux, platformdirs on
the others). No file at all is valid: all defaults.
"""

from __future__ import annotations

import ipaddress
import math
import os
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from lmsupervisor import paths
from lmsupervisor.errors import ConfigError

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")
MODEL_PROBES = ("none", "load", "answer")
TRANSPORTS = ("unix", "tcp")  # status.transport: a Unix socket, or loopback TCP with a bearer token
MAX_SECONDS = 86_400.0  # upper bound of every duration: a day (a larger value is a typo, not a wish)
MAX_TTL = 365 * 86_400.0  # a model's TTL may be long, but finite
SHOWN_DIGITS = 20  # an integer in a message is shown whole up to this many digits, else by its length


@dataclass(frozen=True)
class LmStudioConfig:
    """``[lmstudio]``: where LM Studio lives (design §4); both paths default to discovery.

    ``home`` is the LM Studio home, found as LM Studio does when None (lmstudio-facts.md §1);
    ``lms`` is the CLI, found on PATH then in ``<home>/bin`` when None. ``api_token`` (or
    the first line of ``api_token_file``, never both) is sent as ``Authorization: Bearer``
    to LM Studio's REST API when "Require Authentication" is on (0.4+, facts §4); with
    neither, ``$LM_API_TOKEN`` is used.
    """

    home: Path | None = None  # None: resolved exactly as LM Studio does
    lms: Path | None = None  # None: PATH, then <home>/bin/lms(.exe)
    api_token: str | None = field(default=None, repr=False)  # never in logs or reprs
    api_token_file: Path | None = None


@dataclass(frozen=True)
class ServerConfig:
    """``[server]``: the HTTP server lmsupervisor keeps running (design §4).

    ``bind``, ``port`` and ``cors`` are passed to `lms server start`; None inherits LM
    Studio's ``http-server-config.json``, else its default (127.0.0.1, 1234, off), see
    :func:`lmsupervisor.core.observed.effective_server`. ``start_timeout`` is seconds
    (0 < t <= 3600) allowed to `lms server start` and to a cold `lms daemon up`.
    """

    bind: str | None = None
    port: int | None = None
    cors: bool | None = None
    start_timeout: float = 120.0  # seconds, `lms server start` and `lms daemon up` (cold: ~60 s of polls, facts §9)


@dataclass(frozen=True)
class HealthConfig:
    """``[health]``: the HTTP health probe (design §4).

    ``interval`` is seconds between probes (0 < t <= 3600), ``timeout`` seconds for one
    probe (0 < t <= 600); ``failures_before_restart`` consecutive failed probes (1..1000)
    count as a failure: the supervisor backs off, then restarts the server.
    """

    interval: float = 5.0  # seconds between probes
    timeout: float = 5.0  # seconds, hard limit of one probe
    failures_before_restart: int = 3
    answer_interval: float = 300.0  # seconds between answer probes of models with probe = "answer"
    answer_timeout: float = 30.0  # seconds one answer probe may take


@dataclass(frozen=True)
class RestartConfig:
    """``[restart]``: the backoff between restart attempts (design §4, :mod:`lmsupervisor.core.policy`).

    Delays are seconds: ``initial_delay * multiplier ** (attempt - 1)`` capped at
    ``max_delay`` (which must be >= ``initial_delay``), spread by ``+/- jitter`` (a
    fraction of the delay). ``reset_after`` healthy seconds reset the attempt count.
    """

    initial_delay: float = 1.0  # seconds
    max_delay: float = 300.0  # seconds
    multiplier: float = 2.0
    jitter: float = 0.1  # fraction of the delay, +/-
    reset_after: float = 60.0  # healthy seconds that reset the backoff
    kill_app: bool = False  # may the kill rung terminate the GUI app? (never by default)


@dataclass(frozen=True)
class ModelConfig:
    """One ``[[models]]`` entry: a model to preload, keep loaded and reload after restarts.

    ``key`` is a model key (``modelKey`` of `lms ls --json`) or its path; ``identifier``,
    ``context_length``, ``gpu`` (``"off"``, ``"max"`` or 0.0..1.0) and ``ttl`` (seconds,
    None: never unloaded) become the flags of `lms load` (lmstudio-facts.md §3).
    ``download`` runs `lms get --yes` when the model is missing.
    """

    key: str  # model key (`lms ls --json` modelKey) or its path
    identifier: str | None = None
    context_length: int | None = None
    gpu: str | float | None = None  # "off", "max" or 0.0..1.0
    ttl: float | None = None  # seconds; None: never unloaded
    download: bool = False
    probe: str = "load"  # "none": load it, never check; "load": kept loaded; "answer": and answering


@dataclass(frozen=True)
class StatusConfig:
    """``[status]``: the status socket (design §5, §6).

    ``socket`` is its path (None: :func:`default_socket_path`); ``group`` is an optional
    group name or gid that may read it (mode 0660 in a 0750 folder), empty for none.
    ``transport`` is one of :data:`TRANSPORTS` (None: the platform's, see
    :func:`status_transport`); with ``"tcp"`` the port and token go to a file beside
    ``socket`` (:mod:`lmsupervisor.endpoint.tokenfile`).
    """

    socket: Path | None = None  # None: the platform default (see default_socket_path)
    group: str = ""
    transport: str | None = None  # None: "tcp" on Windows, "unix" elsewhere (status_transport)


@dataclass(frozen=True)
class ReconcileConfig:
    """``[reconcile]``: what happens to models that leave the config on a reload."""

    unload_removed: bool = False  # unload a model removed from the config, if we loaded it


@dataclass(frozen=True)
class LogConfig:
    """``[log]``: ``level`` is one of :data:`LOG_LEVELS`, ``format`` one of :data:`LOG_FORMATS`.

    ``"auto"`` logs for people on a TTY and JSON lines otherwise (:mod:`lmsupervisor.logs`).
    """

    level: str = "info"
    format: str = "auto"


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
class Config:
    """The whole configuration file (design §4): one frozen field per TOML table.

    ``Config()`` is the all-defaults configuration, what a missing file means; build one
    from TOML with :func:`parse` or :func:`load`.
    """

    lmstudio: LmStudioConfig = field(default_factory=LmStudioConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    restart: RestartConfig = field(default_factory=RestartConfig)
    models: tuple[ModelConfig, ...] = ()
    status: StatusConfig = field(default_factory=StatusConfig)
    log: LogConfig = field(default_factory=LogConfig)
    reconcile: ReconcileConfig = field(default_factory=ReconcileConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)


# -- typed readers: each names the key and what it expected -------------------------
def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and abs(value) >= 10**SHOWN_DIGITS:
        return f"an integer of {_digits(value)} digits"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def _digits(value: int) -> str:
    """How many decimal digits ``value`` has, as text; ``"more than N"`` past Python's
    int-to-text limit (``sys.get_int_max_str_digits()``, 4300), where ``str()`` raises
    (a TOML hex, octal or binary literal is read past it)."""
    try:
        return str(len(str(abs(value))))
    except ValueError:
        return f"more than {sys.get_int_max_str_digits()}"


def finite(value: object) -> bool:
    """Whether ``value`` is a finite number: any ``int`` (TOML and JSON integers have no
    bound: ``10**400`` is finite, and is never turned into a float, which it would
    overflow) or a ``float`` that is neither NaN nor an infinity. A bool is not a number."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def server_address(value: object) -> str | None:
    """``value`` as an address LM Studio's server can bind and lmsupervisor can reach, or
    None when it is not one.

    Accepted, as `lms server start --bind` and LM Studio's ``networkInterface`` take them
    (facts §2, §3): an IPv4 address (``127.0.0.1``, ``0.0.0.0``), an IPv6 address with or
    without brackets (``::1``, ``[::1]``, returned without them) and ``localhost`` (any
    case). Anything else is None: a ``host:port`` mistake (``localhost:1234``), a hostname,
    an impossible address (``999.1.1.1``), surrounding whitespace (``"0.0.0.0 "``: LM Studio
    does not trim it either), an empty string, or a value that is not a string.
    """
    if not isinstance(value, str):
        return None
    if value.lower() == "localhost":
        return "localhost"
    text = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def server_port(value: object) -> int | None:
    """``value`` as a TCP port LM Studio's server can listen on (an integer from 1 to
    65535, as ``http-server-config.json``'s ``port`` and `lms server start --port` take it,
    facts §2, §3), or None when it is not one: out of range, a boolean (JSON ``true`` is not
    a port), a float, a string, or None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 1 <= value <= 65535 else None


def _fail(key: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{key}: expected {expected}, got {_describe(value)}", key=key)


def _number(
    key: str,
    value: Any,
    *,
    minimum: float = 0.0,
    maximum: float = MAX_SECONDS,
    positive: bool = False,
    what: str = "seconds as a number",
) -> float:
    """A finite number in ``[minimum, maximum]`` (``> 0`` with ``positive``) as a float;
    NaN and infinity are refused, since they silently turn timers off or into busy loops.
    An integer is compared as an integer, so one too large for a float (``10**400``) is
    out of range like any other, never an OverflowError."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(key, what, value)
    if not finite(value):
        raise _fail(key, f"{what} (finite)", value)
    if value < minimum or (positive and value <= 0):
        raise _fail(key, f"{what} {'> 0' if positive else f'>= {minimum:g}'}", value)
    if value > maximum:
        raise _fail(key, f"{what} <= {maximum:g}", value)
    return float(value)


def _int(key: str, value: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(key, "an integer", value)
    if value < lo or (hi is not None and value > hi):
        raise _fail(key, f"an integer from {lo} to {hi}" if hi else f"an integer >= {lo}", value)
    return value


def _str(key: str, value: Any, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(value, str):
        raise _fail(key, "a string", value)
    if "\x00" in value:
        raise ConfigError(f"{key}: expected text without NUL bytes, got {value!r}", key=key)
    if choices is not None and value not in choices:
        raise _fail(key, "one of " + ", ".join(f'"{c}"' for c in choices), value)
    return value


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, "true or false", value)
    return value


def _path(key: str, value: Any) -> Path:
    """An absolute path (``~`` expanded); a relative one would depend on the service's cwd."""
    text = _str(key, value)
    if not text:
        raise _fail(key, "a path", value)
    path = Path(os.path.expanduser(text))
    if not path.is_absolute():
        raise _fail(key, "an absolute path (or one starting with ~)", value)
    return path


def _table(key: str, value: Any, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _fail(key, "a table", value)
    for name in value:
        if name not in allowed:
            known = ", ".join(sorted(allowed))
            full = f"{key}.{name}" if key else name
            where = f"[{key}]" if key else "the top level"
            raise ConfigError(f"{full}: unknown key (known keys of {where}: {known})", key=full)
    return value


def _keys(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


def _gpu(key: str, value: Any) -> str | float:
    """``"off"``, ``"max"``, or a ratio from 0.0 to 1.0 as a float."""
    if value in ("off", "max") and isinstance(value, str):
        return value
    if not finite(value) or not 0 <= value <= 1:
        raise _fail(key, '"off", "max" or a number from 0.0 to 1.0', value)
    return float(value)


def _model(key: str, raw: Any) -> ModelConfig:
    table = _table(key, raw, _keys(ModelConfig))
    if "key" not in table:
        raise ConfigError(f"{key}.key: required (the model key as in `lms ls --json`)", key=f"{key}.key")
    model_key = _str(f"{key}.key", table["key"])
    if not model_key.strip():
        raise _fail(f"{key}.key", "a model key", model_key)
    ident = table.get("identifier")
    ctx = table.get("context_length")
    ttl = table.get("ttl")
    return ModelConfig(
        key=model_key,
        identifier=_str(f"{key}.identifier", ident) if ident is not None else None,
        context_length=_int(f"{key}.context_length", ctx, 1, 16_777_216) if ctx is not None else None,
        gpu=_gpu(f"{key}.gpu", table["gpu"]) if "gpu" in table else None,
        ttl=_number(f"{key}.ttl", ttl, minimum=1, maximum=MAX_TTL) if ttl is not None else None,
        download=_bool(f"{key}.download", table.get("download", False)),
        probe=_str(f"{key}.probe", table.get("probe", "load"), MODEL_PROBES),
    )


def parse(data: Mapping[str, Any]) -> Config:
    """Build a :class:`Config` from parsed TOML; raises :class:`ConfigError` on any bad key."""
    top = _table("", data, _keys(Config)) if data else {}
    d = Config()

    lm = _table("lmstudio", top.get("lmstudio", {}), _keys(LmStudioConfig))
    token = _str("lmstudio.api_token", lm["api_token"]) if "api_token" in lm else None
    if token is not None and (not token.strip() or any(c.isspace() for c in token)):
        raise ConfigError(
            "lmstudio.api_token: expected a token such as sk-lm-xxxxxxxx:xxxxxxxxxxxxxxxxxxxx (no spaces)",
            key="lmstudio.api_token",
        )
    lmstudio = LmStudioConfig(
        home=_path("lmstudio.home", lm["home"]) if "home" in lm else None,
        lms=_path("lmstudio.lms", lm["lms"]) if "lms" in lm else None,
        api_token=token,
        api_token_file=_path("lmstudio.api_token_file", lm["api_token_file"]) if "api_token_file" in lm else None,
    )
    if lmstudio.api_token is not None and lmstudio.api_token_file is not None:
        raise ConfigError(
            "lmstudio.api_token_file: set either api_token or api_token_file, not both",
            key="lmstudio.api_token_file",
        )

    sv = _table("server", top.get("server", {}), _keys(ServerConfig))
    server = ServerConfig(
        bind=_str("server.bind", sv["bind"]) if "bind" in sv else None,
        port=_int("server.port", sv["port"], 1, 65535) if "port" in sv else None,
        cors=_bool("server.cors", sv["cors"]) if "cors" in sv else None,
        start_timeout=_number(
            "server.start_timeout", sv.get("start_timeout", d.server.start_timeout), positive=True, maximum=3600
        ),
    )
    if server.bind is not None:
        bind = server_address(server.bind)
        if bind is None:
            raise _fail("server.bind", "an IP address (127.0.0.1, 0.0.0.0, ::1) or localhost", server.bind)
        server = ServerConfig(bind=bind, port=server.port, cors=server.cors, start_timeout=server.start_timeout)

    hc = _table("health", top.get("health", {}), _keys(HealthConfig))
    health = HealthConfig(
        interval=_number("health.interval", hc.get("interval", d.health.interval), positive=True, maximum=3600),
        timeout=_number("health.timeout", hc.get("timeout", d.health.timeout), positive=True, maximum=600),
        failures_before_restart=_int(
            "health.failures_before_restart",
            hc.get("failures_before_restart", d.health.failures_before_restart),
            1,
            1000,
        ),
        answer_interval=_number(
            "health.answer_interval", hc.get("answer_interval", d.health.answer_interval), positive=True
        ),
        answer_timeout=_number(
            "health.answer_timeout", hc.get("answer_timeout", d.health.answer_timeout), positive=True, maximum=3600
        ),
    )

    rc = _table("restart", top.get("restart", {}), _keys(RestartConfig))
    restart = RestartConfig(
        initial_delay=_number("restart.initial_delay", rc.get("initial_delay", d.restart.initial_delay)),
        max_delay=_number("restart.max_delay", rc.get("max_delay", d.restart.max_delay)),
        multiplier=_number(
            "restart.multiplier",
            rc.get("multiplier", d.restart.multiplier),
            minimum=1.0,
            maximum=100.0,
            what="a number",
        ),
        jitter=_number("restart.jitter", rc.get("jitter", d.restart.jitter), what="a fraction"),
        reset_after=_number("restart.reset_after", rc.get("reset_after", d.restart.reset_after)),
        kill_app=_bool("restart.kill_app", rc.get("kill_app", d.restart.kill_app)),
    )
    if restart.jitter >= 1:
        raise _fail("restart.jitter", "a fraction from 0 to below 1", restart.jitter)
    if restart.max_delay < restart.initial_delay:
        raise _fail(
            "restart.max_delay", f"seconds >= restart.initial_delay ({restart.initial_delay:g})", restart.max_delay
        )

    raw_models = top.get("models", [])
    if not isinstance(raw_models, list):
        raise _fail("models", "an array of tables ([[models]])", raw_models)
    models = tuple(_model(f"models[{i}]", m) for i, m in enumerate(raw_models))
    seen: dict[str, int] = {}
    for i, m in enumerate(models):
        name = m.identifier or m.key
        if name in seen:
            raise ConfigError(
                f"models[{i}]: declares {name!r} again (also models[{seen[name]}]); give one an `identifier`",
                key=f"models[{i}]",
            )
        seen[name] = i

    st = _table("status", top.get("status", {}), _keys(StatusConfig))
    status = StatusConfig(
        socket=_path("status.socket", st["socket"]) if "socket" in st else None,
        group=_str("status.group", st.get("group", "")),
        transport=_str("status.transport", st["transport"], TRANSPORTS) if "transport" in st else None,
    )
    lg = _table("log", top.get("log", {}), _keys(LogConfig))
    log = LogConfig(
        level=_str("log.level", lg.get("level", "info"), LOG_LEVELS),
        format=_str("log.format", lg.get("format", "auto"), LOG_FORMATS),
    )
    rcn = _table("reconcile", top.get("reconcile", {}), _keys(ReconcileConfig))
    reconcile = ReconcileConfig(unload_removed=_bool("reconcile.unload_removed", rcn.get("unload_removed", False)))
    proxy, metrics = _front(top)
    return Config(lmstudio, server, health, restart, models, status, log, reconcile, proxy=proxy, metrics=metrics)


# -- [proxy] and [metrics]: the TCP front doors (design §9) -------------------------
def listen_address(value: str) -> tuple[str, int] | None:
    """``"127.0.0.1:1235"`` -> ``("127.0.0.1", 1235)``, ``"[::1]:0"`` -> ``("::1", 0)``,
    ``"localhost:9464"`` -> ``("localhost", 9464)``; None for ``""`` or anything else
    (no port, a port outside 0..65535, a host that is not an IP address or localhost)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        return None
    address = server_address(host)
    return None if address is None else (address, int(port))


def is_loopback(host: str) -> bool:
    """Whether a :func:`listen_address` host is reachable from this machine only."""
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


def _front(top: Mapping[str, Any]) -> tuple[ProxyConfig, MetricsConfig]:
    """``[proxy]`` and ``[metrics]``, each key checked and named on bad input."""
    px = _table("proxy", top.get("proxy", {}), _keys(ProxyConfig))
    d = ProxyConfig()
    proxy = ProxyConfig(
        listen=_listen("proxy.listen", px.get("listen", "")),
        allow_remote=_bool("proxy.allow_remote", px.get("allow_remote", d.allow_remote)),
        hold_timeout=_number("proxy.hold_timeout", px.get("hold_timeout", d.hold_timeout), positive=True),
        resend_unanswered=_bool("proxy.resend_unanswered", px.get("resend_unanswered", d.resend_unanswered)),
        keepalive=_number("proxy.keepalive", px.get("keepalive", d.keepalive), maximum=3600),
    )
    if proxy.address is not None and not is_loopback(proxy.address[0]) and not proxy.allow_remote:
        raise ConfigError(
            f"proxy.listen: {proxy.listen} is reachable from other machines, which then use LM Studio "
            "through it; set proxy.allow_remote = true to mean it, or listen on 127.0.0.1",
            key="proxy.listen",
        )
    mt = _table("metrics", top.get("metrics", {}), _keys(MetricsConfig))
    files = {k: _path(f"metrics.{k}", mt[k]) if k in mt else None for k in _keys(MetricsConfig) - {"listen"}}
    metrics = MetricsConfig(listen=_listen("metrics.listen", mt.get("listen", "")), **files)
    if (metrics.tls_cert_file is None) != (metrics.tls_key_file is None):
        raise ConfigError(
            "metrics.tls_key_file: TLS needs both tls_cert_file and tls_key_file", key="metrics.tls_key_file"
        )
    if metrics.client_ca_file is not None and metrics.tls_cert_file is None:
        raise ConfigError(
            "metrics.client_ca_file: client certificates need TLS (tls_cert_file)", key="metrics.client_ca_file"
        )
    return proxy, metrics


def _listen(key: str, value: Any) -> str:
    text = _str(key, value)
    if text and listen_address(text) is None:
        raise _fail(key, 'an address and port such as "127.0.0.1:1235" or "[::1]:1235" ("" for off)', value)
    return text


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    """``$LMSUPERVISOR_CONFIG``, else the per-user config dir's ``config.toml`` (see :mod:`paths`)."""
    return Path(paths.default_config_file(os.environ if env is None else env))


def load(path: Path | None, env: Mapping[str, str] | None = None) -> tuple[Config, Path]:
    """Read and parse the config; returns it with the path it came from.

    ``path`` None means the default location, where a missing file is all defaults.
    An explicit ``path`` that does not exist is a :class:`ConfigError`.
    """
    explicit = path is not None
    path = path if path is not None else default_config_path(env)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if explicit:
            raise ConfigError(
                f"{path}: no such file", hint="create it with `lmsupervisor config init`, or leave --config out"
            ) from None
        return Config(), path
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    except RecursionError:  # tomllib recurses per nesting level
        raise ConfigError(f"{path}: not valid TOML (arrays or tables nested too deeply)") from None
    except ValueError:  # not a TOMLDecodeError: int() refused a decimal literal past sys.get_int_max_str_digits()
        raise ConfigError(
            f"{path}: not valid TOML (an integer of more than {sys.get_int_max_str_digits()} digits)"
        ) from None
    try:
        return parse(data), path
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.message}", key=exc.key, hint=exc.hint) from None


def default_socket_path(env: Mapping[str, str] | None = None) -> Path:
    """The default status socket (see :func:`lmsupervisor.paths.default_socket`)."""
    return Path(paths.default_socket(os.environ if env is None else env))


def socket_path(config: Config, cli: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """``--socket``, else ``$LMSUPERVISOR_SOCKET``, else ``status.socket``, else the default
    (:func:`lmsupervisor.paths.resolve_socket`)."""
    return Path(paths.resolve_socket(cli, os.environ if env is None else env, lambda: config.status.socket))


def status_transport(config: Config, os_name: str = os.name) -> str:
    """``status.transport``, else the platform's: ``"tcp"`` on Windows (``os.name == "nt"``,
    where asyncio has no Unix socket server), ``"unix"`` elsewhere."""
    if config.status.transport is not None:
        return config.status.transport
    return "tcp" if os_name == "nt" else "unix"


def to_toml(config: Config) -> dict[str, Any]:
    """The config as a TOML-ready dict (``None`` values, meaning "inherit", left out; an
    ``api_token`` shown as ``"(set)"``, never itself)."""
    from dataclasses import asdict  # noqa: PLC0415

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v is not None}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value

    result: dict[str, Any] = clean(asdict(config))
    if config.lmstudio.api_token is not None:
        result["lmstudio"]["api_token"] = "(set)"  # noqa: S105 - a mask, not a secret
    return result
