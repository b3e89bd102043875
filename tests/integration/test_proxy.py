"""The holding proxy of a real `lmsupervisor run` in front of the simulator: clients see no recovery."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import shutil
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from lmsupervisor.simulator.home import SimInstall
from tests.conftest import FAST, eventually
from tests.integration.test_run import TWO_MODELS, Running, loaded_ids

pytestmark = pytest.mark.integration

CLIENTS = 8  # concurrent clients of the load test
BEFORE_CRASH = 40  # answers served before the daemon is killed
AFTER_READY = 5  # requests each client sends once the supervisor is ready again
MAX_PER_CLIENT = 400  # bound of each client's loop, whatever happens


def proxied(hold_timeout: float = 30, keepalive: float = 0) -> str:
    return f"""{TWO_MODELS}
[proxy]
listen = "127.0.0.1:0"
hold_timeout = {hold_timeout}
keepalive = {keepalive}
"""


def proxy_url(run: Running) -> str:
    snap = run.wait_state("ready")
    return f"http://{snap['proxy']['listen']}"


def metric(run: Running, name: str) -> float:
    """One sample of the run's ``/metrics`` (status socket), 0 when absent."""
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(run.sock)), timeout=5) as client:
        text = client.get("http://lmsupervisor/metrics").text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " ")]
    return values[0] if values else 0.0


def chat(model: str, stream: bool) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}], "stream": stream, "max_tokens": 4}


@dataclass
class Outcome:
    """One request of the load: when it was sent, and how it ended."""

    sent: float
    stream: bool
    result: str  # "ok", "clean_error" (the proxy's 502 / last SSE error event) or what went wrong
    done: float = 0.0  # when it ended (monotonic seconds)


async def one(client: httpx.AsyncClient, url: str, model: str, stream: bool) -> str:
    """``ok``, ``clean_error``, or a description of anything else."""
    try:
        if not stream:
            r = await client.post(f"{url}/v1/chat/completions", json=chat(model, False))
            if r.status_code == 200 and r.json()["choices"][0]["message"]["content"]:
                return "ok"
            if r.status_code == 502 and r.json()["error"]["code"] == "lmstudio_failed":
                return "clean_error"
            return f"HTTP {r.status_code}: {r.text[:200]}"
        async with client.stream("POST", f"{url}/v1/chat/completions", json=chat(model, True)) as r:
            events = [line async for line in r.aiter_lines() if line.startswith("data: ")]
        if r.status_code == 200 and events and events[-1] == "data: [DONE]":
            return "ok"
        if events and '"lmstudio_failed"' in events[-1]:
            return "clean_error"
        return f"stream HTTP {r.status_code}: {events[-2:]}"
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"


def test_kill_9_under_load_fails_no_request_sent_after_the_crash(
    sim: SimInstall, start: Callable[..., Running]
) -> None:
    """kill -9 of the daemon while 8 clients send plain and streamed chats through the proxy:
    every request sent after the crash is answered (held, then served), the ones in flight
    end answered or with the proxy's clean error, and LM Studio gets no JIT duplicate."""
    run = start(sim, proxied())
    url = proxy_url(run)
    outcomes: list[Outcome] = []
    crashed_at: list[float] = []
    recovered = asyncio.Event()

    async def client(n: int) -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            after = 0
            for i in range(MAX_PER_CLIENT):
                stream = (n + i) % 2 == 0
                sent = time.monotonic()
                result = await one(http, url, "qwen" if n % 2 else "openai/gpt-oss-20b", stream)
                outcomes.append(Outcome(sent, stream, result, time.monotonic()))
                if recovered.is_set() and sent > crashed_at[0]:  # a request held over the crash is not one
                    after += 1
                    if after >= AFTER_READY:
                        return

    async def chaos() -> None:
        while len(outcomes) < BEFORE_CRASH:
            await asyncio.sleep(0.01)
        crashed_at.append(time.monotonic())
        sim.crash_daemon()
        await asyncio.to_thread(run.wait_for, lambda s: s["ready"] and s["restarts"]["count"] == 1)
        recovered.set()

    async def main() -> None:
        await asyncio.gather(chaos(), *(client(n) for n in range(CLIENTS)))

    asyncio.run(asyncio.wait_for(main(), 90))
    after = [o for o in outcomes if o.sent > crashed_at[0]]
    before = [o for o in outcomes if o.sent <= crashed_at[0]]
    # what a failure shows: each bad request's times from the crash (s), and the run's log of states and holds
    told = [
        f"{o.result} sent {o.sent - crashed_at[0]:+.3f} ended {o.done - crashed_at[0]:+.3f}"
        for o in outcomes
        if o.result not in ("ok", "clean_error")
    ]
    events = [line for line in run.log.read_text().splitlines() if "state_changed" in line or "proxy_" in line]
    assert [o.result for o in after if o.result != "ok"] == [], (told, events[-40:])
    assert [o.result for o in before if o.result not in ("ok", "clean_error")] == [], (told, events[-40:])
    assert len(after) >= CLIENTS * AFTER_READY  # the load went on through the recovery
    assert {o.stream for o in after} == {True, False}
    assert metric(run, 'lmsupervisor_proxy_requests_total{outcome="held_served"}') >= 1  # the crash was held over
    assert loaded_ids(sim) == ["openai/gpt-oss-20b", "qwen"]  # no JIT load behind the supervisor's back
    assert run.status() is not None
    assert (run.status() or {})["proxy"]["in_flight"] == 0


