"""Capabilities of an `lms` binary (facts §8): parsed from its help, cached per binary."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from lmsupervisor.core.capabilities import CliCapabilities, HelpOutput, bind_problem, dialect_of, parse_help
from lmsupervisor.lmstudio.capabilities import CapabilityCache
from lmsupervisor.lmstudio.lms import LmsClient, LmsResult

COMMANDER_DAEMON = "Usage: lms daemon [options] [command]\n\nCommands:\n  status [options]\n  up [options]\n"
CMDTS_BOX = "error: found 1 error\n\n  daemon --help\n  ^ Not a valid subcommand name\n"


def test_commander_with_daemon_up_and_bind() -> None:
    """A Commander `lms` that lists `daemon status/up` and `--bind`: those, nothing more."""
    caps = parse_help(
        "/l",
        "1:2",
        "07b7252",
        HelpOutput(0, COMMANDER_DAEMON, ""),
        HelpOutput(0, "Options:\n  -p, --port <port>\n  --bind <address>\n  --cors\n", ""),
        HelpOutput(0, "Options:\n  --exact\n", ""),
    )
    assert (caps.dialect, caps.daemon, caps.bind, caps.local) == ("commander", {"status", "up"}, True, False)


def test_coloured_commander_help_is_read() -> None:
    """Commander colours help under FORCE_COLOR even on a pipe (`ESC[1mup`, facts §9): the
    subcommands and options are found all the same."""
    daemon = (
        "Usage: lms daemon [options] [command]\n\nCommands:\n  \x1b[1mstatus\x1b[22m [options]\n  \x1b[1mup\x1b[22m\n"
    )
    caps = parse_help(
        "/l",
        "1:2",
        "07b7252",
        HelpOutput(0, daemon, ""),
        HelpOutput(0, "Options:\n  \x1b[1m--bind\x1b[22m <address>\n", ""),
        HelpOutput(0, "Options:\n", ""),
    )
    assert (caps.dialect, caps.daemon, caps.bind) == ("commander", {"status", "up"}, True)


def test_cmdts_without_daemon_and_legacy_json() -> None:
    """cmd-ts's error box names the dialect; a CLI semver below 0.3.11 means the old JSON shapes."""
    caps = parse_help(
        "/l",
        "1:2",
        "0.3.10",
        HelpOutput(1, "", CMDTS_BOX),
        HelpOutput(0, "OPTIONS:\n  --port <value> [optional]\n", ""),
        HelpOutput(0, "OPTIONS:\n  --exact [optional]\n", ""),
    )
    assert (caps.dialect, caps.daemon, caps.bind, caps.ps_json, caps.ls_model_key) == (
        "cmdts",
        frozenset(),
        False,
        "legacy",
        False,
    )


# What the real CLIs print (facts §9): cmd-ts exits 1 after any --help, and prints its root
# help for an unknown subcommand; Commander prints its root help with exit 0.
CMDTS_ROOT = "lms <subcommand>\n> LM Studio CLI\n\nwhere <subcommand> can be one of:\n\n- status\n- server\n"
CMDTS_START = (
    "lms server start\n\nOPTIONS:\n  --port, -p <number> - Port [optional]\n\nFLAGS:\n  --cors\n  --help, -h\n"
)
CMDTS_LOAD_038 = "lms load\n\nOPTIONS:\n  --gpu <str> [optional]\n  --identifier <str> [optional]\n\nFLAGS:\n  --yes\n"
COMMANDER_ROOT = "Usage: lms [options] [command]\n\nOptions:\n  -h, --help\n\nCommands:\n  server\n  ls\n"


def test_both_real_dialects_are_recognised_from_help() -> None:
    """cmd-ts help exits 1 and an unknown `daemon` prints the root help (no error box);
    Commander's `daemon --help` before `daemon` existed prints the root help, exit 0. Both
    dialects are named, and a `0.0.x` version (the CLI package, before 2026-01) is not
    mistaken for a 0.3.x app older than 0.3.11 (facts §9)."""
    cmdts = parse_help(
        "/l", "1:2", "0.0.14", HelpOutput(1, CMDTS_ROOT, ""), HelpOutput(1, CMDTS_START, ""), HelpOutput(1, "", "")
    )
    commander = parse_help(
        "/l",
        "1:2",
        "0.0.39",
        HelpOutput(0, COMMANDER_ROOT, ""),
        HelpOutput(0, "Usage: lms server start [options]\n\nOptions:\n  --port <port>\n", ""),
        HelpOutput(0, "Usage: lms load [options] [path]\n", ""),
    )
    assert [(c.dialect, c.daemon, c.ps_json) for c in (cmdts, commander)] == [
        ("cmdts", frozenset(), "instance"),
        ("commander", frozenset(), "instance"),
    ]


