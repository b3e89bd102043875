"""Chaos soak: random faults against the real `lmsupervisor run` and a simulated LM Studio.

Injects ``--faults`` faults (default 200) from the whole catalogue of :mod:`chaos_soak.faults`
(``bench/chaos_soak/``) one at a time, waiting for recovery between them, and prints per fault
kind: count, recovered, median and max time to ready, duplicates seen, wedges, supervisor
crashes, lost LM Studio settings; then the ``/v1/status`` latency (p50/p99/max, ms) measured
a few times a second during the soak, and every failed fault.
For the deterministic kinds (``bad_network_interface``, ``state_folder_unwritable``,
``auth_without_token``, ``app_hung``: faults a restart cannot fix) a second table gives the
problem code each must raise, how many times it was seen and late, the time from the fault
to the problem in ``/v1/status`` (median, max; the bound is ``failures_before_restart x
interval + timeout`` of the soak's config) and the LM Studio daemon restarts the supervisor
caused (counted by the simulator, minus the fault's own).
Targets for 200 faults: 100% recovered, 0 duplicates, 0 wedges, 0 crashes, p99 < 50 ms;
every deterministic problem within the bound, no daemon restarted more than once for one.

The seed (printed) fixes the order of the faults, their variants and the pauses; timings
are real, so a run is reproducible in what it does, not to the millisecond. To reproduce
one kind alone: ``--seed S --kinds restart_during_load --faults 10``.

Usage: python bench/chaos.py [--faults N] [--seed S] [--time-limit SECONDS] [--json]
       [--kinds K,K] [--scale S] [--wedge-after SECONDS] [--keep]
Exit status: 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import random
import sys

from chaos_soak.plan import KINDS, SoakConfig
from chaos_soak.report import FaultResult
from chaos_soak.soak import run_soak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faults", type=int, default=200, help="how many faults (default 200)")
    parser.add_argument("--seed", type=int, default=None, help="RNG seed (default: a random one, printed)")
    parser.add_argument("--time-limit", type=float, default=3600.0, help="no fault starts after this many seconds")
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated fault kinds (default: all)")
    parser.add_argument("--scale", type=float, default=0.12, help="simulator time_scale (default 0.12)")
    parser.add_argument("--wedge-after", type=float, default=30.0, help="seconds in one state that make a wedge")
    parser.add_argument("--recover-timeout", type=float, default=60.0, help="seconds to wait for ready per fault")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (the supervisor's log)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    cfg = SoakConfig(
        faults=args.faults,
        seed=seed,
        time_limit=args.time_limit,
        time_scale=args.scale,
        recover_timeout=args.recover_timeout,
        wedge_after=args.wedge_after,
        kinds=tuple(k for k in args.kinds.split(",") if k),
        keep=args.keep,
    )
    print(f"chaos soak: seed {seed}, {cfg.faults} faults, time limit {cfg.time_limit:g} s", file=sys.stderr)

    def progress(f: FaultResult) -> None:
        if f.missed is not None:
            verdict = f"missed ({f.missed})"
        elif f.failed:
            verdict = "FAILED" + (f" ({f.phases[-1].detail})" if f.phases and not f.phases[-1].ok else "")
        else:
            verdict = f"ok {f.seconds:.2f} s"
        extra = "".join(
            [
                f" dups={','.join(f.duplicates)}" if f.duplicates else "",
                " crash" if f.crashed else "",
                f" lost={f.settings_lost}" if f.settings_lost else "",
                " reset" if f.reset else "",
                f" {f.problem} after {f.to_problem_s:.2f} s" if f.to_problem_s is not None else "",
                f" {f.problem} not seen" if f.problem is not None and f.to_problem_s is None else "",
                f" daemon restarts {f.daemon_restarts}" if f.daemon_restarts is not None else "",
                f" ({'; '.join(f.notes)})" if f.notes else "",
            ]
        )
        print(f"#{f.n:3d} {f.kind}[{f.variant}] {verdict}{extra}", file=sys.stderr, flush=True)

    report = run_soak(cfg, progress)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.render())
        if args.keep:
            print(f"work folder kept: {report.workdir}")
    t = report.totals()
    met = (
        t["faults"] > 0
        and t["recovered"] == t["faults"]
        and (t["duplicates"], t["wedges"], t["crashes"], t["problems_late"], t["harmful"]) == (0, 0, 0, 0, 0)
        and t["status_p99_ms"] is not None
        and t["status_p99_ms"] < 50
        and report.aborted is None
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
