"""Native-messaging host benchmark: what an extension waits for, through real pipes.

Prints, against a simulated LM Studio with its server up and no supervisor:
- the time from spawning ``lmsupervisor native-host`` to its first answer (what
  ``runtime.sendNativeMessage`` pays on every call, since the browser starts a host per
  message), median and p95 over N starts, next to ``python -c pass``;
- ``check_lmstudio`` round trips on one port (``connectNative``): median and p95;
- a streamed ``chat_completion``: time to the first delta and to ``done``, median.

Usage: python bench/nativehost.py [--n N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import pct

from lmsupervisor.simulator.home import create_install


class Port:
    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lmsupervisor", "native-host"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout

    def send(self, msg: dict[str, Any]) -> None:
        body = json.dumps(msg).encode()
        self.stdin.write(struct.pack("=I", len(body)) + body)
        self.stdin.flush()

    def recv(self) -> dict[str, Any]:
        (n,) = struct.unpack("=I", self.stdout.read(4))
        found: dict[str, Any] = json.loads(self.stdout.read(n))
        return found

    def close(self) -> None:
        self.stdin.close()
        self.proc.wait(10)
        self.stdout.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lmnhb"))
    sim = create_install(root / "home", time_scale=0.02)
    try:
        env = {**sim.env(), "LMSUPERVISOR_SOCKET": str(root / "none.sock")}
        assert sim.lms("server", "start").returncode == 0

        cold, python = [], []
        for _ in range(args.n):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            python.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            port = Port(env)
            port.send({"action": "check_lmstudio"})
            assert port.recv()["status"] == "success"
            cold.append((time.perf_counter() - t) * 1000)
            port.close()
        print(f"spawn to first answer: median {statistics.median(cold):.0f} ms, p95 {pct(cold, 0.95):.0f} ms")
        print(f"python -c pass:        median {statistics.median(python):.0f} ms")

        port = Port(env)
        rtt = []
        for _ in range(args.n * 5):
            t = time.perf_counter()
            port.send({"action": "check_lmstudio"})
            port.recv()
            rtt.append((time.perf_counter() - t) * 1000)
        print(f"check_lmstudio on one port: median {statistics.median(rtt):.1f} ms, p95 {pct(rtt, 0.95):.1f} ms")

        first, done = [], []
        msg: dict[str, object] = {
            "action": "chat_completion",
            "messages": [{"role": "user", "content": "hi"}],
            "settings": {"model": "qwen/qwen3-4b", "stream": True},
        }
        for _ in range(args.n):
            t = time.perf_counter()
            port.send(msg)
            got_first = False
            while True:
                answer = port.recv()
                if not got_first:
                    first.append((time.perf_counter() - t) * 1000)
                    got_first = True
                if answer["status"] != "success" or answer["payload"]["done"]:
                    break
            done.append((time.perf_counter() - t) * 1000)
        print(
            f"streamed chat (simulator): first delta median {statistics.median(first[1:]):.1f} ms, "
            f"done median {statistics.median(done[1:]):.1f} ms (first call, with the JIT load: {done[0]:.0f} ms)"
        )
        port.close()
    finally:
        sim.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
