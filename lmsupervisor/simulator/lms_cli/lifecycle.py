"""The simulated `lms daemon|server|status|version|bootstrap` (facts §1, §3, §8)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from lmsupervisor.pids import pid_alive
from lmsupervisor.simulator import common
from lmsupervisor.simulator.lms_cli.args import (
    HEAD_DAEMON,
    HEAD_DESCRIPTIONS,
    _UsageError,
    head_table,
    parse,
    term,
)
from lmsupervisor.simulator.lms_cli.output import err, fail, out, out_json
from lmsupervisor.simulator.lms_cli.service import PROBE_TIMEOUT, Base


class Lifecycle(Base):
    """`lms daemon`, `server`, `status`, `version` and `bootstrap`: the service's and the server's lifecycle."""

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
