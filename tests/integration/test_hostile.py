"""Over 20,000 malformed and hostile requests against a live `lmsupervisor run`: it keeps
answering, gives back its memory and descriptors, logs no traceback, and still recovers
LM Studio (issue 7). Bounded in count: about 30 s on 2 idle cores (~14 s of CPU)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from lmsupervisor.client import Client
from lmsupervisor.simulator.home import SimInstall
from lmsupervisor.statusd.server import IDLE_TIMEOUT, REQUEST_TIMEOUT, WRITE_TIMEOUT
from tests.conftest import cpu_bound, eventually
from tests.integration.test_run import Running

pytestmark = pytest.mark.integration

PIPELINED_CONNECTIONS, PIPELINE_DEPTH = 100, 150  # 15,000 requests
MALFORMED = 5_000  # one connection each
IDLE = 1_000
TRICKLES = 5
CONCURRENCY = 64  # malformed connections in flight at once
# A connection slot frees up at the latest when the server cuts an idle connection, and a
# trickling client is cut at the latest REQUEST_TIMEOUT after its first byte: the waits below
# are those deadlines of the server, three times over (slack for a machine busy elsewhere).
SERVER_DEADLINE = 3 * max(IDLE_TIMEOUT, REQUEST_TIMEOUT)

VALID = [
    b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n",
    b"HEAD /v1/status HTTP/1.1\r\nHost: x\r\n\r\n",
    b"HEAD /v1/events HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1/health HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody",
    b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1/%E2%9C%93%00 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /nowhere HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"DELETE /v1/status HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1/restart HTTP/1.1\r\nHost: x\r\n\r\n",
]


def malformed(rng: random.Random, i: int) -> bytes:
    kind = i % 10
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 2000))
    if kind == 1:
        return b"GET /v1/status HTT"  # truncated line, then the client leaves
    if kind == 2:
        return b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n"
    if kind == 3:
        return b"POST /v1/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n" + b"x" * 1000
    if kind == 4:
        return b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\nshort"  # lying length
    if kind == 5:
        return b"POST /nowhere HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nnot hex\r\n"
    if kind == 6:
        return b"GET /v1/health HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 3000 + b"\r\n"
    if kind == 7:
        return "GET /v1/\u2603/\u00e9 HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    if kind == 8:
        return b"GET /v1/health HTTP/9.9\r\n\r\n"
    return b"\r\n" * 50 + b"GET\r\n\r\n"


async def shut(writer: asyncio.StreamWriter) -> None:
    """Close and wait for it: a socket left to the garbage collector is a ResourceWarning."""
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def pipelined(path: Path, rng: random.Random, depth: int) -> tuple[int, list[float]]:
    """PIPELINE_DEPTH requests in one write; (answers read back, stalls).

    A connect that lands while the listen backlog is full (or a connection the server turns
    away at its connection limit) is retried until SERVER_DEADLINE: that is the server saying
    "later", not failing. The server also drops a client that does not read what it is sent
    for WRITE_TIMEOUT: on a busy machine that can be this test, starved of CPU. A connection
    that ends with answers missing is therefore retried with the unanswered requests (as an
    HTTP/1.1 client retries after a closed pipeline), and ``stalls`` holds, for each such
    connection, the longest time nothing arrived on it, for the test to judge the drop.
    """
    batch = [rng.choice(VALID) for _ in range(depth - 1)]
    batch.append(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answered = 0
    stalls: list[float] = []
    give_up = time.monotonic() + SERVER_DEADLINE
    while answered < depth and time.monotonic() < give_up:
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))
        except OSError:
            await asyncio.sleep(0.05)
            continue
        data, stall = b"", 0.0
        try:
            writer.write(b"".join(batch[answered:]))
            last = time.monotonic()
            while chunk := await reader.read(1 << 16):
                now = time.monotonic()
                data, stall, last = data + chunk, max(stall, now - last), now
        except OSError:
            await asyncio.sleep(0.05)
            continue  # refused at the connection limit, or reset: nothing counted from it
        finally:
            await shut(writer)
        got = data.count(b"HTTP/1.1 ")
        if got == depth - answered:
            return depth, stalls
        stalls.append(max(stall, time.monotonic() - last))
        answered += max(0, got - 1)  # the last answer may be cut short: asked again
    return answered, stalls


async def hostile(path: Path, payload: bytes, gate: asyncio.Semaphore) -> None:
    async with gate:
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))
        except OSError:
            return
        try:
            writer.write(payload)
            await writer.drain()
            async with asyncio.timeout(0.5):
                await reader.read(4096)
        except (OSError, TimeoutError):
            pass
        finally:
            await shut(writer)


async def trickle(path: Path, stop: asyncio.Event) -> bool:
    """One byte every 0.5 s; True if the server cut us before ``stop``."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        for byte in b"GET /v1/health HTTP/1.1\r\nHost: x\r\n" * 10:
            writer.write(bytes([byte]))
            try:
                await writer.drain()
                async with asyncio.timeout(0.5):
                    if await reader.read(1) == b"":
                        return True
            except TimeoutError:
                pass
            except OSError:
                return True
            if stop.is_set():
                return False
        return False
    finally:
        await shut(writer)


