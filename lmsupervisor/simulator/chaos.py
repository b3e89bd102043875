"""Chaos soak: random faults against the real ``lmsupervisor run`` and a simulated LM Studio.

Used by ``bench/chaos.py`` (the figures) and ``tests/integration/test_chaos.py`` (a bounded
run that asserts). One soak (:func:`run_soak`):

1. makes a simulated install (:func:`lmsupervisor.simulator.home.create_install`, LM Studio's
   own server settings with CORS on) and a config declaring two models:
   ``openai/gpt-oss-20b`` (the slow one, no identifier, so a second load of it becomes
   ``openai/gpt-oss-20b:2``) and ``qwen/qwen3-4b`` as ``qwen``;
2. runs ``python -m lmsupervisor run`` on a socket in a short temporary folder;
3. injects faults one at a time, in shuffled rounds of the catalogue (a seeded RNG picks
   the order, the variants and the pauses), each once the supervisor has been steady for
   longer than ``restart.reset_after`` (so every fault is a first failure), and measures:

   steady          ``/v1/status`` answers ready, the declared models ``loaded``, no config
                   error; LM Studio's HTTP server answers the greeting where the snapshot says;
                   the simulator lists every declared model; and the fault's own condition
                   holds (another daemon PID after a kill, a higher restart count after a
                   restart request, the new supervisor's PID after a supervisor restart);
   time to ready   seconds from the moment the fault is gone (injected, or cleared for the
                   faults that are held: failing load, corrupt file, taken port, a config) to steady;
   wedge           not steady and the same state (same ``since``), or no answer on the
                   socket, for more than ``wedge_after`` seconds with the fault gone;
   duplicate       after steady and a settle time: an identifier ending ``:N``, or two
                   instances of one declared model, in the simulator (the soak unloads the
                   extras so that the next fault starts clean);
   crash           the supervisor died when the soak did not kill it, or its log shows
                   "Task exception was never retrieved" or a traceback (except in an
                   ``action_crashed`` event, which is a handled failure);
   settings lost   after a corrupt ``http-server-config.json``, LM Studio's file names another
                   port, CORS or bind than the user's.

   A fault not recovered, or a crash, is followed by a *reset* (every process of the soak
   killed, the files restored, a new supervisor started) so that one failure does not spill
   into the next fault's figures;
4. meanwhile a thread queries ``/v1/status`` a few times a second (latencies in ms).

The catalogue (``KINDS``; variants in brackets):

=================================  =====================================================================
``kill_daemon``                    kill -9 of LM Studio's daemon
``hang_daemon``                    the daemon accepts connections and never answers (both ports)
``hang_http``                      LM Studio's HTTP server stops answering, the daemon lives
``server_stopped``                 ``lms server stop`` behind the supervisor's back
``model_unloaded``                 ``lms unload`` of a declared model behind its back
``load_fails``                     loading a declared model fails (guardrails), then the fault is cleared
``slow_daemon_start``              daemon starts take 1-3 s more, then kill -9 of the daemon
``corrupt_settings``               broken ``settings.json`` [+ restart request, kill -9, nothing], restored
``corrupt_server_config``          broken ``http-server-config.json``, same triggers, restored
``port_taken``                     server stopped and its port held by another program, then freed
``socket_deleted``                 the status socket file is deleted
``supervisor_killed``              kill -9 of the supervisor, started again
``supervisor_killed_during_load``  the same [kill -9, SIGTERM] while a model loads
``reload_valid``                   a valid config [interval, log level, model added, model removed], reverted
``reload_invalid``                 an invalid config [not TOML, unknown key, wrong type, nan/inf numbers,
                                   deep nesting], then the valid one again
``reload_during_load``             the declared models change while a model loads, then reverted
``restart_request``                ``POST /v1/restart`` [and ``?daemon=1``]
``restart_during_load``            the same while a model loads (the ``:2`` duplicate case)
``bad_network_interface``          LM Studio's ``networkInterface`` set to a value its server cannot bind
                                   [``"localhost:1234"``, ``"999.1.1.1"``, ``"127.0.0.1\\n"``, ``"0.0.0.0 "``]
                                   (no ``[server] bind`` declared), then [``lms server stop``, kill -9 of
                                   the daemon] so that a bring-up must read it; held, then restored
``state_folder_unwritable``        lmsupervisor's state folder (``$HOME/.local/state/lmsupervisor``)
                                   [replaced by a file, its ``capabilities.json`` replaced by a folder],
                                   then an `lms` update (new mtime) and ``POST /v1/restart`` so that a
                                   state file is written; held, then restored (and written once more)
``auth_without_token``             "Require Authentication" turned on (the simulator's ``api_token``), the
                                   daemon killed so that it applies, no token in the supervisor's
                                   config; held until ready, then turned off (the daemon killed again)
``app_hung``                       the GUI app (a second, small install: profile ``0.4-app``, its own
                                   supervisor, no models) hangs; held, then quit and reopened by its user
=================================  =====================================================================

The last four are *deterministic*: a restart cannot fix them, so the supervisor must name
them as a problem in ``/v1/status`` (``DETERMINISTIC`` maps each kind to its code) and
never climb the ladder for them. For each the soak also measures

   time to problem  seconds from the fault in effect to its code in ``/v1/status``: from the
                    trigger (a stopped server, a killed daemon, a hung app); for
                    ``auth_without_token`` from the first moment LM Studio's restarted server
                    refuses a request without the token; for ``state_folder_unwritable`` from
                    the supervisor's first write (its log's ``lms_capabilities_detected``, just
                    before ``capabilities.json`` is written; the `lms` re-detection before it
                    takes about 1-1.5 s here). The bound is
                    ``failures_before_restart x interval + timeout`` of the soak's config
                    (:func:`problem_bound`), plus the ladder's timeout for ``app_hung``
                    (:data:`HUNG_EVIDENCE_S`); a problem later than that, or never, is *late*;
   daemon restarts  LM Studio daemon processes started during the fault (the simulator's
                    :meth:`SimInstall.daemon_starts`) minus those the fault made necessary
                    itself (a kill, a reopened app): the daemon stops and kills the supervisor
                    caused for it; more than one is *harmful* (``0 beyond the first``);
   recovery         as for every kind, and the problem gone from ``/v1/status``.

Reloads reach the supervisor by SIGHUP, ``POST /v1/reload`` or only the file write (its
watcher). Every wait is bounded; everything started is killed at the end, also on errors.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from lmsupervisor.api.client import request
from lmsupervisor.errors import StatusSocketError
from lmsupervisor.simulator.home import SimInstall, create_install

KINDS: tuple[str, ...] = (
    "kill_daemon",
    "hang_daemon",
    "hang_http",
    "server_stopped",
    "model_unloaded",
    "load_fails",
    "slow_daemon_start",
    "corrupt_settings",
    "corrupt_server_config",
    "port_taken",
    "socket_deleted",
    "supervisor_killed",
    "supervisor_killed_during_load",
    "reload_valid",
    "reload_invalid",
    "reload_during_load",
    "restart_request",
    "restart_during_load",
    "bad_network_interface",
    "state_folder_unwritable",
    "auth_without_token",
    "app_hung",
)
DETERMINISTIC: dict[str, str] = {  # kind -> the problem code it must raise (lmsupervisor's design §9)
    "bad_network_interface": "server_address_invalid",
    "state_folder_unwritable": "state_folder_unwritable",
    "auth_without_token": "api_token_missing",
    "app_hung": "app_hung",
}

SLOW = ("openai/gpt-oss-20b", None)  # (key, identifier): 15 simulated seconds to load
QWEN = ("qwen/qwen3-4b", "qwen")
GEMMA = ("google/gemma-3-1b", None)
BASE_MODELS: tuple[tuple[str, str | None], ...] = (SLOW, QWEN)
USER_SERVER = {"cors": True}  # LM Studio's own setting that a plain `server start` would lose
CORRUPT_TEXT = '{"port": 12'  # a file cut short, as by a crash while LM Studio wrote it
SLOW_LOAD_SIMULATED_S = 0.5 + 1.2 * 12.109565112  # common.DEFAULT_CONFIG load_s_base + per_gb * size
DUPLICATE_ID = re.compile(r":\d+$")
CRASH_MARKERS = ("Task exception was never retrieved", "Traceback")
PHASE_POLL = 0.05  # seconds between two looks at the supervisor while waiting
STEADY_BEFORE_FAULT = 0.4  # seconds steady before a fault: past restart.reset_after (0.3 s)
LOAD_REACHES_DAEMON = 0.45  # seconds from the `loading` state to the simulator loading (lms start-up, ls)
PROBES_WITHIN = 3.0  # seconds: a steady supervisor probes (every 0.2 s) at least once in this time
LOG_EXCERPT = 1500  # characters of log kept per crash
ODD_INTERFACES = ("localhost:1234", "999.1.1.1", "127.0.0.1\n", "0.0.0.0 ")  # issue 14: each once a kill loop
TOKEN = "sk-lm-chaos123:abcdefghijklmnopqrst"  # noqa: S105 - the simulator's token, shaped as LM Studio's
# app_hung's bound adds the ladder's timeout (min(15, max(3, 2 x health.timeout)) = 3 s here):
# failed probes say the server is down; only a call to the service that does not answer in
# time says the app itself hangs.
HUNG_EVIDENCE_S = 3.0
PROBLEM_WAIT = 15.0  # seconds to wait for a deterministic fault's problem: past the bound, a late one is measured
RETRIES_HELD = 4  # retries a held deterministic fault waits for: past the ladder's kill_daemon rung (the 3rd)
HOLD_TIMEOUT = 10.0  # seconds, at most, that a deterministic fault is held after its problem
SECOND_INSTALL = frozenset({"app_hung"})  # kinds played on their own install: no reset of the soak's

SNAPSHOT_KEYS = {"state", "since", "supervisor", "lmstudio", "server", "models", "restarts"}
Model = tuple[str, str | None]
Snapshot = dict[str, Any]


@dataclass
class SoakConfig:
    """What a soak does. Durations are wall seconds.

    ``faults`` and ``time_limit`` bound the soak: no fault starts past ``time_limit``; one in
    progress still finishes (each of its waits bounded by ``recover_timeout``) unless
    ``hard_limit`` cuts it short (it is then not counted and the soak ends).
    ``time_scale`` is the simulator's (0.12: the slow model loads in 1.8 s, longer than a
    restart takes to list the models again, so a restart during a load can make a duplicate).
    ``kinds`` restricts the catalogue (to reproduce one kind). ``workdir`` defaults to a
    new folder under /tmp (the socket path must stay short), removed at the end unless
    ``keep``.
    """

    faults: int = 200
    seed: int = 0
    time_limit: float = 3600.0
    hard_limit: float | None = None
    time_scale: float = 0.12
    recover_timeout: float = 60.0
    wedge_after: float = 30.0
    status_rate: float = 4.0  # /v1/status queries per second from the background thread
    kinds: tuple[str, ...] = KINDS
    workdir: Path | None = None
    keep: bool = False


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


def scan_log_text(text: str) -> tuple[bool, str, int]:
    """Look for crashes in the supervisor's output (JSON log lines and stray stderr).

    Returns (crash seen, the first crash's block, the number of ``action_crashed`` events).
    A crash is "Task exception was never retrieved" or a traceback outside an
    ``action_crashed`` event; the block runs to the next JSON line, so it ends on the error.
    """
    lines = text.splitlines()
    crash, excerpt, handled = False, "", 0
    for i, line in enumerate(lines):
        if not any(marker in line for marker in CRASH_MARKERS):
            continue
        event = None
        with contextlib.suppress(ValueError):
            parsed = json.loads(line)
            event = parsed.get("event") if isinstance(parsed, dict) else None
        if event == "action_crashed":
            handled += 1
            continue
        if not crash:
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("{")), len(lines))
            excerpt = "\n".join(lines[i:end])[-LOG_EXCERPT:]
        crash = True
    return crash, excerpt, handled


# -- the supervisor's config --------------------------------------------------------------
def config_text(models: tuple[Model, ...] = BASE_MODELS, interval: str = "0.2", level: str = "info") -> str:
    """The soak's config: fast probes (0.2 s, 1 s timeout, 3 failures), backoff 0.1-1 s, starts 8 s."""
    text = (
        "[server]\nstart_timeout = 8\n"
        f"[health]\ninterval = {interval}\ntimeout = 1\nfailures_before_restart = 3\n"
        "[restart]\ninitial_delay = 0.1\nmax_delay = 1\njitter = 0\nreset_after = 0.3\n"
        f'[log]\nlevel = "{level}"\nformat = "json"\n'
    )
    for key, ident in models:
        text += f'[[models]]\nkey = "{key}"\n' + (f'identifier = "{ident}"\n' if ident else "")
    return text


def _invalid_configs() -> dict[str, str]:
    """Configs a live edit may leave behind; every one must be rejected, none may harm."""
    base = config_text()
    return {
        "not_toml": base + "[health\n",
        "unknown_key": base.replace("[health]\n", "[health]\nbogus = 1\n"),
        "wrong_type": base.replace('key = "qwen/qwen3-4b"\n', 'key = "qwen/qwen3-4b"\nttl = "10m"\n'),
        "nan_interval": config_text(interval="nan"),
        "inf_interval": config_text(interval="inf"),
        "nan_initial_delay": base.replace("initial_delay = 0.1", "initial_delay = nan"),
        "inf_ttl": base.replace('key = "qwen/qwen3-4b"\n', 'key = "qwen/qwen3-4b"\nttl = inf\n'),
        "deep_nesting": base + "x = " + "[" * 3000 + "]" * 3000 + "\n",
    }


INVALID_CONFIGS = _invalid_configs()


def problem_bound(text: str) -> float:
    """``failures_before_restart x interval + timeout`` (seconds) of the config ``text``: the
    time within which a deterministic fault must be a named problem in ``/v1/status``
    (1.6 s for :func:`config_text`)."""
    health = tomllib.loads(text)["health"]
    return float(health["failures_before_restart"]) * float(health["interval"]) + float(health["timeout"])


def problem_codes(snap: Snapshot) -> set[str]:
    """The codes of the snapshot's ``problems``."""
    return {str(p.get("code")) for p in snap.get("problems") or [] if isinstance(p, dict)}


# -- small helpers --------------------------------------------------------------------------
def _name(model: Model) -> str:
    return model[1] or model[0]


def _greets(endpoint: str, timeout: float = 0.5) -> bool:
    """LM Studio's HTTP server at ``endpoint`` (``http://host:port``) answers its greeting."""
    host, _, port = endpoint.removeprefix("http://").rpartition(":")
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)
    try:
        conn.request("GET", "/lmstudio-greeting")
        resp = conn.getresponse()
        return bool(json.loads(resp.read()) == {"lmstudio": True})
    except (OSError, ValueError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _refuses_without_token(url: str, timeout: float = 0.5) -> bool:
    """LM Studio's HTTP server at ``url`` answers 401 to ``GET /v1/models`` without a token
    ("Require Authentication" in effect, facts §4)."""
    host, _, port = url.removeprefix("http://").rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", "/v1/models")
        return conn.getresponse().status == 401
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _alive(pid: int) -> bool:
    """``pid`` runs (a zombie, killed but not yet reaped, does not)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _kill_under(folder: Path) -> None:
    """Kill every process (but this one) whose command line names something under ``folder``."""
    mine = str(folder) + os.sep
    victims = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.pid != os.getpid() and any(mine in part for part in cmdline):
            with contextlib.suppress(psutil.Error):
                proc.kill()
                victims.append(proc)
    psutil.wait_procs(victims, timeout=5)


@contextlib.contextmanager
def hold_port(port: int) -> Iterator[socket.socket]:
    """Listen on 127.0.0.1:``port`` as another program would.

    Unlike :meth:`SimInstall.occupy_port` it sets SO_REUSEADDR: the stopped server's
    connections leave the port in TIME_WAIT, where a plain bind fails for a minute. Linux
    still refuses a second listener on the port, so LM Studio's ``server start`` fails.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(1)
        yield s
    finally:
        s.close()


class _StatusPoller(threading.Thread):
    """Queries ``/v1/status`` ``rate`` times a second; latencies of the answers in ms."""

    def __init__(self, sock: Path, rate: float) -> None:
        super().__init__(name="status-poller", daemon=True)
        self.sock, self.period = sock, 1.0 / max(rate, 0.1)
        self.latencies: list[float] = []
        self.errors = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.period):
            started = time.perf_counter()
            try:
                request(self.sock, "GET", "/v1/status", timeout=2.0)
            except (StatusSocketError, OSError, ValueError):
                self.errors += 1
                continue
            self.latencies.append((time.perf_counter() - started) * 1000)


