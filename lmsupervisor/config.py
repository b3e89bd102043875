"""The configuration: frozen dataclasses parsed strictly from TOML (design §4).

Every key is optional; unknown keys and wrong types are :class:`ConfigError` naming
the TOML path and what was expected (``models[1].ttl: expected seconds as a number,
got "10m"``). Durations are seconds (int or float). A server setting left out is
``None``, meaning "inherit LM Studio's ``http-server-config.json``, else its default".

Where the file is looked for: ``--config``, else ``$LMSUPERVISOR_CONFIG``, else the
per-user config dir (``~/.config/lmsupervisor/config.toml`` on Linux, platformdirs on
the others). No file at all is valid: all defaults.

This module holds the dataclasses and the loading; the typed readers each key goes
through, and the value checks shared with LM Studio's files, are
:mod:`lmsupervisor.configvalues`; the ``[[models]]`` and ``[gpu]`` sections are
:mod:`lmsupervisor.configmodels`, the outward ones :mod:`lmsupervisor.configfront` (all
re-exported here: ``lmsupervisor.config`` stays the import path of every public name).
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmsupervisor import paths
from lmsupervisor.configfront import (
    NOTIFY_EVENTS,
    NOTIFY_KINDS,
    DashboardConfig,
    MetricsConfig,
    NotifyConfig,
    ProxyConfig,
    face_and_voice,
    front,
)
from lmsupervisor.configmodels import (
    GPU_REQUIRE,
    MAX_TTL,
    MODEL_PROBES,
    GpuConfig,
    ModelConfig,
    read_gpu,
    read_models,
)
from lmsupervisor.configvalues import (
    abs_path,
    boolean,
    fail,
    finite,
    integer,
    is_loopback,
    keys,
    listen_address,
    number,
    server_address,
    server_port,
    string,
    table,
)
from lmsupervisor.errors import ConfigError

__all__ = [  # the public checks of configvalues are imported from here, with the rest
    "GPU_REQUIRE",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MAX_TTL",
    "MODEL_PROBES",
    "NOTIFY_EVENTS",
    "NOTIFY_KINDS",
    "TRANSPORTS",
    "Config",
    "DashboardConfig",
    "GpuConfig",
    "HealthConfig",
    "LmStudioConfig",
    "LogConfig",
    "MetricsConfig",
    "ModelConfig",
    "NotifyConfig",
    "ProxyConfig",
    "ReconcileConfig",
    "RestartConfig",
    "ServerConfig",
    "StatusConfig",
    "default_config_path",
    "default_socket_path",
    "finite",
    "is_loopback",
    "listen_address",
    "load",
    "parse",
    "server_address",
    "server_port",
    "socket_path",
    "status_transport",
    "to_toml",
]

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")
TRANSPORTS = ("unix", "tcp")  # status.transport: a Unix socket, or loopback TCP with a bearer token


@dataclass(frozen=True)
class LmStudioConfig:
    """``[lmstudio]``: where LM Studio lives (design §4); both paths default to discovery.

    ``home`` is the LM Studio home, found as LM Studio does when None (lmstudio-facts.md §1);
    ``lms`` is the CLI, found on PATH then in ``<home>/bin`` when None. ``api_token`` (or
    the first line of ``api_token_file``, never both) is sent as ``Authorization: Bearer``
    to LM Studio's REST API when "Require Authentication" is on (0.4+, facts §4); with
    neither, ``$LM_API_TOKEN`` is used. ``runtime`` pins the inference runtime (``name`` or
    ``name@version`` as `lms runtime ls` lists it): at each bring-up, an update that selected
    another one is undone with `lms runtime select` before any model loads (facts §9).
    """

    home: Path | None = None  # None: resolved exactly as LM Studio does
    lms: Path | None = None  # None: PATH, then <home>/bin/lms(.exe)
    api_token: str | None = field(default=None, repr=False)  # never in logs or reprs
    api_token_file: Path | None = None
    runtime: str | None = None  # pin: a runtime from `lms runtime ls`, re-selected after an update


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

    The answer probe (models with ``probe = "answer"``) asks for ``answer_tokens`` tokens
    (1..4096); with :data:`~lmsupervisor.core.speed.MEASURE_TOKENS` (8) or more it measures
    tokens per second, and a model below ``slow_factor`` (0 < f <= 1) of its baseline for
    3 answers in a row is ``model_slow`` (design §9, :mod:`lmsupervisor.core.speed`).
    """

    interval: float = 5.0  # seconds between probes
    timeout: float = 5.0  # seconds, hard limit of one probe
    failures_before_restart: int = 3
    answer_interval: float = 300.0  # seconds between answer probes of models with probe = "answer"
    answer_timeout: float = 30.0  # seconds one answer probe may take
    answer_tokens: int = 1  # max_tokens of an answer probe; >= 8: tokens per second are measured
    slow_factor: float = 0.5  # below this fraction of a model's baseline speed: model_slow


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
    gpu: GpuConfig = field(default_factory=GpuConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    notify: tuple[NotifyConfig, ...] = ()


def parse(data: Mapping[str, Any]) -> Config:
    """Build a :class:`Config` from parsed TOML; raises :class:`ConfigError` on any bad key."""
    top = table("", data, keys(Config)) if data else {}
    d = Config()

    lm = table("lmstudio", top.get("lmstudio", {}), keys(LmStudioConfig))
    token = string("lmstudio.api_token", lm["api_token"]) if "api_token" in lm else None
    if token is not None and (not token.strip() or any(c.isspace() for c in token)):
        raise ConfigError(
            "lmstudio.api_token: expected a token such as sk-lm-xxxxxxxx:xxxxxxxxxxxxxxxxxxxx (no spaces)",
            key="lmstudio.api_token",
        )
    lmstudio = LmStudioConfig(
        home=abs_path("lmstudio.home", lm["home"]) if "home" in lm else None,
        lms=abs_path("lmstudio.lms", lm["lms"]) if "lms" in lm else None,
        api_token=token,
        api_token_file=abs_path("lmstudio.api_token_file", lm["api_token_file"]) if "api_token_file" in lm else None,
        runtime=_runtime(lm["runtime"]) if "runtime" in lm else None,
    )
    if lmstudio.api_token is not None and lmstudio.api_token_file is not None:
        raise ConfigError(
            "lmstudio.api_token_file: set either api_token or api_token_file, not both",
            key="lmstudio.api_token_file",
        )

    sv = table("server", top.get("server", {}), keys(ServerConfig))
    server = ServerConfig(
        bind=string("server.bind", sv["bind"]) if "bind" in sv else None,
        port=integer("server.port", sv["port"], 1, 65535) if "port" in sv else None,
        cors=boolean("server.cors", sv["cors"]) if "cors" in sv else None,
        start_timeout=number(
            "server.start_timeout", sv.get("start_timeout", d.server.start_timeout), positive=True, maximum=3600
        ),
    )
    if server.bind is not None:
        bind = server_address(server.bind)
        if bind is None:
            raise fail("server.bind", "an IP address (127.0.0.1, 0.0.0.0, ::1) or localhost", server.bind)
        server = ServerConfig(bind=bind, port=server.port, cors=server.cors, start_timeout=server.start_timeout)

    hc = table("health", top.get("health", {}), keys(HealthConfig))
    health = HealthConfig(
        interval=number("health.interval", hc.get("interval", d.health.interval), positive=True, maximum=3600),
        timeout=number("health.timeout", hc.get("timeout", d.health.timeout), positive=True, maximum=600),
        failures_before_restart=integer(
            "health.failures_before_restart",
            hc.get("failures_before_restart", d.health.failures_before_restart),
            1,
            1000,
        ),
        answer_interval=number(
            "health.answer_interval", hc.get("answer_interval", d.health.answer_interval), positive=True
        ),
        answer_timeout=number(
            "health.answer_timeout", hc.get("answer_timeout", d.health.answer_timeout), positive=True, maximum=3600
        ),
        answer_tokens=integer("health.answer_tokens", hc.get("answer_tokens", d.health.answer_tokens), 1, 4096),
        slow_factor=number(
            "health.slow_factor",
            hc.get("slow_factor", d.health.slow_factor),
            positive=True,
            maximum=1.0,
            what="a fraction",
        ),
    )

    rc = table("restart", top.get("restart", {}), keys(RestartConfig))
    restart = RestartConfig(
        initial_delay=number("restart.initial_delay", rc.get("initial_delay", d.restart.initial_delay)),
        max_delay=number("restart.max_delay", rc.get("max_delay", d.restart.max_delay)),
        multiplier=number(
            "restart.multiplier",
            rc.get("multiplier", d.restart.multiplier),
            minimum=1.0,
            maximum=100.0,
            what="a number",
        ),
        jitter=number("restart.jitter", rc.get("jitter", d.restart.jitter), what="a fraction"),
        reset_after=number("restart.reset_after", rc.get("reset_after", d.restart.reset_after)),
        kill_app=boolean("restart.kill_app", rc.get("kill_app", d.restart.kill_app)),
    )
    if restart.jitter >= 1:
        raise fail("restart.jitter", "a fraction from 0 to below 1", restart.jitter)
    if restart.max_delay < restart.initial_delay:
        raise fail(
            "restart.max_delay", f"seconds >= restart.initial_delay ({restart.initial_delay:g})", restart.max_delay
        )

    models = read_models(top)

    st = table("status", top.get("status", {}), keys(StatusConfig))
    status = StatusConfig(
        socket=abs_path("status.socket", st["socket"]) if "socket" in st else None,
        group=string("status.group", st.get("group", "")),
        transport=string("status.transport", st["transport"], TRANSPORTS) if "transport" in st else None,
    )
    lg = table("log", top.get("log", {}), keys(LogConfig))
    log = LogConfig(
        level=string("log.level", lg.get("level", "info"), LOG_LEVELS),
        format=string("log.format", lg.get("format", "auto"), LOG_FORMATS),
    )
    rcn = table("reconcile", top.get("reconcile", {}), keys(ReconcileConfig))
    reconcile = ReconcileConfig(unload_removed=boolean("reconcile.unload_removed", rcn.get("unload_removed", False)))
    gpu_config = read_gpu(top)
    proxy, metrics = front(top)
    dashboard, notify = face_and_voice(top)
    return Config(
        lmstudio,
        server,
        health,
        restart,
        models,
        status,
        log,
        reconcile,
        gpu=gpu_config,
        proxy=proxy,
        metrics=metrics,
        dashboard=dashboard,
        notify=notify,
    )


def _runtime(value: Any) -> str | None:
    """``lmstudio.runtime``: a runtime name (``name`` or ``name@version``, no spaces); ``""`` is no pin."""
    name = string("lmstudio.runtime", value).strip()
    if any(c.isspace() for c in name) or name.startswith("@") or name.endswith("@"):
        raise fail("lmstudio.runtime", "a runtime from `lms runtime ls` (name or name@version)", value)
    return name or None


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


def status_transport(config: Config, default: str | None = None) -> str:
    """``status.transport``, else ``default``, else the platform's
    (:attr:`~lmsupervisor.platform.base.OsPlatform.default_transport`): ``"tcp"`` on Windows
    (where asyncio has no Unix socket server), ``"unix"`` elsewhere."""
    if config.status.transport is not None:
        return config.status.transport
    if default is not None:
        return default
    from lmsupervisor.platform import current  # noqa: PLC0415 - the parser needs no platform

    return current().default_transport


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
    for target in result.get("notify", []):
        if target.get("url"):
            target["url"] = "(set)"  # a webhook URL carries its token
        else:
            target.pop("url", None)
    return result
