"""The simulated `lms`'s command table, its help and argument errors in the profile's dialect
(facts §3, §8, §9), and :func:`main`."""

from __future__ import annotations

import sys
from typing import NoReturn

from lmsupervisor.simulator import common, profiles
from lmsupervisor.simulator.lms_cli.args import (
    HEAD_DESCRIPTIONS,
    HEAD_OPTIONS,
    HEAD_ROOT,
    ROOT_COMMANDS,
    _Help,
    _UsageError,
    head_table,
    term,
)
from lmsupervisor.simulator.lms_cli.lifecycle import Lifecycle
from lmsupervisor.simulator.lms_cli.models import Models
from lmsupervisor.simulator.lms_cli.output import _Exit, fail, out
from lmsupervisor.simulator.lms_cli.runtime import Runtime


class Cli(Lifecycle, Models, Runtime):
    """One `lms` invocation: the command table over every command group, and the
    profile's dialect for help and argument errors."""

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
