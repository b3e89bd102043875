"""Random message sequences through the pure reducer keep its invariants (hypothesis)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from lmsupervisor.config import ModelConfig, ServerConfig
from lmsupervisor.core.effects import BringUp, CancelAction, LoadModels
from lmsupervisor.core.messages import (
    ActionCrashed,
    BringUpFailed,
    ConfigChanged,
    DaemonExited,
    LoadPassFailed,
    LoadSettled,
    LoadStarted,
    Message,
    ModelsDone,
    NotInstalled,
    Now,
    Observed,
    Probed,
    RestartRequested,
    ServerUp,
    Start,
    TimerFired,
)
from lmsupervisor.core.observed import DaemonProcess, ProbeResult, ServerSettings
from lmsupervisor.core.reducer import reduce
from lmsupervisor.core.snapshot import Snapshot, initial
from lmsupervisor.core.states import State
from tests.conftest import cpu_bound
from tests.scenarios.coredata import CFG, INSTALL, ONE, TWO
from tests.scenarios.fakes import make_install

DAEMONS = [DaemonProcess(77, 1.0, True), DaemonProcess(78, 2.0, True), DaemonProcess(79, 3.0, False)]
CONFIGS = [
    CFG,
    replace(CFG, models=(ModelConfig("a/one"),)),
    replace(CFG, models=(ModelConfig("a/one"), ModelConfig("c/three"))),
    replace(CFG, server=ServerConfig(port=4321)),
]
ENDS_ACTION = (ServerUp, NotInstalled, BringUpFailed, ModelsDone, LoadPassFailed, ActionCrashed)


def message(data: st.DataObject, snap: Snapshot) -> Message:
    """A message that could plausibly arrive now: current or stale ids, any kind."""
    stale = data.draw(st.integers(0, 3)) == 0
    action, epoch, timer = (
        (snap.work.action - 1, snap.work.epoch - 1, snap.work.timer - 1)
        if stale
        else (snap.work.action, snap.work.epoch, snap.work.timer)
    )
    kind = data.draw(st.integers(0, 13))
    name = ("a/one", "two", "c/three")[kind % 3]
    loaded = ((), (ONE,), (ONE, TWO), (ONE, TWO, replace(TWO, identifier="two:2")))[kind % 4]
    daemon = (None, *DAEMONS)[kind % 4]
    options: list[Message] = [
        ServerUp(action, INSTALL, ServerSettings(), daemon, "up", adopted=kind % 2 == 0),
        NotInstalled(action, make_install(False), "gone"),
        BringUpFailed(action, "failed"),
        LoadStarted(name),
        LoadSettled(name),
        ModelsDone(action, loaded, ("two",) if TWO in loaded else ()),
        LoadPassFailed(action, "ps failed"),
        Probed(epoch, ProbeResult(data.draw(st.booleans()), 1.0, None, None)),
        Observed(epoch, loaded),
        DaemonExited(DAEMONS[kind % 3].pid),
        TimerFired(timer),
        RestartRequested(kind % 2 == 0, "asked"),
        ConfigChanged(CONFIGS[kind % 4]),
        ActionCrashed((action, -1, -2)[kind % 3], "x", "OSError"),
    ]
    return options[kind]


@cpu_bound(3.0)  # 150 generated message sequences
@settings(max_examples=150, deadline=None)
@given(st.data())
def test_invariants_hold_for_any_message_sequence(data: st.DataObject) -> None:
    """At most one action runs; in-flight loads always reach the next pass; a held config
    never outlives LOADING_MODELS; only daemons LM Studio reported reach a bring-up."""
    snap, effects = reduce(initial(CFG, 0.0), Start(), Now(0.0, 0.0))
    running = True  # the bring-up just started
    reported: set[DaemonProcess] = set()
    for i in range(30):
        msg = message(data, snap)
        if isinstance(msg, ServerUp) and msg.daemon is not None:
            reported.add(msg.daemon)
        if isinstance(msg, ENDS_ACTION) and getattr(msg, "action", None) == snap.work.action:
            running = False
        before = snap
        snap, effects = reduce(snap, msg, Now(float(i), float(i)))
        for effect in effects:
            if isinstance(effect, CancelAction):
                running = False
            elif isinstance(effect, BringUp | LoadModels):
                assert not running, f"a second action started without cancelling the first ({msg})"
                running = True
            if isinstance(effect, LoadModels):
                carried = {f.name for f in effect.in_flight}
                assert {f.name for f in before.work.in_flight if f.deadline > i} <= carried | {
                    f.name
                    for f in before.work.in_flight
                    if f.name not in {m.identifier or m.key for m in snap.config.models}
                }
            if isinstance(effect, BringUp) and effect.daemon is not None:
                assert effect.daemon in reported
        if snap.state is not State.LOADING_MODELS:
            assert snap.pending_config is None
        assert len({m.name for m in snap.models}) == len(snap.models) == len(snap.config.models)
