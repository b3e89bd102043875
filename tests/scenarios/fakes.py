"""Fakes for scenario tests: a clock that only moves when told, and a fake LM Studio
behind the same interfaces the supervisor uses (lms runner, HTTP transport, PIDs)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from lmsupervisor.config import Config
from lmsupervisor.core.observed import DaemonProcess, Install, ServerSettings
from lmsupervisor.core.states import State
from lmsupervisor.errors import LmsTimeoutError
from lmsupervisor.lmstudio.facade import LmStudio
from lmsupervisor.lmstudio.lms import LmsClient, LmsResult
from lmsupervisor.lmstudio.probe import Prober
from lmsupervisor.lmstudio.rest import RestClient
from lmsupervisor.lmstudio.watch import ProcessTable
from lmsupervisor.statefile import HardwareMemory
from lmsupervisor.supervisor import ServerMemory, Supervisor


class FakeClock:
    """Monotonic time starts at 0 and moves only in :meth:`advance`."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._ids = itertools.count()
        self.slept = 0.0  # seconds the machine spent suspended (suspend())

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_800_000_000.0 + self.now + self.slept

    def asleep(self) -> float:
        return self.slept

    def suspend(self, seconds: float) -> None:
        """The machine sleeps ``seconds``: the wall clock and :meth:`asleep` jump, the
        monotonic clock (and every sleeper's deadline) does not, as on Linux, where
        asyncio's timers run on ``CLOCK_MONOTONIC``."""
        self.slept += seconds

    async def sleep(self, seconds: float) -> None:
        await self.timer(seconds)

    def timer(self, seconds: float) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), next(self._ids), fut))
        return fut

    def next_deadline(self) -> float | None:
        live = [s for s in self._sleepers if not s[2].done()]
        return min(live)[0] if live else None

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking each sleeper at its deadline in order."""
        target = self.now + seconds
        await settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, fut = heapq.heappop(self._sleepers)
            if fut.done():
                continue
            self.now = max(self.now, deadline)
            fut.set_result(None)
            await settle()
        self.now = target
        await settle()

    async def stall(self, seconds: float) -> None:
        """The event loop stalls for ``seconds`` (a machine at load 19, a SIGSTOP): time jumps,
        then every sleeper due by then wakes in one go, as asyncio runs all its expired timers
        in the same loop iteration when it resumes (no task runs in between)."""
        await settle()
        self.now += seconds
        due: list[asyncio.Future[None]] = []
        while self._sleepers and self._sleepers[0][0] <= self.now:
            fut = heapq.heappop(self._sleepers)[2]
            if not fut.done():
                due.append(fut)
        for fut in due:
            fut.set_result(None)
        await settle()


async def settle(rounds: int = 30) -> None:
    """Let every ready task run (the fakes answer without real I/O)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def seconds_in_ready(clock: FakeClock, sup: Supervisor, limit: float = 60.0, step: float = 0.5) -> float:
    """Advance ``clock`` by ``step`` until ``sup`` leaves READY (or ``limit`` seconds pass);
    the fake seconds it stayed, to compare with a detection bound."""
    started = clock.now
    while sup.state is State.READY and clock.now - started < limit:
        await clock.advance(step)
    return clock.now - started


