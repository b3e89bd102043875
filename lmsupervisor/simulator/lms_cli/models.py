"""The simulated `lms ls|ps|load|unload|get` (facts §3, §8, §9)."""

from __future__ import annotations

import sys
import time
from typing import Any

from lmsupervisor.simulator import common, profiles
from lmsupervisor.simulator.lms_cli.args import (
    parse,
)
from lmsupervisor.simulator.lms_cli.output import SPINNER_END, err, fail, out, out_json
from lmsupervisor.simulator.lms_cli.service import Base


class Models(Base):
    """`lms ls`, `ps`, `load`, `unload` and `get`, with LM Link's linked device (facts §9)."""

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


def _fuzzy(pattern: str, text: str) -> bool:
    """``fuzzy.filter``'s rule: the pattern's characters appear in order (case-insensitive)."""
    it = iter(text.lower())
    return all(ch in it for ch in pattern.lower())
