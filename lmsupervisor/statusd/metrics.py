"""``GET /metrics``: the supervisor's Prometheus metrics, rendered by ``prometheus_client``.

Everything lives in a private :class:`~prometheus_client.CollectorRegistry` (nothing of
the process-global default registry leaks in). Two kinds of sources:

- **Counted as it happens** (:meth:`Metrics.observe`, registered with
  ``Supervisor.observe``, and :meth:`Metrics.runner` wrapping the `lms` runner):
  ``lmsupervisor_restarts_total{reason}``, ``lmsupervisor_probes_total{result}``,
  ``lmsupervisor_probe_latency_seconds`` (histogram of successful greeting probes),
  ``lmsupervisor_lms_calls_total{command,result}`` and
  ``lmsupervisor_lms_call_duration_seconds{command}`` (histogram),
  ``lmsupervisor_status_encodings_total`` (the status server's cache at work), and
  ``lmsupervisor_resumes_total`` (resumes from sleep the health loop noticed, each
  re-verified at once), ``lmsupervisor_notify_deliveries_total{kind,result}`` (:meth:`Metrics.count_notification`:
  each try to a ``[[notify]]`` receiver, ``ok`` or ``failed``, and each alert ``dropped``
  from a full queue; a failing receiver is also the problem ``notify_failing``).
- **Read from the status snapshot at each scrape** (design §5 dict): ``lmsupervisor_ready``,
  ``lmsupervisor_state{state}``, ``lmsupervisor_probe_failures`` (consecutive),
  ``lmsupervisor_model_loaded`` / ``lmsupervisor_model_failed`` /
  ``lmsupervisor_model_answer_latency_seconds``, ``lmsupervisor_model_tokens_per_second`` and
  ``lmsupervisor_model_baseline_tokens_per_second`` (``{key,identifier}``; the last three only
  once the status has the figure), ``lmsupervisor_config_rejected``,
  ``lmsupervisor_problem{code,severity}`` (1 per problem in the status),
``lmsupervisor_uptime_seconds``, ``lmsupervisor_last_transition_timestamp_seconds``,
  ``lmsupervisor_info{version,lmstudio_version,lms_cli_version,lmstudio_kind}``, and from
  LM Studio's hardware survey (``hardware``, design §9; absent before one)
  ``lmsupervisor_gpus`` and ``lmsupervisor_runtime_info{name,version,engine,compatibility}``.

``reason`` of a restart is what caused it, from a small fixed set (:data:`RESTART_REASONS`):
``requested`` (``POST /v1/restart``), else the failure that sent the supervisor into
backoff (``probe_failed``, ``daemon_exited``, ``bring_up_failed``, ``action_crashed``), or
``gpu_missing`` (the GPU gate's one daemon restart), as the reducer records it in
``Snapshot.restarts.cause``.
``command`` of an `lms` call is its (sub)command, e.g. ``ps``, ``load``, ``server start``;
``result`` is ``ok``, ``failed`` (non-zero exit), ``timeout``, ``not_found`` or ``error``.
The alert rules in ``contrib/prometheus/lmsupervisor.rules.yml`` use these names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from lmsupervisor import __version__
from lmsupervisor.clock import Clock
from lmsupervisor.core import reducer as core
from lmsupervisor.core.messages import Probed, Resumed
from lmsupervisor.core.snapshot import Snapshot
from lmsupervisor.core.states import State
from lmsupervisor.errors import LmsNotFoundError, LmsTimeoutError
from lmsupervisor.lmstudio.lms import LmsResult, LmsRunner

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # text exposition 0.0.4: what every Prometheus reads
STATES = tuple(s.value for s in State)
# What sends the supervisor into backoff, by message class; anything newer gets its snake_case name.
RESTART_REASONS = core.RESTART_CAUSES  # recorded by the reducer (Snapshot.restarts.cause), never guessed here
LMS_RESULTS = ("ok", "failed", "timeout", "not_found", "error")
LMS_GROUPS = frozenset({"daemon", "server", "runtime", "log"})  # `lms <group> <verb>` commands
PROBE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LMS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
MODEL_LABELS = ("key", "identifier")


def lms_command(args: Iterable[str]) -> str:
    """The metric label of an `lms` call: ``("server", "start", "--port", "1234")`` ->
    ``"server start"``, ``("load", "qwen/qwen3-4b", "--yes")`` -> ``"load"``; a capability
    probe ``("load", "--help")`` -> ``"load --help"`` (not counted as a load)."""
    words = list(args)
    if not words:
        return "lms"
    command = words[0]
    if words[0] in LMS_GROUPS and len(words) > 1 and not words[1].startswith("-"):
        command = f"{words[0]} {words[1]}"
    return f"{command} --help" if "--help" in words or "-h" in words else command


def _timestamp(iso: Any) -> float | None:
    """Seconds since the epoch of a snapshot time (``2026-11-21T10:00:00.000Z``), None if absent."""
    if not isinstance(iso, str):
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Metrics:
    """The metrics of one supervisor; :meth:`render` is the body of ``GET /metrics``.

    ``snapshot`` returns the design §5 dict (read at each scrape; None until the supervisor
    exists: only the counted metrics then); ``clock`` gives the monotonic seconds of the
    uptime, counted from construction.
    """

    def __init__(self, snapshot: Callable[[], dict[str, Any]] | None, clock: Clock, version: str = __version__) -> None:
        self.snapshot = snapshot
        self.clock = clock
        self.version = version
        self.started = clock.monotonic()
        self.registry = CollectorRegistry()
        self.restarts = Counter(
            "lmsupervisor_restarts",
            "Restarts of LM Studio (ladder retries and requested ones), by what caused them.",
            ["reason"],
            registry=self.registry,
        )
        self.probes = Counter(
            "lmsupervisor_probes",
            "Greeting probes of LM Studio's server, by result.",
            ["result"],
            registry=self.registry,
        )
        self.probe_latency = Histogram(
            "lmsupervisor_probe_latency_seconds",
            "Latency of successful greeting probes of LM Studio's server.",
            buckets=PROBE_BUCKETS,
            registry=self.registry,
        )
        self.lms_calls = Counter(
            "lmsupervisor_lms_calls",
            "Calls of the `lms` CLI, by command and result.",
            ["command", "result"],
            registry=self.registry,
        )
        self.lms_latency = Histogram(
            "lmsupervisor_lms_call_duration_seconds",
            "Wall time of `lms` calls, by command.",
            ["command"],
            buckets=LMS_BUCKETS,
            registry=self.registry,
        )
        self.status_encodings = Counter(
            "lmsupervisor_status_encodings",
            "Times the /v1/status JSON was encoded (once per change of the snapshot, not per request).",
            registry=self.registry,
        )
        self.notify_deliveries = Counter(
            "lmsupervisor_notify_deliveries",
            "Tries to deliver a notification to a [[notify]] receiver, by kind and result (ok, failed, dropped).",
            ["kind", "result"],
            registry=self.registry,
        )
        self.resumes = Counter(
            "lmsupervisor_resumes",
            "Resumes of the machine from sleep that the supervisor noticed (and re-verified LM Studio after).",
            registry=self.registry,
        )
        for reason in RESTART_REASONS:  # present at 0 from the start, so increase() sees the first one
            self.restarts.labels(reason=reason)
        for result in ("ok", "failed"):
            self.probes.labels(result=result)
        self.registry.register(_SnapshotCollector(self))
        self._restart_count = 0

    # -- sources ------------------------------------------------------------------------
    def observe(self, message: object, snap: Snapshot) -> None:
        """``Supervisor.observe`` callback: count restarts, probes and resumes from each reduced message."""
        if isinstance(message, Resumed):
            self.resumes.inc()
        if isinstance(message, Probed):
            ok = message.result.ok
            self.probes.labels(result="ok" if ok else "failed").inc()
            if ok:
                self.probe_latency.observe(message.result.latency_ms / 1000)
        counted = snap.restarts
        if counted.count > self._restart_count:
            self.restarts.labels(reason=counted.cause or "requested").inc(counted.count - self._restart_count)
        self._restart_count = counted.count

    def record_lms(self, command: str, result: str, seconds: float) -> None:
        """Count one `lms` call (see :class:`CountingRunner`)."""
        self.lms_calls.labels(command=command, result=result).inc()
        self.lms_latency.labels(command=command).observe(max(0.0, seconds))

    def count_notification(self, kind: str, result: str) -> None:
        """Count one try to deliver a notification (``ok``, ``failed``) or an alert ``dropped``."""
        self.notify_deliveries.labels(kind=kind, result=result).inc()

    def runner(self, inner: LmsRunner) -> CountingRunner:
        """``inner`` with every call counted and timed."""
        return CountingRunner(inner, self)

    # -- exposition ---------------------------------------------------------------------
    def render(self) -> bytes:
        """The text exposition format 0.0.4 (:data:`CONTENT_TYPE`) of every metric."""
        return generate_latest(self.registry)

    def from_snapshot(self) -> Iterator[Metric]:
        """The metrics read from the status snapshot (called at each scrape)."""
        if self.snapshot is None:
            return
        snap = self.snapshot()
        yield _gauge("lmsupervisor_ready", "1 when LM Studio is ready with every declared model.", int(snap["ready"]))
        state = GaugeMetricFamily("lmsupervisor_state", "1 for the supervisor's current state.", labels=["state"])
        for name in STATES:
            state.add_metric([name], int(snap["state"] == name))
        yield state
        server = snap["server"]
        yield _gauge(
            "lmsupervisor_probe_failures",
            "Consecutive failed greeting probes of LM Studio's server.",
            server["consecutive_failures"],
        )
        loaded = GaugeMetricFamily(
            "lmsupervisor_model_loaded", "1 when the declared model is loaded.", labels=MODEL_LABELS
        )
        failed = GaugeMetricFamily(
            "lmsupervisor_model_failed", "1 when the declared model failed.", labels=MODEL_LABELS
        )
        answer = GaugeMetricFamily(
            "lmsupervisor_model_answer_latency_seconds",
            "Latency of the declared model's last 1-token answer (deep readiness).",
            labels=MODEL_LABELS,
        )
        speed = GaugeMetricFamily(
            "lmsupervisor_model_tokens_per_second",
            "Tokens per second of the declared model's last measured answer ([health] answer_tokens >= 8).",
            labels=MODEL_LABELS,
        )
        baseline = GaugeMetricFamily(
            "lmsupervisor_model_baseline_tokens_per_second",
            "The declared model's speed baseline on the GPU under this LM Studio version and runtime.",
            labels=MODEL_LABELS,
        )
        for m in snap["models"]:
            labels = [str(m["key"]), str(m.get("identifier") or "")]
            loaded.add_metric(labels, int(m["state"] == "loaded"))
            failed.add_metric(labels, int(m["state"] == "failed"))
            for family, value in ((answer, m.get("last_answer_ms")), (speed, m.get("tokens_per_second")),
                                  (baseline, m.get("baseline_tokens_per_second"))):  # fmt: skip
                if isinstance(value, int | float):
                    family.add_metric(labels, value / 1000 if family is answer else value)
        yield from (loaded, failed, answer, speed, baseline)
        yield _gauge(
            "lmsupervisor_config_rejected",
            "1 while the config file on disk is rejected and the previous one runs.",
            int(bool(snap["supervisor"].get("config_error"))),
        )
        problem = GaugeMetricFamily(
            "lmsupervisor_problem",
            "1 for each problem in the status (code as in /v1/status problems[].code).",
            labels=["code", "severity"],
        )
        for p in snap.get("problems") or []:
            if isinstance(p, dict) and isinstance(p.get("code"), str):
                problem.add_metric([p["code"], str(p.get("severity", "error"))], 1)
        yield problem
        yield _gauge("lmsupervisor_uptime_seconds", "Seconds since the supervisor started.",
                     self.clock.monotonic() - self.started)  # fmt: skip
        since = _timestamp(snap.get("since"))
        if since is not None:
            yield _gauge(
                "lmsupervisor_last_transition_timestamp_seconds",
                "When the supervisor entered its current state (seconds since the epoch).",
                since,
            )
        hardware = snap.get("hardware")
        if isinstance(hardware, dict):  # LM Studio's survey (design §9); absent without one
            yield _gauge("lmsupervisor_gpus", "GPUs LM Studio's runtime detected in its last hardware survey.",
                         len(hardware.get("gpus") or []))  # fmt: skip
            runtime = hardware.get("runtime") or {}
            engine = InfoMetricFamily("lmsupervisor_runtime", "LM Studio's inference runtime and its compatibility.")
            engine.add_metric(
                [],
                {
                    "name": str(runtime.get("name") or ""),
                    "version": str(runtime.get("version") or ""),
                    "engine": str(runtime.get("engine") or ""),
                    "compatibility": str((hardware.get("compatibility") or {}).get("status") or ""),
                },
            )
            yield engine
        lm = snap["lmstudio"]
        info = InfoMetricFamily("lmsupervisor", "Versions of lmsupervisor and of the LM Studio it supervises.")
        info.add_metric(
            [],
            {
                "version": self.version,
                "lmstudio_version": str(lm.get("version") or ""),
                "lms_cli_version": str(lm.get("cli_version") or ""),
                "lmstudio_kind": str(lm.get("kind") or ""),
            },
        )
        yield info


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class _SnapshotCollector(Collector):
    """Adapts :meth:`Metrics.from_snapshot` to the registry's collector interface."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics.from_snapshot()


class CountingRunner:
    """An :class:`~lmsupervisor.lmstudio.lms.LmsRunner` that counts and times every call of
    ``inner`` in ``metrics``; results and errors pass through unchanged."""

    def __init__(self, inner: LmsRunner, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics

    async def run(self, *args: str, timeout: float | None = None) -> LmsResult:
        """Run ``lms *args`` through ``inner`` (see :meth:`LmsRunner.run`)."""
        command = lms_command(args)
        started = self.metrics.clock.monotonic()
        try:
            result = await self.inner.run(*args, timeout=timeout)
        except LmsTimeoutError:
            self.metrics.record_lms(command, "timeout", self.metrics.clock.monotonic() - started)
            raise
        except LmsNotFoundError:
            self.metrics.record_lms(command, "not_found", self.metrics.clock.monotonic() - started)
            raise
        except Exception:
            self.metrics.record_lms(command, "error", self.metrics.clock.monotonic() - started)
            raise
        self.metrics.record_lms(command, "ok" if result.returncode == 0 else "failed", result.duration_ms / 1000)
        return result