class _Supervisor:
    """One ``lmsupervisor run`` process, its output appended to ``log``."""

    def __init__(self, sim: SimInstall, sock: Path, config: Path, log: Path) -> None:
        env = {**sim.env(), "LMSUPERVISOR_SOCKET": str(sock)}
        env.pop("XDG_STATE_HOME", None)  # its state folder: $HOME/.local/state/lmsupervisor, in the soak's HOME
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lmsupervisor", "run", "--config", str(config)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)

    def terminate(self, timeout: float = 15.0) -> bool:
        """SIGTERM and wait; True if it exited within ``timeout`` (else it is killed)."""
        if self.proc.poll() is not None:
            return True
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return False
        return True


class _AppSide:
    """A second, small install for the faults of the GUI app (profile ``0.4-app``): its own
    LM Studio app (started as its user would), its own supervisor (no models, so it is
    cheap) on its own socket and HOME, under ``root``. :meth:`close` kills all of it."""

    def __init__(self, root: Path, time_scale: float) -> None:
        self.root = root
        self.sim = create_install(root / "home", "0.4-app", time_scale=time_scale, server_config=dict(USER_SERVER))
        self.sock = root / "s.sock"
        config = root / "c.toml"
        config.write_text(config_text(models=()), encoding="utf-8")
        self.sim.launch_app()
        self.run = _Supervisor(self.sim, self.sock, config, root / "supervisor.log")

    def ready(self, snap: Snapshot) -> bool:
        """Ready, no config error, LM Studio's HTTP server greets where the snapshot says."""
        return (
            snap.get("state") == "ready"
            and snap["supervisor"]["config_error"] is None
            and _greets(str(snap["server"]["api_endpoint"]))
        )

    def close(self) -> None:
        self.run.kill()
        _kill_under(self.root)
        self.sim.stop()  # reaps the app it launched (already killed)