def test_ttl_is_known_from_load_help() -> None:
    """`--ttl` arrived in 0.3.9 (facts §9): absent from a readable `load --help`, it is not
    passed; an unreadable help does not take it away."""
    old = parse_help("/l", "1:2", "0.0.9", HelpOutput(1, CMDTS_ROOT, ""), HelpOutput(1, CMDTS_START, ""),
                     HelpOutput(1, CMDTS_LOAD_038, ""))  # fmt: skip
    new = parse_help("/l", "1:2", "0.0.14", HelpOutput(1, CMDTS_ROOT, ""), HelpOutput(1, CMDTS_START, ""),
                     HelpOutput(1, CMDTS_LOAD_038 + "  --ttl <number> [optional]\n", ""))  # fmt: skip
    blind = parse_help("/l", "1:2", None, HelpOutput(1, "", ""), HelpOutput(1, "", ""), HelpOutput(1, "", "boom"))
    assert (old.ttl, new.ttl, blind.ttl) == (False, True, True)
    assert CliCapabilities.from_json("/l", "1:2", old.to_json()) == old


def test_dialect_wordings() -> None:
    """Commander's `error: unknown command` and cmd-ts's `Unknown arguments` are told apart."""
    assert [dialect_of(t) for t in ("error: unknown command 'daemon'", "  ^ Unknown arguments", "???")] == [
        "commander",
        "cmdts",
        "unknown",
    ]


def test_cache_round_trip_is_strict() -> None:
    """The on-disk form reads back equal; a malformed entry is ignored, not trusted."""
    caps = CliCapabilities("/l", "1:2", "abc", "commander", frozenset({"up"}), True, False)
    assert CliCapabilities.from_json("/l", "1:2", caps.to_json()) == caps
    assert CliCapabilities.from_json("/l", "1:2", {**caps.to_json(), "dialect": "bogus"}) is None
    assert CliCapabilities.from_json("/l", "1:2", {"daemon": 3}) is None


def test_bind_problem_only_when_it_matters() -> None:
    """No --bind: a declared bind that differs from LM Studio's saved one is a warning with the fix."""
    old = CliCapabilities("/l", "s", "0.3.31", "commander", frozenset({"status"}), False, False)
    new = CliCapabilities("/l", "s", "07b7252", "commander", frozenset({"up"}), True, False)
    problem = bind_problem("0.0.0.0", "127.0.0.1", old)
    assert problem is not None and "Serve on Local Network" in problem.fix
    assert [bind_problem("0.0.0.0", "127.0.0.1", new), bind_problem("127.0.0.1", "127.0.0.1", old)] == [None, None]


