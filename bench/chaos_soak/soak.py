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

   and for the deterministic kinds (:data:`chaos_soak.plan.DETERMINISTIC`, a restart cannot
   fix them, see :mod:`chaos_soak.faults`):

   time to problem  seconds from the fault in effect to its code in ``/v1/status``: from the
                    trigger (a stopped server, a killed daemon, a hung app); for
                    ``auth_without_token`` from the first moment LM Studio's restarted server
                    refuses a request without the token; for ``state_folder_unwritable`` from
                    the supervisor's first write (its log's ``lms_capabilities_detected``, just
                    before ``capabilities.json`` is written; the `lms` re-detection before it
                    takes about 1-1.5 s here). The bound is
                    ``failures_before_restart x interval + timeout`` of the soak's config
                    (:func:`chaos_soak.plan.problem_bound`), plus the ladder's timeout for ``app_hung``
                    (:data:`chaos_soak.rig.HUNG_EVIDENCE_S`); a problem later than that, or never, is *late*;
   daemon restarts  LM Studio daemon processes started during the fault (the simulator's
                    :meth:`SimInstall.daemon_starts`) minus those the fault made necessary
                    itself (a kill, a reopened app): the daemon stops and kills the supervisor
                    caused for it; more than one is *harmful* (``0 beyond the first``);
   recovery         as for every kind, and the problem gone from ``/v1/status``.

   A fault not recovered, or a crash, is followed by a *reset* (every process of the soak
   killed, the files restored, a new supervisor started) so that one failure does not spill
   into the next fault's figures;
4. meanwhile a thread queries ``/v1/status`` a few times a second (latencies in ms).

Every wait is bounded; everything started is killed at the end, also on errors.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from chaos_soak.faults import FAULTS
from chaos_soak.plan import BASE_MODELS, KINDS, SECOND_INSTALL, STEADY_BEFORE_FAULT, SoakConfig, fault_order
from chaos_soak.processes import StatusPoller
from chaos_soak.report import FaultResult, Phase, SoakReport
from chaos_soak.rig import PROBES_WITHIN, Missed, Soak, Wedge


def _one_fault(s: Soak, r: FaultResult) -> None:
    """Inject ``r.kind``, wait for recovery, check probing and duplicates; fills ``r``."""
    started = time.monotonic()
    daemon_starts = s.sim.daemon_starts()
    try:
        try:
            outcome = FAULTS[r.kind](s, r)
        except (OSError, subprocess.SubprocessError) as exc:  # e.g. the daemon went away meanwhile
            raise Missed(f"{type(exc).__name__}: {exc}") from exc
    except Missed as exc:
        if s.crashed():  # not a lost race: the supervisor died under the fault
            r.crashed = True
            r.phases.append(Phase("inject", False, 0.0, crashed=True, detail=f"supervisor died ({exc})"))
            return
        r.missed = str(exc)
        return
    except Wedge as exc:
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
    soak: Soak | None = None
    poller: StatusPoller | None = None
    try:
        soak = Soak(cfg, root)
        soak.start_supervisor()
        first = soak.await_steady("start", time.monotonic(), timeout=60.0, wedge=False)
        if not first.ok:
            raise RuntimeError(f"the supervisor never became steady: {first.detail}; log {soak.log}")
        time.sleep(STEADY_BEFORE_FAULT)
        poller = StatusPoller(soak.sock, cfg.status_rate)
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


def _ensure_steady(s: Soak, report: SoakReport) -> bool:
    """Steady before the next fault, else a reset; False (and ``aborted``) if even that fails."""
    phase = s.await_steady("before the fault", time.monotonic(), timeout=min(s.cfg.recover_timeout, 30.0))
    if phase.ok or phase.cut:
        return phase.ok
    return _reset(s, report)


def _reset(s: Soak, report: SoakReport) -> bool:
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
