"""What a chaos soak found, and its figures: one :class:`FaultResult` per fault (with the
:class:`Phase` waits it went through), a :class:`KindSummary` per kind, and the
:class:`SoakReport` that renders the tables ``bench/chaos.py`` prints (or its JSON).

The measures themselves (time to ready, wedge, duplicate, crash, settings lost, time to
problem, daemon restarts) are defined in :mod:`chaos_soak.soak` and :mod:`chaos_soak.faults`.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from chaos_soak.plan import DETERMINISTIC, SoakConfig


@dataclass
class Phase:
    """One wait for steady: ``ok``, ``seconds`` to steady (or waited), and why not."""

    label: str
    ok: bool
    seconds: float
    wedged: bool = False
    crashed: bool = False
    last_state: str | None = None
    detail: str = ""
    cut: bool = False  # ended by the soak's hard time limit, no verdict
    probe_ms: float | None = None  # the snapshot's server.last_probe_ms when steady


@dataclass
class FaultResult:
    """One fault and what followed. ``seconds`` is the time to ready of the last phase."""

    n: int
    kind: str
    variant: str = ""
    missed: str | None = None  # why the fault could not be injected (a race); not counted
    recovered: bool = False
    seconds: float | None = None
    wedged: bool = False
    wedge_state: str | None = None
    crashed: bool = False
    crash_log: str = ""
    handled_crashes: int = 0  # `action_crashed` events: failures the supervisor handled
    duplicates: list[str] = field(default_factory=list)
    settings_lost: str | None = None
    reset: bool = False
    notes: list[str] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    # Deterministic kinds only (``DETERMINISTIC``), else None:
    problem: str | None = None  # the problem code the fault must raise
    problem_bound_s: float | None = None  # failures_before_restart x interval + timeout
    to_problem_s: float | None = None  # seconds from the fault in effect to the problem (None: never seen)
    daemon_restarts: int | None = None  # daemon starts during the fault, minus the fault's own

    @property
    def problem_late(self) -> bool:
        """A deterministic fault whose problem was not in the status within the bound."""
        if self.problem is None or self.problem_bound_s is None:
            return False
        return self.to_problem_s is None or self.to_problem_s > self.problem_bound_s

    @property
    def harmful(self) -> bool:
        """LM Studio's daemon was stopped or killed more than once for one deterministic fault."""
        return self.daemon_restarts is not None and self.daemon_restarts > 1

    @property
    def failed(self) -> bool:
        """Not recovered, or a duplicate, a wedge, a crash, lost settings, a late problem or a
        harmful restart: a target missed."""
        return self.missed is None and (
            not self.recovered
            or bool(self.duplicates)
            or self.wedged
            or self.crashed
            or bool(self.settings_lost)
            or self.problem_late
            or self.harmful
        )


@dataclass
class KindSummary:
    """Per fault kind: counts, and times to ready in seconds over the recovered faults."""

    kind: str
    count: int = 0
    recovered: int = 0
    median_s: float | None = None
    max_s: float | None = None
    duplicates: int = 0
    wedges: int = 0
    crashes: int = 0
    settings_lost: int = 0
    missed: int = 0
    # Deterministic kinds only (``DETERMINISTIC``): the problem, times to it (s) and harm.
    problem: str | None = None
    problem_bound_s: float | None = None
    problems_seen: int = 0  # faults whose problem appeared in /v1/status (in time or late)
    problems_late: int = 0  # ... not within the bound, or never
    to_problem_median_s: float | None = None
    to_problem_max_s: float | None = None
    daemon_restarts: int = 0  # summed over the faults
    daemon_restarts_max: int = 0
    harmful: int = 0  # faults that restarted LM Studio's daemon more than once


