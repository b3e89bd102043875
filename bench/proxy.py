"""What does the holding proxy cost a client? Added latency, streamed chunks, throughput, memory.

Two upstreams, each measured directly and through the proxy, side by side in one run:

- **echo** (the floor): a raw asyncio HTTP/1.1 server in its own process that answers any
  request with a small JSON body, and ``POST /sse`` with ``--chunks`` SSE events (chunked),
  one every 5 ms, each carrying the monotonic nanoseconds it was sent at. The proxy in
  front of it is a :class:`~lmsupervisor.proxy.server.HoldingProxy` in its own process,
  with a supervisor stand-in that is always ready (``--serve-proxy``).
- **relay** (the floor of any Python hop): a bare asyncio byte relay in its own process in
  front of the echo (no HTTP parsing), to tell the proxy's own cost from what one more
  process on the path costs on this machine (``--serve-relay``).
- **simulator**: a real `lmsupervisor run` with ``[proxy] listen``, in front of the
  simulated LM Studio (``GET /v1/models``, and a streamed chat completion).

Printed: p50/p99 round trip of a small non-streaming request over one keep-alive
connection (direct, proxied, added); per-chunk delivery latency of a stream (echo: sent
to received; simulator: time to the whole stream); requests/s with 32 concurrent
keep-alive clients (and proxied/direct); the proxy process's RSS idle, with 200 open
streams, and after they close. Direct, proxied and relayed samples are taken in turn, one
request or stream each, so that a busy machine's drift falls on all alike. Targets (issue
18): added p50 <= 0.5 ms, p99 <= 2 ms, throughput >= 0.9x direct, <= 0.2 ms added per
chunk, flat memory. Latencies are ms.

Usage: python bench/proxy.py [--requests N] [--seconds S] [--streams N] [--streams-timed N]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from harness import Supervised, pct

from lmsupervisor.simulator.home import create_install

CLIENTS = 32
CHUNK_GAP = 0.005  # seconds between the echo server's SSE events
BODY = b'{"object": "list", "data": [{"id": "echo", "object": "model"}]}'
# a streamed request as clients send them (the proxy reads "stream": true from the body)
SSE_REQUEST = (
    b"POST /sse HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\nContent-Type: application/json\r\n"
    b'Content-Length: 30\r\n\r\n{"model": "m", "stream": true}'
)


# -- the echo upstream -------------------------------------------------------------------
async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    chunks = int(os.environ.get("BENCH_CHUNKS", "20"))
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            if length:
                await reader.readexactly(length)
            if head.startswith(b"POST /sse"):
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                for _ in range(chunks):
                    event = b"data: %d\n\n" % time.monotonic_ns()
                    writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                    await writer.drain()
                    await asyncio.sleep(CHUNK_GAP)
                writer.write(b"0\r\n\r\n")
            else:
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(BODY), BODY)
                )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def serve_echo(port: int) -> None:
    server = await asyncio.start_server(_echo, "127.0.0.1", port, backlog=512)
    print("ready", flush=True)
    await server.serve_forever()


# -- a bare relay, in front of the echo -----------------------------------------------------
class _Pipe(asyncio.Protocol):
    """One side of the relay: what it receives goes to ``peer`` as it comes."""

    def __init__(self, peer: asyncio.WriteTransport | None = None) -> None:
        self.peer = peer
        self.early: list[bytes] = []  # bytes received before the upstream connection is up

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.peer is None:  # the client's side: connect upstream
            asyncio.get_running_loop().create_task(self._connect(transport))

    async def _connect(self, down: asyncio.BaseTransport) -> None:
        assert isinstance(down, asyncio.Transport)
        port = int(os.environ["BENCH_UPSTREAM"])
        up, _ = await asyncio.get_running_loop().create_connection(lambda: _Pipe(down), "127.0.0.1", port)
        self.peer = up
        for data in self.early:
            up.write(data)

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self.early.append(data)
        else:
            self.peer.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.peer.close()


async def serve_relay(upstream_port: int, listen_port: int) -> None:
    os.environ["BENCH_UPSTREAM"] = str(upstream_port)
    server = await asyncio.get_running_loop().create_server(_Pipe, "127.0.0.1", listen_port, backlog=512)
    print("ready", flush=True)
    await server.serve_forever()


# -- the proxy alone, in front of the echo ----------------------------------------------------
async def serve_proxy(upstream_port: int, listen_port: int) -> None:
    from prometheus_client import CollectorRegistry

    from lmsupervisor.config import parse
    from lmsupervisor.core.observed import ServerSettings
    from lmsupervisor.core.snapshot import LmStudioSeen, initial
    from lmsupervisor.core.states import State
    from lmsupervisor.proxy.server import HoldingProxy

    cfg = parse({"proxy": {"listen": f"127.0.0.1:{listen_port}"}})
    snap = dataclasses.replace(
        initial(cfg, 0.0),
        state=State.READY,
        lmstudio=LmStudioSeen(server=ServerSettings(port=upstream_port, bind="127.0.0.1")),
    )

    class Ready:
        """A supervisor that is always ready, with LM Studio at the echo server."""

        config = cfg

        @property
        def snap(self) -> Any:
            return snap

        def observe(self, observer: Any) -> None:
            pass

    proxy = HoldingProxy(Ready(), CollectorRegistry(), lambda: (200, {"ready": True, "state": "ready"}))
    await proxy.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


# -- clients -------------------------------------------------------------------------------
def request_bytes(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()


async def read_answer(reader: asyncio.StreamReader) -> bytes:
    """One Content-Length answer (head and body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(v.split(b":")[1]) for v in head.split(b"\r\n") if v.lower().startswith(b"content-length"))
    return head + await reader.readexactly(length)


