"""Idle cost benchmark: what a supervisor that has nothing to do costs, per minute.

For 2 and for 20 declared models, starts the real ``lmsupervisor run`` against the
simulator (profile ``0.4`` by default, with the simulator's default per-call `lms` cost,
which models a Node/bun CLI start), waits for ``ready``, then measures over ``--seconds``
(default 60) at the default 5 s probe interval:

- the supervisor's own CPU (% of one core): on Linux the sum of its threads' on-CPU
  nanoseconds (``/proc/PID/task/*/schedstat``; ``cpu_times()`` counts 10 ms ticks, too coarse
  for 0.1% over a minute), elsewhere psutil's user + system ``cpu_times()``; and its reaped
  children's CPU (the `lms` processes it ran), from psutil's ``cpu_times()``;
- its RSS (MiB) at the end;
- the TCP connections to LM Studio's HTTP server closed per minute (new ``TIME_WAIT``
  entries on its port, either side: the machine's TCP table, psutil); 0.0 means every
  round reused one kept-alive connection;
- `lms` calls per minute, counted by a wrapper script that the config names as
  ``lmstudio.lms`` (it appends one line per call to a file, then execs the real `lms`).

Usage: python bench/idle.py [--seconds 60] [--profile 0.4] [--models 2,20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import psutil
from harness import Supervised

from lmsupervisor.client.sync import request
from lmsupervisor.simulator.home import create_install

KEYS = ["qwen/qwen3-4b", "google/gemma-3-1b", "text-embedding-nomic-embed-text-v1.5", "openai/gpt-oss-20b"]
READY_TIMEOUT = 300.0  # seconds for the first bring-up with 20 loads


def models_toml(count: int) -> str:
    """``count`` declared models: the first ones by key, the rest as extra identifiers."""
    out = []
    for i in range(count):
        key = KEYS[i % len(KEYS)]
        ident = "" if i < len(KEYS) else f'identifier = "m{i}"\n'
        out.append(f'[[models]]\nkey = "{key}"\n{ident}')
    return "".join(out)


def own_cpu(proc: psutil.Process) -> float:
    """CPU seconds ``proc``'s live threads have used, from ``/proc/PID/task/*/schedstat``
    (nanoseconds); a thread that ends while being read is skipped (its time is lost: the
    idle supervisor keeps its threads, and spawns no `lms` whose watcher thread would end).
    Without procfs: user + system from psutil (10 ms ticks)."""
    tasks = Path(f"/proc/{proc.pid}/task")
    if not tasks.is_dir():
        times = proc.cpu_times()
        return float(times.user + times.system)
    total = 0
    for task in tasks.iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


def closed(port: int) -> set[tuple[object, object]]:
    """The machine's TCP connections in ``TIME_WAIT`` with ``port`` on either side (each
    stays there 60 s after it closed), as (local, remote) address pairs."""
    return {
        (c.laddr, c.raddr)
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_TIME_WAIT and c.raddr and port in (c.laddr.port, c.raddr.port)
    }


def measure(count: int, seconds: float, profile: str, scale: float) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="lmsi", dir="/tmp"))
    sim = create_install(tmp / "home", profile=profile, time_scale=scale)
    wrapper, calls = sim.counting_lms(tmp)
    config = f'[lmstudio]\nlms = "{wrapper}"\n[log]\nlevel = "warning"\n' + models_toml(count)
    with Supervised(sim, tmp, config, ready_timeout=READY_TIMEOUT) as run:
        time.sleep(6)  # let the first health round pass: what is measured is the steady state
        me = psutil.Process(run.pid)
        before, cpu_before = me.cpu_times(), own_cpu(me)
        n_before, started = len(calls.read_text().splitlines()), time.monotonic()
        closed_before = closed(sim.http_port)
        time.sleep(seconds)
        reconnects = len(closed(sim.http_port) - closed_before)
        after, cpu_after = me.cpu_times(), own_cpu(me)
        n_after, elapsed = len(calls.read_text().splitlines()), time.monotonic() - started
        rss = me.memory_info().rss / 2**20
        if not request(run.sock, "GET", "/v1/health")[1]["ready"]:
            raise SystemExit("the supervisor left ready during the measurement")
    own = cpu_after - cpu_before
    kids = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return {
        "own": 100 * own / elapsed,
        "children": 100 * kids / elapsed,
        "rss": rss,
        "calls": (n_after - n_before) * 60 / elapsed,
        "connections": reconnects * 60 / elapsed,
        "seconds": elapsed,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--profile", default="0.4")
    parser.add_argument("--models", default="2,20")
    parser.add_argument("--scale", type=float, default=0.05, help="simulator time_scale (bring-up only)")
    args = parser.parse_args()
    print(f"profile {args.profile}, default lms cost, health.interval 5 s, {args.seconds:g} s per run")
    print(
        f"{'models':>6}  {'supervisor %':>12}  {'children %':>10}  {'total %':>8}  {'RSS MiB':>8}  {'lms/min':>8}"
        f"  {'conn/min':>8}"
    )
    for count in (int(c) for c in args.models.split(",")):
        r = measure(count, args.seconds, args.profile, args.scale)
        print(
            f"{count:>6}  {r['own']:>12.3f}  {r['children']:>10.3f}  {r['own'] + r['children']:>8.3f}  "
            f"{r['rss']:>8.1f}  {r['calls']:>8.1f}  {r['connections']:>8.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
