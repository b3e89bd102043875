"""The world a chaos soak's faults act on (:class:`Soak`): the simulated install, the running
supervisor and its files, how to look at them (``/v1/status``, the simulator's instances,
the supervisor's log) and how to wait (for steady, for a problem, for retries), plus the
pieces several faults share. A fault reports back an :class:`Outcome`, or raises
:class:`Missed` (not injected: a lost race) or :class:`Wedge`.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaos_soak.plan import (
    BASE_MODELS,
    DETERMINISTIC,
    SLOW,
    USER_SERVER,
    Model,
    Snapshot,
    SoakConfig,
    config_text,
    model_name,
    problem_bound,
    problem_codes,
)
from chaos_soak.processes import AppSide, Supervisor, greets, kill_under, scan_log_text
from chaos_soak.report import FaultResult, Phase
from lmsupervisor.client.sync import request
from lmsupervisor.errors import StatusSocketError
from lmsupervisor.simulator.home import create_install

SLOW_LOAD_SIMULATED_S = 0.5 + 1.2 * 12.109565112  # common.DEFAULT_CONFIG load_s_base + per_gb * size
DUPLICATE_ID = re.compile(r":\d+$")
PHASE_POLL = 0.05  # seconds between two looks at the supervisor while waiting
LOAD_REACHES_DAEMON = 0.45  # seconds from the `loading` state to the simulator loading (lms start-up, ls)
PROBES_WITHIN = 3.0  # seconds: a steady supervisor probes (every 0.2 s) at least once in this time
# app_hung's bound adds the ladder's timeout (min(15, max(3, 2 x health.timeout)) = 3 s here):
# failed probes say the server is down; only a call to the service that does not answer in
# time says the app itself hangs.
HUNG_EVIDENCE_S = 3.0
PROBLEM_WAIT = 15.0  # seconds to wait for a deterministic fault's problem: past the bound, a late one is measured
RETRIES_HELD = 4  # retries a held deterministic fault waits for: past the ladder's kill_daemon rung (the 3rd)
HOLD_TIMEOUT = 10.0  # seconds, at most, that a deterministic fault is held after its problem

SNAPSHOT_KEYS = {"state", "since", "supervisor", "lmstudio", "server", "models", "restarts"}


@dataclass
class Outcome:
    """What a fault function reports back to the loop."""

    gone_at: float  # monotonic time the fault was gone (injected, or cleared)
    require: Callable[[Snapshot], bool] | None = None
    missed: str | None = None
    phase: Phase | None = (
        None  # measured by the fault itself: an intermediate one that failed, or a second install's recovery
    )
    cleanup: Callable[[], None] | None = None
    own_starts: int | None = None  # daemon starts the fault itself made necessary (deterministic kinds: counted)


class Missed(Exception):
    """The fault could not be injected (the supervisor won a race); the fault is not counted."""


class Soak:
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
        self.run: Supervisor | None = None
        self.expected_exit = False
        self.slow_load_s = SLOW_LOAD_SIMULATED_S * cfg.time_scale
        self.hard_deadline = float("inf") if cfg.hard_limit is None else time.monotonic() + cfg.hard_limit

    # -- processes -----------------------------------------------------------------
    def start_supervisor(self) -> Supervisor:
        self.run = Supervisor(self.sim, self.sock, self.config, self.log)
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
        kill_under(self.root)
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
        if not greets(str(snap["server"]["api_endpoint"])):
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
        self, check: Callable[[Snapshot], bool], timeout: float, other: AppSide | None = None
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
        other: AppSide | None = None,
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

    def hold(self, r: FaultResult, before: int, retries: int = RETRIES_HELD, other: AppSide | None = None) -> None:
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

    def await_app(self, app: AppSide, label: str, since: float, check: Callable[[Snapshot], bool]) -> Phase:
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
            raise Missed("no status before the fault")
        return snap

    def count_above(self, before: int) -> Callable[[Snapshot], bool]:
        return lambda s: int(s["restarts"]["count"]) > before

    def daemon_other_than(self, pid: int | None) -> Callable[[Snapshot], bool]:
        return lambda s: s["lmstudio"]["daemon_pid"] not in (None, pid)

    def supervisor_is(self, pid: int) -> Callable[[Snapshot], bool]:
        return lambda s: s["supervisor"]["pid"] == pid

    def start_slow_load(self) -> None:
        """Unload the slow model behind the supervisor's back and wait until it reloads it."""
        if self.sim.lms("unload", model_name(SLOW), timeout=15).returncode != 0:
            raise Missed("`lms unload` failed")

        def loading(s: Snapshot) -> bool:
            return any(m["key"] == SLOW[0] and m["state"] == "loading" for m in s["models"])

        if self.wait_for(loading, timeout=10.0) is None:
            raise Missed("the slow model was never seen loading")
        # Past the moment `lms load` reaches the daemon (its start-up and `ls` take about
        # 0.4 s here), well before the load ends.
        time.sleep(min(LOAD_REACHES_DAEMON + self.rng.uniform(0.0, 0.25), 0.5 * self.slow_load_s))

    def reload(self, text: str, how: str) -> None:
        self.config.write_text(text, encoding="utf-8")
        if how == "sighup" and self.run is not None and self.run.alive():
            self.run.proc.send_signal(signal.SIGHUP)
        elif how == "socket":
            self.post("/v1/reload")

    def restart_supervisor(self, how: str) -> Supervisor:
        assert self.run is not None  # the soak always has one
        self.expected_exit = True
        if how == "sigterm":
            if not self.run.terminate():
                raise Wedge("stopping", "the supervisor did not exit within 15 s of SIGTERM")
        else:
            self.run.kill()
        return self.start_supervisor()


class Wedge(Exception):
    """A wedge seen while injecting (e.g. SIGTERM not honoured)."""

    def __init__(self, state: str, detail: str) -> None:
        super().__init__(detail)
        self.state, self.detail = state, detail