def test_a_declared_model_that_is_not_loaded_is_waited_for(sim: SimInstall, start: Callable[..., Running]) -> None:
    """A request for a declared model that failed to load is held (LM Studio would answer it
    with the only other loaded model, BT#619) until the supervisor loads it, then served by
    it; a model that is not declared passes straight through meanwhile."""
    sim.fail_load("qwen/qwen3-4b")
    run = start(sim, proxied())
    snap = run.wait_state("degraded")
    url = f"http://{snap['proxy']['listen']}"

    async def main() -> tuple[httpx.Response, httpx.Response, dict[str, Any]]:
        async with httpx.AsyncClient(timeout=30) as http:
            held = asyncio.ensure_future(http.post(f"{url}/v1/chat/completions", json=chat("qwen", False)))
            status = await asyncio.to_thread(run.wait_for, lambda s: s["proxy"]["held"] == 1)
            other = await http.post(f"{url}/v1/chat/completions", json=chat("openai/gpt-oss-20b", False))
            sim.clear_faults()  # the supervisor's retry loads it
            return await held, other, status

    answer, other, status = asyncio.run(main())
    assert (status["proxy"]["in_flight"], status["ready"]) == (1, False)
    assert (other.status_code, other.json()["model"]) == (200, "openai/gpt-oss-20b")
    assert (answer.status_code, answer.json()["model"]) == (200, "qwen")
    assert metric(run, 'lmsupervisor_proxy_requests_total{outcome="held_served"}') >= 1


def test_a_held_stream_that_got_keepalives_is_then_served_whole(sim: SimInstall, start: Callable[..., Running]) -> None:
    """A streamed request held while its declared model loads gets SSE comments, then LM
    Studio's stream in the same answer once the model is loaded: one valid chunked answer
    (httpx reads its framing), comments first, every event, ``data: [DONE]`` last."""
    sim.fail_load("qwen/qwen3-4b")
    run = start(sim, proxied(keepalive=0.2))
    snap = run.wait_state("degraded")
    url = f"http://{snap['proxy']['listen']}"

    async def main() -> list[str]:
        commented = asyncio.Event()
        lines: list[str] = []

        async def read() -> None:
            async with (
                httpx.AsyncClient(timeout=30) as http,
                http.stream("POST", f"{url}/v1/chat/completions", json=chat("qwen", True)) as r,
            ):
                async for line in r.aiter_lines():
                    if line:
                        lines.append(line)
                    if line.startswith(":"):
                        commented.set()

        reader = asyncio.ensure_future(read())
        await asyncio.wait_for(commented.wait(), 30)
        sim.clear_faults()  # the supervisor's retry loads it
        await asyncio.wait_for(reader, 60)
        return lines

    lines = asyncio.run(main())
    comments = [n for n, line in enumerate(lines) if line.startswith(":")]
    events = [line for line in lines if line.startswith("data: ")]
    assert (comments[0], max(comments) < len(lines) - len(events), events[-1]) == (0, True, "data: [DONE]")
    assert json.loads(events[0].removeprefix("data: "))["model"] == "qwen"
    assert metric(run, 'lmsupervisor_proxy_requests_total{outcome="held_served"}') == 1