async def latency(ports: list[int], path: str, n: int) -> list[list[float]]:
    """ms per round trip of a small request, one keep-alive connection per port, the ports
    taken in turn (interleaved: a busy machine's drift falls on each alike)."""
    conns = [await asyncio.open_connection("127.0.0.1", port) for port in ports]
    data = request_bytes(path)
    times: list[list[float]] = [[] for _ in ports]
    for i in range(n + 50):
        for (reader, writer), out in zip(conns, times, strict=True):
            t0 = time.perf_counter()
            writer.write(data)
            await read_answer(reader)
            if i >= 50:  # warm-up
                out.append((time.perf_counter() - t0) * 1000)
    for _, writer in conns:
        writer.close()
    return times


async def throughput(port: int, path: str, seconds: float) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        data = request_bytes(path)
        while time.perf_counter() < stop:
            writer.write(data)
            await read_answer(reader)
            done += 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return done / (time.perf_counter() - started)


async def chunk_latency(ports: list[int], streams: int) -> list[list[float]]:
    """Per SSE event from the echo: ms from its send to its arrival, ``streams`` streams per
    port, the ports taken in turn (interleaved, as :func:`latency`)."""
    out: list[list[float]] = [[] for _ in ports]
    for _ in range(streams):
        for port, times in zip(ports, out, strict=True):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(SSE_REQUEST)
            buf = b""
            while not buf.endswith(b"0\r\n\r\n"):
                data = await reader.read(65536)
                now = time.monotonic_ns()
                if not data:
                    break
                buf += data
                times += [(now - int(line[6:])) / 1e6 for line in data.split(b"\n") if line.startswith(b"data: ")]
            writer.close()
    return out


async def stream_time(ports: list[int], body: bytes, n: int) -> list[list[float]]:
    """ms for a whole streamed chat (a new connection each: the simulator closes SSE), the
    ports taken in turn (interleaved, as :func:`latency`)."""
    out: list[list[float]] = [[] for _ in ports]
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    for _ in range(n):
        for port, times in zip(ports, out, strict=True):
            t0 = time.perf_counter()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head + body)
            buf = b""
            while b"data: [DONE]" not in buf:
                data = await reader.read(65536)
                if not data:
                    break
                buf += data
            times.append((time.perf_counter() - t0) * 1000)
            writer.close()
    return out


async def open_streams(port: int, n: int, pid: int) -> tuple[float, float, float]:
    """RSS (MiB) of ``pid`` before, while ``n`` SSE streams are open through it, and after."""
    proc = psutil.Process(pid)
    before = proc.memory_info().rss / 2**20
    conns = []
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(SSE_REQUEST)
        conns.append((reader, writer))
    for reader, _ in conns:
        await reader.readuntil(b"data: ")  # every stream is open and flowing
    during = proc.memory_info().rss / 2**20
    for _, writer in conns:
        writer.close()
    await asyncio.sleep(0.5)
    return before, during, proc.memory_info().rss / 2**20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}
    )
    assert proc.stdout is not None
    for _ in range(20):  # log lines come first
        line = proc.stdout.readline()
        if line.strip() == "ready":
            return proc
        if not line:
            break
    proc.kill()
    raise SystemExit(f"{args[0]} did not start")


