"""The simulated `lms runtime ls|select|survey` ([lms] ``src/subcommands/runtime/``; data in
:mod:`lmsupervisor.simulator.hardware`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from lmsupervisor.simulator import common, hardware
from lmsupervisor.simulator.lms_cli.args import (
    _UsageError,
    parse,
    term,
)
from lmsupervisor.simulator.lms_cli.output import err, fail, out
from lmsupervisor.simulator.lms_cli.service import Base


class Runtime(Base):
    """`lms runtime ls|select|survey`."""

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
