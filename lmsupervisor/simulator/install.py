"""Drive a simulated LM Studio install: its environment, its `lms`, the daemon's state, and faults.

:func:`lmsupervisor.simulator.home.create_install` makes the install (its layout is drawn in
:mod:`lmsupervisor.simulator.home`); :func:`~lmsupervisor.simulator.home.open_install`
finds one made earlier.

Faults, the documented interface (:class:`SimInstall`):

===========================  ===============================================================
``crash_daemon()``            SIGKILL the daemon: the process is gone, models with it
``hang_daemon()``             the daemon accepts connections and never answers (both ports)
``hang_http()``               LM Studio's HTTP server stops answering; the daemon lives
``slow_start(seconds)``       every daemon start takes ``seconds`` more (wall seconds)
``occupy_port(port)``         a context manager holding a TCP port, so ``server start`` fails
``fail_load(key, message)``   loading ``key`` fails with LM Studio's error text (guardrails)
``corrupt(name)``             overwrite ``settings.json`` or ``http-server-config.json``
``gpu_late(seconds)``         after each daemon start no GPU is visible for ``seconds`` (simulated)
``lose_gpu()``                every GPU disappears (``restore_gpu()`` brings them back)
``cpu_fallback(factor)``      every answer ``factor`` times slower, the survey unchanged
``update_runtime(to)``        an "update" selects another installed runtime for GGUF
``suspend(seconds, ...)``     the machine sleeps ``seconds``: ``asleep_path`` gains them (below)
===========================  ===============================================================

A suspend cannot be made on a test machine, so the simulator shifts what the supervisor
reads: ``asleep_path`` holds the seconds slept so far, which a supervisor started with
``LMSUPERVISOR_ASLEEP_FILE=<asleep_path>`` adds to its clock's reading of the time asleep
(its documented test seam, :meth:`lmsupervisor.clock.SystemClock.asleep`).

The machine's hardware (GPUs, CPU, RAM, runtimes, the selected runtime, generation speed)
is data in ``.sim/hardware.json``: :meth:`SimInstall.set_hardware`, shapes in
:mod:`lmsupervisor.simulator.hardware`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from lmsupervisor.pids import pid_alive
from lmsupervisor.simulator import common, hardware, profiles


@dataclass
class SimInstall:
    """A simulated install: paths, an environment to run it in, and fault injection."""

    root: Path
    home: Path
    profile: str
    lms_path: Path
    _launched: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False, compare=False)

    # -- environment ---------------------------------------------------------
    def env(self, base: dict[str, str] | None = None, lms_on_path: bool = False) -> dict[str, str]:
        """``base`` (default ``os.environ``) with ``HOME=root``; ``bin/`` added to PATH if asked."""
        env = dict(os.environ if base is None else base)
        env["HOME"] = str(self.root)
        env.pop("LMS_API_SERVER_INFO_PATH", None)
        if lms_on_path:
            env["PATH"] = f"{self.lms_path.parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def lms(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the simulated `lms` with ``args``; stdout and stderr captured as text."""
        return subprocess.run(
            [str(self.lms_path), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    @property
    def config(self) -> dict[str, Any]:
        """The simulator's settings: ``.sim/config.json`` over the defaults, read anew on each access.

        Shape and units in :mod:`lmsupervisor.simulator.common`."""
        return common.load_config(self.home)

    @property
    def release(self) -> profiles.Profile:
        """This install's row of the release-line table (capabilities and wordings)."""
        return profiles.get(self.profile)

    @property
    def api_token(self) -> str | None:
        """The token LM Studio's HTTP server requires, or None (authentication off)."""
        token = self.config.get("api_token")
        return str(token) if token else None

    @property
    def http_url(self) -> str:
        """``http://127.0.0.1:<port>``: where LM Studio's HTTP server answers once started."""
        return f"http://127.0.0.1:{self.http_port}"

    def configure(self, **changes: Any) -> None:
        """Change simulator settings in ``.sim/config.json`` (``lms_cost``, ``time_scale``, ...).

        The `lms` reads them on its next call; a running daemon on its next start.
        """
        path = common.sim_dir(self.home) / "config.json"
        common.write_json(path, {**common.read_json(path, {}), **changes})

    def launch_app(self, timeout: float = 30) -> int:
        """Start the GUI app as its user would (app profiles); returns its PID once it answers.

        Raises LookupError on an llmster profile, TimeoutError if it does not answer.
        """
        if not self.release.is_app:
            raise LookupError(f"profile {self.profile} has no GUI app")
        exe = str(self.config["executable"])
        proc = subprocess.Popen(
            [exe],
            env=self.env(),
            cwd=str(Path(exe).parent),
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._launched.append(proc)  # reaped by stop()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.daemon_pid()
            if pid is not None:
                return pid
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        raise TimeoutError(f"the simulated app {exe} did not answer within {timeout} s")

    @property
    def server_config_path(self) -> Path:
        """``<home>/.internal/http-server-config.json``, LM Studio's HTTP server settings (facts §2)."""
        return self.home / ".internal" / "http-server-config.json"

    @property
    def http_port(self) -> int:
        """LM Studio's HTTP port: ``port`` in ``http-server-config.json``, 1234 when absent or corrupt (facts §2)."""
        cfg = common.read_json(self.server_config_path, {})
        return int(cfg.get("port", 1234)) if isinstance(cfg, dict) else 1234

    @property
    def api_port(self) -> int:
        """The daemon's API port: the first of ``api_ports`` in ``.sim/config.json`` (the one it binds when free)."""
        return int(self.config["api_ports"][0])

    def _rpc(self, method: str, timeout: float = 5.0, **params: Any) -> dict[str, Any]:
        import urllib.request  # noqa: PLC0415 - only the driver needs it

        req = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}/sim/rpc",
            data=json.dumps({"method": method, "params": params}).encode(),
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            found: dict[str, Any] = json.loads(resp.read())
            return found

    def daemon_pid(self) -> int | None:
        """The running daemon's PID (asked over the API port), or None."""
        try:
            return int(self._rpc("info", timeout=2.0)["pid"])
        except (OSError, ValueError, KeyError):
            return None

    def loaded(self) -> list[dict[str, Any]]:
        """The loaded instances, in `lms ps --json` shape (empty when the daemon is down)."""
        try:
            return list(self._rpc("list_loaded")["models"])
        except (OSError, ValueError, KeyError):
            return []

    # -- faults ----------------------------------------------------------------
    def daemon_starts(self) -> int:
        """How many daemon (or app) processes have started in this home (``.sim/daemon.log``
        ``started`` lines): each one after the first is a restart, for whatever reason."""
        log = common.sim_dir(self.home) / "daemon.log"
        try:
            return sum(" started pid=" in line for line in log.read_text(encoding="utf-8").splitlines())
        except OSError:
            return 0

    def crash_daemon(self) -> int:
        """SIGKILL the daemon; returns the PID it had. Raises LookupError if none runs."""
        pid = self.daemon_pid()
        if pid is None:
            raise LookupError("no simulated daemon is running")
        os.kill(pid, signal.SIGKILL)
        return pid

    def hang_daemon(self) -> None:
        """Make the daemon accept connections and never answer, on both ports."""
        with contextlib.suppress(OSError):
            self._rpc("fault", timeout=0.5, hang=True)

    def hang_http(self) -> None:
        """Make LM Studio's HTTP server stop answering while the daemon lives on."""
        self._rpc("fault", http_hang=True)

    def _update_faults(self, **changes: Any) -> None:
        path = common.sim_dir(self.home) / "faults.json"
        faults = common.load_faults(self.home)
        faults.update(changes)
        common.write_json(path, faults)

    def slow_start(self, seconds: float) -> None:
        """Every later daemon start takes ``seconds`` (wall) longer."""
        self._update_faults(daemon_start_delay=seconds)

    def fail_load(self, key: str, message: str | None = None) -> None:
        """Loading ``key`` fails; ``message`` defaults to the profile's guardrail refusal (BT#1038)."""
        failing = dict(common.load_faults(self.home).get("fail_load", {}))
        failing[key] = message or ""
        self._update_faults(fail_load=failing)

    def reject_cli_passkey(self) -> None:
        """The service refuses the CLI's passkey (BT#1566: app and llmster both installed):
        every `lms` command that reaches it fails as the real one does (facts §9)."""
        self._update_faults(cli_passkey_rejected=True)

    def link_device(self, device: str, models: Sequence[str], loaded: Sequence[str] = ()) -> None:
        """Link an LM Link device called ``device`` holding ``models`` (catalogue keys, same
        paths as here) with ``loaded`` of them loaded: on LM Link builds `lms ls/ps --json`
        list them first with ``deviceIdentifier`` = ``device``, and `lms load --exact`
        without ``--local`` loads there (facts §9). Written to ``.sim/linked.json``."""
        catalog = {m["modelKey"]: m for m in common.read_json(common.sim_dir(self.home) / "catalog.json", [])}
        entries = [{k: v for k, v in catalog[k].items() if k != "downloaded"} for k in models]
        instances = [
            common.linked_instance(catalog_entry, catalog_entry["modelKey"])
            for catalog_entry in (e for e in entries if e["modelKey"] in loaded)
        ]
        common.write_json(
            common.sim_dir(self.home) / "linked.json", {"device": device, "models": entries, "loaded": instances}
        )

    def counting_lms(self, folder: Path) -> tuple[Path, Path]:
        """A wrapper ``<folder>/lms`` that appends each call's arguments (one line) to
        ``<folder>/lms-calls.log`` and execs this install's `lms`: point ``lmstudio.lms``
        at it to count the `lms` processes a supervisor spawns. Returns (wrapper, log)."""
        calls = folder / "lms-calls.log"
        calls.touch()
        wrapper = folder / "lms"
        wrapper.write_text(f'#!/bin/sh\necho "$*" >> "{calls}"\nexec "{self.lms_path}" "$@"\n', encoding="utf-8")
        wrapper.chmod(0o755)
        return wrapper, calls

    def fail_answer(self, identifier: str, message: str | None = None) -> None:
        """Requests to the loaded instance ``identifier`` fail with HTTP 500 (it stays loaded)."""
        broken = dict(common.load_faults(self.home).get("fail_answer", {}))
        broken[identifier] = message or ""
        self._update_faults(fail_answer=broken)

    @property
    def hardware(self) -> dict[str, Any]:
        """The machine as the simulator models it (``.sim/hardware.json`` over the defaults,
        read anew on each access; shape in :mod:`lmsupervisor.simulator.hardware`)."""
        return hardware.load(self.home)

    def set_hardware(self, **changes: Any) -> None:
        """Change the machine: ``gpus``, ``cpu``, ``ram_bytes``, ``engines``, ``selected``,
        ``tokens_per_second`` (simulated tokens/s on the GPU; 0: answers at once),
        ``cpu_slowdown``. A running daemon sees it on its next survey, load or answer."""
        hardware.save(self.home, {**hardware.load(self.home), **changes})

    def gpu_late(self, seconds: float) -> None:
        """After every daemon start, no GPU is visible for ``seconds`` simulated seconds
        (the driver not there yet at boot, BT#1186). The daemon's own survey at start
        sees none; `lms runtime survey --refresh` sees them once they are there."""
        self._update_faults(gpu_late=seconds)

    def lose_gpu(self) -> None:
        """Every GPU disappears now (a resume from sleep, Ollama #10053): surveys show none
        (``gpuRequiredButNoneFound`` for a GPU runtime) and loaded models generate at CPU speed."""
        self._update_faults(gpu_lost=True)

    def restore_gpu(self) -> None:
        """Undo :meth:`lose_gpu`: the GPUs are back (models loaded meanwhile stay on the CPU)."""
        self._update_faults(gpu_lost=False)

    def cpu_fallback(self, factor: float) -> None:
        """Every answer generates ``factor`` times slower while the survey still says
        ``compatible`` with its GPUs (a silent fall-back, BT#2312); 1 undoes it."""
        self._update_faults(cpu_fallback=factor)

    @property
    def asleep_path(self) -> Path:
        """``<home>/.sim/asleep``: the seconds this machine has slept (see :meth:`suspend`)."""
        return common.sim_dir(self.home) / "asleep"

    def suspend(self, seconds: float, lose_gpu: bool = False) -> float:
        """The machine sleeps ``seconds`` and wakes: :attr:`asleep_path` grows by them, as the
        boot-time clock does across a suspend (Linux ``CLOCK_BOOTTIME``), while everything
        keeps running. ``lose_gpu``: the GPU did not come back with it (Ollama #10053, see
        :meth:`lose_gpu`). Returns the seconds slept in all."""
        if lose_gpu:  # first: the supervisor may notice the resume the moment the file changes
            self.lose_gpu()
        try:
            slept = float(self.asleep_path.read_text(encoding="utf-8") or 0)
        except (OSError, ValueError):
            slept = 0.0
        slept += seconds
        tmp = self.asleep_path.with_suffix(".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(f"{slept}\n", encoding="utf-8")
        tmp.replace(self.asleep_path)  # atomically: the supervisor reads it at any moment
        return slept

    def generation(self) -> dict[str, dict[str, Any]]:
        """Where each loaded instance generates and how fast, from the running daemon:
        ``{identifier: {"on_gpu": bool (loaded onto a GPU), "seconds_per_token": wall s (0:
        at once)}}``. Raises OSError when no daemon answers."""
        return self._rpc("generation")

    def selected_runtime(self, model_format: str = "GGUF") -> str:
        """The runtime selected for ``model_format``, ``name@version``."""
        return str(self.hardware["selected"].get(model_format, ""))

    def update_runtime(self, to: str | None = None) -> str:
        """What an LM Studio update did to users (BT#846, BT#2312): another installed
        runtime is now selected for GGUF. ``to`` (``name@version``) defaults to the first
        CPU-only engine installed, else the next one. Returns the runtime now selected;
        raises LookupError when ``to`` is not installed."""
        hw = self.hardware
        current = self.selected_runtime()
        others = [e for e in hw["engines"] if hardware.engine_key(e) != current and "GGUF" in e["formats"]]
        if to is None:
            pick = next((e for e in others if "gpu" not in e), others[0] if others else None)
            if pick is None:
                raise LookupError("no other GGUF runtime is installed")
            to = hardware.engine_key(pick)
        elif hardware.find_engine(hw, to) is None:
            raise LookupError(f"runtime {to} is not installed")
        self.set_hardware(selected={**hw["selected"], "GGUF": to})
        return to

    def clear_faults(self) -> None:
        """Remove every persistent fault (``.sim/faults.json`` becomes ``{}``).

        Hangs from :meth:`hang_daemon` and :meth:`hang_http` live in the running daemon, not
        in that file: they last until it restarts (``server start`` also clears the HTTP hang)."""
        common.write_json(common.sim_dir(self.home) / "faults.json", {})

    def corrupt(self, name: str = "settings.json", content: str = '{"enableLocalService": tr') -> Path:
        """Overwrite ``settings.json`` or ``http-server-config.json`` with broken JSON."""
        path = self.home / name if name == "settings.json" else self.home / ".internal" / name
        path.write_text(content, encoding="utf-8")
        return path

    @contextlib.contextmanager
    def occupy_port(self, port: int | None = None) -> Iterator[int]:
        """Hold ``port`` (default: the configured HTTP port) with a listening socket."""
        port = self.http_port if port is None else port
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", port))
            s.listen(1)
            yield port

    def crash_and_wait(self, timeout: float = 5) -> int:
        """:meth:`crash_daemon`, then wait until the process is gone; returns its PID."""
        pid = self.crash_daemon()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.01)
        return pid

    def stop(self) -> None:
        """Kill the daemon, if any, and wait until it is gone (test teardown)."""
        self._stop_daemon()
        for proc in self._launched:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=5)
        self._launched.clear()

    def _stop_daemon(self) -> None:
        pid = self.daemon_pid()
        if pid is None:  # no answer: a hung daemon, or none left and a stale file
            info = common.read_json(self.home / ".internal" / "http-server.json", {})
            pid = info.get("pid") if isinstance(info, dict) else None
            if not isinstance(pid, int) or not self._runs_here(pid):
                return  # by now that PID may be another program's (PIDs wrap on a busy machine)
        if not pid_alive(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.01)

    def _runs_here(self, pid: int) -> bool:
        """Whether the command line of ``pid`` names a path in this install (its daemon's or
        app's does): a PID read from a file may have been reused by an unrelated process."""
        try:
            cmdline = psutil.Process(pid).cmdline()
        except psutil.Error:
            return False
        mine = str(self.root) + os.sep
        return any(mine in part for part in cmdline)