def test_a_hold_past_hold_timeout_gets_503_and_a_held_stream_keepalives(
    sim: SimInstall, start: Callable[..., Running]
) -> None:
    """Held past ``hold_timeout``: a plain request gets 503, Retry-After and the OpenAI-style
    ``lmstudio_recovering`` body; a streamed one got SSE comments meanwhile and ends with the
    same error as its last ``data:`` event."""
    sim.fail_load("qwen/qwen3-4b", "no memory")
    run = start(sim, proxied(hold_timeout=1.2, keepalive=0.3))
    snap = run.wait_state("degraded")
    url = f"http://{snap['proxy']['listen']}"
    with httpx.Client(timeout=30) as http:
        plain = http.post(f"{url}/v1/chat/completions", json=chat("qwen", False))
        with http.stream("POST", f"{url}/v1/chat/completions", json=chat("qwen", True)) as r:
            lines = [line for line in r.iter_lines() if line]
            head = (r.status_code, r.headers["content-type"])
    assert (plain.status_code, plain.headers["retry-after"]) == (503, "2")
    error = plain.json()["error"]
    assert (error["type"], error["code"]) == ("service_unavailable", "lmstudio_recovering")
    assert "not served within 1.2 s" in error["message"]
    assert head == (200, "text/event-stream")
    assert lines[0] in (": model qwen failed", ": lmstudio recovering (loading_models)")  # the retries go on
    assert len([line for line in lines if line.startswith(":")]) >= 3
    assert json.loads(lines[-1].removeprefix("data: "))["error"]["code"] == "lmstudio_recovering"
    assert metric(run, 'lmsupervisor_proxy_requests_total{outcome="timed_out"}') == 2


def test_a_client_leaving_while_held_frees_everything(sim: SimInstall, start: Callable[..., Running]) -> None:
    """A client that disconnects while its request is held leaves nothing behind: held and
    in_flight back to 0, counted as abandoned."""
    sim.fail_load("qwen/qwen3-4b")
    run = start(sim, proxied())
    snap = run.wait_state("degraded")
    url = f"http://{snap['proxy']['listen']}"

    async def main() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            held = asyncio.ensure_future(http.post(f"{url}/v1/chat/completions", json=chat("qwen", False)))
            await asyncio.to_thread(run.wait_for, lambda s: s["proxy"]["held"] == 1)
            held.cancel()  # closes the connection
            with pytest.raises(asyncio.CancelledError):
                await held

    asyncio.run(main())
    status = run.wait_for(lambda s: s["proxy"]["in_flight"] == 0)
    assert status["proxy"]["held"] == 0
    assert metric(run, 'lmsupervisor_proxy_requests_total{outcome="abandoned"}') == 1
    assert metric(run, "lmsupervisor_proxy_held") == 0


def listening(run: Running, event: str) -> str:
    """The ``listen`` address a JSON log ``event`` of ``run`` names (the port picked for port 0)."""
    found: list[str] = []

    def logged() -> bool:
        for line in run.log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("event") == event:
                    found.append(record["listen"])
        return bool(found)

    assert eventually(logged, timeout=30, interval=0.05), run.log.read_text()[-2000:]
    return found[0]


def self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_healthz_on_the_proxy_and_a_read_only_metrics_port(
    sim: SimInstall, start: Callable[..., Running], tmp_path: Path
) -> None:
    """``/healthz`` answers without a token on the proxy port (503 while degraded, 200 once
    ready, never forwarded) and on the metrics port; the metrics port serves ``/metrics``
    over TLS behind basic auth, and nothing else: no control verb is reachable there."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = self_signed(tmp_path)
    users = tmp_path / "users"
    users.write_text(f"# scrapers\nprometheus:{hashlib.sha256(b'scrape-me').hexdigest()}\n")
    sim.fail_load("qwen/qwen3-4b")
    metrics = f"""
