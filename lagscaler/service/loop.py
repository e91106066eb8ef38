"""One scaling cycle: policies → sample → decide → publish, and the loop that repeats it.

The API answers from the cache only, so nothing here is on a request's path: a slow or absent
Kafka delays the next publication, never an answer. When a cycle cannot reach Kafka the sampler
keeps the previous snapshot (marked stale) and the engine holds its decisions; the published
values keep their old sample time, so the API judges them stale by age and serves what each policy
chose for that case.

Several replicas of the service may run this loop at once, each against Kafka on its own: there is
no leader, and an answer never depends on which replica took the request (they sample the same
offsets and run the same deterministic engine; a replica that restarted holds scale-downs for a
window, so it never asks for less than an older replica would).

A cycle decides every workload in one vectorised engine call, but each workload fails alone: an
exception while observing, deciding, handing over or publishing one workload (a policy value that
slipped through validation, a label the API refuses) leaves that workload serving what it published
last, whose sample time ages into its fallback, while every other workload is decided and published
as usual. The problem is logged once, counted in ``lagscaler_workload_errors_total`` every cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import structlog

from lagscaler.core.engine import (
    Decision,
    Decisions,
    EngineState,
    Observation,
    ObservationBatch,
    PolicyArrays,
    decide,
    observe,
)
from lagscaler.core.engine.reload import carry_over
from lagscaler.core.policy import ScalingPolicy
from lagscaler.core.signals import GroupSample, Snapshot
from lagscaler.edges.api import CheckResult, MetricsCache, WorkloadMetrics
from lagscaler.edges.handover import HandoverRunner
from lagscaler.edges.observability import ServiceMetrics
from lagscaler.edges.sampler import SampleFailed, Sampler
from lagscaler.logs import get_logger
from lagscaler.service.handover import HandoverBackend, handover_workloads
from lagscaler.service.policies import PolicySet, PolicyWatcher
from lagscaler.service.publish import RawSignals, never_decided_metrics, raw_signals, workload_metrics
from lagscaler.service.statefile import StateFileError, load_state, save_state

log = get_logger("lagscaler.service")

EngineFn = Callable[[PolicyArrays, EngineState, ObservationBatch], tuple[Decisions, EngineState]]
"""The engine's :func:`~lagscaler.core.engine.decide`; a seam so tests can poison one workload's row."""


@dataclass(frozen=True, slots=True)
class LoopSettings:
    """How often to sample and decide; changed policy files are picked up at the start of each cycle.

    ``state_file``: where the engine's learned state survives restarts (see :mod:`.statefile`),
    written every ``save_every`` seconds and when the loop stops.
    """

    interval: float = 10.0
    state_file: Path | None = None
    save_every: float = 60.0


class ScalingLoop:
    """Owns the engine's state for the loaded policy set and publishes each cycle's result."""

    def __init__(
        self,
        sampler: Sampler,
        watcher: PolicyWatcher,
        cache: MetricsCache,
        metrics: ServiceMetrics,
        *,
        settings: LoopSettings | None = None,
        clock: Callable[[], float] = time.time,
        handover: HandoverRunner | None = None,
        handover_backend: HandoverBackend | None = None,
        engine: EngineFn = decide,
    ) -> None:
        self.sampler = sampler
        self._engine = engine
        self.handover = handover  # runs mode: handover policies (None: serve has no handover backend)
        self._handover_backend = handover_backend
        self.watcher = watcher
        self.cache = cache
        self.metrics = metrics
        self.settings = settings or LoopSettings()
        self._clock = clock
        self._policies: tuple[ScalingPolicy, ...] = ()
        self._handed_over: set[str] = set()  # workloads whose handovers the runner drives
        self._version = -1
        self._params = PolicyArrays.from_policies(())
        self._state = EngineState.initial(self._params)
        self._state_keys: tuple[str, ...] = ()  # the workloads ``_state``'s rows belong to
        self._saved_at = -math.inf
        self.restored: tuple[str, ...] = ()
        if self.settings.state_file is not None:
            self._restore(self.settings.state_file)
        self._answers_seen: dict[str, int] = {}
        self._failures_seen: dict[str, int] = {}
        self._labelled: set[tuple[str, str]] = set()
        self._policy_problems: tuple[int, Mapping[str, tuple[str, ...]]] | None = None
        self._last_desired: dict[str, int] = {}
        self._problems: dict[str, str] = {}  # workload → the problem last logged for it
        self.decisions: Mapping[str, Decision] = {}
        self.cycles = 0
        self.succeeded = 0
        self.last_error: str | None = None

    # -- health ----------------------------------------------------------------------------------

    def sampler_ready(self) -> CheckResult:
        """Ready once a cycle has succeeded (or there is nothing to sample); the detail says why not."""
        if not self._policies:
            return CheckResult(True, "no policies loaded: nothing to sample")
        if self.succeeded == 0:
            return CheckResult(False, f"no successful sample cycle yet ({self.last_error or 'starting'})")
        if self.last_error:
            return CheckResult(
                True, f"last cycle failed, serving per each policy's fallback: {self.last_error}"
            )
        return CheckResult(True, f"{self.succeeded} cycles, {len(self._policies)} workloads")

    def policies_ready(self) -> CheckResult:
        current = self.watcher.current
        if not current.version:
            return CheckResult(False, "policies not loaded yet")
        detail = f"{len(current.policies)} policies in force"
        if current.errors:
            detail += "; invalid: " + " | ".join(current.error_lines)
        return CheckResult(True, detail)

    # -- one cycle -------------------------------------------------------------------------------

    def _apply_policies(self, current: PolicySet) -> None:
        self.metrics.policy_errors.set(len(current.errors))
        self._count_reload(current)
        if current.version == self._version:
            return
        policies = tuple(sorted(current.policies, key=lambda p: p.key))
        self._params = PolicyArrays.from_policies(policies)
        self._state = carry_over(self._state_keys, self._state, self._params)
        self._state_keys = tuple(self._params.keys)
        self._policies = policies
        self._version = current.version
        specs = handover_workloads(policies, self._handover_backend if self.handover is not None else None)
        if self.handover is not None:
            self.handover.sync(specs)
        self._handed_over = {s.workload for s in specs if not s.hand_back}
        self._sample_groups(policies)
        in_force = {(p.namespace, p.name) for p in policies}
        for namespace, workload in self._labelled - in_force:
            self.metrics.remove_workload(namespace, workload)
            self._last_desired.pop(f"{namespace}/{workload}", None)
        now = self._clock()
        for namespace, workload in in_force - self._labelled:
            self.metrics.add_workload(namespace, workload, loaded_at=now)
        self._labelled = in_force

    def _count_reload(self, current: PolicySet) -> None:
        """Count a reload that changed the policies in force or the problems, even if only the problems.

        A file that is added already invalid changes no policy (the version stays) but is a reload the
        operator made, and a failed one.
        """
        problems = (current.version, current.errors)
        if problems == self._policy_problems:
            return
        self._policy_problems = problems
        self.metrics.policy_reloads.labels("ok" if not current.errors else "partial").inc()

    def _group(self, policy: ScalingPolicy) -> str:
        """The group to sample: a handover workload's serving generation, else the policy's group."""
        if self.handover is not None and policy.key in self._handed_over:
            return self.handover.serving_group(policy.key) or policy.kafka.group
        return policy.kafka.group

    def _sample_groups(self, policies: Sequence[ScalingPolicy]) -> None:
        groups = tuple(dict.fromkeys(self._group(p) for p in policies))
        if groups and groups != self.sampler.settings.groups:
            self.sampler.settings = replace(self.sampler.settings, groups=groups, all_groups=False)

    async def _sample(self) -> Snapshot | None:
        started = time.monotonic()
        try:
            snapshot = await self.sampler.sample()
        except SampleFailed as exc:
            self.last_error = str(exc)
            self.metrics.sample_cycle_errors.labels(_reason(exc)).inc()
            return self.sampler.latest
        finally:
            self.metrics.sample_cycle_duration.observe(time.monotonic() - started)
            self._export_requests()
        self.last_error = None
        self.succeeded += 1
        return snapshot

    def _export_requests(self) -> None:
        """Add each request whose outcome became known since the last export, once, under that outcome."""
        stats = self.sampler.stats
        for api in stats.requests:
            self.metrics.request_outcomes(api)
        for seen, counts, outcome in (
            (self._answers_seen, stats.answers, "ok"),
            (self._failures_seen, stats.failures, "failed"),
        ):
            for api, total in counts.items():
                delta = total - seen.get(api, 0)
                if delta > 0:
                    self.metrics.kafka_requests.labels(api, outcome).inc(delta)
                seen[api] = total

    async def cycle(self) -> Mapping[str, Decision]:
        """Reload changed policies, sample, decide and publish once; the decisions made, by workload.

        Every event logged meanwhile (here, by the sampler, by the policy watcher) carries ``cycle``,
        so one cycle's lines can be picked out of a replica's log.
        """
        self.cycles += 1
        with structlog.contextvars.bound_contextvars(cycle=self.cycles):
            return await self._cycle()

    async def _cycle(self) -> Mapping[str, Decision]:
        self._apply_policies(await self.watcher.reload())
        self._sample_groups(self._policies)  # a handover moves a workload to a new group
        snapshot = await self._sample() if self._policies else None
        now = self._clock()
        failed: dict[str, str] = {}  # workload → what went wrong for it this cycle
        samples = [snapshot.group(self._group(p)) if snapshot else None for p in self._policies]
        observations = [
            self._observe(policy, sample, now, failed)
            for sample, policy in zip(samples, self._policies, strict=True)
        ]
        self.decisions, self._state = self._decide(ObservationBatch.stack(observations), failed)
        if self.handover is not None:
            for key in self._handed_over:
                if key in failed:
                    continue  # the handover keeps the last count it was given
                decision = self.decisions.get(key)
                desired = decision.desired_replicas if decision is not None else None
                try:
                    self.handover.set_desired(key, desired)
                except Exception as exc:
                    failed[key] = _problem("handover", exc)
        published = [
            self._publish_or_keep(policy, sample, observation, now, failed)
            for policy, sample, observation in zip(self._policies, samples, observations, strict=True)
        ]
        self.cache.publish(w for w in published if w is not None)
        self._report(failed)
        if self.settings.state_file is not None and now - self._saved_at >= self.settings.save_every:
            self._saved_at = now
            await asyncio.to_thread(self._save, self.settings.state_file, self._state_keys, self._state)
        return self.decisions

    # -- one workload's part of a cycle, failing alone --------------------------------------------

    def _observe(
        self, policy: ScalingPolicy, sample: GroupSample | None, now: float, failed: dict[str, str]
    ) -> Observation:
        """The workload's observation; one that cannot be made is a missing one (the engine holds)."""
        try:
            return observe(sample, policy, replicas=_members(sample), now=now)
        except Exception as exc:
            failed[policy.key] = _problem("observe", exc)
            return Observation.missing(at=now, replicas=_members(sample))

    def _decide(
        self, obs: ObservationBatch, failed: dict[str, str]
    ) -> tuple[dict[str, Decision], EngineState]:
        """All rows in one engine call; if that raises, each row alone, so one poisoned row fails alone.

        Rows are independent in the engine (every stage is element-wise per workload), so a row
        decided alone gets the decision the batch would have given it. The row-by-row pass costs W
        engine calls, only in a cycle whose batch failed. A failed row keeps its previous state.
        """
        try:
            decisions, new_state = self._engine(self._params, self._state, obs)
            decided = decisions.by_key()  # a NaN count raises here, not in the engine
        except Exception:
            return self._decide_rows(obs, failed)
        return decided, new_state

    def _decide_rows(
        self, obs: ObservationBatch, failed: dict[str, str]
    ) -> tuple[dict[str, Decision], EngineState]:
        params, state = self._params, self._state
        decided: dict[str, Decision] = {}
        columns = {item.name: getattr(state, item.name).copy() for item in fields(EngineState)}
        for i, key in enumerate(params.keys):
            row = np.array([i])
            try:
                one, one_state = self._engine(params.rows(row), state.rows(row), obs.rows(row))
                decided[key] = one[0]
            except Exception as exc:
                failed[key] = _problem("decide", exc)
                continue
            for name, column in columns.items():
                column[i] = getattr(one_state, name)[0]
        return decided, EngineState(**columns)

    def _publish_or_keep(
        self,
        policy: ScalingPolicy,
        sample: GroupSample | None,
        observation: Observation,
        now: float,
        failed: dict[str, str],
    ) -> WorkloadMetrics | None:
        """This cycle's values, or for a workload that failed the last ones published (see :meth:`_kept`)."""
        decision = self.decisions.get(policy.key)
        if policy.key not in failed and decision is not None:
            try:
                return self._publish_one(policy, decision, sample, observation, now).labels_ok()
            except Exception as exc:
                failed[policy.key] = _problem("publish", exc)
        return self._kept(policy, failed.get(policy.key, "no decision"))

    def _kept(self, policy: ScalingPolicy, problem: str) -> WorkloadMetrics | None:
        """The values last published for a failed workload, still under their old sample time.

        So the API judges them stale by age and then serves the policy's fallback, exactly as when
        Kafka is unreachable. Never published: stale from the start. None (the workload answers 404)
        only when even that cannot be built; the problem is logged either way.
        """
        last = self.cache.snapshot.workloads.get((policy.namespace, policy.name))
        if last is not None:
            return replace(last, detail=problem)
        try:
            return never_decided_metrics(policy, detail=problem).labels_ok()
        except Exception:
            return None

    def _report(self, failed: Mapping[str, str]) -> None:
        """Count each failed workload every cycle; log each problem once, and each recovery."""
        for policy in self._policies:
            problem = failed.get(policy.key)
            if problem is None:
                if self._problems.pop(policy.key, None) is not None:
                    log.info("workload decided and published again", workload=policy.key)
                continue
            stage = problem.split(":", 1)[0]
            self.metrics.workload_errors.labels(policy.namespace, policy.name, stage).inc()
            if self._problems.get(policy.key) != problem:
                self._problems[policy.key] = problem
                log.error(
                    "workload failed this cycle, serving its last values or fallback",
                    workload=policy.key,
                    stage=stage,
                    problem=problem,
                )
        for key in self._problems.keys() - {p.key for p in self._policies}:
            del self._problems[key]

    # -- the state file --------------------------------------------------------------------------

    def _restore(self, path: Path) -> None:
        """Start from the saved state; an unreadable file is moved aside (never lost) and logged."""
        try:
            loaded = load_state(path)
        except StateFileError as exc:
            aside = path.with_name(f"{path.name}.unreadable-{int(self._clock())}")
            with contextlib.suppress(OSError):
                path.rename(aside)
            log.error("engine state not restored, starting fresh", problem=str(exc), kept_as=str(aside))
            return
        if loaded is None:
            log.info("no engine state saved yet, starting fresh", file=str(path))
            return
        self._state_keys, self._state = loaded
        self.restored = self._state_keys
        log.info("engine state restored", file=str(path), workloads=len(self._state_keys))

    def _save(self, path: Path, keys: tuple[str, ...], state: EngineState) -> None:
        try:
            save_state(path, keys, state)
        except OSError as exc:  # a full or read-only volume must not stop scaling
            self.metrics.sample_cycle_errors.labels("state-file").inc()
            log.warning("engine state not saved", file=str(path), problem=str(exc))

    def _publish_one(
        self,
        policy: ScalingPolicy,
        decision: Decision,
        sample: GroupSample | None,
        observation: Observation,
        now: float,
    ) -> WorkloadMetrics:
        signals = raw_signals(observation, policy)
        members = sample.members if sample is not None else None
        sampled_at = sample.sampled_at if sample is not None else 0.0
        detail = ""
        if sample is None:
            detail = f"group {policy.kafka.group} has not been sampled yet"
        elif sample.stale:
            detail = f"Kafka unreachable: {sample.error or self.last_error or 'unknown error'}"
        self._export_workload(policy, decision, signals, sample)
        return workload_metrics(
            policy, decision, signals, sampled_at=sampled_at, current_replicas=members, detail=detail
        )

    def _export_workload(
        self, policy: ScalingPolicy, decision: Decision, signals: RawSignals, sample: GroupSample | None
    ) -> None:
        m = self.metrics
        labels = (policy.namespace, policy.name)
        if sample is not None:
            m.sampled(*labels, at=sample.sampled_at)
        m.stale_after.labels(*labels).set(policy.fallback.max_age_seconds)
        m.desired_replicas.labels(*labels).set(decision.desired_replicas)
        m.record_reasons(*labels, decision.reasons)
        previous = self._last_desired.get(policy.key)
        if previous is not None and decision.desired_replicas != previous:
            direction = "up" if decision.desired_replicas > previous else "down"
            m.decision_changes.labels(*labels, direction).inc()
            log.bind(workload=policy.key, group=policy.kafka.group).info(
                "desired replicas changed",
                previous=previous,
                desired=decision.desired_replicas,
                current=decision.current_replicas,
                reasons=list(decision.reasons),
            )
        self._last_desired[policy.key] = decision.desired_replicas
        members = sample.members if sample is not None else None
        m.workload_replicas.labels(*labels).set(members or 0)
        m.workload_lag_messages.labels(*labels).set(signals.lag_messages)
        m.workload_lag_seconds.labels(*labels).set(signals.lag_seconds)
        m.workload_slo_seconds.labels(*labels).set(policy.max_lag_seconds)
        m.workload_arrival_rate.labels(*labels).set(signals.produce_rate)
        m.workload_forecast_rate.labels(*labels).set(_finite(decision.forecast_arrival_rate))
        m.workload_capacity_per_replica.labels(*labels).set(_finite(decision.capacity_per_replica))
        m.workload_stuck_partitions.labels(*labels).set(decision.stuck_partitions)

    # -- the loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Cycle every ``interval`` seconds until cancelled; a failing cycle is logged, never fatal."""
        try:
            await self._cycle_forever()
        finally:
            if self.settings.state_file is not None and self._state_keys:
                self._save(self.settings.state_file, self._state_keys, self._state)

    async def _cycle_forever(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.cycle()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug in one cycle must not stop scaling for good
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.metrics.sample_cycle_errors.labels("internal").inc()
                log.exception("scaling cycle failed", cycle=self.cycles)
            await asyncio.sleep(max(0.0, self.settings.interval - (time.monotonic() - started)))


def _problem(stage: str, exc: Exception) -> str:
    """``stage: Type: message``: what the log and a 503's detail say about a workload that failed."""
    return f"{stage}: {type(exc).__name__}: {exc}"


def _members(sample: GroupSample | None) -> int:
    return sample.members if sample is not None else 0


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def _reason(exc: Exception) -> str:
    text = str(exc).lower()
    if "did not finish" in text or "timed out" in text or "timeout" in text:
        return "timeout"
    if "connect" in text or "unreachable" in text or "refused" in text:
        return "unreachable"
    return "kafka"
