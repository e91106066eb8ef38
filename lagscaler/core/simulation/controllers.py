"""The policies compared in a simulation. Each one produces the metric value its HPA reads.

Every policy reaches the simulated Deployment through :func:`lagscaler.core.hpa.step` with its own
``HpaSpec``: lagscaler, ``static`` and ``oracle`` serve ``lagscaler_desired_replicas`` through the
HPA lagscaler's manifest creates (``hpa_spec_for``); ``keda`` and ``hpa-rate`` use an HPA without
``behavior`` (the upstream defaults: 300 s downscale stabilization, ``max(2x, 4)`` per sync up).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from lagscaler.core.engine import Decisions, EngineState, PolicyArrays, decide
from lagscaler.core.engine.observation import Observation, ObservationBatch, PartitionRow, observe_rows
from lagscaler.core.engine.sizing import FloatArray, IntArray, aligned_replicas
from lagscaler.core.hpa import ExternalMetric, HpaSpec, TargetType, plan_served_metric
from lagscaler.core.policy.hpa import hpa_spec_for
from lagscaler.core.policy.model import ScalingPolicy
from lagscaler.core.signals.model import GroupSample, PartitionSample, PartitionStatus
from lagscaler.core.simulation.model import Scenario

KEDA_LAG_THRESHOLD = 10  # KEDA's Kafka scaler default lagThreshold


@dataclass(frozen=True, slots=True)
class GroupView:
    """What a policy can see of the group at one sync: partition data ``metric_delay`` old."""

    at: float
    lag: FloatArray  # (P,) messages behind
    lag_seconds: FloatArray  # (P,) how old the oldest unconsumed message is (zeros unless needed)
    produce_rate: FloatArray  # (P,) over the last sample interval
    consume_rate: FloatArray  # (P,)
    end_offsets: FloatArray  # (P,)
    owners: IntArray  # (P,) member index, -1 unowned
    members: int
    replicas: int  # the Deployment's current replica count (not delayed)

    def group_sample(self, group: str, topic: str = "events") -> GroupSample:
        """The view as the sampler would report it."""
        ok = PartitionStatus.OK
        names = _member_names(self.members)
        lags = self.lag.astype(np.int64).tolist()
        ends = self.end_offsets.astype(np.int64).tolist()
        parts = tuple(
            PartitionSample(topic, i, end - lag, end, lag, age, False, produce, consume, ok, names[owner])
            for i, (lag, age, produce, consume, end, owner) in enumerate(
                zip(
                    lags,
                    self.lag_seconds.tolist(),
                    self.produce_rate.tolist(),
                    self.consume_rate.tolist(),
                    ends,
                    self.owners.tolist(),
                    strict=True,
                )
            )
        )
        return GroupSample(
            group=group, state="Stable", members=self.members, sampled_at=self.at, partitions=parts
        )

    def rows(self) -> list[PartitionRow]:
        """The partitions as :func:`~lagscaler.core.engine.observation.observe` reads them from
        :meth:`group_sample` (every one ``OK``), without building the sample: once per HPA sync."""
        names = _member_names(self.members)
        return list(
            zip(
                self.lag.astype(np.int64).tolist(),
                itertools.repeat(PartitionStatus.OK),
                self.produce_rate.tolist(),
                self.consume_rate.tolist(),
                self.lag_seconds.tolist(),
                [names[owner] for owner in self.owners.tolist()],
            )
        )


@functools.cache
def _member_names(members: int) -> tuple[str | None, ...]:
    """Member ids by index; index -1 (the last) is nobody."""
    return (*(f"member-{m}" for m in range(members)), None)


class Controller(Protocol):
    """A policy under test."""

    name: str
    spec: HpaSpec
    needs_lag_seconds: bool  # the view must carry per-partition lag seconds (costly to compute)

    def initial_replicas(self) -> int: ...

    def reading(self, now: float, view: GroupView) -> float:
        """The value of the metric the policy serves to its HPA at this sync."""
        ...


def _plain_hpa(target: float, name: str, scenario: Scenario) -> HpaSpec:
    """An HPA on one External AverageValue metric with upstream defaults (no ``behavior``)."""
    return HpaSpec(
        metrics=(ExternalMetric(TargetType.AVERAGE_VALUE, target, name),),
        max_replicas=scenario.max_replicas,
        min_replicas=max(scenario.min_replicas, 1),
    )


def exact_hpa(policy: ScalingPolicy) -> HpaSpec:
    """lagscaler's HPA on a cluster with per-HPA tolerance: every count reachable (for static and oracle)."""
    return hpa_spec_for(replace(policy, hpa=replace(policy.hpa, configurable_tolerance=True)))


