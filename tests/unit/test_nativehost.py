"""The native-messaging host without processes: framing, dispatch, and each action
against fakes (status socket, `lms`, MockTransport for LM Studio's HTTP server)."""

from __future__ import annotations

import asyncio
import io
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from lmsupervisor.clock import Clock
from lmsupervisor.config import Config, LmStudioConfig, ServerConfig
from lmsupervisor.errors import NativeHostError, OversizedFrameError, TruncatedFrameError
from lmsupervisor.lmstudio.install import Platform
from lmsupervisor.lmstudio.lms import LmsResult
from lmsupervisor.nativehost.host import NativeHost, serve
from lmsupervisor.nativehost.protocol import (
    MAX_ID_BYTES,
    MAX_INCOMING,
    MAX_OUTGOING,
    MAX_TIMEOUT,
    encode_frame,
    read_frame,
)
from lmsupervisor.nativehost.protocol import check_sendable as _check_sendable
from lmsupervisor.simulator.home import create_install

URL = "http://127.0.0.1:1234"
CHAT_MSG = {"action": "chat_completion", "messages": [{"role": "user", "content": "hi"}]}


def frame(body: bytes) -> bytes:
    return struct.pack("=I", len(body)) + body


# -- framing -------------------------------------------------------------------------
def test_frames_round_trip_in_native_byte_order() -> None:
    """A frame is a native-order 32-bit byte length, then the UTF-8 JSON; length counts bytes."""
    data = encode_frame({"status": "success", "payload": {"text": "héllo ✓"}})
    (length,) = struct.unpack("=I", data[:4])
    assert length == len(data) - 4 == len(data[4:].decode("utf-8").encode("utf-8"))
    assert json.loads(read_frame(io.BytesIO(data)) or b"") == {"status": "success", "payload": {"text": "héllo ✓"}}


def test_clean_end_of_input_is_none() -> None:
    """stdin closed between frames ends the host cleanly."""
    assert read_frame(io.BytesIO(b"")) is None


@pytest.mark.parametrize("data", [b"\x05\x00", frame(b'{"action": "check_lmstudio"}')[:-3]])
def test_input_ending_inside_a_frame_is_truncated(data: bytes) -> None:
    """stdin ending inside a length prefix or a body is reported, not taken as a message."""
    with pytest.raises(TruncatedFrameError):
        read_frame(io.BytesIO(data))


def test_oversized_message_is_discarded_and_the_next_one_read() -> None:
    """A message over the limit is refused after its bytes are skipped, so the stream stays in step."""
    stream = io.BytesIO(frame(b"x" * 100) + frame(b'{"action":"check_lmstudio"}'))
    with pytest.raises(OversizedFrameError) as info:
        read_frame(stream, limit=50)
    assert info.value.code == "too_large"
    assert read_frame(stream, limit=50) == b'{"action":"check_lmstudio"}'


def test_incoming_limit_is_chromes_64_mib() -> None:
    """Browser-to-host messages up to Chrome's documented 64 MiB are read; one byte more is refused."""
    assert MAX_INCOMING == 64 * 1024 * 1024
    header_only = io.BytesIO(struct.pack("=I", MAX_INCOMING + 1))
    with pytest.raises(TruncatedFrameError, match="oversized"):  # refused on the header, then skipped
        read_frame(header_only)


def test_answer_over_one_mib_becomes_an_error_answer() -> None:
    """An answer over the browsers' 1 MiB is replaced by a small error that keeps the request id."""
    data = encode_frame({"status": "success", "payload": {"content": "x" * MAX_OUTGOING}, "id": 9})
    answer = json.loads(data[4:])
    assert (answer["status"], answer["code"], answer["id"]) == ("error", "too_large", 9)
    assert len(data) - 4 < 1000
    at_limit = encode_frame({"s": "x" * (MAX_OUTGOING - 8)})  # {"s":"..."} is exactly 1 MiB
    assert len(at_limit) - 4 == MAX_OUTGOING


# -- fakes ---------------------------------------------------------------------------
class FakeSupervisor:
    """Scripted snapshots (the last one repeats); records restarts."""

    socket = "/run/test/status.sock"

    def __init__(self, *snaps: dict[str, Any] | None, fail: Exception | None = None) -> None:
        self.snaps = list(snaps) or [None]
        self.restarts = 0
        self.fail = fail

    async def status(self) -> dict[str, Any] | None:
        if self.fail is not None:
            raise self.fail
        return self.snaps.pop(0) if len(self.snaps) > 1 else self.snaps[0]

    async def restart(self) -> None:
        self.restarts += 1


def snap(state: str, url: str = URL) -> dict[str, Any]:
    return {
        "state": state,
        "ready": state == "ready",
        "supervisor": {"pid": 4242, "version": "0.1.0"},
        "lmstudio": {"installed": True, "bootstrapped": True},
        "server": {"running": state in ("ready", "degraded"), "api_endpoint": url},
        "models": [{"key": "qwen/qwen3-4b", "identifier": "qwen", "state": "loaded"}],
        "problems": [],
    }