@dataclass
class SoakReport:
    """The whole soak: every fault, the status latencies (ms) and how it ended."""

    seed: int
    config: SoakConfig
    faults: list[FaultResult] = field(default_factory=list)
    status_ms: list[float] = field(default_factory=list)
    status_errors: int = 0
    wall_seconds: float = 0.0
    resets: int = 0
    aborted: str | None = None
    workdir: str = ""  # kept after the soak only with ``SoakConfig.keep``

    def counted(self) -> list[FaultResult]:
        """The faults that were injected (a missed injection is not counted)."""
        return [f for f in self.faults if f.missed is None]

    def by_kind(self) -> list[KindSummary]:
        """One summary per kind that occurred, in catalogue order."""
        out = []
        for kind in self.config.kinds:
            mine = [f for f in self.faults if f.kind == kind]
            if not mine:
                continue
            done = [f for f in mine if f.missed is None]
            times = [f.seconds for f in done if f.recovered and f.seconds is not None]
            summary = KindSummary(
                kind=kind,
                count=len(done),
                recovered=sum(f.recovered for f in done),
                median_s=statistics.median(times) if times else None,
                max_s=max(times) if times else None,
                duplicates=sum(bool(f.duplicates) for f in done),
                wedges=sum(f.wedged for f in done),
                crashes=sum(f.crashed for f in done),
                settings_lost=sum(bool(f.settings_lost) for f in done),
                missed=len(mine) - len(done),
            )
            if kind in DETERMINISTIC:
                to_problem = [f.to_problem_s for f in done if f.to_problem_s is not None]
                restarts = [f.daemon_restarts for f in done if f.daemon_restarts is not None]
                summary.problem = DETERMINISTIC[kind]
                summary.problem_bound_s = next((f.problem_bound_s for f in done if f.problem_bound_s), None)
                summary.problems_seen = len(to_problem)
                summary.problems_late = sum(f.problem_late for f in done)
                summary.to_problem_median_s = statistics.median(to_problem) if to_problem else None
                summary.to_problem_max_s = max(to_problem) if to_problem else None
                summary.daemon_restarts = sum(restarts)
                summary.daemon_restarts_max = max(restarts, default=0)
                summary.harmful = sum(f.harmful for f in done)
            out.append(summary)
        return out

    def totals(self) -> dict[str, Any]:
        """The headline figures: counts over every injected fault and the status p99 (ms)."""
        done = self.counted()
        return {
            "faults": len(done),
            "recovered": sum(f.recovered for f in done),
            "duplicates": sum(bool(f.duplicates) for f in done),
            "wedges": sum(f.wedged for f in done),
            "crashes": sum(f.crashed for f in done),
            "settings_lost": sum(bool(f.settings_lost) for f in done),
            "problems_late": sum(f.problem_late for f in done),
            "harmful": sum(f.harmful for f in done),
            "missed": len(self.faults) - len(done),
            "resets": self.resets,
            "status_p50_ms": percentile(self.status_ms, 0.50),
            "status_p99_ms": percentile(self.status_ms, 0.99),
            "status_max_ms": max(self.status_ms) if self.status_ms else None,
            "status_answers": len(self.status_ms),
            "status_errors": self.status_errors,
            "wall_seconds": round(self.wall_seconds, 1),
            "aborted": self.aborted,
        }

    def to_json(self) -> dict[str, Any]:
        """Everything, JSON-ready: seed, settings, totals, per kind, per fault."""
        cfg = asdict(self.config)
        cfg["workdir"] = str(cfg["workdir"]) if cfg["workdir"] else None
        return {
            "seed": self.seed,
            "config": cfg,
            "totals": self.totals(),
            "kinds": [asdict(k) for k in self.by_kind()],
            "faults": [asdict(f) for f in self.faults],
        }

    def render(self) -> str:
        """A table per kind, the totals, the deterministic kinds' figures, the status latency and each failed fault."""
        t = self.totals()
        lines = [
            f"chaos soak: seed {self.seed}, {t['faults']} faults in {t['wall_seconds']} s "
            f"(time_scale {self.config.time_scale}, wedge after {self.config.wedge_after:g} s), "
            f"resets {t['resets']}" + (f", ABORTED: {self.aborted}" if self.aborted else ""),
            f"{'kind':30s} {'count':>5s} {'recov':>5s} {'median s':>8s} {'max s':>7s} "
            f"{'dups':>4s} {'wedges':>6s} {'crashes':>7s} {'lost':>4s} {'missed':>6s}",
        ]

        def fmt(v: float | None) -> str:
            return "-" if v is None else f"{v:.2f}"

        for k in self.by_kind():
            lines.append(
                f"{k.kind:30s} {k.count:5d} {k.recovered:5d} {fmt(k.median_s):>8s} {fmt(k.max_s):>7s} "
                f"{k.duplicates:4d} {k.wedges:6d} {k.crashes:7d} {k.settings_lost:4d} {k.missed:6d}"
            )
        all_times = [f.seconds for f in self.counted() if f.recovered and f.seconds is not None]
        lines.append(
            f"{'total':30s} {t['faults']:5d} {t['recovered']:5d} "
            f"{fmt(statistics.median(all_times) if all_times else None):>8s} "
            f"{fmt(max(all_times) if all_times else None):>7s} {t['duplicates']:4d} {t['wedges']:6d} "
            f"{t['crashes']:7d} {t['settings_lost']:4d} {t['missed']:6d}"
        )
        pct = 100.0 * t["recovered"] / t["faults"] if t["faults"] else 0.0
        lines.append(f"recovered {pct:.1f}%")
        deterministic = [k for k in self.by_kind() if k.problem is not None]
        if deterministic:
            bound = next((k.problem_bound_s for k in deterministic if k.problem_bound_s), None)
            lines.append(
                "deterministic faults: the problem in /v1/status within failures_before_restart x interval + "
                f"timeout = {fmt(bound)} s, LM Studio's daemon restarted 0 times beyond the first"
            )
            lines.append(
                f"{'kind':30s} {'count':>5s} {'recov':>5s} {'problem':24s} {'seen':>4s} {'late':>4s} "
                f"{'to problem median s':>19s} {'max s':>6s} {'daemon restarts':>15s} {'max':>3s} {'harmful':>7s}"
            )
            for k in deterministic:
                lines.append(
                    f"{k.kind:30s} {k.count:5d} {k.recovered:5d} {k.problem or '':24s} {k.problems_seen:4d} "
                    f"{k.problems_late:4d} {fmt(k.to_problem_median_s):>19s} {fmt(k.to_problem_max_s):>6s} "
                    f"{k.daemon_restarts:15d} {k.daemon_restarts_max:3d} {k.harmful:7d}"
                )
        lines.append(
            f"/v1/status during the soak: {t['status_answers']} answers, p50 {fmt(t['status_p50_ms'])} ms, "
            f"p99 {fmt(t['status_p99_ms'])} ms, max {fmt(t['status_max_ms'])} ms; "
            f"{t['status_errors']} without an answer (supervisor down or socket gone)"
        )
        failed = [f for f in self.faults if f.failed]
        if failed:
            lines.append(f"failed faults (reproduce one kind: --seed {self.seed} --kinds KIND):")
        for f in failed:
            what = []
            if not f.recovered:
                last = f.phases[-1] if f.phases else None
                where = f" in phase {last.label} ({last.detail or last.last_state})" if last else ""
                what.append("not recovered" + where)
            if f.wedged:
                what.append(f"wedged in {f.wedge_state}")
            if f.duplicates:
                what.append("duplicates " + ", ".join(f.duplicates))
            if f.crashed:
                what.append("crash: " + (f.crash_log.strip().splitlines() or ["process died"])[-1][:200])
            if f.settings_lost:
                what.append("settings lost: " + f.settings_lost)
            if f.problem_late:
                seen = "never seen" if f.to_problem_s is None else f"after {f.to_problem_s:.2f} s"
                what.append(f"{f.problem} {seen} (bound {fmt(f.problem_bound_s)} s)")
            if f.harmful:
                what.append(f"LM Studio's daemon restarted {f.daemon_restarts} times for it")
            notes = f" [{'; '.join(f.notes)}]" if f.notes else ""
            lines.append(f"  #{f.n} {f.kind}[{f.variant}]: {'; '.join(what)}{notes}")
        return "\n".join(lines)


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1, nearest rank) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]
