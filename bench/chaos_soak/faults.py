"""The chaos soak's faults: one function per kind of :data:`chaos_soak.plan.KINDS`, in
:data:`FAULTS`; each injects its fault into the :class:`chaos_soak.rig.Soak`, holds and
clears it, and returns when it is gone (an :class:`chaos_soak.rig.Outcome`).

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
never climb the ladder for them; for each the soak also measures the time to that problem and
the LM Studio daemon restarts it caused (:mod:`chaos_soak.soak`).

Reloads reach the supervisor by SIGHUP, ``POST /v1/reload`` or only the file write (its
watcher).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable

from chaos_soak.plan import (
    BASE_MODELS,
    GEMMA,
    INVALID_CONFIGS,
    QWEN,
    SLOW,
    STEADY_BEFORE_FAULT,
    Snapshot,
    config_text,
    model_name,
    problem_codes,
)
from chaos_soak.processes import AppSide, alive, hold_port, refuses_without_token
from chaos_soak.report import FaultResult
from chaos_soak.rig import Missed, Outcome, Soak

CORRUPT_TEXT = '{"port": 12'  # a file cut short, as by a crash while LM Studio wrote it
ODD_INTERFACES = ("localhost:1234", "999.1.1.1", "127.0.0.1\n", "0.0.0.0 ")  # issue 14: each once a kill loop
TOKEN = "sk-lm-chaos123:abcdefghijklmnopqrst"  # noqa: S105 - the simulator's token, shaped as LM Studio's


FaultFn = Callable[[Soak, FaultResult], Outcome]


def _kill_daemon(s: Soak, r: FaultResult) -> Outcome:
    try:
        old = s.sim.crash_daemon()
    except LookupError as exc:
        raise Missed("no daemon to kill") from exc
    return Outcome(time.monotonic(), s.daemon_other_than(old))


def _hang_daemon(s: Soak, r: FaultResult) -> Outcome:
    old = s.snap_now()["lmstudio"]["daemon_pid"]
    if old is None:
        raise Missed("no daemon PID")
    s.hung_pids.add(int(old))
    s.sim.hang_daemon()
    return Outcome(time.monotonic(), s.daemon_other_than(old))


def _hang_http(s: Soak, r: FaultResult) -> Outcome:
    s.sim.hang_http()
    return Outcome(time.monotonic())


def _server_stopped(s: Soak, r: FaultResult) -> Outcome:
    if s.sim.lms("server", "stop", timeout=15).returncode != 0:
        raise Missed("`lms server stop` failed")
    return Outcome(time.monotonic())


def _model_unloaded(s: Soak, r: FaultResult) -> Outcome:
    model = s.rng.choice(BASE_MODELS)
    r.variant = model_name(model)
    if s.sim.lms("unload", model_name(model), timeout=15).returncode != 0:
        raise Missed("`lms unload` failed")
    return Outcome(time.monotonic())


def _load_fails(s: Soak, r: FaultResult) -> Outcome:
    model = s.rng.choice(BASE_MODELS)
    r.variant = model_name(model)
    s.sim.fail_load(model[0])
    if s.sim.lms("unload", model_name(model), timeout=15).returncode != 0:
        s.sim.clear_faults()
        raise Missed("`lms unload` failed")

    def failed(snap: Snapshot) -> bool:
        return any(m["key"] == model[0] and m["state"] == "failed" for m in snap["models"])

    if s.wait_for(failed, timeout=10.0) is None:
        r.notes.append("the failing load was not reported as failed within 10 s")
    s.sim.clear_faults()
    return Outcome(time.monotonic())


def _slow_daemon_start(s: Soak, r: FaultResult) -> Outcome:
    delay = round(s.rng.uniform(1.0, 3.0), 2)
    r.variant = f"{delay}s"
    s.sim.slow_start(delay)
    try:
        old = s.sim.crash_daemon()
    except LookupError as exc:
        s.sim.clear_faults()
        raise Missed("no daemon to kill") from exc
    return Outcome(time.monotonic(), s.daemon_other_than(old), cleanup=s.sim.clear_faults)


def _corrupt(s: Soak, r: FaultResult, name: str) -> Outcome:
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
    return Outcome(time.monotonic(), require)


def _corrupt_settings(s: Soak, r: FaultResult) -> Outcome:
    return _corrupt(s, r, "settings.json")


def _corrupt_server_config(s: Soak, r: FaultResult) -> Outcome:
    return _corrupt(s, r, "http-server-config.json")


def _port_taken(s: Soak, r: FaultResult) -> Outcome:
    snap = s.snap_now()
    port = int(snap["server"]["port"])
    hold = round(s.rng.uniform(1.5, 3.0), 2)
    r.variant = f"{hold}s"
    if s.sim.lms("server", "stop", timeout=15).returncode != 0:
        raise Missed("`lms server stop` failed")
    try:
        holder = hold_port(port)
        holder.__enter__()
    except OSError as exc:
        raise Missed(f"port {port} could not be taken: {exc}") from exc
    try:
        time.sleep(hold)
    finally:
        holder.__exit__(None, None, None)
    return Outcome(time.monotonic())


def _socket_deleted(s: Soak, r: FaultResult) -> Outcome:
    s.sock.unlink()
    return Outcome(time.monotonic())


def _supervisor_killed(s: Soak, r: FaultResult) -> Outcome:
    new = s.restart_supervisor("kill9")
    return Outcome(time.monotonic(), s.supervisor_is(new.pid))


def _supervisor_killed_during_load(s: Soak, r: FaultResult) -> Outcome:
    how = s.rng.choice(("kill9", "sigterm"))
    r.variant = how
    s.start_slow_load()
    new = s.restart_supervisor(how)
    return Outcome(time.monotonic(), s.supervisor_is(new.pid))


def _reload_valid(s: Soak, r: FaultResult) -> Outcome:
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
        return Outcome(time.monotonic(), phase=phase)
    s.reload(config_text(), how)
    return Outcome(time.monotonic())


def _reload_invalid(s: Soak, r: FaultResult) -> Outcome:
    variant = s.rng.choice(sorted(INVALID_CONFIGS))
    how = s.rng.choice(("sighup", "socket", "watch"))
    r.variant = f"{variant},{how}"
    s.reload(INVALID_CONFIGS[variant], how)
    if s.wait_for(lambda snap: snap["supervisor"]["config_error"] is not None, timeout=2.0) is None:
        r.notes.append("accepted" if not s.crashed() else "the supervisor died on it")
    s.reload(config_text(), how)
    return Outcome(time.monotonic())


def _reload_during_load(s: Soak, r: FaultResult) -> Outcome:
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
        return Outcome(time.monotonic(), phase=phase)
    s.reload(config_text(), "sighup")
    return Outcome(time.monotonic())


def _restart(s: Soak, r: FaultResult, during_load: bool) -> Outcome:
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
        return Outcome(time.monotonic(), lambda x: require(x) and other(x))
    return Outcome(time.monotonic(), require)


def _restart_request(s: Soak, r: FaultResult) -> Outcome:
    return _restart(s, r, during_load=False)


def _restart_during_load(s: Soak, r: FaultResult) -> Outcome:
    return _restart(s, r, during_load=True)


def _bad_network_interface(s: Soak, r: FaultResult) -> Outcome:
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
            raise Missed("`lms server stop` failed")
        at = time.monotonic()
        s.sim.server_config_path.write_text(settings, encoding="utf-8")
    else:
        s.sim.server_config_path.write_text(settings, encoding="utf-8")
        try:
            s.sim.crash_daemon()
        except LookupError as exc:
            s.sim.server_config_path.write_text(s.server_config_text, encoding="utf-8")
            raise Missed("no daemon to kill") from exc
        at = time.monotonic()
        own = 1  # the bring-up after the fix starts a daemon: the kill's doing
    s.await_problem(r, at)
    s.hold(r, before)
    s.sim.server_config_path.write_text(s.server_config_text, encoding="utf-8")
    return Outcome(time.monotonic(), s.problem_gone(r.problem or ""), own_starts=own)


def _state_folder_unwritable(s: Soak, r: FaultResult) -> Outcome:
    """lmsupervisor's state folder cannot be written; an `lms` update and a restart request
    make the next bring-up detect the capabilities again and write ``capabilities.json``
    (the time to problem counts from that write). Held until ready (the supervisor
    goes on without its state files), then mended and written once more (the problem
    clears at the next successful write, :mod:`lmsupervisor.statefile`)."""
    how = ("folder_is_a_file", "file_is_a_folder")[s.turn(r.kind) % 2]
    r.variant = how
    if not s.state_folder.is_dir():
        raise Missed(f"no state folder at {s.state_folder}")
    before = int(s.snap_now()["restarts"]["count"])
    s.break_state_folder(how)
    s.lms_updated()
    writes = s.logged("lms_capabilities_detected")  # logged just before capabilities.json is written
    if s.post("/v1/restart") != 202:
        s.mend_state_folder()
        raise Missed("POST /v1/restart was not accepted")
    s.await_problem(r, time.monotonic(), effect=writes)
    if not s.await_steady("unwritable held", time.monotonic(), require=s.count_above(before), wedge=False).ok:
        r.notes.append("not ready while the state folder was unwritable")
    s.mend_state_folder()
    s.lms_updated()
    s.post("/v1/restart")
    return Outcome(time.monotonic(), s.problem_gone(r.problem or ""), own_starts=0)


def _auth_without_token(s: Soak, r: FaultResult) -> Outcome:
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
        raise Missed("no daemon to kill") from exc
    url = s.sim.http_url
    s.await_problem(r, time.monotonic(), effect=lambda: refuses_without_token(url))
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
    return Outcome(time.monotonic(), lambda x: gone(x) and other(x), own_starts=2 if old else 1)


def _app_hung(s: Soak, r: FaultResult) -> Outcome:
    """The GUI app hangs (a second install, :class:`chaos_soak.processes.AppSide`): the supervisor must name it
    ``app_hung`` and spare it. Held until the ladder's ``kill_daemon`` rung (the 3rd retry),
    which must spare it too; then, as that rung runs, its user quits it (kill -9: it
    answers nothing) and reopens it. The soak's own supervisor is not involved; ``seconds``
    is the app side's time to ready with ``app_hung`` gone."""
    app = AppSide(s.root / f"app{r.n}", s.cfg.time_scale)
    try:
        up = s.await_app(app, "app start", time.monotonic(), app.ready)
        if not up.ok:
            return Outcome(time.monotonic(), phase=up)
        snap = s.status(sock=app.sock)
        pid = app.sim.daemon_pid()
        if snap is None or pid is None:
            raise Missed("the app's supervisor or the app went away before the fault")
        before, starts = int(snap["restarts"]["count"]), app.sim.daemon_starts()
        app.sim.hang_daemon()
        s.await_problem(r, time.monotonic(), other=app)
        s.hold(r, before, retries=3, other=app)  # up to the kill_daemon rung, which must spare the app
        if not alive(pid):
            r.notes.append("the hung app was killed by the supervisor")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        app.sim.launch_app()
        gone_at = time.monotonic()
        gone = s.problem_gone(r.problem or "")
        phase = s.await_app(app, "app reopened", gone_at, lambda x: app.ready(x) and gone(x))
        r.daemon_restarts = app.sim.daemon_starts() - starts - 1  # the reopened app is its user's doing
    except TimeoutError as exc:  # launch_app: the app did not answer
        raise Missed(str(exc)) from exc
    finally:
        app.close()
    return Outcome(gone_at, phase=phase)


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
