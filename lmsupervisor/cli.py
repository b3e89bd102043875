"""The command line (design §3). The only module that exits with a code.

Exit codes: ``status``/``wait``: 0 ready, 1 reachable but not ready, 3 not running
(LSB). ``run``: 0 clean stop, 2 usage, 69 another instance holds the lock, 78 config
error. ``doctor``: 0 nothing wrong, 1 otherwise. Library code raises; an exception that
ends a command gets its exit code (and its message on stderr) from one table,
:data:`EXIT_CODES`, applied by :func:`main` and by the status commands' ``*_main``.

This module holds the table, :func:`main` (the one dispatch of every command) and the
status commands other tools call in loops (``status``, ``events``, ``wait``, ``restart``,
``reload``: their ``cmd_*`` and every ``*_main``). The commands that hand over to one room
each (``doctor``, ``config``, ``run``, ``service``, ``notify test``, ``dashboard`` ...) are
:mod:`lmsupervisor.clicommands`; the grammar is :mod:`lmsupervisor.cliparser`, `service
status` :mod:`lmsupervisor.service.status`, `native-host install`
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
        err(str(exc))
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
    from lmsupervisor import clicommands as c
    from lmsupervisor.cliparser import build_parser

    args = build_parser().parse_args(argv)
    handler = {
        "run": c.cmd_run,
        "status": cmd_status,
        "events": cmd_events,
        "wait": cmd_wait,
        "restart": cmd_restart,
        "reload": cmd_reload,
        "doctor": c.cmd_doctor,
        "config": c.cmd_config,
        "demo": c.cmd_demo,
        "native-host": c.cmd_native_host,
        "simulate": c.cmd_simulate,
        "service": c.cmd_service,
        "notify": c.cmd_notify,
        "dashboard": c.cmd_dashboard,
    }[args.command]
    return _mapped(handler)(args)


def script() -> NoReturn:
    """`python -m lmsupervisor`: run :func:`main` and exit the process with its code."""
    raise SystemExit(main())


def err(message: str) -> None:
    """Write ``message`` to stderr as ``lmsupervisor: message``."""
    sys.stderr.write(f"lmsupervisor: {message}\n")


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
            err("the status has a shape this version does not know; showing it as JSON")
            text = json.dumps(snap, indent=2)
        sys.stdout.write(text + "\n")
    return EXIT_OK if snap.get("ready") is True else EXIT_NOT_READY


@_mapped
def wait_main(socket_path: str | os.PathLike[str] | None, timeout: float | None) -> int:
    """`lmsupervisor wait`: 0 once ready, 1 if still not ready at the timeout, 3 if nobody answered."""
    from lmsupervisor.client import Client

    if Client(socket_path).wait_ready(timeout):
        return EXIT_OK
    err(f"not ready after {timeout:g} s")
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
        err(answer.error())
        return EXIT_NOT_READY
    sys.stdout.write("accepted\n")
    return EXIT_OK