[metrics]
listen = "127.0.0.1:0"
tls_cert_file = "{cert}"
tls_key_file = "{key}"
basic_auth_users_file = "{users}"
"""
    run = start(sim, proxied() + metrics)
    snap = run.wait_state("degraded")
    proxy = f"http://{snap['proxy']['listen']}"
    scrape = f"https://{listening(run, 'metrics_listening')}"
    auth = ("prometheus", "scrape-me")
    with (
        httpx.Client(timeout=10) as http,
        httpx.Client(timeout=10, verify=ssl.create_default_context(cafile=cert)) as tls,
    ):
        assert http.get(f"{proxy}/healthz").json()["ready"] is False
        assert (tls.get(f"{scrape}/healthz").status_code, tls.get(f"{scrape}/metrics").status_code) == (401, 401)
        assert tls.get(f"{scrape}/metrics", auth=("prometheus", "wrong")).status_code == 401
        page = tls.get(f"{scrape}/metrics", auth=auth)
        assert (page.status_code, "lmsupervisor_ready 0.0" in page.text) == (200, True)
        assert 'lmsupervisor_proxy_requests_total{outcome="timed_out"}' in page.text
        assert tls.post(f"{scrape}/metrics", auth=auth).status_code == 405
        assert tls.post(f"{scrape}/v1/restart", auth=auth).status_code == 404
        degraded = tls.get(f"{scrape}/healthz", auth=auth)
        assert (degraded.status_code, degraded.json()["ready"]) == (503, False)
        sim.clear_faults()
        run.wait_state("ready")
        ready = http.get(f"{proxy}/healthz")
        assert (ready.status_code, ready.json()) == (200, {"ready": True, "state": "ready"})
        assert tls.get(f"{scrape}/healthz", auth=auth).json() == {"ready": True, "state": "ready"}
    assert run.stop() == 0


LEAVERS = 16  # concurrent clients that leave: the proxy's loop sees their goodbyes beside upstream bytes


async def leave_stream(url: str, until: bytes, events: int) -> bytes:
    """Stream a long chat through the proxy on a raw connection, read until ``until`` or
    ``events`` SSE events came, then leave with a reset (SO_LINGER 0): what it read."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    body = json.dumps(chat("qwen", True) | {"max_tokens": 512}).encode()
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
    seen = b""
    for _ in range(10_000):  # bounded: a 512-token stream ends with [DONE] and the connection's close
        chunk = await reader.read(65536)
        seen += chunk
        if not chunk or until in seen or seen.count(b"data: ") >= events:
            break
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
    return seen


def outcomes(run: Running) -> dict[str, float]:
    return {
        o: metric(run, f'lmsupervisor_proxy_requests_total{{outcome="{o}"}}') for o in ("served", "failed", "abandoned")
    }


def test_a_client_leaving_mid_stream_is_abandoned_not_an_lmstudio_failure(
    sim: SimInstall, start: Callable[..., Running]
) -> None:
    """Clients that leave a stream while LM Studio is still sending it are counted abandoned
    (never failed, no ``proxy_request_failed`` warning: LM Studio did nothing wrong), and
    leave nothing in flight."""
    # a 512-token answer takes ~30 s of wall time, 20 of its events ~1 s: each client leaves
    # mid-stream however slow this machine is (at once, a busy machine's slow client could
    # find the whole answer already written and be counted served)
    sim.set_hardware(tokens_per_second=512 * FAST / 30)
    run = start(sim, proxied())
    url = proxy_url(run)

    async def main() -> list[bytes]:
        return await asyncio.gather(*(leave_stream(url, b"data: [DONE]", 20) for _ in range(LEAVERS)))

    seen = asyncio.run(main())
    assert [s.count(b"data: ") >= 20 and b"[DONE]" not in s for s in seen] == [True] * LEAVERS
    run.wait_for(lambda s: s["proxy"]["in_flight"] == 0)
    assert outcomes(run) == {"served": 0, "failed": 0, "abandoned": LEAVERS}
    assert "proxy_request_failed" not in run.log.read_text()


def test_a_client_closing_right_after_done_leaves_no_traceback(sim: SimInstall, start: Callable[..., Running]) -> None:
    """Clients that close as soon as ``data: [DONE]`` came, before the proxy ended the
    answer, cause no "Error handling request" traceback; each is counted served or
    abandoned (whichever side closed first), never failed."""
    run = start(sim, proxied())
    url = proxy_url(run)

    async def main() -> list[bytes]:
        return await asyncio.gather(*(leave_stream(url, b"data: [DONE]", 10_000) for _ in range(LEAVERS)))

    seen = asyncio.run(main())
    assert [b"data: [DONE]" in s for s in seen] == [True] * LEAVERS
    run.wait_for(lambda s: s["proxy"]["in_flight"] == 0)
    counted = outcomes(run)
    assert (counted["failed"], counted["served"] + counted["abandoned"]) == (0, LEAVERS)
    log = run.log.read_text()
    assert ("Error handling request" in log, "Traceback" in log) == (False, False)
