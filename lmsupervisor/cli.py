"""The command line (design §3). The only module that exits with a code.

Exit codes: ``status``/``wait``: 0 ready, 1 reachable but not ready, 3 not running
(LSB). ``run``: 0 clean stop, 2 usage, 69 another instance holds the lock, 78 config
error. ``doctor``: 0 nothing wrong, 1 otherwise. Library code raises; an exception that
ends a command gets its exit code (and its message on stderr) from one table,
:data:`EXIT_CODES`, applied by :func:`main` and by the status commands' ``*_main``.

This module holds every command (``cmd_*``, the status commands' ``*_main``) and the
table; what they call lives in its own room: the grammar in :mod:`lmsupervisor.cliparser`,
`service status` in :mod:`lmsupervisor.service.status`, `native-host install` in
:mod:`lmsupervisor.nativehost.install`.

Imports are lazy: ``lmsupervisor status`` is called in loops by other tools, so it must
not pay for httpx, structlog or asyncio (:mod:`lmsupervisor.errors` is standard library only).
"""

from __future__ import annotations

import sys

from lmsupervisor.errors import (
    ConfigError,
    DashboardError,
    InstanceLockedError,
    LmSupervisorError,
    NativeHostFileError,
    NativeHostInstallError,
    ServiceError,
    SimulateError,
    StatusSocketError,
)

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: `status` must not pay for importing typing
if TYPE_CHECKING:
    import argparse
    import os
    from collections.abc import Callable
    from typing import NoReturn, ParamSpec

    P = ParamSpec("P")

EXIT_OK = 0
EXIT_NOT_READY = 1  # status, wait: reachable but not ready; restart, reload: refused
EXIT_FAILED = 1  # the other commands: they could not do what was asked
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3  # LSB "program is not running"
EXIT_LOCKED = 69  # EX_UNAVAILABLE
EXIT_CONFIG = 78  # EX_CONFIG
EXIT_INTERRUPTED = 130  # 128 + SIGINT

# The one table from an exception that ends a command to its exit code, most specific first.
# An lmsupervisor error's message (with its hint) goes to stderr; the others end silently.
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (ConfigError, EXIT_CONFIG),  # every command: the message names the TOML key
    (InstanceLockedError, EXIT_LOCKED),
    (StatusSocketError, EXIT_NOT_RUNNING),  # nobody answers on the socket, or nobody to be trusted
    (DashboardError, EXIT_NOT_RUNNING),  # no dashboard: off, or no supervisor serves it
    (NativeHostInstallError, EXIT_USAGE),  # a refused plan
    (NativeHostFileError, EXIT_FAILED),
    (ServiceError, EXIT_FAILED),  # the service manager failed
    (SimulateError, EXIT_FAILED),
    (KeyboardInterrupt, EXIT_INTERRUPTED),
    (BrokenPipeError, EXIT_OK),  # whoever read our stdout left
)
_ENDING = tuple(kind for kind, _ in EXIT_CODES)


def exit_code(exc: BaseException) -> int:
    """The code :data:`EXIT_CODES` gives ``exc`` (one of its kinds); an lmsupervisor error's
    message goes to stderr first."""
    if isinstance(exc, LmSupervisorError):
        _err(str(exc))
    return next(code for kind, code in EXIT_CODES if isinstance(exc, kind))


def _mapped(command: Callable[P, int]) -> Callable[P, int]:
    """``command`` returning the :func:`exit_code` of an exception it ends with."""

    def run(*args: P.args, **kwargs: P.kwargs) -> int:
        try:
            return command(*args, **kwargs)
        except _ENDING as exc:
            return exit_code(exc)

    run.__name__, run.__qualname__, run.__doc__ = command.__name__, command.__qualname__, command.__doc__
    return run