class FakeLmStudio:
    """LM Studio's state and the `lms` commands the supervisor runs, answered instantly."""

    MODELS = [
        {"modelKey": "a/one", "path": "a/one", "type": "llm", "sizeBytes": 1},
        {"modelKey": "b/two", "path": "hf/b-two-GGUF/two.gguf", "type": "llm", "sizeBytes": 2},
    ]

    def __init__(self) -> None:
        self.daemon_pid: int | None = None
        self.server = False
        self.hung = False
        self.loaded: list[dict[str, Any]] = []
        self.calls: list[tuple[str, ...]] = []
        self.rest_calls: list[str] = []
        self.http_paths: list[str] = []  # every HTTP request sent to the server, by path
        self.http_delay = 0.0  # fake seconds every HTTP request takes (a loaded machine)
        self.running = asyncio.Event()  # cleared by freeze(): LM Studio gets no CPU, answers wait
        self.running.set()
        self.answer_errors: dict[str, str] = {}  # instance identifier -> LM Studio's error for a chat request
        self.listing_delay = 0.0  # fake seconds GET /api/v1/models takes (a slow disk, many models)
        self.listing_error: tuple[int, Any] | None = None  # (status, body) GET /api/v1/models answers instead
        self.created: dict[int, float] = {}  # pid -> create time (wall seconds), as psutil gives
        self.fail: dict[tuple[str, ...], tuple[int, str]] = {}  # argv prefix -> (code, stderr)
        self.watchers: dict[int, list[Callable[[], None]]] = {}
        self.terminated: list[int] = []
        self.signalled: list[DaemonProcess] = []
        self.raises: dict[tuple[str, ...], BaseException] = {}  # argv prefix -> exception from spawning
        self.stalled: set[tuple[str, ...]] = set()  # argv prefixes of `lms` calls that never answer
        self.http_stalled = False  # the HTTP server accepts and never answers
        self.http_raises: BaseException | None = None
        self.clock: FakeClock | None = None
        self.verified = True
        self._pids = itertools.count(1000)
        # What this `lms` can do (facts §8), answered to the capability detection's --help calls.
        self.daemon_commands: tuple[str, ...] = ("status", "up", "down")
        self.is_daemon = True  # False: the GUI app holds the service (0.4-app)
        self.rest_v1 = False  # REST v1 /api/v1/models (0.4)
        self.token: str | None = None  # "Require Authentication": the token it wants
        self.bind_flag = True
        self.ttl_flag = True  # `load --ttl` (0.3.9+); without it cmd-ts rejects the whole load
        # LM Link (facts §9): listings carry deviceIdentifier, and the linked device "desk"
        # holds a copy of every model (listed first), with a/one loaded there.
        self.lm_link = False
        self.remote_loads: list[tuple[str, ...]] = []  # `lms load`s that picked the remote copy
        self.MODELS = list(FakeLmStudio.MODELS)
        # REST v1 downloads: key -> the job status GET .../status answers ("paused", "completed")
        self.hub: dict[str, str] = {}
        # The hardware (facts §9): `lms runtime` subcommands this CLI has (("ls", "select",
        # "survey") since 2025-12-18; none: no `runtime` command), the GPU, whether it is
        # visible, the installed runtimes (name@version; a "cpu" one runs without a GPU) and
        # the selected one. A survey answers schema 2 for the selected runtime.
        self.runtime_commands: tuple[str, ...] = ()
        self.gpu = "NVIDIA GeForce RTX 4090"
        self.gpu_visible = True
        self.runtimes = ["llama.cpp-cuda@1.52.1", "llama.cpp-cpu@1.52.1"]
        self.selected = "llama.cpp-cuda@1.52.1"

    # -- the lms runner ---------------------------------------------------------
    async def run(self, *args: str, timeout: float | None = None) -> LmsResult:
        if "--help" in args:  # capability detection: counted apart from the commands tests look at
            out, err, code = self._answer(args)
            return LmsResult(("lms", *args), code, out, err, 1.0)
        self.calls.append(args)
        for prefix, exc in self.raises.items():
            if args[: len(prefix)] == prefix:
                raise exc
        if self.clock is not None and any(args[: len(prefix)] == prefix for prefix in self.stalled):
            # a hung daemon: `lms` never answers, and is killed at its timeout as the real runner does
            await self.clock.sleep(1e9 if timeout is None else timeout)
            raise LmsTimeoutError(
                f"`lms {' '.join(args)}` did not finish within {timeout} s", ["lms", *args], timeout or 0.0
            )
        for prefix, (code, stderr) in self.fail.items():
            if args[: len(prefix)] == prefix:
                return LmsResult(("lms", *args), code, "", stderr, 1.0)
        out, err, code = self._answer(args)
        return LmsResult(("lms", *args), code, out, err, 1.0)

    def _answer(self, args: tuple[str, ...]) -> tuple[str, str, int]:
        match args:
            case ("version", "--json"):
                return '{"version":"abc"}', "", 0
            case ("daemon", "--help"):
                if not self.daemon_commands:
                    return "", "error: unknown command 'daemon'", 1
                listed = "".join(f"  {c} [options]\n" for c in self.daemon_commands)
                return f"Usage: lms daemon [options] [command]\n\nCommands:\n{listed}", "", 0
            case ("server", "start", "--help"):
                return (
                    "Usage: lms server start [options]\n  --port <port>\n"
                    + ("  --bind <address>\n" if self.bind_flag else ""),
                    "",
                    0,
                )
            case ("load", "--help"):  # `--exact` and `--local` are hidden (facts §9)
                ttl = "  --ttl <seconds>\n" if self.ttl_flag else ""
                return "Usage: lms load [options] [path]\n  --gpu <ratio>\n  -y, --yes\n" + ttl, "", 0
            case ("daemon", "status", "--json"):
                if self.daemon_pid is None:
                    return '{"status":"not-running"}', "", 0
                return json.dumps({"status": "running", "pid": self.daemon_pid, "isDaemon": self.is_daemon}), "", 0
            case ("daemon", "up", "--json"):
                if self.daemon_pid is None:
                    self.daemon_pid = next(self._pids)
                    self.created[self.daemon_pid] = self.clock.wall() if self.clock else 0.0
                return (
                    json.dumps(
                        {"status": "running", "pid": self.daemon_pid, "isDaemon": self.is_daemon, "version": "0.4"}
                    ),
                    "",
                    0,
                )
            case ("daemon", "down"):
                if self.daemon_pid is None:
                    return "", "Daemon is not running.", 1
                if not self.is_daemon:  # facts §8: `daemon down` refuses while the app holds the service
                    return "", "The daemon is currently running as part of LM Studio. Please exit LM Studio.", 1
                self.exit_daemon(notify=True)
                return "", "Done.", 0
            case ("server", "start", *_):
                self.server = self.daemon_pid is not None
                return "", "Success! Server is now running on port 1234", 0
            case ("server", "stop"):
                was, self.server = self.server, False
                return ("", "Stopped the server on port 1234.", 0) if was else ("", "The server is not running.", 1)
            case ("ps", "--json"):
                return json.dumps(self._devices(self.loaded, remote_loaded=True)), "", 0
            case ("ls", "--json"):
                return json.dumps(self._devices(self.MODELS)), "", 0
            case ("runtime", *rest):
                return self._runtime(rest)
            case ("unload", identifier):  # facts §3: an unknown identifier exits 0 too
                self.loaded = [i for i in self.loaded if i["identifier"] != identifier]
                return "", f'Unloaded "{identifier}".', 0
            case ("load", path, "--exact", "--yes", *rest):
                if "--ttl" in rest and not self.ttl_flag:
                    return "", "error: found 1 error\n\n  load\n  ^ Unknown arguments\n", 1
                if self.lm_link and "--local" not in rest:  # --exact finds the remote copy first
                    self.remote_loads.append(args)
                    return "", "Model loaded successfully on desk.", 0
                model = next(m for m in self.MODELS if m["path"] == path)
                ident = rest[rest.index("--identifier") + 1] if "--identifier" in rest else model["modelKey"]
                self.loaded.append({**model, "identifier": ident})
                return "", f'To use the model in the API/SDK, use the identifier "{ident}".', 0
        return "", f"error: unknown command '{args[0]}'", 1

    def _runtime(self, args: list[str]) -> tuple[str, str, int]:
        """`lms runtime --help|survey --json [--refresh]|ls|select <name>` (facts §9)."""
        if args == ["--help"] and self.runtime_commands:
            listed = "".join(f"   {c}\n" for c in self.runtime_commands)
            return f"Usage: lms runtime [options] [command]\n\nCommands:\n{listed}", "", 0
        if not args or args[0] not in self.runtime_commands:
            return "", f"error: unknown command '{args[0] if args and self.runtime_commands else 'runtime'}'", 1
        if args[0] == "ls":
            rows = "".join(f"{r}    {'✓' if r == self.selected else ''}    GGUF\n" for r in self.runtimes)
            return f"LLM ENGINE    SELECTED    MODEL FORMAT\n{rows}", "", 0
        if args[0] == "select":
            found = [r for r in self.runtimes if args[1] in (r, r.split("@")[0])]
            if not found:
                return "", f"No installed runtime extensions found matching: {args[1]}", 1
            self.selected = found[0]
            return "", f"Selected {found[0]} for GGUF", 0
        name, _, version = self.selected.partition("@")
        on_gpu = "cpu" not in name
        gpus = [self.gpu] if on_gpu and self.gpu_visible else []
        info = [{"name": g, "dedicatedMemoryCapacityBytes": 2**34, "totalMemoryCapacityBytes": 2**34,
                 "integrationType": "discrete", "detectionPlatform": "CUDA"} for g in gpus]  # fmt: skip
        status = "compatible" if gpus or not on_gpu else "gpuRequiredButNoneFound"
        engine = {"name": name, "version": version, "engine": "llama.cpp", "compatibility": {"status": status},
                  "hardwareSurvey": {"gpuSurveyResult": {"gpuInfo": info}}}  # fmt: skip
        return json.dumps({"status": "ok", "engines": [engine]}), "", 0

    def _devices(self, items: list[dict[str, Any]], remote_loaded: bool = False) -> list[dict[str, Any]]:
        """``items`` as an LM Link build lists them: the linked device's copies first."""
        if not self.lm_link:
            return items
        here = [{**m, "deviceIdentifier": None} for m in items]
        if remote_loaded:
            return [{**self.MODELS[0], "identifier": "a/one", "deviceIdentifier": "desk"}, *here]
        return [*({**m, "path": f"desk/{m['path']}", "deviceIdentifier": "desk"} for m in items), *here]

    # -- the HTTP server, for httpx.MockTransport ---------------------------------
    async def http(self, request: httpx.Request) -> httpx.Response:
        self.http_paths.append(request.url.path)  # every request sent, answered or not
        if self.http_raises is not None:
            raise self.http_raises
        if self.http_stalled and self.clock is not None:
            await self.clock.sleep(1e9)
        if self.http_delay and self.clock is not None:
            await self.clock.sleep(self.http_delay)
        await self.running.wait()
        if not self.server or self.hung:
            raise httpx.ConnectError("refused" if not self.hung else "timed out", request=request)
        if request.url.path == "/lmstudio-greeting":  # open even with "Require Authentication" (facts §4)
            return httpx.Response(200, json={"lmstudio": True})
        if self.token is not None and request.headers.get("authorization") != f"Bearer {self.token}":
            return self._refused(request)
        if request.url.path == "/v1/chat/completions":  # deep readiness's one-token request
            model = json.loads(request.content)["model"]
            if model in self.answer_errors:
                return httpx.Response(500, json={"error": self.answer_errors[model]})
            return httpx.Response(200, json={"choices": [{"message": {"content": "."}, "finish_reason": "length"}]})
        if self.rest_v1 and request.url.path.startswith("/api/v1/"):
            if request.url.path == "/api/v1/models" and self.listing_delay and self.clock is not None:
                await self.clock.sleep(self.listing_delay)
            return await self._rest(request)
        return httpx.Response(200, json={"error": "Unexpected endpoint or method."})

    def _refused(self, request: httpx.Request) -> httpx.Response:
        """LM Studio's 401 without the right ``Bearer`` token, on every route but the greeting (facts §4)."""
        if self.rest_v1 and request.url.path.startswith("/api/v1/"):  # counted as before the check moved here
            self.rest_calls.append(request.url.path)
        given = request.headers.get("authorization")
        message = (
            "An LM Studio API token is required to make requests to this server, but none was provided"
            if given is None
            else "Invalid LM Studio API token provided"
        )
        body = {"error": {"type": "invalid_request", "code": "invalid_api_key", "message": message}}
        return httpx.Response(401, json=body)

    async def _rest(self, request: httpx.Request) -> httpx.Response:
        """REST v1 (facts §4): the list with loaded_instances, and /load (no identifier)."""
        self.rest_calls.append(request.url.path)
        if request.url.path == "/api/v1/models" and self.listing_error is not None:
            return httpx.Response(self.listing_error[0], json=self.listing_error[1])
        if request.url.path == "/api/v1/models":
            models = [
                {
                    "type": m["type"],
                    "key": m["modelKey"],
                    "loaded_instances": [
                        {"id": i["identifier"]} for i in self.loaded if i["modelKey"] == m["modelKey"]
                    ],
                }
                for m in self.MODELS
            ]
            return httpx.Response(200, json={"models": models})
        if request.url.path == "/api/v1/models/load":
            key = json.loads(request.content)["model"]
            model = next(m for m in self.MODELS if m["modelKey"] == key)
            self.loaded.append({**model, "identifier": key})
            return httpx.Response(200, json={"instance_id": key, "status": "loaded"})
        if request.url.path == "/api/v1/models/download":
            key = json.loads(request.content)["model"]
            if any(m["modelKey"] == key for m in self.MODELS):
                return httpx.Response(200, json={"status": "already_downloaded"})
            job = f"job-{key.replace('/', '~')}"
            return httpx.Response(200, json={"job_id": job, "status": "downloading", "total_size_bytes": 9})
        if request.url.path.startswith("/api/v1/models/download/status/"):
            job = request.url.path.rsplit("/", 1)[1]
            key = job.removeprefix("job-").replace("~", "/")
            status = self.hub[key]
            if status == "completed" and not any(m["modelKey"] == key for m in self.MODELS):
                self.MODELS.append({"modelKey": key, "path": key, "type": "llm", "sizeBytes": 9})
            done = 9 if status == "completed" else 4
            return httpx.Response(200, json={"job_id": job, "status": status, "downloaded_bytes": done,
                                             "total_size_bytes": 9})  # fmt: skip
        if request.url.path == "/api/v1/models/unload":
            instance = json.loads(request.content)["instance_id"]
            self.loaded = [i for i in self.loaded if i["identifier"] != instance]
            return httpx.Response(200, json={"instance_id": instance})
        return httpx.Response(200, json={"error": "Unexpected endpoint or method."})

    def freeze(self) -> None:
        """LM Studio gets no CPU (a machine at load 19, a SIGSTOP): requests in flight and new
        ones are answered only after :meth:`thaw`."""
        self.running.clear()

    def thaw(self) -> None:
        """LM Studio runs again: every request it held is answered now."""
        self.running.set()

    # -- processes ---------------------------------------------------------------
    def watch(self, pid: int, on_exit: Callable[[], None]) -> Callable[[], None]:
        self.watchers.setdefault(pid, []).append(on_exit)
        return lambda: self.watchers.get(pid, []).remove(on_exit) if on_exit in self.watchers.get(pid, []) else None

    def exit_daemon(self, notify: bool = True) -> None:
        pid, self.daemon_pid = self.daemon_pid, None
        self.server, self.loaded = False, []
        if notify and pid is not None:
            for cb in self.watchers.pop(pid, []):
                cb()

    def identify(self, pid: int, service_path: Path | None, is_daemon: bool | None = None) -> DaemonProcess | None:
        if pid != self.daemon_pid:
            return None
        return DaemonProcess(pid, self.created.get(pid, float(pid)), verified=self.verified, is_daemon=is_daemon)

    def alive(self, proc: DaemonProcess) -> bool:
        return proc.pid == self.daemon_pid

    def find_running(self, service_path: Path) -> DaemonProcess | None:
        return None

    async def wait_exit(self, proc: DaemonProcess, timeout: float) -> bool:
        return not self.alive(proc)

    async def terminate(self, proc: DaemonProcess, grace: float) -> bool:
        self.signalled.append(proc)
        if not proc.verified:
            return False
        self.terminated.append(proc.pid)
        if proc.pid == self.daemon_pid:
            self.exit_daemon()
            self.hung = False
        return True


