"""The simulated `lms`'s arguments, Commander style, and the tables its help texts print (facts §8, §9)."""

from __future__ import annotations

import os
from typing import Any

from lmsupervisor.simulator.lms_cli.output import fail


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