def _fast_status(argv: list[str]) -> int | None:
    """`status [--json] [--socket PATH]` without argparse: other tools call it in loops.

    Returns None for anything else, so argparse parses (and reports) it as usual.
    """
    if not argv or argv[0] != "status":
        return None
    as_json, sock, i = False, None, 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--json":
            as_json = True
        elif arg == "--socket" and i + 1 < len(argv):
            sock, i = argv[i + 1], i + 1
        elif arg.startswith("--socket="):
            sock = arg.split("=", 1)[1]
        else:
            return None
        i += 1
    return status_main(sock, as_json=as_json)


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``) and return its exit code.

    ``status`` is answered by a fast path without argparse. An exception that ends a
    command gets its code from :data:`EXIT_CODES` (:class:`ConfigError` 78,
    :class:`InstanceLockedError` 69, Ctrl-C 130, a closed stdout 0, ...); a usage error
    exits 2 (argparse).
    """
    argv = sys.argv[1:] if argv is None else argv
    fast = _fast_status(argv)
    if fast is not None:
        return fast
    from lmsupervisor.cliparser import build_parser

    args = build_parser().parse_args(argv)
    handler = {
        "run": cmd_run,
        "status": cmd_status,
        "events": cmd_events,
        "wait": cmd_wait,
        "restart": cmd_restart,
        "reload": cmd_reload,
        "doctor": cmd_doctor,
        "config": cmd_config,
        "demo": cmd_demo,
        "native-host": cmd_native_host,
        "simulate": cmd_simulate,
        "service": cmd_service,
        "notify": cmd_notify,
        "dashboard": cmd_dashboard,
    }[args.command]
    return _mapped(handler)(args)


def script() -> NoReturn:
    """`python -m lmsupervisor`: run :func:`main` and exit the process with its code."""
    raise SystemExit(main())


def _err(message: str) -> None:
    sys.stderr.write(f"lmsupervisor: {message}\n")


# -- doctor and config -----------------------------------------------------------------
def cmd_doctor(args: argparse.Namespace) -> int:
    """`lmsupervisor doctor [--json] [--config PATH]`: print a one-shot diagnosis, changing nothing.

    Text by default, or the :meth:`Diagnosis.to_json` dict with ``--json``. Exits 0 when no
    problem has severity ``"error"``, 1 otherwise; 78 for a bad config (raised to :func:`main`).
    """
    import asyncio
    import json

    from lmsupervisor import config
    from lmsupervisor.doctor import diagnose, render
    from lmsupervisor.lmstudio.install import Platform

    cfg, _ = config.load(args.config)
    from lmsupervisor.lmstudio.capabilities import CapabilityCache
    from lmsupervisor.statefile import HardwareMemory, default_folder

    cache = CapabilityCache(default_folder() / "capabilities.json", quiet=True)
    memory = HardwareMemory(default_folder() / "hardware.json")
    diag = asyncio.run(diagnose(cfg, Platform.current(), capabilities=cache, hardware=memory))
    if args.json:
        print(json.dumps(diag.to_json(), indent=2))
    else:
        print(render(diag))
    return EXIT_OK if diag.ok else EXIT_FAILED


def cmd_config(args: argparse.Namespace) -> int:
    """`lmsupervisor config init [PATH] | check [PATH] | show`.

    ``init`` writes the commented ``config.example.toml`` to PATH (default: the per-user
    config path) and exits 0, or 2 if the file exists. ``check`` parses PATH and checks what
    ``run`` would refuse (``status.group``, ``status.socket``), exit 0. ``show`` prints the
    effective config as TOML, exit 0. A bad config raises :class:`ConfigError` (exit 78).
    """
    from pathlib import Path

    from lmsupervisor import config

    if args.config_command == "init":
        path = args.path or config.default_config_path()
        if path.exists():
            _err(f"{path} exists; not overwriting it")
            return EXIT_USAGE
        path.parent.mkdir(parents=True, exist_ok=True)
        example = Path(__file__).with_name("config.example.toml")
        path.write_text(example.read_text(encoding="utf-8"), encoding="utf-8")
        print(f"wrote {path}")
        return EXIT_OK
    if args.config_command == "check":
        from lmsupervisor.statusd.socketdir import check_config

        cfg, path = config.load(args.path)
        check_config(cfg)  # status.group exists, status.socket is usable: what `run` would refuse
        print(f"{path}: ok" if path.exists() else f"{path}: no file (all defaults)")
        return EXIT_OK
    cfg, path = config.load(args.config)
    import tomli_w

    print(f"# effective configuration (from {path}{'' if path.exists() else ', absent: defaults'})")
    print(tomli_w.dumps(config.to_toml(cfg)), end="")
    return EXIT_OK


# -- filled in by the supervisor work ------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    """`lmsupervisor run [--config PATH]`: supervise in the foreground until SIGTERM/SIGINT.

    Exits 0 on a clean stop; :func:`main` maps :class:`ConfigError` to 78 and
    :class:`InstanceLockedError` (another supervisor holds the lock) to 69 (design §3).
    """
    from lmsupervisor.run import run_main

    run_main(args.config)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    """`lmsupervisor status [--json] [--socket PATH]`: print the supervisor's snapshot (design §5).

    Exits 0 ready, 1 reachable but not ready, 3 not running or not trusted (LSB). Usually
    answered by :func:`_fast_status` before argparse; this is the path for odd spellings.
    """
    return status_main(args.socket, as_json=args.json)


def cmd_events(args: argparse.Namespace) -> int:
    """`lmsupervisor events [--socket PATH]`: print each event as one NDJSON line until the supervisor stops.

    Exits 0 when the stream ends, 3 if no supervisor answers on the socket.
    """
    return events_main(args.socket)


def cmd_wait(args: argparse.Namespace) -> int:
    """`lmsupervisor wait [--timeout S] [--socket PATH]`: block until the supervisor is ready.

    ``--timeout`` is in seconds (default: forever). Exits 0 once ready, 1 if still not ready
    at the timeout, 3 if no supervisor answers (design §3).
    """
    return wait_main(args.socket, args.timeout)


def cmd_restart(args: argparse.Namespace) -> int:
    """`lmsupervisor restart [--daemon] [--socket PATH]`: ask for a restart of LM Studio's server.

    Sends ``POST /v1/restart`` (``?daemon=1`` restarts the daemon too, design §5). Exits 0
    when accepted (202), 1 when refused (the server's reason on stderr), 3 if not running.
    """
    from lmsupervisor.client.protocol import control_target

    return post_main(args.socket, control_target("restart", args.daemon))


def cmd_reload(args: argparse.Namespace) -> int:
    """`lmsupervisor reload [--socket PATH]`: ask the supervisor to reread its config.

    Sends ``POST /v1/reload`` (same as SIGHUP or a file change). Exits 0 when accepted (202),
    1 when refused, 3 if no supervisor answers.
    """
    from lmsupervisor.client.protocol import control_target

    return post_main(args.socket, control_target("reload"))


@_mapped
def status_main(socket_path: str | os.PathLike[str] | None, as_json: bool) -> int:
    """`lmsupervisor status`: 0 ready, 1 reachable but not ready, 3 not running or not trusted."""
    import json

    from lmsupervisor.client import Client

    snap = Client(socket_path).status()
    if as_json:
        sys.stdout.write(json.dumps(snap, indent=2) + "\n")
    else:
        from lmsupervisor.client.summary import summary

        try:
            text = summary(snap)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):  # a newer or odd shape
            _err("the status has a shape this version does not know; showing it as JSON")
            text = json.dumps(snap, indent=2)
        sys.stdout.write(text + "\n")
    return EXIT_OK if snap.get("ready") is True else EXIT_NOT_READY


@_mapped
def wait_main(socket_path: str | os.PathLike[str] | None, timeout: float | None) -> int:
    """`lmsupervisor wait`: 0 once ready, 1 if still not ready at the timeout, 3 if nobody answered."""
    from lmsupervisor.client import Client

    if Client(socket_path).wait_ready(timeout):
        return EXIT_OK
    _err(f"not ready after {timeout:g} s")
    return EXIT_NOT_READY


@_mapped
def events_main(socket_path: str | os.PathLike[str] | None) -> int:
    """`lmsupervisor events`: the raw NDJSON stream on stdout until the supervisor stops."""
    import json

    from lmsupervisor.client import Client, EventStream

    for event in EventStream(Client(socket_path).path):
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()
    return EXIT_OK


@_mapped
def post_main(socket_path: str | os.PathLike[str] | None, target: str) -> int:
    """`lmsupervisor restart|reload`: 0 accepted, 1 refused (the server's reason), 3 not running."""
    from lmsupervisor.client import Client

    answer = Client(socket_path).request("POST", target)
    if answer.status != 202:
        _err(answer.error())
        return EXIT_NOT_READY
    sys.stdout.write("accepted\n")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """`lmsupervisor demo`: the whole loop against a simulated LM Studio in a temporary folder.

    Exits 0 when LM Studio came back ready after the simulated crash, 1 otherwise.
    """
    from lmsupervisor.demo import demo_main

    return demo_main()


def cmd_native_host(args: argparse.Namespace) -> int:
    """`lmsupervisor native-host [install|uninstall]`: the browser native-messaging host.

    Without an action, serve a browser extension on stdin/stdout (exit 0 when stdin
    closes). ``install`` writes the host manifest and launcher for ``--browser``;
    ``uninstall`` removes them. Exits 0 on success, 2 for a refused plan
    (:class:`NativeHostInstallError`), 1 when writing or removing a file fails
    (:class:`NativeHostFileError`).
    """
    if args.native_command is None:
        from lmsupervisor.nativehost.host import host_main

        return host_main(args.config, args.socket)
    from lmsupervisor.lmstudio.install import Platform
    from lmsupervisor.nativehost import install as nhi

    platform = Platform.current()
    if args.native_command == "install":
        plan = nhi.plan_install(
            args.browser,
            args.extension_ids,
            platform,
            nhi.console_script(),
            name=args.name,
            config=args.config.resolve() if args.config else None,
            socket=args.socket.resolve() if args.socket else None,
        )
    else:
        plan = nhi.plan_uninstall(args.browser, platform, name=args.name)
    try:
        changed = nhi.apply(plan)
    except OSError as exc:
        raise NativeHostFileError(f"{exc.filename}: {exc.strerror}") from exc
    print(nhi.outcome(plan, changed, adding=args.native_command == "install"))
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    """`lmsupervisor simulate`: run a simulated LM Studio in the foreground, or send it a fault.

    Without ``--fault``, serves until Ctrl-C and prints the environment to use. With
    ``--fault`` (needs ``--home``), injects it into the simulator running there and exits.
    Exits 0 on success, 2 for ``--fault`` without ``--home``, 1 on :class:`SimulateError`.
    """
    from lmsupervisor.simulator.tool import send_fault, serve

    if args.fault:
        if args.home is None:
            _err("--fault needs --home: the folder a running `lmsupervisor simulate` printed as HOME")
            return EXIT_USAGE
        print(
            send_fault(
                args.home,
                args.fault,
                seconds=args.seconds,
                model=args.model,
                message=args.message,
                factor=args.factor,
                runtime=args.runtime,
            )
        )
        return EXIT_OK
    serve(
        sys.stdout,
        home=args.home,
        profile=args.profile,
        port=args.port,
        time_scale=args.time_scale,
        api_token=args.api_token,
        load=tuple(args.load),
    )
    return EXIT_OK


# -- service -----------------------------------------------------------------------------
def cmd_service(args: argparse.Namespace) -> int:
    """`lmsupervisor service install|uninstall|status [--user|--system] [--dry-run] [--config PATH]`.

    Renders the platform's unit (systemd, launchd, Windows task; design §8) and installs
    or removes it with the platform's own tool; ``--dry-run`` prints files and commands
    only. Exits 0 on success, 2 when ``--config`` names a missing file, 1 when ``--system``
    needs root or the service manager fails (:class:`ServiceError`). ``status`` exits like
    ``lmsupervisor status``: 0 ready, 1 not ready, 3 no active service.
    """

    from lmsupervisor.service.install import Installer, plan_for
    from lmsupervisor.service.status import linger_note, service_report

    if args.action == "status":
        report = service_report(args.scope, args.config)
        print(report.to_json() if args.json else report.text())
        return EXIT_NOT_RUNNING if not report.active else (EXIT_OK if report.ready else EXIT_NOT_READY)
    scope = args.scope or "user"
    if args.config is not None and not args.config.exists():
        _err(f"--config {args.config}: no such file (write one with `lmsupervisor config init {args.config}`)")
        return EXIT_USAGE
    plan = plan_for(scope, args.config)
    from lmsupervisor.platform import current as this_os

    root = this_os().is_root()
    if scope == "system" and plan.manager != "schtasks" and not root and not args.dry_run:
        _err(f"--system writes {plan.files[0].path}: run it with sudo (or look first with --dry-run)")
        return EXIT_FAILED
    print(f"lmsupervisor service {args.action} --{scope}: {plan.manager} {plan.unit}")
    owner = None
    if scope == "system" and plan.manager == "launchd" and root:  # the log folder belongs to the job's user
        entry = this_os().account(plan.unit.rsplit(".", 1)[-1])
        owner = None if entry is None else (entry.uid, entry.gid)
    installer = Installer(out=print, owner=owner)
    if args.action == "install":
        installer.install(plan, dry_run=args.dry_run)
    else:
        installer.uninstall(plan, dry_run=args.dry_run)
    if args.action == "install":
        for note in plan.notes if plan.linger is None else ():
            print(f"note: {note}")
        if plan.linger is not None:
            print(linger_note(plan.linger))
    return EXIT_OK


# -- a face and a voice (design §9) -------------------------------------------------------
def cmd_notify(args: argparse.Namespace) -> int:
    """`lmsupervisor notify test [--config PATH]`: send a test message to each ``[[notify]]``
    receiver, once, and print what each did. Exits 0 when every receiver took it, 1 when one
    did not or none is configured, 78 for a bad config."""
    import asyncio

    from lmsupervisor import config
    from lmsupervisor.clock import SystemClock
    from lmsupervisor.notify import send_tests

    cfg, path = config.load(args.config)
    if not cfg.notify:
        _err(f"{path}: no [[notify]] receiver to test (see config.example.toml)")
        return EXIT_FAILED
    results = asyncio.run(send_tests(cfg.notify, SystemClock()))
    for name, error in results:
        print(f"{name}: {'sent' if error is None else f'failed: {error}'}")
    return EXIT_OK if all(error is None for _, error in results) else EXIT_FAILED


def cmd_dashboard(args: argparse.Namespace) -> int:
    """`lmsupervisor dashboard [--no-browser] [--socket PATH]`: print the running supervisor's
    dashboard URL with its token (Jupyter-style ``?token=``) and open it in a browser, unless
    ``--no-browser`` or none is available. Exits 0, or 3 when no dashboard is served
    (:class:`DashboardError`: ``[dashboard] listen`` off, or no supervisor)."""
    from lmsupervisor.dashboard.tokenfile import dashboard_url

    url = dashboard_url(args.socket)
    print(url)
    if not args.no_browser:
        import webbrowser

        if not webbrowser.open(url):
            _err("no browser found here: open the URL above")
    return EXIT_OK