def row(name: str, direct: list[float], proxied: list[float]) -> str:
    d50, d99, p50, p99 = pct(direct, 0.5), pct(direct, 0.99), pct(proxied, 0.5), pct(proxied, 0.99)
    return (
        f"{name:<34} direct p50 {d50:7.3f} p99 {d99:7.3f} | proxied p50 {p50:7.3f} p99 {p99:7.3f} "
        f"| added p50 {p50 - d50:6.3f} p99 {p99 - d99:6.3f}"
    )


async def measure(args: argparse.Namespace) -> None:
    echo_port, proxy_port, relay_port = free_port(), free_port(), free_port()
    echo = spawn("--serve-echo", str(echo_port), env={"BENCH_CHUNKS": str(args.chunks)})
    started = [echo]
    try:
        started.append(front := spawn("--serve-proxy", str(echo_port), str(proxy_port)))
        started.append(spawn("--serve-relay", str(echo_port), str(relay_port)))
    except BaseException:
        for proc in started:
            proc.kill()
        raise
    try:
        print(f"echo floor: {args.requests} requests, {CLIENTS} clients for {args.seconds:g} s, ms")
        direct, proxied, relayed = await latency([echo_port, proxy_port, relay_port], "/v1/models", args.requests)
        print(row("small request round trip", direct, proxied))
        print(row("  same, bare relay (hop floor)", direct, relayed))
        direct, proxied, relayed = await chunk_latency([echo_port, proxy_port, relay_port], args.streams_timed)
        print(row(f"SSE chunk, sent -> received ({len(direct)})", direct, proxied))
        print(row("  same, bare relay (hop floor)", direct, relayed))
        rate_d = await throughput(echo_port, "/v1/models", args.seconds)
        rate_p = await throughput(proxy_port, "/v1/models", args.seconds)
        print(
            f"{'throughput, 32 clients':<34} direct {rate_d:8.0f}/s | proxied {rate_p:8.0f}/s | {rate_p / rate_d:.2f}x"
        )
        before, during, after = await open_streams(proxy_port, args.streams, front.pid)
        each = (during - before) * 1024 / args.streams
        name = f"proxy RSS, {args.streams} open streams"
        print(f"{name:<34} idle {before:6.1f} MiB | open {during:6.1f} MiB ({each:.1f} KiB each)", end="")
        print(f" | closed {after:6.1f} MiB")
    finally:
        for proc in started:
            proc.kill()
            proc.wait()

    with tempfile.TemporaryDirectory(prefix="lmsvb", dir="/tmp") as tmp:
        sim = create_install(Path(tmp) / "home")
        port = free_port()
        config = f'[[models]]\nkey = "qwen/qwen3-4b"\n[health]\ninterval = 30\n[proxy]\nlisten = "127.0.0.1:{port}"\n'
        (Path(tmp) / "run").mkdir()
        with Supervised(sim, Path(tmp) / "run", config) as run:
            sim_port = sim.http_port
            n = max(50, args.requests // 10)
            print(
                f"\nsimulator (a real `lmsupervisor run`): {n} requests, {CLIENTS} clients for {args.seconds:g} s, ms"
            )
            direct, proxied = await latency([sim_port, port], "/v1/models", n)
            print(row("GET /v1/models round trip", direct, proxied))
            body = b'{"model": "qwen/qwen3-4b", "stream": true, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}'  # noqa: E501
            direct, proxied = await stream_time([sim_port, port], body, n // 2)
            print(row("streamed chat, whole stream", direct, proxied))
            rate_d = await throughput(sim_port, "/v1/models", args.seconds)
            rate_p = await throughput(port, "/v1/models", args.seconds)
            ratio = rate_p / rate_d
            print(f"{'throughput, 32 clients':<34} direct {rate_d:8.0f}/s | proxied {rate_p:8.0f}/s | {ratio:.2f}x")
            print(f"{'supervisor RSS':<34} {psutil.Process(run.pid).memory_info().rss / 2**20:6.1f} MiB")
        sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="round trips per latency figure (echo)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per throughput figure")
    parser.add_argument("--streams", type=int, default=200, help="open streams for the RSS figure")
    parser.add_argument("--chunks", type=int, default=20, help="events per echo SSE stream")
    parser.add_argument("--streams-timed", type=int, default=40, help="echo SSE streams per chunk latency figure")
    parser.add_argument("--serve-echo", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-proxy", type=int, nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--serve-relay", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_echo:
        asyncio.run(serve_echo(args.serve_echo))
    elif args.serve_proxy:
        asyncio.run(serve_proxy(*args.serve_proxy))
    elif args.serve_relay:
        asyncio.run(serve_relay(*args.serve_relay))
    else:
        asyncio.run(measure(args))


if __name__ == "__main__":
    main()