@dataclass
class _Outcome:
    """What a fault function reports back to the loop."""

    gone_at: float  # monotonic time the fault was gone (injected, or cleared)
    require: Callable[[Snapshot], bool] | None = None
    missed: str | None = None
    phase: Phase | None = (
        None  # measured by the fault itself: an intermediate one that failed, or a second install's recovery
    )
    cleanup: Callable[[], None] | None = None
    own_starts: int | None = None  # daemon starts the fault itself made necessary (deterministic kinds: counted)


class _Missed(Exception):
    """The fault could not be injected (the supervisor won a race); the fault is not counted."""


# -- the soak ---------------------------------------------------------------------------------
class _Soak:
    def __init__(self, cfg: SoakConfig, root: Path) -> None:
        self.cfg = cfg
        self.rng = random.Random(f"{cfg.seed}-faults")  # noqa: S311 - reproducible variants, not secrets
        self.root = root
        self.sim = create_install(root / "home", time_scale=cfg.time_scale, server_config=dict(USER_SERVER))
        self.sock = root / "s.sock"
        self.config = root / "c.toml"
        self.log = root / "supervisor.log"
        self.config.write_text(config_text(), encoding="utf-8")
        self.settings_text = (self.sim.home / "settings.json").read_text(encoding="utf-8")
        self.server_config_text = self.sim.server_config_path.read_text(encoding="utf-8")
        self.hung_pids: set[int] = set()
        self.state_folder = self.sim.root / ".local" / "state" / "lmsupervisor"
        self.state_aside = root / "state-aside"  # where break_state_folder keeps what it moved
        self.problem_bound = problem_bound(config_text())
        self.turns: dict[str, int] = {}
        self.log_offset = 0
        self.run: _Supervisor | None = None
        self.expected_exit = False
        self.slow_load_s = SLOW_LOAD_SIMULATED_S * cfg.time_scale
        self.hard_deadline = float("inf") if cfg.hard_limit is None else time.monotonic() + cfg.hard_limit

    # -- processes -----------------------------------------------------------------
    def start_supervisor(self) -> _Supervisor:
        self.run = _Supervisor(self.sim, self.sock, self.config, self.log)
        self.expected_exit = False
        return self.run

    def stop_gently(self) -> str:
        """SIGTERM the supervisor (5 s, then kill): a task that died silently is reported
        ("Task exception was never retrieved") when the event loop is torn down."""
        if self.run is None or not self.run.alive():
            return ""
        self.expected_exit = True
        return "" if self.run.terminate(5.0) else "did not exit within 5 s of SIGTERM"

    def kill_everything(self) -> None:
        """Kill the supervisor and every process whose command line names the soak's folder."""
        self.expected_exit = True
        if self.run is not None:
            self.run.kill()
        _kill_under(self.root)
        self.hung_pids.clear()

    def restore_files(self) -> None:
        self.sim.clear_faults()
        (self.sim.home / "settings.json").write_text(self.settings_text, encoding="utf-8")
        self.sim.server_config_path.write_text(self.server_config_text, encoding="utf-8")
        self.config.write_text(config_text(), encoding="utf-8")
        if self.sim.api_token is not None:
            self.sim.configure(api_token=None)
        self.mend_state_folder()

    # -- lmsupervisor's own state folder ---------------------------------------------
    def break_state_folder(self, how: str) -> None:
        """Make the supervisor's state folder unwritable (we may run as root: chmod would not):
        ``folder_is_a_file`` moves it aside and puts a file in its place (the home lock, open,
        moves with it); ``file_is_a_folder`` puts a folder where ``capabilities.json`` is."""
        if how == "folder_is_a_file":
            self.state_folder.rename(self.state_aside)
            self.state_folder.write_text("not a folder", encoding="utf-8")
        else:
            caps = self.state_folder / "capabilities.json"
            if caps.exists():
                caps.rename(self.state_aside)
            else:
                self.state_aside.write_text("{}", encoding="utf-8")
            (caps / "not-a-file").mkdir(parents=True)

    def mend_state_folder(self) -> None:
        """Undo :meth:`break_state_folder` (either way); nothing when it is not broken."""
        if not self.state_aside.exists():
            return
        if self.state_aside.is_dir():  # folder_is_a_file
            self.state_folder.unlink(missing_ok=True)
            self.state_aside.rename(self.state_folder)
        else:  # file_is_a_folder
            caps = self.state_folder / "capabilities.json"
            shutil.rmtree(caps, ignore_errors=True)
            self.state_aside.rename(caps)

    def lms_updated(self) -> None:
        """Give the `lms` binary a new mtime, as an LM Studio update would: the next bring-up
        detects its capabilities again and writes ``capabilities.json``."""
        stamp = time.time_ns()
        os.utime(self.sim.lms_path, ns=(stamp, stamp))

    # -- looking ---------------------------------------------------------------------
    def status(self, timeout: float = 2.0, sock: Path | None = None) -> Snapshot | None:
        """The snapshot (of the supervisor at ``sock``, default the soak's), or None: no
        answer, or not a 200 with a design §5 document."""
        try:
            code, body = request(sock or self.sock, "GET", "/v1/status", timeout=timeout)
        except (StatusSocketError, OSError, ValueError):
            return None
        if code != 200 or not isinstance(body, dict) or not body.keys() >= SNAPSHOT_KEYS:
            return None
        return body

    def post(self, target: str) -> int | None:
        try:
            return request(self.sock, "POST", target, timeout=5.0)[0]
        except (StatusSocketError, OSError, ValueError):
            return None

    def loaded(self, snap: Snapshot | None = None) -> list[dict[str, Any]] | None:
        """The simulator's instances; None while the daemon is one we hung (it never answers)."""
        if snap is not None and snap["lmstudio"]["daemon_pid"] in self.hung_pids:
            return None
        return self.sim.loaded()

    def steady(
        self, snap: Snapshot | None, target: tuple[Model, ...], require: Callable[[Snapshot], bool] | None
    ) -> bool:
        if snap is None or snap.get("state") != "ready" or snap["supervisor"]["config_error"] is not None:
            return False
        models = snap.get("models") or []
        if sorted((m["key"], m["identifier"] or "") for m in models) != sorted((k, i or "") for k, i in target):
            return False
        if any(m["state"] != "loaded" for m in models):
            return False
        if require is not None and not require(snap):
            return False
        if not _greets(str(snap["server"]["api_endpoint"])):
            return False
        loaded = self.loaded(snap)
        if loaded is None:
            return False
        for key, ident in target:
            if not any((inst["identifier"] == ident) if ident else (inst["modelKey"] == key) for inst in loaded):
                return False
        return True

    def crashed(self) -> bool:
        return self.run is not None and not self.run.alive() and not self.expected_exit

    def await_steady(
        self,
        label: str,
        since: float,
        target: tuple[Model, ...] = BASE_MODELS,
        require: Callable[[Snapshot], bool] | None = None,
        timeout: float | None = None,
        wedge: bool = True,
    ) -> Phase:
        """Poll until steady; a wedge ends the wait early, a crash at once."""
        timeout = self.cfg.recover_timeout if timeout is None else timeout
        deadline = min(since + timeout, self.hard_deadline)
        mark: tuple[Any, ...] | None = None
        mark_at = time.monotonic()
        last_state: str | None = None
        while True:
            if self.crashed():
                return Phase(label, False, time.monotonic() - since, crashed=True, detail="supervisor died")
            snap = self.status()
            now = time.monotonic()
            if snap is not None and self.steady(snap, target, require):
                probe = snap["server"]["last_probe_ms"]
                return Phase(label, True, now - since, last_state="ready", probe_ms=probe)
            last_state = None if snap is None else str(snap["state"])
            seen = ("no answer",) if snap is None else (snap["state"], snap["since"])
            if seen != mark:
                mark, mark_at = seen, now
            elif wedge and now - mark_at > self.cfg.wedge_after:
                state = last_state or "no answer on the socket"
                return Phase(label, False, now - since, wedged=True, last_state=state, detail=f"wedged in {state}")
            if now >= self.hard_deadline:
                return Phase(label, False, now - since, cut=True, detail="cut by the hard time limit")
            if now >= deadline:
                return Phase(label, False, now - since, last_state=last_state, detail=f"still {last_state}")
            time.sleep(PHASE_POLL)

    def probing(self, last_probe_ms: float | None) -> bool:
        """The health loop still runs: ``server.last_probe_ms`` changes within ``PROBES_WITHIN`` s."""
        return self.wait_for(lambda s: s["server"]["last_probe_ms"] != last_probe_ms, PROBES_WITHIN) is not None

    def wait_for(
        self, check: Callable[[Snapshot], bool], timeout: float, other: _AppSide | None = None
    ) -> Snapshot | None:
        """The first snapshot (of ``other``'s supervisor if given) that passes ``check``
        within ``timeout`` s, else None."""
        deadline = min(time.monotonic() + timeout, self.hard_deadline)
        while time.monotonic() < deadline:
            if self.crashed() if other is None else not other.run.alive():
                return None
            snap = self.status(sock=None if other is None else other.sock)
            if snap is not None and check(snap):
                return snap
            time.sleep(0.02)
        return None

    def await_problem(
        self,
        r: FaultResult,
        since: float,
        effect: Callable[[], bool] | None = None,
        other: _AppSide | None = None,
    ) -> Snapshot | None:
        """Wait (at most ``PROBLEM_WAIT`` s) for ``r.kind``'s problem in the status and record
        the time to it in ``r``: from ``since``, or, with ``effect``, from the first moment
        ``effect()`` holds (the fault in effect; 0 if the supervisor named it first)."""
        r.problem, r.problem_bound_s = DETERMINISTIC[r.kind], self.problem_bound
        if r.kind == "app_hung":  # a hang is known only by a call that does not answer in time
            r.problem_bound_s = self.problem_bound + HUNG_EVIDENCE_S
        deadline = min(since + PROBLEM_WAIT, self.hard_deadline)
        effect_at = None if effect is not None else since
        while time.monotonic() < deadline:
            if self.crashed() if other is None else not other.run.alive():
                return None
            if effect_at is None and effect is not None and effect():
                effect_at = time.monotonic()
            snap = self.status(sock=None if other is None else other.sock)
            if snap is not None and r.problem in problem_codes(snap):
                seen_at = time.monotonic()
                r.to_problem_s = round(max(0.0, seen_at - (effect_at or seen_at)), 3)
                if effect_at is None:
                    r.notes.append("the problem was named before the soak saw the fault in effect")
                return snap
            time.sleep(0.02)
        r.notes.append(f"{r.problem} not in /v1/status within {PROBLEM_WAIT:g} s")
        return None

    def hold(self, r: FaultResult, before: int, retries: int = RETRIES_HELD, other: _AppSide | None = None) -> None:
        """Hold a deterministic fault until the supervisor has retried ``retries`` times
        since its restart count was ``before`` (by the 3rd the ladder would have reached
        ``kill_daemon``), at most ``HOLD_TIMEOUT`` s."""

        def retried(snap: Snapshot) -> bool:
            return int(snap["restarts"]["count"]) >= before + retries

        if self.wait_for(retried, HOLD_TIMEOUT, other) is None:
            r.notes.append(f"fewer than {retries} retries while held {HOLD_TIMEOUT:g} s")

    def logged(self, event: str) -> Callable[[], bool]:
        """A check: the supervisor's log has an ``event`` line written after this call."""
        try:
            offset = self.log.stat().st_size
        except OSError:
            offset = 0
        needle = f'"event": "{event}"'

        def seen() -> bool:
            try:
                with self.log.open("rb") as f:
                    f.seek(offset)
                    return needle in f.read().decode("utf-8", errors="replace")
            except OSError:
                return False

        return seen

    def turn(self, kind: str) -> int:
        """How many faults of ``kind`` came before this one (variants taken in turn)."""
        self.turns[kind] = self.turns.get(kind, -1) + 1
        return self.turns[kind]

    def problem_gone(self, code: str) -> Callable[[Snapshot], bool]:
        return lambda s: code not in problem_codes(s)

    def await_app(self, app: _AppSide, label: str, since: float, check: Callable[[Snapshot], bool]) -> Phase:
        """Wait (``recover_timeout``, as for every recovery) for the app side's supervisor to pass ``check``."""
        snap = self.wait_for(check, max(0.0, since + self.cfg.recover_timeout - time.monotonic()), app)
        now = time.monotonic()
        if snap is not None:
            return Phase(label, True, now - since, last_state="ready")
        if not app.run.alive():
            return Phase(label, False, now - since, crashed=True, detail="the app's supervisor died")
        last = self.status(sock=app.sock)
        state = None if last is None else str(last["state"])
        return Phase(label, False, now - since, last_state=state, detail=f"app side still {state}")

    def scan_log(self) -> tuple[bool, str, int]:
        """New log text since the last scan: (crash seen, excerpt, handled `action_crashed` count)."""
        try:
            with self.log.open("rb") as f:
                f.seek(self.log_offset)
                data = f.read()
        except OSError:
            return False, "", 0
        self.log_offset += len(data)
        return scan_log_text(data.decode("utf-8", errors="replace"))

    # -- duplicates --------------------------------------------------------------
    def duplicates(self, target: tuple[Model, ...]) -> list[str]:
        loaded = self.sim.loaded()
        dups = [str(i["identifier"]) for i in loaded if DUPLICATE_ID.search(str(i["identifier"]))]
        for key, ident in target:
            same = [str(i["identifier"]) for i in loaded if i["modelKey"] == key]
            keep = ident or key
            if len(same) > 1:
                dups += [x for x in same if x != keep and x not in dups]
        return dups

    def unload(self, identifiers: list[str]) -> None:
        for ident in identifiers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.sim.lms("unload", ident, timeout=15)

    # -- pieces the faults share -----------------------------------------------------
    def snap_now(self) -> Snapshot:
        snap = self.status()
        if snap is None:
            raise _Missed("no status before the fault")
        return snap

    def count_above(self, before: int) -> Callable[[Snapshot], bool]:
        return lambda s: int(s["restarts"]["count"]) > before

    def daemon_other_than(self, pid: int | None) -> Callable[[Snapshot], bool]:
        return lambda s: s["lmstudio"]["daemon_pid"] not in (None, pid)

    def supervisor_is(self, pid: int) -> Callable[[Snapshot], bool]:
        return lambda s: s["supervisor"]["pid"] == pid

    def start_slow_load(self) -> None:
        """Unload the slow model behind the supervisor's back and wait until it reloads it."""
        if self.sim.lms("unload", _name(SLOW), timeout=15).returncode != 0:
            raise _Missed("`lms unload` failed")

        def loading(s: Snapshot) -> bool:
            return any(m["key"] == SLOW[0] and m["state"] == "loading" for m in s["models"])

        if self.wait_for(loading, timeout=10.0) is None:
            raise _Missed("the slow model was never seen loading")
        # Past the moment `lms load` reaches the daemon (its start-up and `ls` take about
        # 0.4 s here), well before the load ends.
        time.sleep(min(LOAD_REACHES_DAEMON + self.rng.uniform(0.0, 0.25), 0.5 * self.slow_load_s))

    def reload(self, text: str, how: str) -> None:
        self.config.write_text(text, encoding="utf-8")
        if how == "sighup" and self.run is not None and self.run.alive():
            self.run.proc.send_signal(signal.SIGHUP)
        elif how == "socket":
            self.post("/v1/reload")

    def restart_supervisor(self, how: str) -> _Supervisor:
        assert self.run is not None  # noqa: S101 - the soak always has one
        self.expected_exit = True
        if how == "sigterm":
            if not self.run.terminate():
                raise _Wedge("stopping", "the supervisor did not exit within 15 s of SIGTERM")
        else:
            self.run.kill()
        return self.start_supervisor()