def initial_replicas(scenario: Scenario, rate: float) -> int:
    """Where every policy starts: the aligned count for the first rate at 70 % utilisation."""
    need = aligned_replicas(
        np.asarray([rate / 0.7 / scenario.capacity_per_replica]), np.asarray([scenario.partitions])
    )
    return int(
        np.clip(need[0], max(scenario.min_replicas, 1), min(scenario.max_replicas, scenario.partitions))
    )


@dataclass
class LagscalerController:
    """The engine with the given policy, serving the designed metric to the manifest's HPA."""

    policy: ScalingPolicy
    scenario: Scenario
    start: int
    name: str = "lagscaler"
    needs_lag_seconds: bool = True
    spec: HpaSpec = field(init=False)
    params: PolicyArrays = field(init=False)
    state: EngineState = field(init=False)
    last: Decisions | None = field(default=None, init=False)  # the engine's latest decision

    def __post_init__(self) -> None:
        self.spec = hpa_spec_for(self.policy)
        self.params = PolicyArrays.from_policies([self.policy])
        self.state = EngineState.initial(self.params)

    def initial_replicas(self) -> int:
        return self.start

    def observation(self, now: float, view: GroupView) -> Observation:
        """``observe(view.group_sample(group, topic), policy, ...)``, without building the sample.

        The view's partitions are all on the policy's first topic ("events" when it names none),
        so they cover that topic alone.
        """
        rows = view.rows()
        topic = self.policy.kafka.topics[0] if self.policy.kafka.topics else "events"
        return observe_rows(
            rows,
            self.policy,
            members=view.members,
            sampled_at=view.at,
            stale=False,
            topics=(topic,) if rows else (),
            replicas=view.replicas,
            now=now,
        )

    def reading(self, now: float, view: GroupView) -> float:
        obs = self.observation(now, view)
        decisions, self.state = decide(self.params, self.state, ObservationBatch.stack([obs]))
        self.last = decisions
        return plan_served_metric(int(decisions.desired[0]), view.replicas, self.spec).value


@dataclass
class KedaController:
    """KEDA's Kafka scaler at its defaults: total lag / lagThreshold (10), capped at the partition count."""

    scenario: Scenario
    start: int
    name: str = "keda"
    needs_lag_seconds: bool = False
    spec: HpaSpec = field(init=False)

    def __post_init__(self) -> None:
        self.spec = _plain_hpa(KEDA_LAG_THRESHOLD, "kafka-lag", self.scenario)

    def initial_replicas(self) -> int:
        return self.start

    def reading(self, now: float, view: GroupView) -> float:
        total = float(view.lag.sum())
        return min(total, float(self.scenario.partitions * KEDA_LAG_THRESHOLD))


@dataclass
class RateController:
    """A plain HPA on consumed messages per second per pod, targeting capacity × utilisation."""

    scenario: Scenario
    start: int
    target_utilization: float
    name: str = "hpa-rate"
    needs_lag_seconds: bool = False
    spec: HpaSpec = field(init=False)

    def __post_init__(self) -> None:
        target = round(self.scenario.capacity_per_replica * self.target_utilization, 3)
        self.spec = _plain_hpa(target, "records-consumed-rate", self.scenario)

    def initial_replicas(self) -> int:
        return self.start

    def reading(self, now: float, view: GroupView) -> float:
        return round(float(view.consume_rate.sum()), 3)