class FakeLms:
    """An lms runner answering from a table of ``args -> (code, stdout, stderr)``."""

    def __init__(self, answers: dict[tuple[str, ...], tuple[int, str, str]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, ...]] = []

    async def run(self, *args: str, timeout: float | None = None) -> LmsResult:
        self.calls.append(args)
        key = next((k for k in self.answers if args[: len(k)] == k), None)
        code, out, err = self.answers[key] if key else (0, "", "")
        return LmsResult(("lms", *args), code, out, err, 1.0)


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    def wall(self) -> float:
        return self.t

    def asleep(self) -> float:
        return 0.0

    async def sleep(self, seconds: float) -> None:
        self.t += seconds

    def timer(self, seconds: float) -> asyncio.Future[None]:
        return asyncio.ensure_future(self.sleep(seconds))


class LmStudio:
    """A MockTransport handler standing in for LM Studio's HTTP server."""

    def __init__(self, up: bool = True, loaded: tuple[str, ...] = ("qwen",)) -> None:
        self.up = up
        self.loaded = loaded
        self.chat: Callable[[dict[str, Any]], httpx.Response] = lambda body: httpx.Response(
            200,
            json={
                "id": "chatcmpl-1",
                "model": body.get("model"),
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            },
        )
        self.bodies: list[dict[str, Any]] = []
        self.raw: list[tuple[str | None, bytes]] = []  # (Content-Type, body bytes) of each chat request

    token: str | None = None  # "Require Authentication": the token every route but the greeting needs

    def __call__(self, req: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("connection refused", request=req)
        if req.url.path == "/lmstudio-greeting":
            return httpx.Response(200, json={"lmstudio": True})
        if self.token is not None and req.headers.get("authorization") != f"Bearer {self.token}":
            error = {
                "type": "invalid_request",
                "code": "invalid_api_key",
                "message": "An LM Studio API token is required",
            }
            return httpx.Response(401, json={"error": error})
        if req.url.path == "/api/v1/models":
            return httpx.Response(
                200, json={"models": [{"key": "k", "loaded_instances": [{"id": i} for i in self.loaded]}]}
            )
        if req.url.path == "/v1/chat/completions":
            body = json.loads(req.content)
            self.bodies.append(body)
            self.raw.append((req.headers.get("content-type"), req.content))
            return self.chat(body)
        return httpx.Response(200, json={"error": f"Unexpected endpoint or method. ({req.method} {req.url.path})"})


def make_host(
    tmp_path: Path,
    supervisor: FakeSupervisor | None = None,
    server: LmStudio | None = None,
    lms: FakeLms | None = None,
    installed: bool = True,
    clock: Clock | None = None,
    config: Config | None = None,
    env: dict[str, str] | None = None,
    server_config: dict[str, Any] | None = None,
) -> NativeHost:
    if installed:  # files only: nothing is started
        sim = create_install(tmp_path / "home", http_port=1234, server_config=server_config)
        root = sim.root
    else:
        root = tmp_path / "empty"
        root.mkdir()
    platform = Platform("linux", root, {"HOME": str(root), "PATH": "", **(env or {})})
    fake_lms = lms or FakeLms({})
    fake_clock = FakeClock()
    return NativeHost(
        config or Config(server=ServerConfig(start_timeout=5)),
        platform,
        supervisor or FakeSupervisor(None),
        runner_factory=lambda _path: fake_lms,
        transport=httpx.MockTransport(server or LmStudio()),
        clock=clock or fake_clock,
    )


async def answers(host: NativeHost, msg: dict[str, Any] | bytes) -> list[dict[str, Any]]:
    raw = msg if isinstance(msg, bytes) else json.dumps(msg).encode()
    try:
        return [a async for a in host.handle(raw)]
    finally:
        await host.aclose()


# -- dispatch --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"action": "reboot_the_world"}', "expected one of check_lmstudio"),
        (b'{"noaction": 1}', "got None"),
    ],
)
async def test_malformed_messages_get_an_error_answer(tmp_path: Path, raw: bytes, says: str) -> None:
    """Broken JSON, bad UTF-8, a non-object or an unknown action: one error answer, no exception."""
    [answer] = await answers(make_host(tmp_path), raw)
    assert (answer["status"], answer["code"]) == ("error", "bad_request")
    assert says in answer["error"]


async def test_an_unexpected_exception_is_an_error_answer(tmp_path: Path) -> None:
    """Whatever an action raises is answered as an internal error; the request id is kept."""
    host = make_host(tmp_path, FakeSupervisor(fail=RuntimeError("socket exploded")))
    [answer] = await answers(host, {"action": "check_lmstudio", "id": "r1"})
    assert answer == {
        "status": "error",
        "error": "internal error: RuntimeError: socket exploded",
        "code": "internal",
        "id": "r1",
    }