class _Wedge(Exception):
    """A wedge seen while injecting (e.g. SIGTERM not honoured)."""

    def __init__(self, state: str, detail: str) -> None:
        super().__init__(detail)
        self.state, self.detail = state, detail


# -- the faults: each injects, holds and clears; returns when the fault is gone -------------
FaultFn = Callable[[_Soak, FaultResult], _Outcome]


def _kill_daemon(s: _Soak, r: FaultResult) -> _Outcome:
    try:
        old = s.sim.crash_daemon()
    except LookupError as exc:
        raise _Missed("no daemon to kill") from exc
    return _Outcome(time.monotonic(), s.daemon_other_than(old))


def _hang_daemon(s: _Soak, r: FaultResult) -> _Outcome:
    old = s.snap_now()["lmstudio"]["daemon_pid"]
    if old is None:
        raise _Missed("no daemon PID")
    s.hung_pids.add(int(old))
    s.sim.hang_daemon()
    return _Outcome(time.monotonic(), s.daemon_other_than(old))


def _hang_http(s: _Soak, r: FaultResult) -> _Outcome:
    s.sim.hang_http()
    return _Outcome(time.monotonic())


def _server_stopped(s: _Soak, r: FaultResult) -> _Outcome:
    if s.sim.lms("server", "stop", timeout=15).returncode != 0:
        raise _Missed("`lms server stop` failed")
    return _Outcome(time.monotonic())


