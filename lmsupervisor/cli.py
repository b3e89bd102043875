"""The command line (design §3). The only module that exits with a code.

Exit codes: ``status``/``wait``: 0 ready, 1 reachable but not ready, 3 not running
(LSB). ``run``: 0 clean stop, 2 usage, 69 another instance holds the lock, 78 config
error. ``doctor``: 0 nothing wrong, 1 otherwise.

Imports are lazy: ``lmsupervisor status`` is called in loops by other tools, so it must
not pay for httpx, structlog or asyncio.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: `status` must not pay for importing typing
if TYPE_CHECKING:
    import argparse

EXIT_OK = 0
EXIT_NOT_READY = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_LOCKED = 69  # EX_UNAVAILABLE
EXIT_CONFIG = 78  # EX_CONFIG


def _parser() -> argparse.ArgumentParser:
    import argparse
    from pathlib import Path

    p = argparse.ArgumentParser(
        prog="lmsupervisor", description="Keeps a local LM Studio server alive with its models."
    )
    from lmsupervisor import __version__

    p.add_argument("--version", action="version", version=f"lmsupervisor {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def sock(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--socket",
            type=Path,
            help="status socket (default: $LMSUPERVISOR_SOCKET, then status.socket, then the per-user runtime dir)",
        )

    run = sub.add_parser("run", help="run in the foreground (what services call)")
    run.add_argument("--config", type=Path)
    st = sub.add_parser("status", help="query the running supervisor")
    st.add_argument("--json", action="store_true")
    sock(st)
    ev = sub.add_parser("events", help="follow state changes as NDJSON")
    sock(ev)
    wt = sub.add_parser("wait", help="block until ready")
    wt.add_argument("--timeout", type=float, default=None, help="seconds (default: forever)")
    sock(wt)
    rs = sub.add_parser("restart", help="restart LM Studio's server")
    rs.add_argument("--daemon", action="store_true", help="restart the daemon too")
    sock(rs)
    rl = sub.add_parser("reload", help="reread the config")
    sock(rl)
    dr = sub.add_parser("doctor", help="one-shot diagnosis without a running supervisor")
    dr.add_argument("--json", action="store_true")
    dr.add_argument("--config", type=Path)
    cf = sub.add_parser("config", help="write, check or show the configuration")
    cfs = cf.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    ci = cfs.add_parser("init", help="write a commented starting config")
    ci.add_argument("path", nargs="?", type=Path)
    cc = cfs.add_parser("check", help="parse a config and report the first error")
    cc.add_argument("path", nargs="?", type=Path)
    cs = cfs.add_parser("show", help="print the effective config as TOML")
    cs.add_argument("--config", type=Path)
    sub.add_parser("demo", help="the whole loop against a simulated LM Studio")
    nh = sub.add_parser(
        "native-host",
        help="the browser native-messaging host (browsers start it; install registers it)",
        description="Without an action: serve a browser extension on stdin/stdout (the browser starts this).",
    )
    nh.add_argument("--config", type=Path)
    sock(nh)
    nhs = nh.add_subparsers(dest="native_command", metavar="ACTION")
    browsers = ("chrome", "chromium", "edge", "firefox")
    ni = nhs.add_parser("install", help="write the host manifest where the browser looks for it")
    ni.add_argument("--browser", choices=browsers, required=True)
    ni.add_argument(
        "--extension-id", dest="extension_ids", action="append", required=True, help="repeat for several extensions"
    )
    ni.add_argument("--name", default="org.lmsupervisor.host", help="host name the extension connects to")
    ni.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="config the host will read")
    ni.add_argument("--socket", type=Path, default=argparse.SUPPRESS, help="status socket the host will ask")
    nu = nhs.add_parser("uninstall", help="remove the host manifest and its launcher")
    nu.add_argument("--browser", choices=browsers, required=True)
    nu.add_argument("--name", default="org.lmsupervisor.host")
    sm = sub.add_parser(
        "simulate",
        help="run a simulated LM Studio in the foreground (or send a fault to one)",
        description="Run a simulated LM Studio until Ctrl-C, printing the environment to use; "
        "with --fault, inject a fault into the one running under --home.",
    )
    sm.add_argument("--profile", default="0.4", help="release line: 0.4, 0.4-app, 0.3.31, 0.3-cmdts, 0.3.10, 0.3")
    sm.add_argument("--home", type=Path, help="folder standing in for HOME (default: a temporary one)")
    sm.add_argument("--port", type=int, default=1234, help="LM Studio's HTTP port (default 1234)")
    sm.add_argument("--time-scale", type=float, default=1.0, help="multiplies simulated durations (default 1)")
    sm.add_argument("--api-token", help="require this API token (sk-lm-...), as 'Require Authentication'")
    sm.add_argument("--load", action="append", default=[], metavar="KEY", help="load this model at start")
    sm.add_argument(
        "--fault",
        choices=["crash", "hang", "hang-http", "stop-server", "slow-start", "fail-load", "clear"],
        help="send this fault to the simulator running under --home, then exit",
    )
    sm.add_argument("--seconds", type=float, default=5.0, help="slow-start: extra wall seconds per start")
    sm.add_argument("--model", help="fail-load: the model key whose loads fail")
    sm.add_argument("--message", help="fail-load: the error text (default: the version's guardrail)")
    sv = sub.add_parser("service", help="install, remove or inspect the system service (systemd, launchd, Windows)")
    sv.add_argument("action", choices=("install", "uninstall", "status"))
    scope = sv.add_mutually_exclusive_group()
    scope.add_argument(
        "--user", dest="scope", action="store_const", const="user", help="per-user unit, starts at login (default)"
    )
    scope.add_argument(
        "--system", dest="scope", action="store_const", const="system", help="starts at boot as you; needs root"
    )
    sv.add_argument("--dry-run", action="store_true", help="print the files and commands, change nothing")
    sv.add_argument("--config", type=Path, help="config file the service runs with (default: the usual lookup)")
    sv.add_argument("--json", action="store_true", help="status as JSON")
    return p


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
    from lmsupervisor.api.client import status_main

    return status_main(sock, as_json=as_json)


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``) and return its exit code.

    ``status`` is answered by a fast path without argparse. Errors every command may raise
    are mapped here: :class:`ConfigError` exits 78, :class:`InstanceLockedError` 69,
    Ctrl-C 130, a closed stdout (``BrokenPipeError``) 0; a usage error exits 2 (argparse).
    """
    fast = _fast_status(sys.argv[1:] if argv is None else argv)
    if fast is not None:
        return fast
    args = _parser().parse_args(argv)
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
    }[args.command]
    from lmsupervisor.errors import ConfigError, InstanceLockedError

    try:
        return handler(args)
    except ConfigError as exc:  # every command: the message names the TOML key
        _err(f"{exc.message} ({exc.hint})")
        return EXIT_CONFIG
    except InstanceLockedError as exc:
        _err(str(exc))
        return EXIT_LOCKED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


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
    import pathlib

    import platformdirs

    from lmsupervisor.lmstudio.capabilities import CapabilityCache

    state = pathlib.Path(platformdirs.user_state_dir("lmsupervisor", appauthor=False))
    diag = asyncio.run(
        diagnose(cfg, Platform.current(), capabilities=CapabilityCache(state / "capabilities.json", quiet=True))
    )
    if args.json:
        print(json.dumps(diag.to_json(), indent=2))
    else:
        print(render(diag))
    return EXIT_OK if diag.ok else EXIT_NOT_READY


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
        from lmsupervisor.api.socketdir import check_config

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
    from lmsupervisor.api.client import status_main

    return status_main(args.socket, as_json=args.json)


