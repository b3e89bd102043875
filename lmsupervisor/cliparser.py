"""The grammar of the command line (design §3): every command, its options and their help.

:func:`build_parser` is all this module does; :mod:`lmsupervisor.cli` runs the command
parsed (``status`` first tries a fast path without argparse: other tools call it in loops).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lmsupervisor import __version__

# `simulate --fault` choices: the keys of lmsupervisor.simulator.tool.FAULTS (not imported
# here: every command parses its line, and the simulator is loaded only by `simulate`).
SIMULATOR_FAULTS = (
    "crash", "hang", "hang-http", "stop-server", "slow-start", "fail-load", "gpu-lost", "gpu-back",
    "gpu-late", "cpu-fallback", "runtime-update", "clear",
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command but the fast ``status`` path (:func:`lmsupervisor.cli.main`):
    its subcommands, options and help texts (design §3). Usage errors exit 2 (argparse)."""
    p = argparse.ArgumentParser(
        prog="lmsupervisor", description="Keeps a local LM Studio server alive with its models."
    )
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
        choices=SIMULATOR_FAULTS,
        help="send this fault to the simulator running under --home, then exit",
    )
    sm.add_argument(
        "--seconds",
        type=float,
        default=5.0,
        help="slow-start: extra wall seconds per start; gpu-late: simulated seconds without a GPU",
    )
    sm.add_argument("--model", help="fail-load: the model key whose loads fail")
    sm.add_argument("--message", help="fail-load: the error text (default: the version's guardrail)")
    sm.add_argument("--factor", type=float, default=20.0, help="cpu-fallback: how many times slower (default 20)")
    sm.add_argument("--runtime", help="runtime-update: the runtime it selects, name@version (default a CPU one)")
    nf = sub.add_parser("notify", help="push notifications ([[notify]] in the config)")
    nfs = nf.add_subparsers(dest="notify_command", required=True, metavar="ACTION")
    nt = nfs.add_parser("test", help="send a test message to each [[notify]] receiver")
    nt.add_argument("--config", type=Path)
    db = sub.add_parser("dashboard", help="print the local dashboard's URL (with its token) and open it")
    db.add_argument("--no-browser", action="store_true", help="print the URL only")
    sock(db)
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