def _model_unloaded(s: _Soak, r: FaultResult) -> _Outcome:
    model = s.rng.choice(BASE_MODELS)
    r.variant = _name(model)
    if s.sim.lms("unload", _name(model), timeout=15).returncode != 0:
        raise _Missed("`lms unload` failed")
    return _Outcome(time.monotonic())


def _load_fails(s: _Soak, r: FaultResult) -> _Outcome:
    model = s.rng.choice(BASE_MODELS)
    r.variant = _name(model)
    s.sim.fail_load(model[0])
    if s.sim.lms("unload", _name(model), timeout=15).returncode != 0:
        s.sim.clear_faults()
        raise _Missed("`lms unload` failed")

    def failed(snap: Snapshot) -> bool:
        return any(m["key"] == model[0] and m["state"] == "failed" for m in snap["models"])

    if s.wait_for(failed, timeout=10.0) is None:
        r.notes.append("the failing load was not reported as failed within 10 s")
    s.sim.clear_faults()
    return _Outcome(time.monotonic())


def _slow_daemon_start(s: _Soak, r: FaultResult) -> _Outcome:
    delay = round(s.rng.uniform(1.0, 3.0), 2)
    r.variant = f"{delay}s"
    s.sim.slow_start(delay)
    try:
        old = s.sim.crash_daemon()
    except LookupError as exc:
        s.sim.clear_faults()
        raise _Missed("no daemon to kill") from exc
    return _Outcome(time.monotonic(), s.daemon_other_than(old), cleanup=s.sim.clear_faults)