# -- hostile frames (issue 14 item 7) -------------------------------------------------
def frames_of(data: bytes) -> list[dict[str, Any]]:
    """Every answer in ``data`` (what the host wrote), decoded as a browser does: strict UTF-8."""
    stream, out = io.BytesIO(data), []
    while (body := read_frame(stream)) is not None:
        out.append(json.loads(body.decode("utf-8")))
    return out


async def served(host: NativeHost, *bodies: bytes) -> tuple[list[dict[str, Any]], int]:
    """Run :func:`serve` over ``bodies`` as frames until stdin ends; the answers and the
    largest frame written (bytes of JSON)."""
    out = io.BytesIO()
    try:
        await serve(host, io.BytesIO(b"".join(frame(b) for b in bodies)), out)
    finally:
        await host.aclose()
    data, sizes = out.getvalue(), []
    stream = io.BytesIO(data)
    while head := stream.read(4):
        (n,) = struct.unpack("=I", head)
        sizes.append(n)
        stream.read(n)
    return frames_of(data), max(sizes, default=0)


async def test_lone_surrogate_id_is_an_error_answer_and_the_host_goes_on(tmp_path: Path) -> None:
    """An id holding a lone UTF-16 surrogate (legal in JSON text, not in UTF-8) gets a
    bad_request answer without it; the next message is served."""
    answers_, _ = await served(
        make_host(tmp_path),
        b'{"action": "check_lmstudio", "id": "a\\ud800b"}',
        b'{"action": "check_lmstudio", "id": "next"}',
    )
    assert [(a["status"], a.get("code"), a.get("id")) for a in answers_] == [
        ("error", "bad_request", None),
        ("success", None, "next"),
    ]
    assert "lone UTF-16 surrogate" in answers_[0]["error"]


async def test_lone_surrogates_from_lmstudio_become_replacement_characters(tmp_path: Path) -> None:
    """Text with a lone surrogate (LM Studio's JSON may escape one) is sent as U+FFFD, never
    as bytes that are not UTF-8; surrogate pairs stay the character they encode."""
    data = encode_frame({"status": "success", "payload": {"content": "a\ud800b \U0001f600"}})
    assert json.loads(data[4:].decode("utf-8"))["payload"]["content"] == "a\ufffdb \U0001f600"


async def test_huge_id_is_never_echoed(tmp_path: Path) -> None:
    """A 2 MiB id is refused (bad_request) and not copied into the answer, which stays small;
    the next message is served."""
    big = json.dumps({"action": "check_lmstudio", "id": "x" * (2 * MAX_OUTGOING)}).encode()
    answers_, largest = await served(make_host(tmp_path), big, b'{"action": "check_lmstudio", "id": 2}')
    assert [(a["status"], a.get("code"), a.get("id")) for a in answers_] == [
        ("error", "bad_request", None),
        ("success", None, 2),
    ]
    assert f"at most {MAX_ID_BYTES} bytes" in answers_[0]["error"]
    assert largest < 10_000


def test_too_large_answer_drops_an_id_that_would_not_fit() -> None:
    """Replacing an answer over 1 MiB by too_large never copies an id that would make the
    replacement too large itself: the id is dropped and the error says so."""
    data = encode_frame({"status": "success", "payload": {"content": "c"}, "id": "i" * (2 * MAX_OUTGOING)})
    [answer] = frames_of(data)
    assert (answer["status"], answer["code"], "id" in answer) == ("error", "too_large", False)
    assert "id was dropped" in answer["error"]
    assert len(data) < 1000


async def test_an_answer_json_cannot_carry_is_an_internal_error(tmp_path: Path) -> None:
    """LM Studio's reply holding NaN (Python's JSON reader takes it, a browser's does not):
    an internal error answer with the id, never a frame the browser cannot parse; the host goes on."""
    server = LmStudio()
    reply = '{"id": "c", "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}], "usage": NaN}'
    server.chat = lambda body: httpx.Response(200, text=reply, headers={"content-type": "application/json"})
    answers_, _ = await served(
        make_host(tmp_path, server=server),
        json.dumps({**CHAT_MSG, "id": "nan"}).encode(),
        b'{"action": "check_lmstudio", "id": "after"}',
    )
    assert [(a["status"], a.get("code"), a["id"]) for a in answers_] == [
        ("error", "internal", "nan"),
        ("success", None, "after"),
    ]


@pytest.mark.parametrize("action", ["chat_completion", "start_lmstudio"])
@pytest.mark.parametrize(
    "value", [b"NaN", b"Infinity", b"-Infinity", b"1e308", b"0", b"-1", b"3601", b'"10"', b"true", b"1" + b"0" * 400]
)
async def test_timeout_must_be_finite_and_in_range(tmp_path: Path, action: str, value: bytes) -> None:
    """A timeout that is not a number of seconds in (0, 3600] is bad_request naming the field
    and the range, before anything is asked (NaN was an internal error; inf and 1e308 were taken)."""
    server, lms = LmStudio(up=False), FakeLms({})
    raw = b'{"action": "%s", "messages": [{"role": "user", "content": "hi"}], "timeout": %s}' % (action.encode(), value)
    [answer] = await answers(make_host(tmp_path, server=server, lms=lms), raw)
    assert (answer["status"], answer["code"]) == ("error", "bad_request"), answer
    assert f"timeout: expected seconds > 0 and <= {MAX_TIMEOUT:g}" in answer["error"]
    assert (server.bodies, lms.calls) == ([], [])