def cmd_events(args: argparse.Namespace) -> int:
    """`lmsupervisor events [--socket PATH]`: print each event as one NDJSON line until the supervisor stops.

    Exits 0 when the stream ends, 3 if no supervisor answers on the socket.
    """
    from lmsupervisor.api.client import events_main

    return events_main(args.socket)


def cmd_wait(args: argparse.Namespace) -> int:
    """`lmsupervisor wait [--timeout S] [--socket PATH]`: block until the supervisor is ready.

    ``--timeout`` is in seconds (default: forever). Exits 0 once ready, 1 if still not ready
    at the timeout, 3 if no supervisor answers (design §3).
    """
    from lmsupervisor.api.client import wait_main

    return wait_main(args.socket, args.timeout)


def cmd_restart(args: argparse.Namespace) -> int:
    """`lmsupervisor restart [--daemon] [--socket PATH]`: ask for a restart of LM Studio's server.

    Sends ``POST /v1/restart`` (``?daemon=1`` restarts the daemon too, design §5). Exits 0
    when accepted (202), 1 when refused (the server's reason on stderr), 3 if not running.
    """
    from lmsupervisor.api.client import post_main

    return post_main(args.socket, "/v1/restart" + ("?daemon=1" if args.daemon else ""))


def cmd_reload(args: argparse.Namespace) -> int:
    """`lmsupervisor reload [--socket PATH]`: ask the supervisor to reread its config.

    Sends ``POST /v1/reload`` (same as SIGHUP or a file change). Exits 0 when accepted (202),
    1 when refused, 3 if no supervisor answers.
    """
    from lmsupervisor.api.client import post_main

    return post_main(args.socket, "/v1/reload")


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
    (:class:`NativeHostInstallError`), 1 when writing or removing a file fails.
    """
    if args.native_command is None:
        from lmsupervisor.nativehost.host import host_main

        return host_main(args.config, args.socket)
    from lmsupervisor.lmstudio.install import Platform
    from lmsupervisor.nativehost import install as nhi

    platform = Platform.current()
    try:
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
    except nhi.NativeHostInstallError as exc:
        _err(str(exc))
        return EXIT_USAGE
    try:
        changed = nhi.apply(plan)
    except OSError as exc:
        _err(f"{exc.filename}: {exc.strerror}")
        return 1
    if args.native_command == "install":
        print(f"wrote {plan.manifest}\nwrote {plan.launcher}")
    else:
        print("\n".join(f"removed {p}" for p in changed) or f"nothing to remove for {args.browser}")
    if plan.registry_key is not None:
        verb = "register" if args.native_command == "install" else "unregister"
        print(f"Windows: {verb} it under {plan.registry_key}:")
        print(f"  {plan.registry_command(adding=args.native_command == 'install')}")
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    """`lmsupervisor simulate`: run a simulated LM Studio in the foreground, or send it a fault.

    Without ``--fault``, serves until Ctrl-C and prints the environment to use. With
    ``--fault`` (needs ``--home``), injects it into the simulator running there and exits.
    Exits 0 on success, 2 for ``--fault`` without ``--home``, 1 on :class:`SimulateError`.
    """
    from lmsupervisor.simulator.tool import SimulateError, send_fault, serve

    try:
        if args.fault:
            if args.home is None:
                _err("--fault needs --home: the folder a running `lmsupervisor simulate` printed as HOME")
                return EXIT_USAGE
            print(send_fault(args.home, args.fault, seconds=args.seconds, model=args.model, message=args.message))
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
    except SimulateError as exc:
        _err(f"{exc.message} ({exc.hint})")
        return EXIT_NOT_READY
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
    import os

    from lmsupervisor.service.install import Installer, ServiceError, plan_for

    if args.action == "status":
        return _service_status(args)
    scope = args.scope or "user"
    if args.config is not None and not args.config.exists():
        _err(f"--config {args.config}: no such file (write one with `lmsupervisor config init {args.config}`)")
        return EXIT_USAGE
    plan = plan_for(scope, args.config)
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    if scope == "system" and plan.manager != "schtasks" and not root and not args.dry_run:
        _err(f"--system writes {plan.files[0].path}: run it with sudo (or look first with --dry-run)")
        return EXIT_NOT_READY
    print(f"lmsupervisor service {args.action} --{scope}: {plan.manager} {plan.unit}")
    owner = None
    if scope == "system" and plan.manager == "launchd" and root:  # the log folder belongs to the job's user
        import pwd

        entry = pwd.getpwnam(plan.unit.rsplit(".", 1)[-1])
        owner = (entry.pw_uid, entry.pw_gid)
    installer = Installer(out=print, owner=owner)
    try:
        if args.action == "install":
            installer.install(plan, dry_run=args.dry_run)
        else:
            installer.uninstall(plan, dry_run=args.dry_run)
    except ServiceError as exc:
        _err(str(exc))
        return EXIT_NOT_READY
    if args.action == "install":
        for note in plan.notes if plan.linger is None else ():
            print(f"note: {note}")
        if plan.linger is not None:
            _linger_note(plan.linger)
    return EXIT_OK


def _linger_note(linger: tuple[str, ...]) -> None:
    """Linux user units start at boot only with lingering: say whether it is on, and how."""
    from lmsupervisor.service.install import run_command

    fix = f"loginctl enable-linger {linger[2]}"
    res = run_command(linger)
    if res.returncode == 0 and "Linger=yes" in res.stdout:
        print("lingering is on: the unit starts at boot, before anyone logs in")
    elif res.returncode == 0:
        print(f"note: lingering is off: the unit starts at your first login, not at boot; to start it at boot: `{fix}`")
    else:
        why = " ".join((res.stderr or res.stdout).split()) or f"exit {res.returncode}"
        print(f"note: could not ask logind whether lingering is on ({why}); to start the unit at boot: `{fix}`")


def _service_status(args: argparse.Namespace) -> int:
    import json

    from lmsupervisor import paths
    from lmsupervisor.api.client import request, resolve_socket
    from lmsupervisor.errors import StatusSocketError
    from lmsupervisor.service.install import installed_services, plan_for, query
    from lmsupervisor.service.report import rows

    if args.scope:
        states = [query(plan_for(args.scope, args.config))]
    else:
        states = installed_services() or [query(plan_for("user", args.config))]
    import os

    socket_path = resolve_socket(None)
    system = next((st for st in states if st.unit.startswith("lmsupervisor@")), None)
    if system is not None and not os.environ.get("LMSUPERVISOR_SOCKET") and (system.active or args.scope):
        user = system.unit.removeprefix("lmsupervisor@").removesuffix(".service")
        socket_path = paths.system_socket(user) or socket_path
    try:
        snap = request(socket_path, "GET", "/v1/status")[1]
    except StatusSocketError as exc:
        snap, reach = None, str(exc)
    else:
        reach = ""
    active = any(s.active for s in states)
    code = EXIT_NOT_RUNNING if not active else (EXIT_OK if snap and snap.get("ready") else EXIT_NOT_READY)
    if args.json:
        print(json.dumps({"services": [s.to_json() for s in states], "supervisor": snap}, indent=2))
        return code
    lines: list[tuple[str, str]] = []
    for st in states:
        if not st.installed and not st.loaded:
            lines.append(("lmsupervisor", f"not installed ({st.manager} {st.unit}); `lmsupervisor service install`"))
            continue
        lines += rows(st)
    lines.append(("supervisor", f"answering on {socket_path}" if snap is not None else reach))
    width = max(len(k) for k, _ in lines)
    print("\n".join(f"{k.ljust(width)}  {v}" for k, v in lines))
    if snap is not None:
        from lmsupervisor.api.status import summary

        print(summary(snap))
    return code