@dataclass
class StaticController:
    """Fixed at the smallest count whose busiest member keeps up with the trace's peak."""

    policy: ScalingPolicy
    scenario: Scenario
    peak_rate: float
    name: str = "static"
    needs_lag_seconds: bool = False
    spec: HpaSpec = field(init=False)
    replicas: int = field(init=False)

    def __post_init__(self) -> None:
        self.spec = exact_hpa(self.policy)
        need = aligned_replicas(
            np.asarray([self.peak_rate / self.scenario.capacity_per_replica]),
            np.asarray([self.scenario.partitions]),
        )
        self.replicas = int(np.clip(need[0], max(self.scenario.min_replicas, 1), self.scenario.max_replicas))

    def initial_replicas(self) -> int:
        return self.replicas

    def reading(self, now: float, view: GroupView) -> float:
        return plan_served_metric(self.replicas, view.replicas, self.spec).value


class FutureMax:
    """Max of a series over windows, vectorised (a sparse table over the step rates)."""

    def __init__(self, values: FloatArray) -> None:
        self.levels = [np.asarray(values, dtype=np.float64)]
        span = 1
        while span * 2 <= len(values):
            prev = self.levels[-1]
            self.levels.append(np.maximum(prev[:-span], prev[span:]))
            span *= 2

    def ahead(self, starts: IntArray, length: int) -> FloatArray:
        """For each start index, the max over ``[start, start + length)`` (cut at the series' end)."""
        n = len(self.levels[0])
        first = np.clip(starts, 0, n - 1)
        end = np.minimum(first + max(length, 1), n)
        k = np.floor(np.log2(np.maximum(end - first, 1))).astype(np.int64)
        out = np.empty(len(first))
        for level in np.unique(k).tolist():
            sel = k == level
            table = self.levels[level]
            out[sel] = np.maximum(table[first[sel]], table[end[sel] - (1 << level)])
        return out


class Lookahead:
    """The future arrival rates an oracle may see, one window of steps at a time (bounded memory).

    The simulator loads the step rates of the steps it is about to run plus ``horizon_steps`` beyond
    them; :meth:`ahead` answers window maxima for steps of that window. A sparse table over the whole
    trace would cost ``O(n log n)`` memory (650 MB for 215 days in 5 s steps).
    """

    def __init__(self, horizon_steps: int = 0) -> None:
        self.horizon_steps = horizon_steps
        self.first = 0
        self.count = 0  # steps of the window that readings may index (the rest is look-ahead only)
        self.total = 0  # steps in the whole run: windows are cut at its end
        self.generation = 0
        self._table: FutureMax | None = None

    def load(self, first: int, rates: FloatArray, count: int, total: int) -> None:
        """Rates of steps ``first, first + 1, ...``: ``count + horizon_steps`` of them, or up to the end."""
        self.first, self.count, self.total = first, count, total
        self._table = FutureMax(rates)
        self.generation += 1

    def ahead(self, starts: IntArray, length: int) -> FloatArray:
        """For each (absolute) step index, the max rate over ``[start, start + length)``, cut at the end."""
        if self._table is None:
            raise RuntimeError("the look-ahead has no window loaded")
        return self._table.ahead(starts - self.first, length)

    def indices(self) -> IntArray:
        """The steps of the loaded window that a reading may ask about (one past it: a sync at its end)."""
        last = min(self.first + self.count + 1, self.total)
        return np.arange(self.first, last, dtype=np.int64)