async def test_a_huge_integer_timeout_is_shown_by_its_length(tmp_path: Path) -> None:
    """A timeout of 10**400 (no float holds it) is compared as an integer, and the answer
    quotes its first characters and its length, not 401 digits."""
    raw = b'{"action": "start_lmstudio", "timeout": 1%s}' % (b"0" * 400)
    [answer] = await answers(make_host(tmp_path), raw)
    assert answer["error"] == f"timeout: expected seconds > 0 and <= 3600, got 1{'0' * 39}... (401 characters)"


async def test_a_timeout_in_range_is_taken(tmp_path: Path) -> None:
    """The largest allowed timeout (an integer or a float) is accepted."""
    [answer] = await answers(make_host(tmp_path), {**CHAT_MSG, "timeout": MAX_TIMEOUT})
    assert answer["status"] == "success", answer


# -- check_lmstudio ------------------------------------------------------------------
async def test_check_without_supervisor(tmp_path: Path) -> None:
    """Installed, server answering, the loaded model from REST v1, and no supervisor."""
    [answer] = await answers(make_host(tmp_path), {"action": "check_lmstudio"})
    p = answer["payload"]
    assert (p["installed"], p["bootstrapped"], p["server_running"], p["api_endpoint"]) == (True, True, True, URL)
    assert (p["current_model"], p["loaded_models"]) == ("qwen", ["qwen"])
    assert p["supervisor"] == {"running": False, "socket": FakeSupervisor.socket}


class V1Fails(LmStudio):
    """LM Studio whose REST v1 listing fails as ``v1`` says; v0 lists ``qwen``; records the paths asked."""

    def __init__(self, v1: Callable[[httpx.Request], httpx.Response]) -> None:
        super().__init__()
        self.v1 = v1
        self.paths: list[str] = []

    def __call__(self, req: httpx.Request) -> httpx.Response:
        self.paths.append(req.url.path)
        if req.url.path == "/api/v1/models":
            return self.v1(req)
        if req.url.path == "/api/v0/models":
            return httpx.Response(200, json={"data": [{"id": "qwen", "state": "loaded"}]})
        return super().__call__(req)


def v1_broke(req: httpx.Request) -> httpx.Response:
    raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=req)


def v1_unsupported(req: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"error": "Unexpected endpoint or method. (GET /api/v1/models)"})


@pytest.mark.parametrize(("v1", "v0_asked", "loaded"), [(v1_broke, False, []), (v1_unsupported, True, ["qwen"])])
async def test_check_asks_v0_only_when_v1_answered(
    tmp_path: Path, v1: Callable[[httpx.Request], httpx.Response], v0_asked: bool, loaded: list[str]
) -> None:
    """A v1 listing without an answer (the connection broke) ends the search: v0 would get
    none either; a v1 answer that is no listing (0.3's "Unexpected endpoint") falls back to v0."""
    server = V1Fails(v1)
    [answer] = await answers(make_host(tmp_path, server=server), {"action": "check_lmstudio"})
    assert ("/api/v0/models" in server.paths, answer["payload"]["loaded_models"]) == (v0_asked, loaded)


async def test_check_not_installed_server_down(tmp_path: Path) -> None:
    """No LM Studio at all: installed false, server not running, with the probe's reason."""
    host = make_host(tmp_path, server=LmStudio(up=False), installed=False)
    [answer] = await answers(host, {"action": "check_lmstudio"})
    p = answer["payload"]
    assert (p["installed"], p["server_running"], p["current_model"]) == (False, False, None)
    assert "cannot connect" in p["server_error"]


async def test_check_reports_the_supervisor_and_its_endpoint(tmp_path: Path) -> None:
    """With a supervisor, its state and its api_endpoint are what check_lmstudio reports."""
    host = make_host(tmp_path, FakeSupervisor(snap("degraded", "http://127.0.0.1:4321")))
    [answer] = await answers(host, {"action": "check_lmstudio"})
    p = answer["payload"]
    assert p["api_endpoint"] == "http://127.0.0.1:4321"
    assert (p["supervisor"]["running"], p["supervisor"]["state"], p["supervisor"]["pid"]) == (True, "degraded", 4242)


# -- start_lmstudio ------------------------------------------------------------------
async def test_start_when_supervisor_is_ready_does_nothing(tmp_path: Path) -> None:
    """A ready supervisor: start answers at once, no restart, no lms call."""
    sup, lms = FakeSupervisor(snap("ready")), FakeLms({})
    [answer] = await answers(make_host(tmp_path, sup, lms=lms), {"action": "start_lmstudio"})
    assert (answer["payload"]["started_by"], answer["payload"]["how"]) == ("supervisor", "already_running")
    assert (sup.restarts, lms.calls) == (0, [])