async def flood(
    path: Path, depth: int = PIPELINE_DEPTH, bad: int = MALFORMED, trickles_n: int = TRICKLES
) -> tuple[int, list[float], list[bool]]:
    """Every hostile shape at once; returns (pipelined answers read, the stalls of pipelined
    connections the server dropped, which trickles the server cut)."""
    rng = random.Random(7)
    stop = asyncio.Event()
    trickles = [asyncio.ensure_future(trickle(path, stop)) for _ in range(trickles_n)]
    idle = []
    for _ in range(IDLE):
        with contextlib.suppress(OSError):
            idle.append(await asyncio.open_unix_connection(str(path)))
    results = await asyncio.gather(*(pipelined(path, rng, depth) for _ in range(PIPELINED_CONNECTIONS)))
    answered, stalls = sum(n for n, _ in results), [s for _, each in results for s in each]
    gate = asyncio.Semaphore(CONCURRENCY)
    await asyncio.gather(*(hostile(path, malformed(rng, i), gate) for i in range(bad)))
    await asyncio.gather(*(shut(writer) for _, writer in idle))
    async with asyncio.timeout(SERVER_DEADLINE):
        cut = await asyncio.gather(*trickles)  # the server's request deadline ends them
    stop.set()
    return answered, stalls, cut


@cpu_bound(14.0)  # the flood, the supervisor answering it, the simulator
def test_hostile_clients_leave_no_trace(sim: SimInstall, start: Callable[..., Running]) -> None:
    """20,000+ hostile requests: every pipelined one answered, trickling clients cut, health
    still answered, fds (and RSS, with no pipeline dropped) back within 10%, no traceback,
    recovery intact."""
    run = start(sim, "")
    run.wait_state("ready")
    proc = psutil.Process(run.proc.pid)
    client = Client(run.sock)
    # Warm-up at the same concurrency, fewer requests: the allocator keeps its high-water
    # mark, so the baseline is taken after one; what must not happen is growth per request.
    asyncio.run(flood(run.sock, depth=10, bad=500, trickles_n=0))
    assert eventually(lambda: run.status() is not None and proc.num_fds() < 64, timeout=SERVER_DEADLINE)

    def fds() -> int:  # minus TCP: the greeting probes of LM Studio come and go every interval
        return int(proc.num_fds()) - len(proc.net_connections("inet"))

    rss0, fds0 = proc.memory_info().rss, fds()

    answered, stalls, cut = asyncio.run(flood(run.sock))

    assert answered == PIPELINED_CONNECTIONS * PIPELINE_DEPTH  # every pipelined request got its answer
    # and a pipeline was only ever dropped when nothing moved on it for a good part of
    # WRITE_TIMEOUT (the test starved of CPU, or the server): never while it was being read
    assert [gap for gap in stalls if gap < WRITE_TIMEOUT / 2] == [], stalls
    assert cut == [True] * TRICKLES  # trickling clients are cut by the server
    assert set(client.health()) == {"ready", "state"}  # answered (how fast is the benchmark's business)
    assert eventually(lambda: fds() <= fds0 * 1.1 + 1, timeout=SERVER_DEADLINE), (fds0, fds())
    # The baseline is the allocator's high-water mark after a warm-up at the same concurrency;
    # pipelines dropped with their answers buffered (a starved test) raise that mark once more,
    # so the comparison only holds for a flood without drops: the usual case, and the one a
    # leak per request would fail.
    if not stalls:
        assert proc.memory_info().rss <= rss0 * 1.1, (rss0, proc.memory_info().rss)
    log = run.log.read_text()
    assert ("Traceback" in log, "aclose" in log, '"level": "error"' in log) == (False, False, False), log[-3000:]
    old = sim.crash_daemon()
    # A new daemon, not a restart count: on a starved machine the flood may already have cost a restart.
    run.wait_for(lambda s: s["state"] == "ready" and s["lmstudio"]["daemon_pid"] not in (None, old))
