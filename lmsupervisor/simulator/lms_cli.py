"""The simulated `lms` CLI (``<home>/bin/lms`` runs :func:`main`).

Implements the subset in facts §3 with the same flags, the same stdout/stderr split
(logger text on stderr, JSON and tables on stdout), the same JSON shapes and the same
exit codes, quirks included:

- ``server status`` and ``daemon status`` exit 0 whether or not anything runs;
- ``unload <unknown id>`` prints "Model Not Found" and exits 0;
- loading a loaded model adds an instance ``<key>:2``;
- a plain ``server start`` starts with CORS off and bind 127.0.0.1 (and the daemon
  persists them), resetting the user's choice (BT#1334);
- what differs per release line (argument-error dialect, which ``daemon`` subcommands
  exist, ``--bind``, JSON shapes, BT#1720, ``daemon down`` returning before the exit,
  stack-shaped load errors and their guardrail text) is read from the install's row in
  :mod:`lmsupervisor.simulator.profiles`, never from version strings here.

Discovery follows [lms] ``createClient.ts``: probe the preferred API port
(``$LMS_API_SERVER_INFO_PATH`` or ``.internal/http-server.json``), then the simulator's
``api_ports`` list, all at once (each probe gives up after 3 s; on release lines before
2025-11-27, profile ``probe`` "greeting", it has no timeout, so a hung app holds it until
undici's 300 s); failing that, spawn the install named in
``.internal/llmster-install-location.json`` (if that file exists, its path must too: no
fall-back to the app, facts §8) or ``app-install-location.json``, and poll (60 s in all,
as the real one does).

Facts §9 too: help hides ``load --exact``/``--local``; cmd-ts help exits 1; an unknown
command with ``--help`` prints the root help; Commander help is coloured under
``FORCE_COLOR`` (not with ``NO_COLOR`` or ``FORCE_COLOR=0``), even on a pipe;
``$LMS_API_SERVER_INFO_PATH`` turns off both the port scan and the wake-up; the
``cli_passkey_rejected`` fault prints the authentication failure (BT#1566); LM Link
builds list ``deviceIdentifier`` and, with a linked device (``.sim/linked.json``, see
:meth:`lmsupervisor.simulator.home.SimInstall.link_device`), that device's models too,
listed first, so ``load --exact`` without ``--local`` picks the remote copy.

Every call first spends ``config.json`` ``lms_cost`` (CPU, then sleep): the price of
starting the real Node/bun binary, so benchmarks count what users pay.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from lmsupervisor.pids import pid_alive
from lmsupervisor.simulator import common, hardware, profiles

PROBE_TIMEOUT = 3.0  # s, as [js] findOrStartLlmster.ts ([lms] since 7795183, 2025-11-27)
# s: before that, [lms] createClient.ts fetched the API ports with no timeout of its own, so a
# hung app held discovery (and every command that needs the service) until undici's
# headersTimeout (300 s) ended the fetch.
UNBOUNDED_PROBE = 300.0
SPAWN_WAIT = 60.0  # s, 60 polls of 1 s in the real CLI; we poll faster, same deadline


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def err(line: str) -> None:
    """Write ``line`` to stderr, where lms's logger writes (facts §3).

    Info is unprefixed; the ``W `` and ``Error: `` prefixes are part of ``line``."""
    sys.stderr.write(line + "\n")


def out(line: str) -> None:
    """Write ``line`` to stdout, where lms writes JSON, the ``ls``/``ps`` tables and ``lms status`` (facts §3)."""
    sys.stdout.write(line + "\n")


SPINNER_END = "\n\x1b[K\x1b[?25h"  # the spinner's last line cleared, the cursor shown again, no newline


def out_json(value: Any) -> None:
    """JSON on stdout, compact as JavaScript's ``JSON.stringify`` writes it."""
    out(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def fail(line: str, code: int = 1) -> NoReturn:
    """Print ``line`` on stderr and end the command with exit ``code`` (default 1), as an lms error does (facts §3).

    Raises the private ``_Exit``, which :func:`main` turns into the exit code.
    """
    err(line)
    raise _Exit(code)


class _UsageError(Exception):
    """An argument the CLI's parser rejects; worded by the profile's dialect in :meth:`Cli.run`.

    ``kind`` is ``"command"`` (an unknown subcommand) or ``"option"``; ``path`` the command
    words before it (``["server", "start"]``).
    """

    def __init__(self, kind: str, arg: str, path: list[str]) -> None:
        self.kind, self.arg, self.path = kind, arg, path


class _Help(Exception):
    """``--help``/``-h`` on a command: :meth:`Cli.run` prints its options in the profile's
    dialect (Commander's ``Usage:``/``Options:``, cmd-ts's ``OPTIONS:``) and exits 0."""

    def __init__(self, path: list[str], options: list[str]) -> None:
        self.path, self.options = path, options


# -- arguments, Commander style -------------------------------------------------
COMMON_FLAGS = {"--quiet": False, "--verbose": False, "--log-level": True}
HIDDEN_FLAGS = ("--exact", "--local")  # `.hideHelp()` in [lms] load.ts (facts §9)
ROOT_COMMANDS = ("server", "ls", "ps", "load", "unload", "get")  # what the root help lists

# The HEAD help (what the real `lms` 07b7252 printed, colours off): each command's one-line
# description, and the options the simulator knows as that help shows them (short flags,
# value names, the first sentence of each description).
HEAD_DESCRIPTIONS = {
    "daemon": "Commands for managing the LM Studio daemon",
    "server": "Commands for managing the local server",
    "server start": "Starts the local server",
    "server stop": "Stops the local server",
    "server status": "Displays the status of the local server",
    "load": "Load a model",
    "ps": "List the models currently loaded in memory",
    "ls": "List the models available on disk",
    "unload": "Unload a model",
    "get": "Search and download local models or Hub artifacts",
}
HEAD_DAEMON = {
    "up": "Manually start the llmster daemon",
    "down": "Manually shutdown the llmster daemon",
    "status": "Check the status of the LM Studio daemon",
    "update": "Update the llmster daemon",
}
HEAD_OPTIONS = {
    "--port": ("-p, --port <port>", "Port to run the server on."),
    "--bind": ("--bind <address>", "Network address to bind the server to."),
    "--cors": ("--cors", "Enable CORS on the server."),
    "--gpu": ("--gpu <offload-ratio>", "GPU offload ratio."),
    "--context-length": ("-c, --context-length <length>", "The number of tokens to consider as context."),
    "--parallel": ("--parallel <count>", "Maximum number of predictions the model can run at a given time."),
    "--ttl": (
        "--ttl <seconds>",
        "TTL: If provided, when the model is not used for this number of seconds, it will be unloaded.",
    ),
    "--identifier": ("--identifier <identifier>", "The identifier to assign to the loaded model."),
    "--estimate-only": ("--estimate-only", "Calculate an estimate of the resources required to load the model."),
    "--yes": ("-y, --yes", "Automatically approve all prompts."),
    "--json": ("--json", "Outputs in JSON format to stdout."),
}
HEAD_ROOT = """Usage: lms [options] [command]

Local models
   chat               Start an interactive chat with a model
   get                Search and download local models or Hub artifacts
   load               Load a model
   unload             Unload a model
   ls                 List the models available on disk
   ps                 List the models currently loaded in memory
   import             Import a model file into LM Studio

Serve
   server             Commands for managing the local server
   log                Log incoming and outgoing messages

Remote Instances
   link               Commands for managing LM Link

Runtime
   runtime            Manage and update the inference runtime

Develop & Publish (Beta)
   clone              Clone an artifact from LM Studio Hub to a local folder
   push               Uploads the artifact in the current folder to LM Studio Hub
   dev                Starts a plugin dev server in the current folder
   login              Authenticate with LM Studio
   logout             Log out of LM Studio
   whoami             Check the current authentication status

Learn more:           https://lmstudio.ai/docs/developer
Join our Discord:     https://discord.gg/lmstudio"""


def head_table(rows: list[tuple[str, str]]) -> list[str]:
    """HEAD's help table: three spaces, the term padded to the longest plus 12, the text."""
    width = max(len(term_) for term_, _ in rows) + 12
    return [f"   {term(term_)}{' ' * (width - len(term_))}{text}" for term_, text in rows]


def coloured() -> bool:
    """Commander's help colours: on under ``FORCE_COLOR`` even on a pipe, off with
    ``NO_COLOR`` or ``FORCE_COLOR`` ``0``/``false`` (facts §9)."""
    force = os.environ.get("FORCE_COLOR")
    if os.environ.get("NO_COLOR") or force in ("0", "false"):
        return False
    return force is not None


def term(text: str) -> str:
    """A help term (a subcommand or an option) as Commander prints it: bold when coloured."""
    return f"\x1b[1m{text}\x1b[22m" if coloured() else text


def parse(
    args: list[str],
    spec: dict[str, bool],
    aliases: dict[str, str] | None = None,
    max_positional: int = 1,
    path: list[str] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Parse ``args`` against ``spec`` (flag -> takes a value), Commander's way.

    Unknown options raise :class:`_UsageError` (``path`` names the command, for cmd-ts's
    box); :meth:`Cli.run` prints them in the profile's dialect and exits 1.
    """
    if "--help" in args or "-h" in args:
        shown = {k: v for k, v in spec.items() if k not in HIDDEN_FLAGS}
        raise _Help(path or [], [f"{k} <value>" if v else k for k, v in shown.items()])
    spec = {**spec, **COMMON_FLAGS}
    aliases = aliases or {}
    opts: dict[str, Any] = {}
    positional: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("-") and a != "-":
            name, _, inline = a.partition("=")
            name = aliases.get(name, name)
            if name not in spec:
                raise _UsageError("option", a, path or [])
            if spec[name]:
                if inline:
                    opts[name] = inline
                elif i + 1 < len(args):
                    i += 1
                    opts[name] = args[i]
                else:
                    fail(f"error: option '{name} <value>' argument missing")
            else:
                opts[name] = True
        else:
            positional.append(a)
        i += 1
    if len(positional) > max_positional:
        fail(
            f"error: too many arguments. Expected {max_positional} "
            f"argument{'s' if max_positional != 1 else ''} but got {len(positional)}."
        )
    return opts, positional


# -- talking to the service --------------------------------------------------------
def _request(host: str, port: int, method: str, path: str, body: bytes, timeout: float) -> Any:
    """One HTTP/1.0 exchange over a plain socket; the JSON body of a 200, else None.

    Not urllib: importing it (http.client, email, ssl) costs more than the whole rest
    of a call, and every `lms` call pays its imports. Raises OSError and ValueError.
    """
    head = (
        f"{method} {path} HTTP/1.0\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.sendall(head.encode() + body)
        chunks = []
        while data := conn.recv(65536):
            chunks.append(data)
    status_line, _, rest = b"".join(chunks).partition(b"\r\n")
    if status_line.split(b" ", 2)[1:2] != [b"200"]:
        return None
    return json.loads(rest.partition(b"\r\n\r\n")[2])


def _get(host: str, port: int, path: str, timeout: float) -> dict[str, Any] | None:
    try:
        found = _request(host, port, "GET", path, b"", timeout)
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


class Service:
    """A connection to the simulated daemon's API port."""

    def __init__(self, port: int) -> None:
        self.port = port

    def rpc(self, method: str, timeout: float = 600.0, **params: Any) -> dict[str, Any]:
        """Call ``method`` of the daemon's ``POST /sim/rpc`` (the stand-in for LM Studio's websocket) with ``params``.

        ``timeout`` is in seconds (a load can take long). Returns the reply dict (``{}`` for a
        non-200 answer); a refused or dropped connection fails the command with
        ``Error: Lost connection to LM Studio: ...`` and exit 1.
        """
        body = json.dumps({"method": method, "params": params}).encode()
        try:
            found = _request("127.0.0.1", self.port, "POST", "/sim/rpc", body, timeout)
        except (OSError, ValueError) as exc:
            fail(f"Error: Lost connection to LM Studio: {exc}")
        return found if isinstance(found, dict) else {}


class Cli:
    """One `lms` invocation: the home (found as lms finds it, facts §1), the settings and the release-line profile."""

    def __init__(self) -> None:
        self.home = common.lmstudio_home()
        self.config = common.load_config(self.home)
        self.profile = profiles.get(str(self.config["profile"]))

    def _valid_reply(self, port: int) -> bool:
        if self.profile.probe == "greeting":  # before 2025-11 the probe was /lmstudio-greeting, unbounded
            reply = _get("127.0.0.1", port, "/lmstudio-greeting", UNBOUNDED_PROBE)
            return reply == {"lmstudio": True}
        status = _get("127.0.0.1", port, "/lms-status", PROBE_TIMEOUT)
        return status is not None and isinstance(status.get("package"), str) and isinstance(status.get("version"), str)

    def preferred_port(self) -> int | None:
        """The preferred API port (facts §1 step 1), or None when absent or unreadable.

        ``port`` of the file ``$LMS_API_SERVER_INFO_PATH`` names, else of ``.internal/http-server.json``."""
        info_path = os.environ.get("LMS_API_SERVER_INFO_PATH")
        path = Path(info_path) if info_path else self.home / ".internal" / "http-server.json"
        info = common.read_json(path, None)
        if isinstance(info, dict) and isinstance(info.get("port"), int):
            return int(info["port"])
        return None

    def find(self) -> Service | None:
        """Discovery without waking anything."""
        preferred = self.preferred_port()
        if preferred is not None and self._valid_reply(preferred):
            return Service(preferred)
        if os.environ.get("LMS_API_SERVER_INFO_PATH"):
            return None  # an explicit info path disables the scan
        found = self._first_valid([int(p) for p in self.config["api_ports"] if p != preferred])
        return None if found is None else Service(found)

    def _first_valid(self, ports: list[int]) -> int | None:
        """The first of ``ports`` to give a valid reply, all probed at once as [lms] scans
        them (``Promise.any``): a port that never answers holds the result only while no
        other port has answered."""
        if len(ports) <= 1:
            return ports[0] if ports and self._valid_reply(ports[0]) else None
        import queue  # only for a scan of several ports: every `lms` call pays its imports
        import threading

        replies: queue.Queue[int | None] = queue.Queue()

        def probe(port: int) -> None:
            replies.put(port if self._valid_reply(port) else None)

        for port in ports:
            threading.Thread(target=probe, args=(port,), daemon=True).start()
        for _ in ports:
            if (answered := replies.get()) is not None:
                return answered
        return None

    def _install_location(self) -> tuple[dict[str, Any], bool] | None:
        """``(location, is_app)`` of the install to spawn, or None (facts §1 step 2, §8).

        ``llmster-install-location.json`` wins when it exists, even if its path is gone
        (lms then errors out; it does not fall back to the app).
        """
        internal = self.home / ".internal"
        for name, is_app in (("llmster-install-location.json", False), ("app-install-location.json", True)):
            if not (internal / name).exists():
                continue
            loc = common.read_json(internal / name, None)
            if isinstance(loc, dict) and isinstance(loc.get("path"), str) and Path(loc["path"]).exists():
                return loc, is_app
            return None
        return None

    def connect(self, namespaces: tuple[str, ...] = ("System",), settles: bool = True) -> Service:
        """Discovery that wakes the daemon/app, as every real client command does; then the
        handshake on ``namespaces`` (see :meth:`_authenticate`)."""
        found = self.find()
        if found is not None:
            self._authenticate(namespaces, settles)
            return found
        if os.environ.get("LMS_API_SERVER_INFO_PATH"):  # facts §9: no scan and no wake-up either
            err(f"LM Studio is not running at the API server named in {os.environ['LMS_API_SERVER_INFO_PATH']}.")
            fail("Error: Failed to start or connect to local LM Studio API server.")
        located = self._install_location()
        if located is None:
            err("LM Studio daemon is not running and no valid installation could be found or installed.")
            fail("Error: Failed to start or connect to local LM Studio API server.")
        loc, is_app = located
        err("Waking up LM Studio service...")  # [js] findOrStartLlmster.ts, logger.info
        argv = [loc["path"]]
        if isinstance(loc.get("argv"), list) and loc["argv"][1:2] == ["."]:
            argv.append(".")
        if is_app:
            argv.append("--run-as-service")
        env = dict(os.environ)
        if sys.platform.startswith("linux"):
            env.setdefault("DISPLAY", ":0")
        import subprocess  # only when waking the service: it costs every call otherwise

        child = subprocess.Popen(
            argv,
            cwd=loc.get("cwd") or None,
            env=env,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + SPAWN_WAIT
        while time.monotonic() < deadline:
            found = self.find()
            if found is not None:
                self._authenticate(namespaces, settles)
                return found
            if child.poll() is not None:
                break
            time.sleep(0.02)
        else:
            err("Timed out waiting for LM Studio daemon to start.")
            fail("Error: Failed to start or connect to local LM Studio API server.")
        err("LM Studio daemon is not running and no valid installation could be found or installed.")
        fail("Error: Failed to start or connect to local LM Studio API server.")

    def _authenticate(self, namespaces: tuple[str, ...] = ("System",), settles: bool = True) -> None:
        """The websocket handshake: with the ``cli_passkey_rejected`` fault the service
        refuses this CLI's passkey (BT#1566), printed as the real CLI does (facts §9).

        ``namespaces`` are the sockets the command opens (``System``, ``LLM``, ...) and
        ``settles`` False for a command whose promise never settles on that error (HEAD:
        `ps`, `unload`, exit 13); both only matter to the ``head`` shape."""
        if common.load_faults(self.home).get("cli_passkey_rejected"):
            if self.profile.auth_error == "head":
                fail(profiles.auth_failed_head(namespaces, settles), 1 if settles else 13)
            fail(profiles.AUTH_FAILED_STDERR)

    # -- commands ------------------------------------------------------------
    def run(self, argv: list[str]) -> None:
        """Run the command ``argv`` (without the program name).

        Argument errors are printed in the profile's dialect and exit 1 (facts §3, §8)."""
        try:
            self._dispatch(argv)
        except _UsageError as exc:
            self._usage_error(argv, exc)
        except _Help as shown:
            self._help(shown)

    def _help(self, shown: _Help) -> None:
        """Help on stdout: Commander exits 0 (coloured under ``FORCE_COLOR``), cmd-ts exits
        1 (facts §9). A supervisor's capability detection reads it (facts §8)."""
        name = " ".join(["lms", *shown.path])
        if self.profile.dialect == "cmdts":
            out(name)
            out("")
            out("OPTIONS:")
            for opt in shown.options:
                out(f"  {opt} [optional]")
            out("")
            out("FLAGS:")
            out("  --help, -h - show help")
            raise _Exit(1)
        if self.profile.help_layout == "head":
            command = " ".join(shown.path)
            out(f"Usage: {name} [options]{' [model-key]' if command == 'load' else ''}")
            out("")
            out(HEAD_DESCRIPTIONS.get(command, ""))
            out("")
            rows = [HEAD_OPTIONS.get(opt.split()[0], (opt, "")) for opt in shown.options]
            arguments = [("model-key", "The model key to load.")] if command == "load" else []
            table = head_table(arguments + rows)  # one width for both tables
            if arguments:
                out("Arguments:")
                out(table[0])
                out("")
            out("Options:")
            for line in table[len(arguments) :]:
                out(line)
            return
        out(f"Usage: {name} [options]")
        out("")
        out("Options:")
        for opt in shown.options:
            out(f"  {term(opt)}")
        out(f"  {term('-h, --help')}  display help for command")

    def _root_help(self) -> None:
        """The root help, which both dialects print for an unknown command with ``--help``
        (facts §9): Commander exits 0, cmd-ts 1."""
        if self.profile.dialect == "cmdts":
            out("lms <subcommand>")
            out("> LM Studio CLI")
            out("")
            out("where <subcommand> can be one of:")
            out("")
            for name in ROOT_COMMANDS:
                out(f"- {name}")
            out("")
            out("For more help, try running `lms <subcommand> --help`")
            raise _Exit(1)
        if self.profile.help_layout == "head":
            out(HEAD_ROOT)
            return
        out("Usage: lms [options] [command]")
        out("")
        out("Options:")
        out(f"  {term('-h, --help')}  display help for command")
        out("")
        out("Commands:")
        for name in ROOT_COMMANDS:
            out(f"  {term(name)}")

    def _usage_error(self, argv: list[str], exc: _UsageError) -> NoReturn:
        """Print ``exc`` as Commander (``error: unknown ...``) or cmd-ts (an error box) would."""
        if self.profile.dialect == "cmdts":
            start = len(exc.path)
            bad = argv.index(exc.arg, start) if exc.arg in argv[start:] else start
            message = "Not a valid subcommand name" if exc.kind == "command" else "Unknown arguments"
            fail(profiles.cmdts_error(argv, bad, message, ["lms", *exc.path]))
        fail(f"error: unknown {exc.kind} '{exc.arg}'")

    def _dispatch(self, argv: list[str]) -> None:
        if not argv:
            out("lms - LM Studio CLI (simulated)")
            return
        if argv[0] in ("-v", "--version"):
            out(f"CLI commit: {self.config['cli_commit']}")
            return
        commands = {
            "server": self.cmd_server,
            "ps": self.cmd_ps,
            "ls": self.cmd_ls,
            "load": self.cmd_load,
            "unload": self.cmd_unload,
            "get": self.cmd_get,
            "version": self.cmd_version,
            "bootstrap": self.cmd_bootstrap,
            "status": self.cmd_status,
        }
        if self.profile.daemon:
            commands["daemon"] = self.cmd_daemon
        if self.profile.runtime_commands:
            commands["runtime"] = self.cmd_runtime
        handler = commands.get(argv[0])
        if handler is None and ("--help" in argv or "-h" in argv):
            self._root_help()
            return
        if handler is None:
            raise _UsageError("command", argv[0], [])
        handler(argv[1:])

    def cmd_daemon(self, args: list[str]) -> None:
        """`lms daemon up|down|status [--json]` (facts §3, §8), on profiles that have a ``daemon`` command.

        ``status`` never wakes anything and always exits 0 (``{"status":"not-running"}`` or
        ``{"status":"running","pid","isDaemon"}``); ``up`` wakes the service and prints
        ``{"status","pid","isDaemon","version"}`` with ``--json``; ``down`` exits 1 when nothing
        runs or the GUI app holds the service, and on 0.4 prints ``Done.`` before the daemon has
        exited. ``update`` exits 1 (not simulated).
        """
        if args[:1] in (["--help"], ["-h"]) and self.profile.help_layout == "head":
            out("Usage: lms daemon [options] [command]")
            out("")
            out(HEAD_DESCRIPTIONS["daemon"])
            out("")
            out("Commands:")
            for line in head_table([(sub, text) for sub, text in HEAD_DAEMON.items() if sub in self.profile.daemon]):
                out(line)
            return
        if args[:1] in (["--help"], ["-h"]):
            out("Usage: lms daemon [options] [command]")
            out("")
            out("Commands:")
            for sub in ("status", "up", "down", "update"):
                if sub in self.profile.daemon:
                    out(f"  {term(sub)} [options]")
            out("  help [command]  display help for command")
            return
        if not args or args[0] not in self.profile.daemon:
            raise _UsageError("command", args[0] if args else "", ["daemon"])
        sub, rest = args[0], args[1:]
        opts, _ = parse(
            rest, {"--json": False, "--beta": False, "--channel": True}, max_positional=0, path=["daemon", sub]
        )
        as_json = bool(opts.get("--json"))
        # [lms] src/subcommands/daemon/*.ts: `console.info` (stdout) for up/status, the
        # logger (stderr) for down.
        if sub == "status":
            svc = self.find()
            if svc is None:
                if as_json:
                    out_json({"status": "not-running"})
                else:
                    out("LM Studio is not running")
                return
            self._authenticate()  # `daemon status` asks the service over the websocket
            info = svc.rpc("info", timeout=PROBE_TIMEOUT)
            if as_json:
                out_json({"status": "running", "pid": info["pid"], "isDaemon": info["isDaemon"]})
            else:
                name = "llmster" if info["isDaemon"] else "LM Studio"
                out(f"{name} v{info['version']} is running (PID: {info['pid']})")
            return
        if sub == "up":
            svc = self.find()
            started = svc is None
            if svc is None:
                svc = self.connect()
            else:
                self._authenticate()
            info = svc.rpc("info", timeout=PROBE_TIMEOUT)
            if as_json:
                out_json(
                    {"status": "running", "pid": info["pid"], "isDaemon": info["isDaemon"], "version": info["version"]}
                )
            elif started:
                out(f"{'llmster' if info['isDaemon'] else 'LM Studio'} started (PID: {info['pid']}).")
            elif info["isDaemon"]:
                out(f"The daemon is already running (PID: {info['pid']}).")
            else:
                out(f"LM Studio is already running (PID: {info['pid']}); not starting a second daemon.")
            return
        if sub == "down":
            svc = self.find()
            if svc is None:
                fail("Daemon is not running.")
            self._authenticate()
            info = svc.rpc("info", timeout=PROBE_TIMEOUT)
            if not info["isDaemon"]:
                fail("The daemon is currently running as part of LM Studio. Please exit LM Studio to stop it.")
            err("Shutting down llmster...")
            svc.rpc("shutdown", timeout=PROBE_TIMEOUT)
            if self.profile.daemon_down_waits:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and pid_alive(int(info["pid"])):
                    time.sleep(0.02)
            err("Done.")  # facts §8: on 0.4 this is printed while the daemon is still exiting
            return
        fail("Error: llmster update is not available in the simulator.")

    def _server_running(self, cfg: dict[str, Any] | None) -> tuple[bool, int | None]:
        """`checkHttpServer` as ``server stop``/``status`` call it: at the saved address.

        With ``verify_at_bind`` (BT#1720) a saved ``0.0.0.0`` is probed literally and fails,
        so both report "not running" while the server serves.
        """
        if not isinstance(cfg, dict):
            return False, None
        port = int(cfg.get("port", 1234))
        host = str(cfg.get("networkInterface") or "127.0.0.1") if self.profile.verify_at_bind else "127.0.0.1"
        return self._greets(host, port, 1.0), port

    def _greets(self, host: str, port: int, timeout: float) -> bool:
        """[lms] ``checkHttpServer``: ``GET http://${host}:${port}/lmstudio-greeting``.

        ``0.0.0.0`` fails (BT#1720); so does an IPv6 address without brackets (``::1``,
        ``::``, as `--bind` takes it): written into the URL so it is no URL, and fetch
        throws before any request.
        """
        if host == "0.0.0.0" or (":" in host and not host.startswith("[")):
            return False
        return _get(common.socket_hosts(host)[0], port, "/lmstudio-greeting", timeout) == {"lmstudio": True}

    def cmd_server(self, args: list[str]) -> None:
        """`lms server start|stop|status` (facts §3, §8).

        ``status`` always exits 0 (``{"running","port"}`` with ``--json``); ``stop`` exits 1 with
        ``The server is not running.``; ``start [-p N] [--bind addr] [--cors]`` sends CORS off
        and bind 127.0.0.1 unless given (BT#1334), verifies with ``/lmstudio-greeting`` (500 ms,
        up to 5 times, 1 s apart) and exits 1 with ``Failed to verify the server is running``,
        also for ``--bind 0.0.0.0`` on profiles with ``verify_at_bind`` (BT#1720).
        """
        if args[:1] in (["--help"], ["-h"]) and self.profile.dialect == "commander":
            # Commander answers `--help` on a command that has subcommands (the real 07b7252: exit 0)
            out("Usage: lms server [options] [command]")
            out("")
            if self.profile.help_layout == "head":
                out(HEAD_DESCRIPTIONS["server"])
                out("")
                out("Commands:")
                for line in head_table(
                    [(sub, HEAD_DESCRIPTIONS[f"server {sub}"]) for sub in ("start", "stop", "status")]
                ):
                    out(line)
            else:
                out("Commands:")
                for sub in ("start", "stop", "status"):
                    out(f"  {term(sub)} [options]")
                out("  help [command]  display help for command")
            return
        if not args or args[0] not in ("start", "stop", "status"):
            raise _UsageError("command", args[0] if args else "", ["server"])
        sub, rest = args[0], args[1:]
        cfg_path = self.home / ".internal" / "http-server-config.json"
        cfg = common.read_json(cfg_path, None)
        path = ["server", sub]
        if sub == "status":
            opts, _ = parse(rest, {"--json": False}, max_positional=0, path=path)
            running, port = self._server_running(cfg)
            if opts.get("--json"):
                out_json({"running": running, "port": port} if port is not None else {"running": running})
            elif running:
                err(f"The server is running on port {port}.")
            else:
                err("The server is not running.")
            return
        if sub == "stop":
            parse(rest, {}, max_positional=0, path=path)
            if not self._server_running(cfg)[0]:
                fail("Error: The server is not running.")
            svc = self.connect()
            reply = svc.rpc("server_stop")
            if "error" in reply:
                fail(f"Error: {reply['error']}")
            err(f"Stopped the server on port {reply['port']}.")
            return
        spec = {"--port": True, "--cors": False}
        if self.profile.bind_flag:
            spec["--bind"] = True
        opts, _ = parse(rest, spec, aliases={"-p": "--port"}, max_positional=0, path=path)
        try:
            port = int(opts["--port"]) if "--port" in opts else int((cfg or {}).get("port", 1234))
        except (TypeError, ValueError):
            fail(f"error: option '-p, --port <port>' argument '{opts.get('--port')}' is invalid.")
        bind: str | None = None
        if self.profile.bind_flag:
            bind = str(opts.get("--bind") or os.environ.get("LMS_SERVER_HOST") or "127.0.0.1")
        cors = bool(opts.get("--cors", False))
        svc = self.connect()
        if cors:
            err("W CORS is enabled. This means any website you visit can use the LM Studio server.")
        if bind is not None and bind != "127.0.0.1":
            err("W Server will accept connections from the network. Only use this if you know what you are doing!")
        # Before --bind (facts §8) networkInterface was not sent: the saved one is kept.
        reply = svc.rpc("server_start", port=port, cors=cors, networkInterface=bind)
        host = bind if bind is not None and self.profile.verify_at_bind else "127.0.0.1"
        verified = "error" not in reply
        if verified:
            for attempt in range(5):  # 500 ms timeout, up to 5 times, 1 s apart
                if self._greets(host, port, 0.5):
                    break
                if attempt < 4:
                    common.sleep_simulated(self.config, 1.0)
            else:
                verified = False
        if not verified:
            fail("Error: Failed to verify the server is running. Please try to use another port.")
        err(f"Success! Server is now running on port {port}")

    def cmd_ps(self, args: list[str]) -> None:
        """`lms ps [--json]` (facts §3): the loaded instances; always exit 0.

        With ``--json`` the `ps --json` array (``{identifier, path}`` items on ``legacy``
        profiles, facts §8), else the table; when empty, stderr ``No models are currently loaded.``"""
        opts, _ = parse(args, {"--json": False}, max_positional=0, path=["ps"])
        models = self._with_devices(self.connect(("Repository", "LLM"), False).rpc("list_loaded")["models"], "loaded")
        if opts.get("--json"):
            if self.profile.ps_json == "legacy":  # before ≈0.3.11 (facts §8)
                out_json([{"identifier": m["identifier"], "path": m["path"]} for m in models])
            else:
                out_json([_schema_order(_zod_optional(m)) for m in models])
            return
        if not models:
            err("No models are currently loaded.\n\nTo load a model, run:\n\n    lms load <model path>")
            return
        rows = [["IDENTIFIER", "MODEL", "STATUS", "SIZE", "CONTEXT", "PARALLEL", "DEVICE", "TTL"]]
        for m in models:
            ttl = f"{m['ttlMs'] // 1000}s" if m.get("ttlMs") else ""
            rows.append(
                [
                    m["identifier"],
                    m["modelKey"],
                    m["status"].upper(),
                    common.format_size(m["sizeBytes"]),
                    str(m["contextLength"]),
                    str(m.get("parallel", "")),
                    m.get("deviceIdentifier") or "Local",
                    ttl,
                ]
            )
        out("")  # columnify's table, after a blank line, as the real 07b7252 printed it
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            out("    ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))

    def cmd_ls(self, args: list[str]) -> None:
        """`lms ls [key] [--llm] [--embedding] [--json]` (facts §3): the downloaded models; always exit 0.

        With ``--json`` the `ls --json` array (no ``modelKey`` on profiles before 2025-01,
        facts §8), else ``You have N models, ...`` and the table."""
        opts, pos = parse(
            args, {"--json": False, "--llm": False, "--embedding": False, "--variants": False}, path=["ls"]
        )
        models = self._with_devices(self.connect(("Repository", "System")).rpc("list_downloaded")["models"], "models")
        if opts.get("--llm"):
            models = [m for m in models if m["type"] == "llm"]
        if opts.get("--embedding"):
            models = [m for m in models if m["type"] == "embedding"]
        if pos:
            models = [m for m in models if pos[0] in (m["modelKey"], m["path"])]
        if opts.get("--json"):
            if not self.profile.ls_model_key:  # before [js] 52ff1cbe (2025-01-28)
                models = [{k: v for k, v in m.items() if k != "modelKey"} for m in models]
            out_json([_zod_optional(m) for m in models])
            return
        total = sum(m["sizeBytes"] for m in models)
        out(f"You have {len(models)} models, taking up {common.format_size(total)} of disk space.")
        out("")
        out("LLM  PARAMS  ARCH  SIZE")
        for m in models:
            out(
                f"{m['modelKey']}  {m.get('paramsString') or ''}  {m['architecture']}  "
                f"{common.format_size(m['sizeBytes'])}"
            )

    def cmd_load(self, args: list[str]) -> None:
        """`lms load [key] [--exact] [--yes] [--ttl s] [--identifier id] ...` (facts §3, §8).

        ``--exact`` matches ``path`` exactly; otherwise a fuzzy subsequence match, which needs
        ``--yes`` (the simulator has no interactive prompt).

        Loading a loaded model adds ``<key>:2``. Exits 1 for an invalid ``--gpu``/``--context-length``/
        ``--ttl``/``--parallel``, no match, or a failed load, which prints an uncaught-error stack
        whose last ``- Caused By:`` is the cause (facts §8); prints the success lines on stderr.
        """
        opts, pos = parse(
            args,
            {
                "--gpu": True,
                "--context-length": True,
                "--parallel": True,
                "--identifier": True,
                "--estimate-only": False,
                "--yes": False,
                "--exact": False,
                **({"--ttl": True} if self.profile.ttl_flag else {}),
                **({"--local": False} if self.profile.load_local else {}),
            },
            aliases={"-c": "--context-length", "-y": "--yes"},
            path=["load"],
        )
        if "--gpu" in opts:
            gpu = str(opts["--gpu"]).strip().lower()
            if gpu not in ("off", "max"):
                try:
                    ratio = float(gpu)
                except ValueError:
                    fail(f"error: option '--gpu <offload-ratio>' argument '{opts['--gpu']}' is invalid. Not a number")
                if not 0 <= ratio <= 1:
                    fail(
                        f"error: option '--gpu <offload-ratio>' argument '{opts['--gpu']}' "
                        "is invalid. Number out of range, must be between 0 and 1"
                    )
        for flag in ("--context-length", "--ttl", "--parallel"):
            if flag in opts:
                try:
                    ok = int(opts[flag]) >= 1
                except ValueError:
                    ok = False
                if not ok:
                    fail(
                        f"error: option '{flag}' argument '{opts[flag]}' is invalid. Expected an integer of at least 1"
                    )
        svc = self.connect(("Repository", "System"))
        models = self._with_devices(svc.rpc("list_downloaded")["models"], "models")
        if opts.get("--local"):
            models = [m for m in models if m.get("deviceIdentifier") is None]
        path = pos[0] if pos else None
        if opts.get("--exact"):
            if path is None:
                fail("Path not provided\n\n    The parameter [path] is required when using the --exact flag.")
            model = next((m for m in models if m["path"] == path), None)
            if model is None:
                shortest = min((m["path"] for m in models), key=len, default="")
                fail(  # [lms] load.ts, as the real 07b7252 printed it
                    f'Model not found\n\nNo model found with path being exactly "{path}".'
                    "\n\nTo disable exact matching, remove the --exact flag.\n\n"
                    "To see a list of all downloaded models, run:\n\n    lms ls\n\n"
                    f"Note, you need to provide the full model path. For example:\n\n"
                    f"  lms load --exact {shortest}"
                )
        else:
            # fuzzy over model keys since 066002e (2026-02-11, LM Link builds), over paths before
            by = "modelKey" if self.profile.load_local else "path"
            matches = [m for m in models if _fuzzy(path or "", m[by])]
            if not opts.get("--yes"):
                fail("Error: the simulated lms has no interactive prompt; pass --yes or --exact.")
            if not matches:
                fail(
                    f"Model not found\n\nNo model found that matches {'model key' if by == 'modelKey' else 'path'} "
                    f'"{path}".\n\n'
                    "To see a list of all downloaded models, run:\n\n    lms ls\n\n"
                    "To select a model interactively, remove the --yes flag:\n\n    lms load"
                )
            if len(matches) > 1:
                err(f"W {len(matches)} models match the provided path. Loading the first one.")
            model = matches[0]
        if opts.get("--estimate-only"):
            err(f"Model: {model['path']}")
            err(f"Estimated Total Memory: {common.format_size(int(model['sizeBytes'] * 1.1))}")
            return
        started = time.monotonic()
        if model.get("deviceIdentifier") is not None:  # LM Link: loaded on the other machine
            inst = self._load_remote(model, opts.get("--identifier"))
            err(f"Model loaded successfully in {common.format_elapsed(time.monotonic() - started)}.")
            err(f'To use the model in the API/SDK, use the identifier "{inst}".')
            return
        if self.profile.load_spinner:  # hides the cursor, one spinner frame; see SPINNER_END
            sys.stdout.write(f"\x1b[?25l\nLoading {model['modelKey']} \u280b")
            sys.stdout.flush()
        reply = svc.rpc(
            "load",
            modelKey=model["modelKey"],
            identifier=opts.get("--identifier"),
            ttl=int(opts["--ttl"]) if "--ttl" in opts else None,
            contextLength=int(opts["--context-length"]) if "--context-length" in opts else None,
            gpu=opts.get("--gpu"),
        )
        if self.profile.load_spinner:
            sys.stdout.write(SPINNER_END)
            sys.stdout.flush()
        if "error" in reply:  # HEAD: a titled error (facts §9); before: an SDK stack (facts §8)
            shape = profiles.load_error_titled if self.profile.load_error == "titled" else profiles.load_error_stack
            fail(shape(str(reply["error"])))
        inst = reply["instance"]
        err(f"Model loaded successfully in {common.format_elapsed(time.monotonic() - started)}.")
        size = common.format_size_1024 if self.profile.load_size_1024 else common.format_size
        err(f"({size(model['sizeBytes'])})")
        err(f'To use the model in the API/SDK, use the identifier "{inst["identifier"]}".')

    def _linked(self) -> dict[str, Any] | None:
        """The linked LM Link device, ``.sim/linked.json`` ``{"device", "models", "loaded"}``
        (None: no device linked, or a build without LM Link)."""
        if not self.profile.load_local:
            return None
        linked = common.read_json(common.sim_dir(self.home) / "linked.json", None)
        return linked if isinstance(linked, dict) and isinstance(linked.get("device"), str) else None

    def _with_devices(self, items: list[dict[str, Any]], which: str) -> list[dict[str, Any]]:
        """``items`` as this build lists them (facts §9): on LM Link builds with
        ``deviceIdentifier`` null for this machine's and the linked device's ``which``
        (``models`` or ``loaded``) first; before LM Link without the key."""
        if not self.profile.load_local:  # before LM Link (2026-02) there is no such key
            return [{k: v for k, v in m.items() if k != "deviceIdentifier"} for m in items]
        linked = self._linked()
        here = [{**m, "deviceIdentifier": None} for m in items]
        if linked is None:
            return here
        there = [{**m, "deviceIdentifier": linked["device"]} for m in linked.get(which, [])]
        return [*there, *here]

    def _load_remote(self, model: dict[str, Any], identifier: str | None) -> str:
        """Load ``model`` on the linked device; returns the instance identifier."""
        path = common.sim_dir(self.home) / "linked.json"
        linked = common.read_json(path, {})
        taken = {i["identifier"] for i in linked.get("loaded", [])}
        ident = identifier or model["modelKey"]
        n = 2
        while ident in taken:
            ident, n = f"{identifier or model['modelKey']}:{n}", n + 1
        entry = {k: v for k, v in model.items() if k != "deviceIdentifier"}
        linked.setdefault("loaded", []).append(common.linked_instance(entry, ident))
        common.write_json(path, linked)
        return ident

    def cmd_unload(self, args: list[str]) -> None:
        """`lms unload <id> | --all` (facts §3).

        An unknown id prints ``Model Not Found`` and exits 0; no argument with nothing loaded exits 1."""
        opts, pos = parse(args, {"--all": False}, aliases={"-a": "--all"}, path=["unload"])
        svc = self.connect(("Repository", "LLM"), False)
        if opts.get("--all"):  # [lms] unload.ts, as the real 07b7252 printed it
            loaded = svc.rpc("list_loaded")["models"]
            for m in loaded:
                err(f'Unloading "{m["identifier"]}"...')
            count = svc.rpc("unload_all")["count"] if loaded else 0
            err({0: "No models to unload.", 1: "Unloaded 1 model."}.get(count, f"Unloaded {count} models."))
            return
        if not pos:
            loaded = svc.rpc("list_loaded")["models"]
            if not loaded:
                fail('You don\'t have any models loaded. Use "lms load" to load a model.')
            fail("Error: the simulated lms has no interactive prompt; name the model.")
        if svc.rpc("unload", identifier=pos[0])["found"]:
            err(f'Model "{pos[0]}" unloaded.')
        else:
            err(  # facts §3: exits 0 all the same
                f'Model Not Found\n\nCannot find a model with the identifier "{pos[0]}".\n\n'
                "To see a list of loaded models, run:\n\n    lms ps"
            )

    def cmd_get(self, args: list[str]) -> None:
        """`lms get <name[@quant]>` (facts §3): download from the simulated hub, ``@quant`` ignored.

        Exits 1 without a name or when the hub has no such model."""
        _, pos = parse(
            args,
            {"--yes": False, "--mlx": False, "--gguf": False, "--select": False, "--always-show-all-results": False},
            aliases={"-y": "--yes"},
            path=["get"],
        )
        if not pos:
            fail("Error: the simulated lms needs a model name.")
        name = pos[0].split("@", 1)[0]
        reply = self.connect().rpc("download", model=name)
        if "error" in reply:
            fail(f"Error: {reply['error']}")
        if reply["status"] == "already_downloaded":
            err(f"Model already downloaded. To use, run: lms load {reply['modelKey']}")
        else:
            err(f"Download completed. To use, run: lms load {reply['modelKey']}")

    def cmd_version(self, args: list[str]) -> None:
        """`lms version [--json]` (facts §3, §8): the CLI's commit (0.4) or semver (0.3), not the app's; exit 0."""
        opts, _ = parse(args, {"--json": False}, max_positional=0, path=["version"])
        version = self.profile.cli_version  # a commit on 0.4, the CLI's own semver on 0.3 (facts §8)
        if opts.get("--json"):
            out_json({"version": version})
        else:
            out(f"lms - LM Studio CLI - v{version}" if "." in version else f"CLI commit: {version}")

    def cmd_bootstrap(self, args: list[str]) -> None:
        """`lms bootstrap [-y]` (facts §1): append the PATH line to the shell rc files that exist and lack it.

        Exits 1 when ``<home>/bin`` is missing, no rc file exists, or on Linux without ``--yes``;
        prints ``✓ Already Installed`` when every rc file has it.
        """
        opts, _ = parse(args, {"--yes": False}, aliases={"-y": "--yes"}, max_positional=0, path=["bootstrap"])
        bin_dir = self.home / "bin"
        if not bin_dir.is_dir():
            fail("Cannot find LM Studio installation. Please run LM Studio at least once.")
        user_home = Path.home()
        rc_files = [".profile", ".bashrc", ".bash_profile", ".zshrc", ".config/fish/config.fish", ".cshrc", ".tcshrc"]
        existing = [user_home / r for r in rc_files if (user_home / r).is_file()]
        if not existing:
            fail("Unable to find any shell configuration files.")
        todo = [p for p in existing if str(bin_dir) not in p.read_text(errors="replace")]
        if not todo:
            err("✓ Already Installed")
            return
        if sys.platform.startswith("linux") and not opts.get("--yes"):
            fail("Error: the simulated lms has no interactive prompt; pass --yes.")
        for rc in todo:
            if rc.name == "config.fish":
                line = f"set -gx PATH $PATH {bin_dir}"
            elif rc.name in (".cshrc", ".tcshrc"):
                line = f'setenv PATH "$PATH:{bin_dir}"'
            else:
                line = f'export PATH="$PATH:{bin_dir}"'
            with rc.open("a") as f:
                f.write(f"\n# Added by LM Studio CLI tool (lms)\n{line}\n")
        err("✓ Added LM Studio CLI tool (lms) to PATH. Open a new terminal window to use it.")

    def cmd_runtime(self, args: list[str]) -> None:
        """`lms runtime ls|select|survey` ([lms] ``src/subcommands/runtime/``; data in
        :mod:`lmsupervisor.simulator.hardware`), on profiles since 2025-09-23; ``survey``
        since 2025-12-18. ``remove``, ``update`` and ``get`` exist but are not simulated (exit 1).

        - ``ls``: the ``LLM ENGINE / SELECTED / MODEL FORMAT`` table on stdout (columnify,
          ``name@version``, ``✓`` on selected engines), sorted by name then newest version;
          ``No runtimes found.`` on stderr when none;
        - ``select <name[@version]> [--latest]``: per model format of the engine,
          ``Selected <name>@<version> for <format>`` or ``Already selected ...`` on stderr;
          no match or several: the real lines, exit 1;
        - ``survey [--json] [--refresh]``: ``JSON.stringify(result, null, 2)`` of
          ``client.runtime.surveyHardware(refresh ? {type: "selected"} : undefined)`` in
          the profile's schema, or the text summary of the llama.cpp engine.
        """
        subs = ["ls", "select", "remove", "update", "get"]
        if self.profile.survey_schema is not None:
            subs.append("survey")
        if args[:1] in (["--help"], ["-h"]):
            out("Usage: lms runtime [options] [command]")
            out("")
            out("Manage and update the inference runtime")
            out("")
            out("Commands:")
            for sub in subs:
                out(f"   {term(sub)}")
            return
        if not args or args[0] not in subs:
            raise _UsageError("command", args[0] if args else "", ["runtime"])
        sub, rest = args[0], args[1:]
        if sub == "ls":
            parse(rest, {}, max_positional=0, path=["runtime", "ls"])
            self._runtime_ls(self.connect(("Runtime",)).rpc("list_engines"))
        elif sub == "select":
            opts, pos = parse(rest, {"--latest": False}, path=["runtime", "select"])
            self._runtime_select(pos[0] if pos else None, bool(opts.get("--latest")))
        elif sub == "survey":
            opts, _ = parse(rest, {"--json": False, "--refresh": False}, max_positional=0, path=["runtime", "survey"])
            scope = {"type": "selected"} if opts.get("--refresh") else None
            result = self.connect(("Runtime",)).rpc("survey", scope=scope)["result"]
            if opts.get("--json"):
                out(json.dumps(result, indent=2, ensure_ascii=False))  # JSON.stringify(x, null, 2)
            else:
                self._survey_text(result)
        else:
            fail(f"Error: lms runtime {sub} is not available in the simulator.")

    def _runtime_ls(self, reply: dict[str, Any]) -> None:
        """Print `lms runtime ls` ([lms] list.ts) from a ``list_engines`` reply."""
        chosen = {f"{spec['name']}@{spec['version']}" for spec in reply["selections"].values()}
        engines = sorted(reply["engines"], key=lambda e: _version_key(e["version"]), reverse=True)
        engines.sort(key=lambda e: e["name"])
        if not engines:
            err("No runtimes found.")
            return
        rows = [
            (
                f"{e['name']}@{e['version']}",
                "✓" if f"{e['name']}@{e['version']}" in chosen else "",
                ", ".join(e["supportedModelFormatNames"]),
            )
            for e in engines
        ]
        for line in _columnify(
            [("LLM ENGINE", "left"), ("SELECTED", "center"), ("MODEL FORMAT", "center")], rows, "    "
        ):
            out(line)

    def _runtime_select(self, alias: str | None, latest: bool) -> None:
        """`lms runtime select` ([lms] select.ts): ``alias`` is ``name`` or ``name@version``."""
        if alias is None and not latest:
            fail("Error: Must specify at least one of [alias] or --latest")
        if alias is not None and latest and "@" in alias:
            fail("Error: Cannot specify version with --latest.")
        svc = self.connect(("Runtime",))
        reply = svc.rpc("list_engines")
        engines, selections = reply["engines"], reply["selections"]
        if alias is None:  # the newest version of each selected engine
            wanted = []
            for fmt, spec in selections.items():
                versions = [e["version"] for e in engines if e["name"] == spec["name"]]
                newest = max(versions, key=_version_key, default=spec["version"])
                wanted.append(({"name": spec["name"], "version": newest}, [fmt]))
        else:
            name, _, version = alias.partition("@")
            found = [e for e in engines if e["name"] == name and (not version or e["version"] == version)]
            if latest and found:
                found = [max(found, key=lambda e: _version_key(e["version"]))]
            if not found:
                fail(
                    f"No installed runtime extensions found matching: {alias}\n\n"
                    "Use 'lms runtime ls' to see installed runtime extensions."
                )
            if len(found) > 1:
                listed = "\n".join(f"  - {e['name']}@{e['version']}" for e in found)
                fail(f"Multiple runtime extensions found:\n\n{listed}\n\nPlease disambiguate by specifying a version.")
            wanted = [
                ({"name": found[0]["name"], "version": found[0]["version"]}, found[0]["supportedModelFormatNames"])
            ]
        for spec, formats in wanted:
            for fmt in formats:
                current = selections.get(fmt)
                if current == spec:
                    err(f"Already selected {spec['name']}@{spec['version']} for {fmt}")
                    continue
                svc.rpc("select_engine", name=spec["name"], version=spec["version"], modelFormatName=fmt)
                err(f"Selected {spec['name']}@{spec['version']} for {fmt}")

    def _survey_text(self, result: dict[str, Any]) -> None:
        """`lms runtime survey` without ``--json`` ([lms] survey.ts): the llama.cpp engine's
        GPUs, CPU, RAM and, unless compatible, its compatibility (colours off)."""
        engines = result["engines"]
        if not engines:
            out("No runtime survey results")
            return
        engine = next((e for e in engines if e["engine"] == "llama.cpp"), engines[0])
        size = common.format_size_1024 if self.profile.load_size_1024 else common.format_size
        out(f"Survey by {engine['name']} ({engine['version']})")
        gpus = engine["hardwareSurvey"]["gpuSurveyResult"]["gpuInfo"]
        if not gpus:
            out("No GPUs detected")
        else:
            rows = [
                (
                    f"{g['name']} ({hardware.label(g['detectionPlatform'])}, {hardware.label(g['integrationType'])})",
                    " " + size(g["dedicatedMemoryCapacityBytes"] or g["totalMemoryCapacityBytes"]),
                )
                for g in gpus
            ]
            for line in _columnify([("GPU/ACCELERATORS", "left"), ("VRAM", "left")], rows, "   "):
                out(line)
        cpu = engine["hardwareSurvey"]["cpuSurveyResult"].get("cpuInfo")
        out("")
        if cpu is None:
            out("CPU: unavailable")
        else:
            extensions = ", ".join(cpu["supportedInstructionSetExtensions"])
            out(f"CPU: {hardware.label(cpu['architecture'])}{f' ({extensions})' if extensions else ''}")
        out(f"RAM: {size(engine['memoryInfo']['ramCapacity'])}")
        status = engine["compatibility"]["status"]
        if hardware.label(status) != "Compatible":
            message = engine["compatibility"].get("message")
            dash = " — " if self.profile.survey_schema == 1 else " - "  # d6729dc: an em dash
            out(f"Compatibility: {hardware.label(status)}{dash + message if message is not None else ''}")

    def cmd_status(self, args: list[str]) -> None:
        """`lms status` ([lms] ``status.ts``, facts §3): server on/off and the loaded models on stdout; exit 0.

        It checks the server's greeting first and connects only when it answers, so with the
        server off it wakes nothing (the real 07b7252 did not): ``Server:  OFF `` and a
        ``lms server start`` hint; on: ``Server: ON (port: N)``, then ``No Models Loaded`` or
        ``Loaded Models`` and a ``  · <id> - <size>`` line per instance."""
        parse(args, {}, max_positional=0, path=["status"])
        cfg = common.read_json(self.home / ".internal" / "http-server-config.json", {})
        port = int(cfg.get("port", 1234)) if isinstance(cfg, dict) else 1234
        if not self._greets("127.0.0.1", port, 1.0):
            out("Server:  OFF \n\n(i) To start the server, run the following command:\n\n    lms server start")
            return
        out(f"Server: ON (port: {port})")
        out("")
        models = self.connect(("LLM", "Embedding", "System")).rpc("list_loaded")["models"]
        if not models:
            out("No Models Loaded")
            return
        out("Loaded Models")
        for m in models:
            out(f"  · {m['identifier']} - {common.format_size(m['sizeBytes'])}")


def _zod_optional(model: dict[str, Any]) -> dict[str, Any]:
    """``model`` without its unset optional keys: the service leaves them out (null fails
    the SDK's zod check), so the real `lms` prints no ``"paramsString": null``."""
    return {k: v for k, v in model.items() if not (k in common.MODEL_OPTIONAL and v is None)}


# The real `ps --json` key order: the SDK's zod parse rebuilds each instance in its schema's
# order (facts §3 sample; what the real 07b7252 printed from the simulator's websocket).
_PS_ORDER = (
    *common.MODEL_INFO_HEAD,
    *common.MODEL_OPTIONAL,
    "identifier",
    "ttlMs",
    "lastUsedTime",
    "vision",
    "trainedForToolUse",
    "maxContextLength",
    "contextLength",
    "status",
    "queued",
    "parallel",
)


def _schema_order(instance: dict[str, Any]) -> dict[str, Any]:
    """``instance`` with its keys in :data:`_PS_ORDER`, any others after them."""
    ordered = {k: instance[k] for k in _PS_ORDER if k in instance}
    return {**ordered, **{k: v for k, v in instance.items() if k not in ordered}}


def _version_key(version: str) -> tuple[int, ...]:
    """[lms] ``compareVersions``: dotted numbers compared as numbers (others as 0)."""
    return tuple(int(part) if part.isdigit() else 0 for part in version.split("."))


def _columnify(columns: list[tuple[str, str]], rows: Sequence[Sequence[str]], splitter: str) -> list[str]:
    """The lines `columnify` prints for ``rows`` under ``columns`` ``(heading, "left" |
    "center")``: each cell padded to its column's widest (heading included), centred with
    the extra space on the right when odd, cells joined by ``splitter``."""
    widths = [max(len(cell) for cell in column) for column in zip(*[[h for h, _ in columns], *rows], strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = []
        for cell, width, (_, align) in zip(cells, widths, columns, strict=True):
            left = (width - len(cell)) // 2 if align == "center" else 0
            padded.append(" " * left + cell + " " * (width - len(cell) - left))
        return splitter.join(padded)

    return [line([h for h, _ in columns]), *(line(row) for row in rows)]


def _fuzzy(pattern: str, text: str) -> bool:
    """``fuzzy.filter``'s rule: the pattern's characters appear in order (case-insensitive)."""
    it = iter(text.lower())
    return all(ch in it for ch in pattern.lower())


def main(argv: list[str] | None = None) -> int:
    """Run one `lms` command; returns its exit code."""
    try:
        cli = Cli()
        common.burn(cli.config.get("lms_cost"))
        cli.run(sys.argv[1:] if argv is None else argv)
    except _Exit as exc:
        return exc.code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