async def test_start_in_backoff_asks_the_supervisor_then_waits(tmp_path: Path) -> None:
    """In backoff the host posts a restart (try now) and answers once the supervisor is ready."""
    sup = FakeSupervisor(snap("backoff"), snap("starting"), snap("loading_models"), snap("ready"))
    [answer] = await answers(make_host(tmp_path, sup), {"action": "start_lmstudio"})
    assert (answer["status"], answer["payload"]["how"], sup.restarts) == ("success", "restart_requested", 1)
    assert answer["payload"]["supervisor"]["state"] == "ready"


async def test_start_times_out_when_the_supervisor_never_gets_ready(tmp_path: Path) -> None:
    """Still starting after the timeout (fake clock): an error naming the state, code timeout."""
    host = make_host(tmp_path, FakeSupervisor(snap("starting")))
    [answer] = await answers(host, {"action": "start_lmstudio", "timeout": 3})
    assert (answer["status"], answer["code"]) == ("error", "timeout")
    assert "'starting' after 3 s" in answer["error"]


NO_PID = 2**22 + 1  # above Linux's largest pid_max: no such process, whatever runs here


def lms_of(daemon: tuple[str, ...], bind: bool, **answers: tuple[int, str, str]) -> FakeLms:
    """A FakeLms whose help texts say what this `lms` can do (facts §8: ``daemon``
    subcommands, ``server start --bind``), then the given answers (``"daemon up"`` ...)."""
    listed = "".join(f"  {c} [options]\n" for c in daemon)
    table: dict[tuple[str, ...], tuple[int, str, str]] = {
        ("version", "--json"): (0, '{"version":"abc"}', ""),
        ("daemon", "--help"): (0, f"Usage: lms daemon [options] [command]\n\nCommands:\n{listed}", "")
        if daemon
        else (1, "", "error: unknown command 'daemon'"),
        ("server", "start", "--help"): (
            0,
            "Usage: lms server start\n  --port <port>\n" + ("  --bind <a>\n" * bind),
            "",
        ),
        ("load", "--help"): (0, "Usage: lms load [options] [path]\n  --exact\n", ""),
    }
    table.update({tuple(k.split()): v for k, v in answers.items()})
    return FakeLms(table)


def commands(lms: FakeLms) -> list[tuple[str, ...]]:
    """The calls but the capability detection's (``--help``, ``version``)."""
    return [c for c in lms.calls if "--help" not in c and c[:1] != ("version",)]


@pytest.mark.parametrize(
    ("daemon", "bind", "expected"),
    [
        (
            ("status", "up", "down"),
            True,
            [("daemon", "up", "--json"), ("server", "start", "--port", "1234", "--bind", "127.0.0.1")],
        ),
        (("status",), False, [("server", "start", "--port", "1234")]),  # 0.3.31: `server start` wakes the app
        ((), False, [("server", "start", "--port", "1234")]),  # cmd-ts 0.3: no daemon command at all
    ],
)
async def test_start_without_supervisor_follows_the_capabilities(
    tmp_path: Path, daemon: tuple[str, ...], bind: bool, expected: list[tuple[str, ...]]
) -> None:
    """No supervisor and no server: the supervisor's bring-up runs `daemon up` only where this
    `lms` has it and passes ``--bind`` only where it exists, with LM Studio's own settings."""
    server = LmStudio(up=False)
    lms = lms_of(
        daemon,
        bind,
        **{
            "daemon status": (0, '{"status":"not-running"}', ""),
            "daemon up": (0, f'{{"status":"running","pid":{NO_PID},"isDaemon":true}}', ""),
        },
    )
    real_run = lms.run

    async def run(*args: str, timeout: float | None = None) -> LmsResult:
        if args[:2] == ("server", "start") and "--help" not in args:
            server.up = True
        return await real_run(*args, timeout=timeout)

    lms.run = run  # type: ignore[method-assign]
    [answer] = await answers(make_host(tmp_path, server=server, lms=lms), {"action": "start_lmstudio"})
    assert (answer["status"], answer["payload"]["how"], answer["payload"]["server_running"]) == (
        "success",
        "started",
        True,
    ), answer
    assert [c for c in commands(lms) if c[:2] != ("daemon", "status")] == expected


async def test_start_failure_is_lmstudios_words(tmp_path: Path) -> None:
    """`lms server start` fails and nothing answers: an lmstudio_error with `lms`'s own message."""
    said = "Failed to verify the server is running. Please try to use another port."
    lms = lms_of(
        ("status", "up", "down"),
        True,
        **{
            "daemon status": (0, '{"status":"not-running"}', ""),
            "daemon up": (0, f'{{"status":"running","pid":{NO_PID},"isDaemon":true}}', ""),
            "server start": (1, "", f"Error: {said}"),
        },
    )
    [answer] = await answers(make_host(tmp_path, server=LmStudio(up=False), lms=lms), {"action": "start_lmstudio"})
    assert (answer["status"], answer["code"]) == ("error", "lmstudio_error")
    assert said in answer["error"]