class CountingRunner:
    """An `lms` that answers as a 0.4 one and counts its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    async def run(self, *args: str, timeout: float | None = None) -> LmsResult:
        self.calls.append(args)
        answers: dict[tuple[str, ...], str] = {
            ("version", "--json"): '{"version":"07b7252"}',
            ("daemon", "--help"): COMMANDER_DAEMON,
        }
        out = answers.get(args, "--bind --local")
        return LmsResult(("lms", *args), 0, out, "", 1.0)


def test_detected_once_per_binary_and_again_when_it_changes(tmp_path: Path) -> None:
    """Five calls the first time; none from memory or from the state file (a new supervisor);
    five again once the binary's mtime changes (an LM Studio update)."""
    binary = tmp_path / "lms"
    binary.write_text("#!/bin/sh\n")
    runner = CountingRunner()
    state = tmp_path / "state" / "capabilities.json"
    first = asyncio.run(CapabilityCache(state).get(binary, LmsClient(runner)))
    cache = CapabilityCache(state)
    again = asyncio.run(cache.get(binary, LmsClient(runner)))
    assert (len(runner.calls), again) == (5, first)
    st = binary.stat()
    os.utime(binary, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    asyncio.run(cache.get(binary, LmsClient(runner)))
    assert len(runner.calls) == 10


# `daemon --help`, `server start --help` and `load --help` as the real `lms` 07b7252 (built
# from lmstudio-ai/lms + lmstudio-js) printed them with NO_COLOR=1; load's long option
# descriptions cut at 100 columns. Three-space indents, a description line, no `-h, --help`.
REAL_DAEMON_HELP = (
    "Usage: lms daemon [options] [command]\n"
    "\n"
    "Commands for managing the LM Studio daemon\n"
    "\n"
    "Commands:\n"
    "   up                Manually start the llmster daemon\n"
    "   down              Manually shutdown the llmster daemon\n"
    "   status            Check the status of the LM Studio daemon\n"
    "   update            Update the llmster daemon\n"
)
REAL_SERVER_START_HELP = (
    "Usage: lms server start [options]\n"
    "\n"
    "Starts the local server\n"
    "\n"
    "Options:\n"
    "   -p, --port <port>            Port to run the server on. If not provided, the server\n"
    "                                will run on the same port as the last time it was started.\n"
    '   --bind <address>             Network address to bind the server to. Use "0.0.0.0" to\n'
    '                                accept connections from the local network, or "127.0.0.1"\n'
    "                                (default) for localhost only. Can also be set via the\n"
    "                                LMS_SERVER_HOST environment variable.\n"
    "   --cors                       Enable CORS on the server. Allows any website you visit to\n"
    "                                access the server. This is required if you are developing\n"
    "                                a web application.\n"
)
REAL_LOAD_HELP = (
    "Usage: lms load [options] [model-key]\n"
    "\n"
    "Load a model\n"
    "\n"
    "Arguments:\n"
    "   model-key                                                             The model key to load. If n\n"
    "\n"
    "Options:\n"
    "   --gpu <offload-ratio>                                                 GPU offload ratio. Valid va\n"
    "   -c, --context-length <length>                                         The number of tokens to con\n"
    "   --parallel <count>                                                    Maximum number of predictio\n"
    "   --ttl <seconds>                                                       TTL: If provided, when the\n"
    "   --speculative-draft-mtp                                               Enable load-time Draft MTP\n"
    "   --no-speculative-draft-mtp                                            Disable load-time Draft MTP\n"
    "   --speculative-draft-simple                                            Enable load-time Draft Simp\n"
    "   --speculative-draft-model <model>                                     Draft model resource to use\n"
    "   --speculative-draft-max-tokens <count>                                Maximum number of draft tok\n"
    "   --speculative-draft-min-tokens <count>                                Minimum draft length to con\n"
    "   --speculative-draft-min-continue-probability <probability>            Continue drafting while tok\n"
    "   --identifier <identifier>                                             The identifier to assign to\n"
    "   --estimate-only                                                       Calculate an estimate of th\n"
    "   -y, --yes                                                             Automatically approve all p\n"
)


def test_the_real_head_help_is_read() -> None:
    """The help of the real `lms` 07b7252: `daemon` up/down/status, `--bind`, `--ttl`, Commander;
    `--local` stays unknown (hidden, facts §9)."""
    caps = parse_help(
        "/l",
        "1:2",
        "07b7252",
        HelpOutput(0, REAL_DAEMON_HELP, ""),
        HelpOutput(0, REAL_SERVER_START_HELP, ""),
        HelpOutput(0, REAL_LOAD_HELP, ""),
    )
    assert (caps.dialect, caps.daemon, caps.bind, caps.ttl, caps.local) == (
        "commander",
        {"status", "up", "down"},
        True,
        True,
        False,
    )


RUNTIME_HELP = (
    "Usage: lms runtime [options] [command]\n\nManage and update the inference runtime\n\nCommands:\n"
    "   ls                List installed runtimes\n   select            Select installed runtime\n"
    "   survey [options]  Survey hardware\n   remove\n"
)


def test_runtime_commands_from_runtime_help() -> None:
    """`lms runtime --help` listing ``survey`` (2025-12-18+) gives both runtime capabilities;
    one without it (2025-09-23..12-17) ``runtime`` only; a CLI without `runtime` answers the
    root help (facts §9) and has neither, as an older cache entry without the fields."""

    def caps(runtime: HelpOutput | None) -> tuple[bool, bool]:
        found = parse_help(
            "/l", "1:2", "07b7252", HelpOutput(0, COMMANDER_DAEMON, ""), HelpOutput(0, "", ""),
            HelpOutput(0, "", ""), runtime,
        )  # fmt: skip
        return found.runtime, found.survey

    without_survey = RUNTIME_HELP.replace("   survey [options]  Survey hardware\n", "")
    root = "Usage: lms [options] [command]\n\nCommands:\n   runtime\n   ls\n   survey\n"
    assert [caps(HelpOutput(0, RUNTIME_HELP, "")), caps(HelpOutput(0, without_survey, "")),
            caps(HelpOutput(0, root, "")), caps(None)] == [
        (True, True), (True, False), (False, False), (False, False)]  # fmt: skip
    full = parse_help("/l", "1:2", None, HelpOutput(0, COMMANDER_DAEMON, ""), HelpOutput(0, "", ""),
                      HelpOutput(0, "", ""), HelpOutput(0, RUNTIME_HELP, ""))  # fmt: skip
    assert CliCapabilities.from_json("/l", "1:2", full.to_json()) == full
    stale = {k: v for k, v in full.to_json().items() if k != "survey"}
    assert CliCapabilities.from_json("/l", "1:2", stale) is None  # detected again