def _corrupt(s: _Soak, r: FaultResult, name: str) -> _Outcome:
    trigger = s.rng.choice(("restart", "kill_daemon", "none"))
    r.variant = trigger
    snap = s.snap_now()
    path = s.sim.corrupt(name, CORRUPT_TEXT)
    require: Callable[[Snapshot], bool] | None = None
    if trigger == "restart":
        require = s.count_above(int(snap["restarts"]["count"]))
        s.post("/v1/restart")
    elif trigger == "kill_daemon":
        with contextlib.suppress(LookupError):
            require = s.daemon_other_than(s.sim.crash_daemon())
    # Held: give the supervisor time to meet the broken file (steady or not, it is no verdict).
    s.await_steady("corrupt file held", time.monotonic(), require=require, timeout=4.0, wedge=False)
    now_text = path.read_text(encoding="utf-8", errors="replace")
    original = s.server_config_text if name != "settings.json" else s.settings_text
    if now_text != CORRUPT_TEXT and name != "settings.json":
        try:
            mine, theirs = json.loads(original), json.loads(now_text)
        except ValueError:
            theirs = None
        if isinstance(theirs, dict):
            lost = [
                f"{k} {mine.get(k)!r} -> {theirs.get(k)!r}"
                for k in ("port", "cors", "networkInterface")
                if mine.get(k) != theirs.get(k)
            ]
            if lost:
                r.settings_lost = ", ".join(lost)
    path.write_text(original, encoding="utf-8")
    return _Outcome(time.monotonic(), require)


def _corrupt_settings(s: _Soak, r: FaultResult) -> _Outcome:
    return _corrupt(s, r, "settings.json")


def _corrupt_server_config(s: _Soak, r: FaultResult) -> _Outcome:
    return _corrupt(s, r, "http-server-config.json")


def _port_taken(s: _Soak, r: FaultResult) -> _Outcome:
    snap = s.snap_now()
    port = int(snap["server"]["port"])
    hold = round(s.rng.uniform(1.5, 3.0), 2)
    r.variant = f"{hold}s"
    if s.sim.lms("server", "stop", timeout=15).returncode != 0:
        raise _Missed("`lms server stop` failed")
    try:
        holder = hold_port(port)
        holder.__enter__()
    except OSError as exc:
        raise _Missed(f"port {port} could not be taken: {exc}") from exc
    try:
        time.sleep(hold)
    finally:
        holder.__exit__(None, None, None)
    return _Outcome(time.monotonic())


def _socket_deleted(s: _Soak, r: FaultResult) -> _Outcome:
    s.sock.unlink()
    return _Outcome(time.monotonic())


def _supervisor_killed(s: _Soak, r: FaultResult) -> _Outcome:
    new = s.restart_supervisor("kill9")
    return _Outcome(time.monotonic(), s.supervisor_is(new.pid))


def _supervisor_killed_during_load(s: _Soak, r: FaultResult) -> _Outcome:
    how = s.rng.choice(("kill9", "sigterm"))
    r.variant = how
    s.start_slow_load()
    new = s.restart_supervisor(how)
    return _Outcome(time.monotonic(), s.supervisor_is(new.pid))


def _reload_valid(s: _Soak, r: FaultResult) -> _Outcome:
    variant = s.rng.choice(("interval", "log_level", "model_added", "model_removed"))
    how = s.rng.choice(("sighup", "socket", "watch"))
    r.variant = f"{variant},{how}"
    target = BASE_MODELS
    if variant == "interval":
        text = config_text(interval="0.25")
    elif variant == "log_level":
        text = config_text(level="warning")
    elif variant == "model_added":
        target = (*BASE_MODELS, GEMMA)
        text = config_text(target)
    else:
        target = (SLOW,)
        text = config_text(target)
    s.reload(text, how)
    phase = s.await_steady("new config", time.monotonic(), target)
    r.phases.append(phase)
    if not phase.ok:
        return _Outcome(time.monotonic(), phase=phase)
    s.reload(config_text(), how)
    return _Outcome(time.monotonic())


def _reload_invalid(s: _Soak, r: FaultResult) -> _Outcome:
    variant = s.rng.choice(sorted(INVALID_CONFIGS))
    how = s.rng.choice(("sighup", "socket", "watch"))
    r.variant = f"{variant},{how}"
    s.reload(INVALID_CONFIGS[variant], how)
    if s.wait_for(lambda snap: snap["supervisor"]["config_error"] is not None, timeout=2.0) is None:
        r.notes.append("accepted" if not s.crashed() else "the supervisor died on it")
    s.reload(config_text(), how)
    return _Outcome(time.monotonic())


def _reload_during_load(s: _Soak, r: FaultResult) -> _Outcome:
    variant = s.rng.choice(("other_removed", "loading_removed", "model_added"))
    r.variant = variant
    target = {
        "other_removed": (SLOW,),
        "loading_removed": (QWEN,),
        "model_added": (*BASE_MODELS, GEMMA),
    }[variant]
    s.start_slow_load()
    s.reload(config_text(target), "sighup")
    phase = s.await_steady("new config", time.monotonic(), target)
    r.phases.append(phase)
    if not phase.ok:
        return _Outcome(time.monotonic(), phase=phase)
    s.reload(config_text(), "sighup")
    return _Outcome(time.monotonic())


def _restart(s: _Soak, r: FaultResult, during_load: bool) -> _Outcome:
    daemon = s.rng.random() < 0.5
    r.variant = "daemon=1" if daemon else "server"
    if during_load:
        s.start_slow_load()
    snap = s.snap_now()
    old_count, old_pid = int(snap["restarts"]["count"]), snap["lmstudio"]["daemon_pid"]
    status = s.post("/v1/restart?daemon=1" if daemon else "/v1/restart")
    if status != 202:
        r.notes.append(f"POST /v1/restart answered {status}")
    require = s.count_above(old_count)
    if daemon:
        other = s.daemon_other_than(old_pid)
        return _Outcome(time.monotonic(), lambda x: require(x) and other(x))
    return _Outcome(time.monotonic(), require)


def _restart_request(s: _Soak, r: FaultResult) -> _Outcome:
    return _restart(s, r, during_load=False)


def _restart_during_load(s: _Soak, r: FaultResult) -> _Outcome:
    return _restart(s, r, during_load=True)