async def test_start_not_installed(tmp_path: Path) -> None:
    """Nothing installed and no supervisor: an error with the download link."""
    host = make_host(tmp_path, server=LmStudio(up=False), installed=False)
    [answer] = await answers(host, {"action": "start_lmstudio"})
    assert (answer["status"], answer["code"]) == ("error", "not_installed")
    assert "lmstudio.ai/download" in answer["error"]


# -- stop_lmstudio -------------------------------------------------------------------
async def test_stop_is_refused_under_a_supervisor(tmp_path: Path) -> None:
    """A running supervisor would undo the stop: refused with code supervised, and lms is never run."""
    lms = FakeLms({})
    [answer] = await answers(make_host(tmp_path, FakeSupervisor(snap("ready")), lms=lms), {"action": "stop_lmstudio"})
    assert (answer["status"], answer["code"]) == ("error", "supervised")
    assert "pid 4242" in answer["error"]
    assert lms.calls == []


async def test_stop_without_supervisor_stops_the_server(tmp_path: Path) -> None:
    """Without a supervisor: `lms server stop`, and `daemon down` when asked and this `lms` has it."""
    lms = lms_of(("status", "up", "down"), True)
    msg = {"action": "stop_lmstudio", "daemon": True}
    [answer] = await answers(make_host(tmp_path, lms=lms), msg)
    assert (answer["payload"]["stopped"], answer["payload"]["daemon_stopped"]) == (True, True)
    assert commands(lms) == [("server", "stop"), ("daemon", "down")]


async def test_stop_with_nothing_running_is_done(tmp_path: Path) -> None:
    """`server stop` "not running" and `daemon down` "Daemon is not running." (exit 1, facts §9):
    success, nothing was stopped."""
    lms = lms_of(
        ("status", "up", "down"),
        True,
        **{
            "server stop": (1, "", "Error: The server is not running."),
            "daemon down": (1, "", "Daemon is not running."),
        },
    )
    [answer] = await answers(make_host(tmp_path, lms=lms), {"action": "stop_lmstudio", "daemon": True})
    assert (answer["status"], answer["payload"]["stopped"], answer["payload"]["daemon_stopped"]) == (
        "success",
        False,
        False,
    )


async def test_stop_daemon_where_lms_has_no_daemon_down(tmp_path: Path) -> None:
    """0.3.31 (`daemon status` only): no `daemon down` is run; the answer says how to stop the app."""
    lms = lms_of(("status",), False)
    [answer] = await answers(make_host(tmp_path, lms=lms), {"action": "stop_lmstudio", "daemon": True})
    assert (answer["status"], answer["payload"]["daemon_stopped"]) == ("success", False)
    assert "quit the LM Studio app" in answer["payload"]["daemon_note"]
    assert commands(lms) == [("server", "stop")]


async def test_stop_refused_by_the_app_is_an_error(tmp_path: Path) -> None:
    """The GUI app holds the service and refuses `daemon down` (facts §8): an error with its words."""
    said = "The daemon is currently running as part of LM Studio. Please exit LM Studio..."
    lms = lms_of(("status", "up", "down"), True, **{"daemon down": (1, "", said)})
    [answer] = await answers(make_host(tmp_path, lms=lms), {"action": "stop_lmstudio", "daemon": True})
    assert (answer["status"], answer["code"]) == ("error", "lmstudio_error")
    assert "running as part of LM Studio" in answer["error"]


# -- chat_completion -----------------------------------------------------------------
CHAT = CHAT_MSG


async def test_chat_plain(tmp_path: Path) -> None:
    """Settings are forwarded; without a model the loaded one is used; one answer with the message."""
    server = LmStudio()
    msg = {**CHAT, "settings": {"temperature": 0.2, "max_tokens": 5}}
    [answer] = await answers(make_host(tmp_path, server=server), msg)
    assert server.bodies == [
        {"temperature": 0.2, "max_tokens": 5, "messages": CHAT["messages"], "stream": False, "model": "qwen"}
    ]
    p = answer["payload"]
    assert (p["content"], p["finish_reason"], p["usage"]["total_tokens"], p["model"]) == ("hi", "stop", 4, "qwen")


