"""Recovery benchmark: kill -9 the simulated daemon N times and time the supervisor.

Prints, over N kills (default 20): the median and p95 time from the kill to the
supervisor noticing it (the ``backoff`` event on the status socket) and from the kill to
``ready`` again with every model, and the `lms` calls each recovery made (counted by a
wrapper that the config names as ``lmstudio.lms``), next to the simulator's own daemon
start, server start and model load times, so the supervisor's overhead is visible.
(``lmsupervisor status`` is timed by bench/status_cli.py.)

Usage: python bench/recovery.py [--kills N] [--scale S] [--profile P]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
from harness import Supervised, pct

from lmsupervisor.client.sync import open_events, request
from lmsupervisor.simulator.home import SimInstall, create_install

MODELS = ["qwen/qwen3-4b", "google/gemma-3-1b"]
PATHS = [
    "lmstudio-community/Qwen3-4B-GGUF/Qwen3-4B-Q4_K_M.gguf",
    "lmstudio-community/gemma-3-1b-it-GGUF/gemma-3-1b-it-Q4_K_M.gguf",
]
PHASE_TIMEOUT = 60.0  # seconds: a recovery slower than this aborts the benchmark
BACKOFF_MS = 100.0  # [restart] initial_delay of the config below, in ms


def timed(sim: SimInstall, *args: str) -> float:
    started = time.monotonic()
    result = sim.lms(*args)
    assert result.returncode == 0, result
    return (time.monotonic() - started) * 1000


def rest_load(sim: SimInstall, key: str) -> float:
    """``POST /api/v1/models/load`` (what the supervisor does on REST v1 lines), in ms."""
    started = time.monotonic()
    req = urllib.request.Request(  # noqa: S310 - http on loopback
        f"{sim.http_url}/api/v1/models/load",
        data=json.dumps({"model": key}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=PHASE_TIMEOUT) as resp:  # noqa: S310 - loopback
        assert resp.status == 200
    return (time.monotonic() - started) * 1000


def simulator_baseline(sim: SimInstall) -> dict[str, float]:
    """The simulator's own times (ms) without a supervisor: `daemon up` and `server start`
    through its lms (a supervisor runs them too, cost included), then each load the way the
    supervisor loads on this release line (REST v1 on 0.4, `lms load` before)."""
    out = {"daemon up": timed(sim, "daemon", "up"), "server start": timed(sim, "server", "start")}
    if sim.lms("runtime", "survey", "--json").returncode == 0:  # a warm-up: this lms has the survey
        # the GPU gate's survey after each bring-up (issue 17): an LM Studio step, timed like the others
        out["runtime survey"] = timed(sim, "runtime", "survey", "--json")
    for key, path in zip(MODELS, PATHS, strict=True):
        if sim.release.rest_v1:
            out[f"load {key} (REST)"] = rest_load(sim, key)
        else:
            out[f"load {key}"] = timed(sim, "load", path, "--exact", "--yes")
    pid = sim.daemon_pid()
    sim.lms("daemon", "down")
    while pid is not None and psutil.pid_exists(pid):  # `daemon down` returns before the exit (facts §8)
        time.sleep(0.02)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--scale", type=float, default=0.05, help="simulator time_scale")
    parser.add_argument("--profile", default="0.4")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lmsb", dir="/tmp"))
    sim = create_install(tmp / "home", profile=args.profile, time_scale=args.scale)
    base = simulator_baseline(sim)
    wrapper, calls = sim.counting_lms(tmp)
    config = (
        f'[lmstudio]\nlms = "{wrapper}"\n'
        "[server]\nstart_timeout = 30\n[health]\ninterval = 1\ntimeout = 2\n"
        f"[restart]\ninitial_delay = {BACKOFF_MS / 1000:g}\nmax_delay = 2\njitter = 0\nreset_after = 0.5\n"
        '[log]\nlevel = "warning"\n' + "".join(f'[[models]]\nkey = "{k}"\n' for k in MODELS)
    )
    notice: list[float] = []
    ready: list[float] = []
    per_recovery: list[list[str]] = []
    with Supervised(sim, tmp, config, ready_timeout=PHASE_TIMEOUT) as run:
        sock = run.sock
        for _ in range(args.kills):
            time.sleep(0.6)  # healthy past reset_after (0.5 s): every kill is a first failure
            events = open_events(sock, timeout=PHASE_TIMEOUT)
            pid = request(sock, "GET", "/v1/status")[1]["lmstudio"]["daemon_pid"]
            n_before = len(calls.read_text().splitlines())
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            noticed_at = None
            for event in events:
                if event.get("type") != "state":
                    continue
                now = time.monotonic()
                if event["state"] == "backoff" and noticed_at is None:
                    noticed_at = now
                if event["state"] == "ready":
                    ready.append((now - killed) * 1000)
                    per_recovery.append(calls.read_text().splitlines()[n_before:])
                    break
            else:
                raise SystemExit("no ready event after a kill")
            events.close()
            notice.append(((noticed_at or killed) - killed) * 1000)
        snap = request(sock, "GET", "/v1/status")[1]
        print(f"kills: {args.kills}, simulator time_scale {args.scale}, restarts.count {snap['restarts']['count']}")
        print(
            f"kill -> noticed (backoff event)  median {statistics.median(notice):8.1f} ms   "
            f"p95 {pct(notice, 0.95):8.1f} ms"
        )
        print(
            f"kill -> ready with all models    median {statistics.median(ready):8.1f} ms   "
            f"p95 {pct(ready, 0.95):8.1f} ms"
        )
        counts = [len(c) for c in per_recovery]
        print(
            f"lms calls per recovery           median {statistics.median(counts):8.1f}      "
            f"max {max(counts):8d}       ({'; '.join(per_recovery[-1])})"
        )
        own = sum(base.values())
        print("simulator's own times (through its lms, no supervisor):")
        for name, ms in base.items():
            print(f"  {name:28s} {ms:8.1f} ms")
        print(f"  {'sum':28s} {own:8.1f} ms")
        overhead = statistics.median(ready) - own
        print(
            f"supervisor overhead (median ready - sum): {overhead:8.1f} ms = {100 * overhead / own:.1f}% of the sum "
            f"(includes backoff initial_delay 100 ms; reset_after 0.5 s, so each kill is a first failure)"
        )
        beyond = overhead - BACKOFF_MS
        print(f"  beyond the configured backoff delay:      {beyond:8.1f} ms = {100 * beyond / own:.1f}% of the sum")
        if "runtime survey" in base:
            bare = own - base["runtime survey"]
            extra = statistics.median(ready) - bare - BACKOFF_MS
            print(
                f"  counting the survey as overhead instead:  {extra:8.1f} ms = {100 * extra / bare:.1f}% of the sum "
                "without it (beyond the backoff delay)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