def _bad_network_interface(s: _Soak, r: FaultResult) -> _Outcome:
    """LM Studio's saved ``networkInterface`` is one its server cannot bind (no ``[server]
    bind`` declared in the soak's config); a stopped server or a killed daemon makes a
    bring-up read it. Held through ``RETRIES_HELD`` retries, then the file is restored."""
    value = ODD_INTERFACES[s.turn(r.kind) % len(ODD_INTERFACES)]  # in turn: 4 faults hold every value
    trigger = s.rng.choice(("server_stop", "kill_daemon"))
    r.variant = f"{json.dumps(value)},{trigger}"
    before = int(s.snap_now()["restarts"]["count"])
    settings = json.dumps({**json.loads(s.server_config_text), "networkInterface": value})
    own = 0
    if trigger == "server_stop":
        # Stopped first: `lms server stop` itself reads networkInterface (facts §2); the file
        # is written before the supervisor can notice (failures_before_restart probes).
        if s.sim.lms("server", "stop", timeout=15).returncode != 0:
            raise _Missed("`lms server stop` failed")
        at = time.monotonic()
        s.sim.server_config_path.write_text(settings, encoding="utf-8")
    else:
        s.sim.server_config_path.write_text(settings, encoding="utf-8")
        try:
            s.sim.crash_daemon()
        except LookupError as exc:
            s.sim.server_config_path.write_text(s.server_config_text, encoding="utf-8")
            raise _Missed("no daemon to kill") from exc
        at = time.monotonic()
        own = 1  # the bring-up after the fix starts a daemon: the kill's doing
    s.await_problem(r, at)
    s.hold(r, before)
    s.sim.server_config_path.write_text(s.server_config_text, encoding="utf-8")
    return _Outcome(time.monotonic(), s.problem_gone(r.problem or ""), own_starts=own)


def _state_folder_unwritable(s: _Soak, r: FaultResult) -> _Outcome:
    """lmsupervisor's state folder cannot be written; an `lms` update and a restart request
    make the next bring-up detect the capabilities again and write ``capabilities.json``
    (the time to problem counts from that write). Held until ready (the supervisor
    goes on without its state files), then mended and written once more (the problem
    clears at the next successful write, :mod:`lmsupervisor.statefile`)."""
    how = ("folder_is_a_file", "file_is_a_folder")[s.turn(r.kind) % 2]
    r.variant = how
    if not s.state_folder.is_dir():
        raise _Missed(f"no state folder at {s.state_folder}")
    before = int(s.snap_now()["restarts"]["count"])
    s.break_state_folder(how)
    s.lms_updated()
    writes = s.logged("lms_capabilities_detected")  # logged just before capabilities.json is written
    if s.post("/v1/restart") != 202:
        s.mend_state_folder()
        raise _Missed("POST /v1/restart was not accepted")
    s.await_problem(r, time.monotonic(), effect=writes)
    if not s.await_steady("unwritable held", time.monotonic(), require=s.count_above(before), wedge=False).ok:
        r.notes.append("not ready while the state folder was unwritable")
    s.mend_state_folder()
    s.lms_updated()
    s.post("/v1/restart")
    return _Outcome(time.monotonic(), s.problem_gone(r.problem or ""), own_starts=0)


def _auth_without_token(s: _Soak, r: FaultResult) -> _Outcome:
    """ "Require Authentication" on, no token in the supervisor's config: the daemon is
    killed so that the setting applies (the simulator reads it at start). Held until ready
    (through `lms`), then off again, the daemon killed again: two daemon starts are the
    fault's own."""
    r.variant = "kill_daemon"
    s.sim.configure(api_token=TOKEN)
    try:
        s.sim.crash_daemon()
    except LookupError as exc:
        s.sim.configure(api_token=None)
        raise _Missed("no daemon to kill") from exc
    url = s.sim.http_url
    s.await_problem(r, time.monotonic(), effect=lambda: _refuses_without_token(url))
    shown = None if r.to_problem_s is None else (lambda x: r.problem in problem_codes(x))
    if not s.await_steady("auth held", time.monotonic(), require=shown, wedge=False).ok:
        r.notes.append("not ready with authentication on")
    time.sleep(STEADY_BEFORE_FAULT)  # the next kill is a first failure again (past reset_after)
    s.sim.configure(api_token=None)
    try:
        old = s.sim.crash_daemon()
    except LookupError:
        old = None
        r.notes.append("no daemon to kill when turning authentication off")
    gone = s.problem_gone(r.problem or "")
    other = s.daemon_other_than(old)
    return _Outcome(time.monotonic(), lambda x: gone(x) and other(x), own_starts=2 if old else 1)


def _app_hung(s: _Soak, r: FaultResult) -> _Outcome:
    """The GUI app hangs (a second install, :class:`_AppSide`): the supervisor must name it
    ``app_hung`` and spare it. Held until the ladder's ``kill_daemon`` rung (the 3rd retry),
    which must spare it too; then, as that rung runs, its user quits it (kill -9: it
    answers nothing) and reopens it. The soak's own supervisor is not involved; ``seconds``
    is the app side's time to ready with ``app_hung`` gone."""
    app = _AppSide(s.root / f"app{r.n}", s.cfg.time_scale)
    try:
        up = s.await_app(app, "app start", time.monotonic(), app.ready)
        if not up.ok:
            return _Outcome(time.monotonic(), phase=up)
        snap = s.status(sock=app.sock)
        pid = app.sim.daemon_pid()
        if snap is None or pid is None:
            raise _Missed("the app's supervisor or the app went away before the fault")
        before, starts = int(snap["restarts"]["count"]), app.sim.daemon_starts()
        app.sim.hang_daemon()
        s.await_problem(r, time.monotonic(), other=app)
        s.hold(r, before, retries=3, other=app)  # up to the kill_daemon rung, which must spare the app
        if not _alive(pid):
            r.notes.append("the hung app was killed by the supervisor")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        app.sim.launch_app()
        gone_at = time.monotonic()
        gone = s.problem_gone(r.problem or "")
        phase = s.await_app(app, "app reopened", gone_at, lambda x: app.ready(x) and gone(x))
        r.daemon_restarts = app.sim.daemon_starts() - starts - 1  # the reopened app is its user's doing
    except TimeoutError as exc:  # launch_app: the app did not answer
        raise _Missed(str(exc)) from exc
    finally:
        app.close()
    return _Outcome(gone_at, phase=phase)


FAULTS: dict[str, FaultFn] = {
    "kill_daemon": _kill_daemon,
    "hang_daemon": _hang_daemon,
    "hang_http": _hang_http,
    "server_stopped": _server_stopped,
    "model_unloaded": _model_unloaded,
    "load_fails": _load_fails,
    "slow_daemon_start": _slow_daemon_start,
    "corrupt_settings": _corrupt_settings,
    "corrupt_server_config": _corrupt_server_config,
    "port_taken": _port_taken,
    "socket_deleted": _socket_deleted,
    "supervisor_killed": _supervisor_killed,
    "supervisor_killed_during_load": _supervisor_killed_during_load,
    "reload_valid": _reload_valid,
    "reload_invalid": _reload_invalid,
    "reload_during_load": _reload_during_load,
    "restart_request": _restart_request,
    "restart_during_load": _restart_during_load,
    "bad_network_interface": _bad_network_interface,
    "state_folder_unwritable": _state_folder_unwritable,
    "auth_without_token": _auth_without_token,
    "app_hung": _app_hung,
}


