"""`lmsupervisor simulate`: a simulated LM Studio in the foreground, for testing other tools.

:func:`serve` makes an install (:func:`~lmsupervisor.simulator.home.create_install`),
wakes its daemon and starts its HTTP server with the simulated `lms`, prints the
environment a client needs (``HOME``, ``PATH``, the HTTP endpoint), then waits for
SIGINT or SIGTERM and cleans up: the daemon is killed, a home it made itself is removed.

:func:`send_fault` injects one of :data:`FAULTS` into a running one from another process,
through :func:`~lmsupervisor.simulator.home.open_install`.

Library code: errors are raised (:class:`SimulateError` with a hint), ``cli.py`` exits.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from lmsupervisor.errors import SimulateError
from lmsupervisor.simulator import common, profiles
from lmsupervisor.simulator.home import SimInstall, create_install, open_install

FAULTS: dict[str, str] = {
    "crash": "SIGKILL the daemon: the process and its loaded models are gone",
    "hang": "the daemon accepts connections and never answers (API port and HTTP server)",
    "hang-http": "LM Studio's HTTP server stops answering while the daemon lives",
    "stop-server": "stop the HTTP server behind everyone's back (`lms server stop`)",
    "slow-start": "every later daemon start takes --seconds longer (wall seconds)",
    "fail-load": "loading --model fails with the version's guardrail text (or --message)",
    "gpu-lost": "every GPU disappears: surveys show none, loaded models answer at CPU speed",
    "gpu-back": "the GPUs lost with gpu-lost are back",
    "gpu-late": "after every later daemon start, no GPU is visible for --seconds (simulated)",
    "cpu-fallback": "every answer --factor times slower while the survey looks fine (default 20)",
    "runtime-update": "an update selects another installed runtime (--runtime name@version, default a CPU one)",
    "clear": "remove the persistent faults (slow-start, fail-load, gpu-*, cpu-fallback)",
}


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _lms(sim: SimInstall, *args: str) -> None:
    result = sim.lms(*args, timeout=600)
    if result.returncode != 0:
        raise SimulateError(
            f"`lms {' '.join(args)}` exited {result.returncode}: {result.stderr.strip()[-500:]}",
            f"see {common.sim_dir(sim.home) / 'daemon.log'}",
        )


def environment(sim: SimInstall, own_home: bool) -> list[str]:
    """The lines `simulate` prints: shell ``export`` lines a client can paste, and comments."""
    release = sim.release
    url = sim.http_url
    token = sim.api_token
    lines = [
        f"# Simulated LM Studio {release.version} (profile {release.name}, time scale "
        f"{float(sim.config['time_scale']):g}), daemon PID {sim.daemon_pid()}",
        f"export HOME={sim.root}",
        f'export PATH="{sim.lms_path.parent}:$PATH"',
        f"export OPENAI_BASE_URL={url}/v1",
        f"export OPENAI_API_KEY={token or 'lm-studio'}",
    ]
    if token:  # the JS SDK and the docs read LM_API_TOKEN, the Python SDK (1.6+) LMSTUDIO_API_TOKEN (facts §5)
        lines += [f"export LM_API_TOKEN={token}", f"export LMSTUDIO_API_TOKEN={token}"]
    ws = url.replace("http://", "ws://", 1)
    lines += [
        f"# HTTP endpoint: {url} (OpenAI-compatible under /v1, REST under /api)",
        f'# SDK websocket: {ws} (LMStudioClient({{baseUrl: "{ws}"}}), lmstudio.Client("{ws[5:]}"))',
        f"# Faults: lmsupervisor simulate --home {sim.root} --fault {'|'.join(FAULTS)}",
        "# Ctrl-C stops it" + (f" and removes {sim.root}" if own_home else "; the home stays"),
    ]
    return lines


def serve(
    out: TextIO,
    *,
    home: Path | None = None,
    profile: str = "0.4",
    port: int = 1234,
    time_scale: float = 1.0,
    api_token: str | None = None,
    load: tuple[str, ...] = (),
    ready: Callable[[SimInstall], None] | None = None,
) -> None:
    """Run a simulated LM Studio until SIGINT or SIGTERM, then clean up.

    ``home`` stands in for ``HOME`` (default: a new temporary folder, removed at the end);
    ``port`` is LM Studio's HTTP port; ``load`` model keys are loaded at start. Raises
    :class:`SimulateError` if the port is taken, a profile or model is unknown, or `lms`
    fails. ``ready`` (tests) is called once the environment is printed.
    """
    try:
        profiles.get(profile)
    except ValueError as exc:
        raise SimulateError(str(exc), "pick one with --profile") from None
    if not _port_free(port):
        raise SimulateError(f"port {port} on 127.0.0.1 is in use (a real LM Studio?)", "pass another --port")
    own_home = home is None
    root = Path(tempfile.mkdtemp(prefix="lmsupervisor-sim-")) if home is None else home
    with contextlib.suppress(FileNotFoundError):
        open_install(root).stop()  # a daemon left by an earlier run on this home
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    sim: SimInstall | None = None
    try:
        sim = create_install(root, profile, time_scale=time_scale, http_port=port, api_token=api_token)
        _lms(sim, "server", "start")
        for key in load:
            model = next((m for m in common.catalog(sim.home) if m["modelKey"] == key), None)
            if model is None:
                known = ", ".join(m["modelKey"] for m in common.downloaded_models(sim.home))
                raise SimulateError(f"--load {key}: no such model in the simulated catalogue", f"one of: {known}")
            _lms(sim, "load", str(model["path"]), "--exact", "--yes")
        out.write("\n".join(environment(sim, own_home)) + "\n")
        out.flush()
        if ready is not None:
            ready(sim)
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if sim is not None:
            sim.stop()
        if own_home:
            shutil.rmtree(root, ignore_errors=True)


def send_fault(
    home: Path,
    fault: str,
    *,
    seconds: float = 5.0,
    model: str | None = None,
    message: str | None = None,
    factor: float = 20.0,
    runtime: str | None = None,
) -> str:
    """Inject ``fault`` (a key of :data:`FAULTS`) into the simulated LM Studio under ``home``.

    Returns a one-line account of what was done. Raises :class:`SimulateError` when
    there is no install there, nothing runs for a fault that needs the daemon, or an
    argument is missing.
    """
    try:
        sim = open_install(home)
    except FileNotFoundError as exc:
        raise SimulateError(str(exc), "pass the --home a running `lmsupervisor simulate` printed") from None
    if fault == "slow-start":
        sim.slow_start(seconds)
        return f"every later daemon start takes {seconds:g} s longer"
    if fault == "fail-load":
        if not model:
            raise SimulateError("--fault fail-load needs --model KEY", "e.g. --model qwen/qwen3-4b")
        sim.fail_load(model, message)
        return f"loading {model} now fails"
    if fault == "clear":
        sim.clear_faults()
        return "persistent faults cleared"
    if fault == "gpu-lost":
        sim.lose_gpu()
        return "every GPU is gone"
    if fault == "gpu-back":
        sim.restore_gpu()
        return "the GPUs are back"
    if fault == "gpu-late":
        sim.gpu_late(seconds)
        return f"after every later daemon start, no GPU is visible for {seconds:g} s"
    if fault == "cpu-fallback":
        sim.cpu_fallback(factor)
        return f"every answer is now {factor:g} times slower"
    if fault == "runtime-update":
        try:
            selected = sim.update_runtime(runtime)
        except LookupError as exc:
            raise SimulateError(str(exc), "pick one `lms runtime ls` lists") from None
        return f"the selected runtime is now {selected}"
    pid = sim.daemon_pid()
    if pid is None:
        raise SimulateError(f"no simulated daemon answers under {home}", "any `lms` command wakes it again")
    if fault == "crash":
        sim.crash_daemon()
        return f"daemon {pid} killed (SIGKILL)"
    if fault == "hang":
        sim.hang_daemon()
        return f"daemon {pid} now hangs on every request"
    if fault == "hang-http":
        sim.hang_http()
        return f"the HTTP server of daemon {pid} now hangs"
    if fault == "stop-server":
        _lms(sim, "server", "stop")
        return f"the HTTP server of daemon {pid} is stopped"
    raise SimulateError(f"--fault {fault}: unknown", f"one of: {', '.join(FAULTS)}")
