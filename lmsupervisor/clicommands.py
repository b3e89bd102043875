"""The commands that hand over to one room each: ``doctor``, ``config``, ``run``, ``demo``,
``native-host``, ``simulate``, ``service``, ``notify test`` and ``dashboard`` (design §3, §8,
§9). Each parses nothing (:mod:`lmsupervisor.cliparser` did), imports its room lazily and
returns an exit code from :mod:`lmsupervisor.cli`'s constants; an exception it ends with is
mapped by :data:`lmsupervisor.cli.EXIT_CODES` in :func:`lmsupervisor.cli.main`, the one
caller, which also holds the status commands and every ``*_main``.
"""

from __future__ import annotations

import sys

from lmsupervisor.cli import EXIT_FAILED, EXIT_NOT_READY, EXIT_NOT_RUNNING, EXIT_OK, EXIT_USAGE, err
from lmsupervisor.errors import NativeHostFileError

TYPE_CHECKING = False  # as in cli.py: no typing import at run time
if TYPE_CHECKING:
    import argparse


# -- doctor and config -----------------------------------------------------------------
def cmd_doctor(args: argparse.Namespace) -> int:
    """`lmsupervisor doctor [--json] [--config PATH]`: print a one-shot diagnosis, changing nothing.

    Text by default, or the :meth:`Diagnosis.to_json` dict with ``--json``. Exits 0 when no
    problem has severity ``"error"``, 1 otherwise; 78 for a bad config (raised to :func:`lmsupervisor.cli.main`).
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
            err(f"{path} exists; not overwriting it")
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


# -- run and demo --------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    """`lmsupervisor run [--config PATH]`: supervise in the foreground until SIGTERM/SIGINT.

    Exits 0 on a clean stop; :func:`lmsupervisor.cli.main` maps :class:`ConfigError` to 78 and
    :class:`InstanceLockedError` (another supervisor holds the lock) to 69 (design §3).
    """
    from lmsupervisor.run import run_main

    run_main(args.config)
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
            err("--fault needs --home: the folder a running `lmsupervisor simulate` printed as HOME")
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
        err(f"--config {args.config}: no such file (write one with `lmsupervisor config init {args.config}`)")
        return EXIT_USAGE
    plan = plan_for(scope, args.config)
    from lmsupervisor.platform import current as this_os

    root = this_os().is_root()
    if scope == "system" and plan.manager != "schtasks" and not root and not args.dry_run:
        err(f"--system writes {plan.files[0].path}: run it with sudo (or look first with --dry-run)")
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
        err(f"{path}: no [[notify]] receiver to test (see config.example.toml)")
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
            err("no browser found here: open the URL above")
    return EXIT_OK