def fault_order(seed: int, count: int, kinds: tuple[str, ...] = KINDS) -> list[str]:
    """``count`` kinds in shuffled rounds of ``kinds``: random, yet every kind early and often."""
    rng = random.Random(seed)  # noqa: S311 - reproducible order
    order: list[str] = []
    while len(order) < count:
        round_ = list(kinds)
        rng.shuffle(round_)
        order += round_
    return order[:count]


def _one_fault(s: _Soak, r: FaultResult) -> None:
    """Inject ``r.kind``, wait for recovery, check probing and duplicates; fills ``r``."""
    started = time.monotonic()
    daemon_starts = s.sim.daemon_starts()
    try:
        try:
            outcome = FAULTS[r.kind](s, r)
        except (OSError, subprocess.SubprocessError) as exc:  # e.g. the daemon went away meanwhile
            raise _Missed(f"{type(exc).__name__}: {exc}") from exc
    except _Missed as exc:
        if s.crashed():  # not a lost race: the supervisor died under the fault
            r.crashed = True
            r.phases.append(Phase("inject", False, 0.0, crashed=True, detail=f"supervisor died ({exc})"))
            return
        r.missed = str(exc)
        return
    except _Wedge as exc:
        r.wedged, r.wedge_state = True, exc.state
        r.notes.append(exc.detail)
        return
    try:
        if outcome.phase is not None:
            phase = outcome.phase
            if phase not in r.phases:
                r.phases.append(phase)
        else:
            phase = s.await_steady("recovery", outcome.gone_at, require=outcome.require)
            r.phases.append(phase)
    finally:
        if outcome.cleanup is not None:
            outcome.cleanup()
    if outcome.own_starts is not None:
        r.daemon_restarts = s.sim.daemon_starts() - daemon_starts - outcome.own_starts
    if phase.cut:
        r.missed = phase.detail
        return
    r.recovered = phase.ok and not phase.crashed
    r.seconds = round(phase.seconds, 3) if phase.ok else None
    r.wedged = phase.wedged
    r.wedge_state = phase.last_state if phase.wedged else None
    if phase.crashed:
        r.crashed = True
    if not phase.ok:
        return
    # Steady for a moment (past restart.reset_after: the next fault is a first failure),
    # and until a load abandoned during the fault has finished.
    pause = STEADY_BEFORE_FAULT + s.rng.uniform(0.0, 0.2)
    time.sleep(max(pause, started + s.slow_load_s + 0.3 - time.monotonic()))
    if not s.probing(phase.probe_ms):
        r.recovered, r.seconds = False, None
        r.phases.append(
            Phase("health probes", False, PROBES_WITHIN, last_state="ready", detail="ready but no longer probing")
        )
    r.duplicates = s.duplicates(BASE_MODELS)
    if r.duplicates:
        s.unload(r.duplicates)


def run_soak(cfg: SoakConfig, progress: Callable[[FaultResult], None] | None = None) -> SoakReport:
    """Run one soak; returns its report. Kills everything it started, whatever happens.

    Raises RuntimeError if the supervisor never becomes steady at the start (60 s).
    """
    unknown = set(cfg.kinds) - set(FAULTS)
    if unknown:
        raise ValueError(f"kinds: unknown {sorted(unknown)}; known: {', '.join(KINDS)}")
    # /tmp, not $TMPDIR: AF_UNIX paths are limited to about 107 bytes; mkdtemp makes it 0700.
    root = Path(tempfile.mkdtemp(prefix="lmsc", dir=str(cfg.workdir) if cfg.workdir else "/tmp"))  # noqa: S108
    report = SoakReport(seed=cfg.seed, config=cfg, workdir=str(root))
    started = time.monotonic()
    soak: _Soak | None = None
    poller: _StatusPoller | None = None
    try:
        soak = _Soak(cfg, root)
        soak.start_supervisor()
        first = soak.await_steady("start", time.monotonic(), timeout=60.0, wedge=False)
        if not first.ok:
            raise RuntimeError(f"the supervisor never became steady: {first.detail}; log {soak.log}")
        time.sleep(STEADY_BEFORE_FAULT)
        poller = _StatusPoller(soak.sock, cfg.status_rate)
        poller.start()
        for n, kind in enumerate(fault_order(cfg.seed, cfg.faults, cfg.kinds), 1):
            if time.monotonic() - started > cfg.time_limit or time.monotonic() >= soak.hard_deadline:
                break
            if not _ensure_steady(soak, report):
                break
            late = soak.duplicates(BASE_MODELS) if report.faults else []
            if late:  # appeared after the last fault's check: still that fault's doing
                report.faults[-1].duplicates += late
                report.faults[-1].notes.append("duplicate seen late, before the next fault")
                soak.unload(late)
            soak.scan_log()  # what came before this fault is not its fault
            result = FaultResult(n=n, kind=kind)
            _one_fault(soak, result)
            exit_code = soak.run.proc.poll() if soak.run else None
            if soak.crashed() and result.missed is None:  # died after its last wait
                result.crashed, result.recovered = True, False
            needs_reset = result.missed is None and (not result.recovered or result.crashed or result.wedged)
            if kind in SECOND_INSTALL and not result.crashed:  # the soak's own supervisor was not involved
                needs_reset = False
            if needs_reset:
                stuck = soak.stop_gently()
                if stuck:
                    result.notes.append(stuck)
            crash, excerpt, handled = soak.scan_log()
            result.handled_crashes = handled
            if crash and result.missed is None:
                result.crashed, result.crash_log = True, excerpt
            if result.crashed and not result.crash_log:
                result.crash_log = f"the supervisor died (exit {exit_code})"
            report.faults.append(result)
            if needs_reset:
                result.reset = True
                if not _reset(soak, report):
                    if progress is not None:
                        progress(result)
                    break
            if progress is not None:
                progress(result)
    finally:
        if poller is not None:
            poller.halt.set()
            poller.join(5)
            report.status_ms, report.status_errors = list(poller.latencies), poller.errors
        if soak is not None:
            soak.kill_everything()
        if not cfg.keep:
            shutil.rmtree(root, ignore_errors=True)
        report.wall_seconds = time.monotonic() - started
    return report


def _ensure_steady(s: _Soak, report: SoakReport) -> bool:
    """Steady before the next fault, else a reset; False (and ``aborted``) if even that fails."""
    phase = s.await_steady("before the fault", time.monotonic(), timeout=min(s.cfg.recover_timeout, 30.0))
    if phase.ok or phase.cut:
        return phase.ok
    return _reset(s, report)


def _reset(s: _Soak, report: SoakReport) -> bool:
    """Kill everything, restore the files, start a new supervisor; False if it never gets steady."""
    report.resets += 1
    s.kill_everything()
    s.restore_files()
    with contextlib.suppress(FileNotFoundError):
        s.sock.unlink()
    s.start_supervisor()
    phase = s.await_steady("reset", time.monotonic(), timeout=60.0, wedge=False)
    time.sleep(STEADY_BEFORE_FAULT)
    s.scan_log()
    if not phase.ok:
        report.aborted = f"the reset never became steady ({phase.detail}); log {s.log}"
    return phase.ok