def make_install(installed: bool = True) -> Install:
    return Install(
        home=Path("/h/.lmstudio"),
        home_source="pointer",
        home_exists=installed,
        lms=Path("/h/.lmstudio/bin/lms") if installed else None,
        lms_source="home",
        bootstrapped=installed,
        kind="llmster" if installed else None,
        service_path=None,
        server=ServerSettings(found=True),
        local_service_enabled=True,
        api_server=None,
        problems=(),
    )


def make_supervisor(
    config: Config,
    lm: FakeLmStudio,
    clock: FakeClock,
    installed: Callable[[], bool] = lambda: True,
    detect: Callable[[Config], Install] | None = None,
    config_loader: Callable[[], Config] | None = None,
    token: str | None = None,
    memory: ServerMemory | None = None,
    processes: ProcessTable | None = None,
    hardware: HardwareMemory | None = None,
) -> Supervisor:
    """A supervisor on ``clock`` whose `lms`, HTTP server, PIDs and process table are ``lm``'s;
    ``processes`` replaces the process table (the real one, for a test that owns a real process)."""
    lm.clock = clock
    return Supervisor(
        config,
        replace(
            fake_lmstudio(lm, clock, detect or (lambda c: make_install(installed())), token), processes=processes or lm
        ),
        config_loader=config_loader,
        pid=1,
        rng=random.Random(0),
        memory=memory,
        hardware=hardware,
    )


def fake_lmstudio(
    lm: FakeLmStudio, clock: FakeClock, detect: Callable[[Config], Install], token: str | None = None
) -> LmStudio:
    """LM Studio as the supervisor reaches it, built from fakes: ``lm`` runs `lms`, answers
    HTTP (prober and REST, with API token ``token``) and plays the process table."""
    return LmStudio(
        clock=clock,
        detect=detect,
        lms_factory=lambda p: LmsClient(lm),
        prober=Prober(timeout=1.0, transport=httpx.MockTransport(lm.http), token=lambda: token),
        processes=lm,
        pids=lm,
        rest=RestClient(timeout=1.0, transport=httpx.MockTransport(lm.http), token=lambda: token),
    )