@dataclass
class OracleController:
    """Perfect foresight of arrivals, greedy: capacity in place before it is needed, held for ``hold``.

    At each sync it checks the peak arrival until capacity ordered now can serve (start-up + stall
    + restore + two syncs), times ``margin``; when that needs more replicas it scales up to cover the
    peak of that lead plus ``coalesce`` seconds, so a ramp costs one rebalance rather than one per
    sync. It scales down only to a count that covers the peak of the next ``hold`` seconds, so every
    rebalance it pays for lasts, and never while a backlog over half the SLO drains (stalls stack).
    The schedule is computed from the future arrivals a window of steps at a time (:class:`Lookahead`).
    """

    policy: ScalingPolicy
    scenario: Scenario
    future: Lookahead
    start: int
    hold_seconds: float
    margin: float
    coalesce_seconds: float = 0.0
    name: str = "oracle"
    needs_lag_seconds: bool = False
    spec: HpaSpec = field(init=False)
    lengths: tuple[int, int, int] = field(init=False)  # look-ahead steps of up, reach and hold
    _generation: int = field(default=-1, init=False)
    _first: int = field(default=0, init=False)
    _up: IntArray = field(init=False)
    _reach: IntArray = field(init=False)
    _hold: IntArray = field(init=False)

    def __post_init__(self) -> None:
        s = self.scenario
        self.spec = exact_hpa(self.policy)
        self.name = (
            f"oracle[hold={self.hold_seconds:g}s,margin={self.margin:g},coalesce={self.coalesce_seconds:g}s]"
        )
        lead = s.startup_seconds + s.rebalance_stall_seconds + s.restore_seconds + 2 * s.sync_period_seconds
        # A longer look ahead from the same step never sees less: ``reach`` and ``hold`` are >= ``up``.
        self.lengths = (
            math.ceil(lead / s.step_seconds),
            math.ceil((lead + self.coalesce_seconds) / s.step_seconds),
            math.ceil(max(self.hold_seconds, lead) / s.step_seconds),
        )

    def initial_replicas(self) -> int:
        return self.start

    def _aligned(self, rates: FloatArray) -> IntArray:
        s = self.scenario
        need = aligned_replicas(
            rates * self.margin / s.capacity_per_replica, np.full(len(rates), s.partitions)
        )
        return np.clip(need, max(s.min_replicas, 1), min(s.max_replicas, s.partitions))

    def _schedule(self) -> None:
        """The counts of the loaded window (recomputed once per window)."""
        steps = self.future.indices()
        up, reach, hold = (self._aligned(self.future.ahead(steps, n)) for n in self.lengths)
        self._up, self._reach, self._hold = up, reach, hold
        self._first, self._generation = int(steps[0]), self.future.generation

    def reading(self, now: float, view: GroupView) -> float:
        if self._generation != self.future.generation:
            self._schedule()
        index = min(round(now / self.scenario.step_seconds), self.future.total - 1) - self._first
        up = int(self._up[index])
        if up > view.replicas:
            target = int(self._reach[index])
        else:
            target = max(up, min(int(self._hold[index]), view.replicas))
            # Only a scale-down waits for a drain (checked only then: it costs more than the rest).
            if target < view.replicas and self._draining(view):
                target = view.replicas
        return plan_served_metric(target, view.replicas, self.spec).value

    def _draining(self, view: GroupView) -> bool:
        """A backlog over half the SLO is still draining: a scale-down's stall now would stack on it."""
        if not view.lag.any():
            return False
        rate = view.produce_rate
        behind = np.divide(view.lag, rate, out=np.zeros(view.lag.shape), where=rate > 0)
        return float(behind.max(initial=0.0)) > 0.5 * self.scenario.max_lag_seconds


def oracle_candidates(
    policy: ScalingPolicy, scenario: Scenario, future: Lookahead, start: int
) -> list[OracleController]:
    """The oracle's schedule family: the cheapest one that meets the SLO is the oracle.

    Raises ``future.horizon_steps`` to the longest look-ahead any of them needs.
    """
    holds = (900.0, 3600.0, 4 * 3600.0)
    margins = (1.05, 1.25)
    coalesce = (0.0, 300.0)
    oracles = [
        OracleController(policy, scenario, future, start, h, m, c)
        for h in holds
        for m in margins
        for c in coalesce
    ]
    future.horizon_steps = max(future.horizon_steps, *(max(o.lengths) for o in oracles))
    return oracles