async def test_chat_stream_each_delta_then_done(tmp_path: Path) -> None:
    """A stream: one answer per delta, then done with finish_reason and usage (include_usage asked)."""
    chunks = [
        {"id": "c1", "model": "qwen", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]},
        {"id": "c1", "model": "qwen", "choices": [{"index": 0, "delta": {"content": "lo"}}]},
        {"id": "c1", "model": "qwen", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {"id": "c1", "model": "qwen", "choices": [], "usage": {"total_tokens": 7}},
    ]
    sse = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    server = LmStudio()
    server.chat = lambda body: httpx.Response(200, text=sse, headers={"content-type": "text/event-stream"})
    out = await answers(make_host(tmp_path, server=server), {**CHAT, "settings": {"model": "qwen", "stream": True}})
    assert [a["payload"].get("delta") for a in out] == ["Hel", "lo", None]
    assert out[-1]["payload"] == {
        "type": "done",
        "done": True,
        "finish_reason": "stop",
        "usage": {"total_tokens": 7},
        "id": "c1",
        "model": "qwen",
    }
    assert server.bodies[0]["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("stream", [False, True])
async def test_chat_lmstudio_error_is_passed_on(tmp_path: Path, stream: bool) -> None:
    """LM Studio's own error message (no model loaded, 404) becomes the answer, plain or streamed."""
    server = LmStudio()
    server.chat = lambda body: httpx.Response(404, json={"error": {"message": "No models loaded.", "code": None}})
    [answer] = await answers(make_host(tmp_path, server=server), {**CHAT, "settings": {"stream": stream}})
    assert (answer["status"], answer["code"], answer["error"]) == (
        "error",
        "lmstudio_error",
        "LM Studio: No models loaded.",
    )


TOKEN = "sk-lm-abcd1234:abcdefghij0123456789"


@pytest.mark.parametrize("source", ["api_token", "api_token_file", "LM_API_TOKEN"])
async def test_chat_and_model_list_carry_the_api_token(tmp_path: Path, source: str) -> None:
    """With "Require Authentication" on, the token comes from the config (``api_token``, else
    ``api_token_file``), else ``$LM_API_TOKEN``, as for the supervisor: the chat and the
    loaded-model list (which picks the model) get through."""
    server, env = LmStudio(), {}
    server.token = TOKEN
    lm = LmStudioConfig()
    if source == "api_token":
        lm = LmStudioConfig(api_token=TOKEN)
    elif source == "api_token_file":
        (tmp_path / "token").write_text(TOKEN + "\n", encoding="utf-8")
        lm = LmStudioConfig(api_token_file=tmp_path / "token")
    else:
        env = {"LM_API_TOKEN": TOKEN}
    host = make_host(tmp_path, server=server, config=Config(lmstudio=lm), env=env)
    [answer] = await answers(host, CHAT)
    assert (answer["status"], answer["payload"]["content"], server.bodies[0]["model"]) == ("success", "hi", "qwen")


async def test_chat_without_the_token_names_lmstudios_refusal(tmp_path: Path) -> None:
    """No token anywhere: LM Studio's 401 message is the answer (the fake's check can fail)."""
    server = LmStudio()
    server.token = TOKEN
    [answer] = await answers(make_host(tmp_path, server=server), {**CHAT, "settings": {"model": "qwen"}})
    assert (answer["status"], answer["code"], answer["error"]) == (
        "error",
        "lmstudio_error",
        "LM Studio: An LM Studio API token is required",
    )


async def test_chat_server_down(tmp_path: Path) -> None:
    """No server: an unreachable error that says to send start_lmstudio."""
    [answer] = await answers(make_host(tmp_path, server=LmStudio(up=False)), CHAT)
    assert (answer["status"], answer["code"]) == ("error", "unreachable")
    assert "start_lmstudio" in answer["error"]


@pytest.mark.parametrize(
    ("msg", "says"),
    [
        ({"action": "chat_completion"}, "messages: expected"),
        ({**CHAT, "settings": {"modle": "x"}}, "unknown key 'modle'"),
        ({**CHAT, "settings": []}, "settings: expected an object"),
        ({**CHAT, "timeout": -1}, "timeout: expected seconds > 0"),
    ],
)
async def test_chat_bad_requests(tmp_path: Path, msg: dict[str, Any], says: str) -> None:
    """Missing messages, unknown settings and bad timeouts are refused before LM Studio is asked."""
    server = LmStudio()
    [answer] = await answers(make_host(tmp_path, server=server), msg)
    assert (answer["code"], server.bodies) == ("bad_request", [])
    assert says in answer["error"]


@pytest.mark.parametrize(
    ("setting", "content", "says"),
    [
        (b'"temperature": NaN', b'"hi"', "settings.temperature: expected a finite number, got NaN"),
        (b'"top_p": -Infinity', b'"hi"', "settings.top_p: expected a finite number, got -Infinity"),
        (b'"seed": 1e999', b'"hi"', "settings.seed: expected a finite number, got Infinity"),
        (b'"stop": ["a", "\\udfff"]', b'"hi"', "settings.stop[1]: expected text, got a string with a lone UTF-16 "
         "surrogate (U+DFFF at character 0)"),
        (b'"seed": 1', b'"a\\ud800"', "messages[0].content: expected text, got a string with a lone UTF-16 "
         "surrogate (U+D800 at character 1), which has no UTF-8 form"),
        (b'"seed": 1', b'[{"type": "text", "text": "ok"}, {"type": "x", "n": NaN}]', "messages[0].content[1].n: "
         "expected a finite number"),
        (b'"seed": 1', b'{"\\ud800": 1}', "messages[0].content (a key): expected text, got a string with a lone"),
    ],
    ids=["nan", "-infinity", "overflowing-float", "surrogate-in-stop", "surrogate-content", "nan-in-part",
         "surrogate-key"],
)  # fmt: skip
@pytest.mark.parametrize("stream", [b"false", b"true"])
async def test_what_chat_cannot_send_on_is_a_bad_request_naming_the_place(
    tmp_path: Path, setting: bytes, content: bytes, says: str, stream: bytes
) -> None:
    """Messages and settings are sent on to LM Studio as JSON: a NaN or an infinity (which
    Python's reader takes), or text with a lone surrogate (no UTF-8 form) is bad_request
    naming where it is, and LM Studio is sent nothing (they were internal errors)."""
    server = LmStudio()
    raw = (
        b'{"action": "chat_completion", "messages": [{"role": "user", "content": %s}], "settings": {%s, "stream": %s}}'
    )
    [answer] = await answers(make_host(tmp_path, server=server), raw % (content, setting, stream))
    assert (answer["code"], server.bodies) == ("bad_request", []), answer
    assert answer["error"].startswith(says), answer["error"]


async def test_a_message_nested_too_deep_to_read_is_a_bad_request(tmp_path: Path) -> None:
    """JSON nested past Python's reader (RecursionError) is bad_request, not internal."""
    [answer] = await answers(make_host(tmp_path), b"[" * 100_000 + b"]" * 100_000)
    assert (answer["code"], "nested too deeply" in answer["error"]) == ("bad_request", True), answer


def test_values_nested_too_deep_to_write_are_refused() -> None:
    """What the reader took can still be too deep for the writer: bad_request, not a RecursionError."""
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(NativeHostError, match="messages or settings: nested too deeply to be sent on as JSON"):
        _check_sendable({"messages": deep, "settings": {}})


@pytest.mark.parametrize("stream", [False, True])
async def test_chat_bodies_are_utf8_json(tmp_path: Path, stream: bool) -> None:
    """LM Studio is sent compact UTF-8 JSON with its content type, whatever httpx writes for
    ``json=``: text outside ASCII as itself, plain or streamed."""
    server = LmStudio()
    if stream:
        done = "data: [DONE]\n\n"
        server.chat = lambda body: httpx.Response(200, text=done, headers={"content-type": "text/event-stream"})
    settings = {"model": "q", "stream": stream}
    msg = {"action": "chat_completion", "messages": [{"role": "user", "content": "héllo ✓"}], "settings": settings}
    await answers(make_host(tmp_path, server=server), msg)
    [(kind, body)] = server.raw
    assert (kind, '"content":"héllo ✓"'.encode() in body) == ("application/json", True), body


# -- LM Studio's saved networkInterface is unusable (issue 14 item 1) -------------------
BAD_INTERFACE = {"networkInterface": "localhost:1234"}  # a host:port mistake: no address to bind or reach


async def test_check_names_an_unusable_network_interface(tmp_path: Path) -> None:
    """check_lmstudio succeeds: the server is not running, no endpoint, and server_error
    names networkInterface with its fix; nothing is probed (a server answering elsewhere
    is not LM Studio's as configured)."""
    host = make_host(tmp_path, server=LmStudio(up=True), server_config=BAD_INTERFACE)
    [answer] = await answers(host, {"action": "check_lmstudio"})
    p = answer["payload"]
    assert (answer["status"], p["server_running"], p["api_endpoint"]) == ("success", False, None)
    assert "networkInterface 'localhost:1234' is not an address" in p["server_error"]
    assert "declare [server] bind" in p["server_error"]


@pytest.mark.parametrize("action", ["start_lmstudio", "chat_completion"])
async def test_start_and_chat_refuse_an_unusable_network_interface(tmp_path: Path, action: str) -> None:
    """start_lmstudio and chat_completion are refused as lmstudio_error naming
    networkInterface: no `lms` call (no daemon started), no chat sent (they were internal
    errors: InvalidURL)."""
    server, lms = LmStudio(up=False), FakeLms({})
    host = make_host(tmp_path, server=server, lms=lms, server_config=BAD_INTERFACE)
    [answer] = await answers(host, {**CHAT_MSG, "action": action})
    assert (answer["status"], answer["code"], lms.calls, server.bodies) == ("error", "lmstudio_error", [], [])
    assert "networkInterface 'localhost:1234' is not an address LM Studio's server can bind" in answer["error"]


async def test_a_declared_bind_overrides_an_unusable_network_interface(tmp_path: Path) -> None:
    """`[server] bind` wins over LM Studio's saved interface: the server there is found."""
    config = Config(server=ServerConfig(bind="127.0.0.1", start_timeout=5))
    host = make_host(tmp_path, config=config, server_config=BAD_INTERFACE)
    [answer] = await answers(host, {"action": "check_lmstudio"})
    assert (answer["payload"]["server_running"], answer["payload"]["api_endpoint"]) == (True, URL)
