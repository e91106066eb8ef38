"""From a sampled consumer group to the few numbers sizing needs (pure).

``observe`` reduces one ``GroupSample`` to an :class:`Observation`; ``ObservationBatch.stack`` turns
the observations of all workloads into arrays for one vectorised decision. The engine keeps the
history it needs (smoothed rates, windows) in its state, so each cycle passes only the newest
observation.

Partitions whose consumer is stuck (``STALL``/``STOP``) are set aside here: their lag and arrival
cannot be helped by more replicas, so they never drive a scale-out; they are counted so that the
decision can report them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from lagscaler.core.engine.sizing import BoolArray, FloatArray, IntArray
from lagscaler.core.policy.model import ScalingPolicy
from lagscaler.core.signals.model import GroupSample, PartitionSample, PartitionStatus

BACKLOG_SECONDS = 5.0
"""A partition is *backlogged* when it is at least this far behind in time. Below it, lag is what
periodic offset commits leave behind (auto-commit every 5 s by default), not a queue."""


@dataclass(frozen=True, slots=True)
class Observation:
    """One workload at one instant. Rates are messages per second; NaN when not yet known."""

    at: float
    replicas: int  # the scale target's current replica count (pods, ready or not)
    members: int  # consumer-group members actually consuming
    partitions: int  # partitions the group consumes (0: unknown)
    arrival_rate: float = math.nan  # produce rate into the partitions that are not stuck
    consume_rate: float = math.nan
    lag: float = 0.0  # messages behind, over partitions that are not stuck
    lag_seconds: float = 0.0  # the worst partition that is not stuck, in seconds behind
    busy_rate: float = math.nan  # consume rate of the members all of whose partitions are backlogged
    busy_members: int = 0
    stuck_partitions: int = 0
    stuck_lag: float = 0.0
    stale: bool = False  # the sample is older than the policy's fallback age, or marked stale
    state_bytes: float = math.nan  # measured state (changelog size) of a stateful workload, if known
    # The raw signals the service publishes, over *every* partition of the policy's topics (stuck ones
    # too: their lag is real), gathered in the same pass so a cycle reads each partition once.
    produce_rate_all: float = 0.0  # reported produce rates summed (unknown counts as 0)
    reported_lag_seconds: float = 0.0  # the worst lag in seconds the sampler reported (finite values)
    topics: tuple[str, ...] = ()  # the topics the sample covered, sorted

    @property
    def total_lag(self) -> float:
        """Messages behind over every partition of the policy's topics, stuck ones included."""
        return self.lag + self.stuck_lag

    @classmethod
    def missing(cls, at: float, replicas: int, partitions: int = 0) -> Observation:
        """No sample for this workload this cycle: the engine holds its last decision."""
        return cls(at=at, replicas=replicas, members=0, partitions=partitions, stale=True)


PartitionRow = tuple[int | None, PartitionStatus, float | None, float | None, float | None, str | None]
"""What a cycle reads of one partition: ``(lag, status, produce_rate, consume_rate, lag_seconds, owner)``
as in :class:`~lagscaler.core.signals.model.PartitionSample`."""


def observe(
    sample: GroupSample | None,
    policy: ScalingPolicy,
    *,
    replicas: int,
    now: float | None = None,
    state_bytes: float = math.nan,
) -> Observation:
    """Reduce one group sample to an observation for ``policy``'s workload.

    ``replicas`` is the scale target's current replica count (from Kubernetes, or the simulator);
    ``now`` (default: the sample time) decides staleness against ``policy.fallback.max_age_seconds``.
    ``state_bytes`` is the measured size of a stateful workload's changelog when the policy names one.
    Only the policy's topics count when it names any.
    """
    if sample is None:
        return Observation.missing(now if now is not None else 0.0, replicas)
    topics = set(policy.kafka.topics)
    parts = [p for p in sample.partitions if not topics or p.topic in topics]
    return observe_rows(
        [(p.lag, p.status, p.produce_rate, p.consume_rate, p.lag_seconds, p.owner) for p in parts],
        policy,
        members=sample.members,
        sampled_at=sample.sampled_at,
        stale=sample.stale,
        topics=_covered(parts, policy.kafka.topics),
        replicas=replicas,
        now=now,
        state_bytes=state_bytes,
    )


def observe_rows(
    rows: Sequence[PartitionRow],
    policy: ScalingPolicy,
    *,
    members: int,
    sampled_at: float,
    stale: bool,
    topics: tuple[str, ...],
    replicas: int,
    now: float | None = None,
    state_bytes: float = math.nan,
) -> Observation:
    """:func:`observe` of a sample whose partitions (already those of ``policy``'s ``topics``) are
    given as rows: the simulator reads its partition arrays this way, each HPA sync, without building
    a :class:`~lagscaler.core.signals.model.PartitionSample` per partition (which cost more than the
    reduction itself)."""
    at = sampled_at if now is None else now
    scan = _scan(rows)
    busy_rate, busy_members = _busy(scan.owner_rate, scan.owner_idle, members)
    known = scan.rates_known
    return Observation(
        at=at,
        replicas=replicas,
        members=members,
        partitions=len(rows),
        arrival_rate=scan.arrival if known else math.nan,
        consume_rate=scan.consumed if known else math.nan,
        lag=scan.lag,
        lag_seconds=scan.lag_seconds,
        busy_rate=busy_rate if known else math.nan,
        busy_members=busy_members if known else 0,
        stuck_partitions=scan.stuck,
        stuck_lag=scan.stuck_lag,
        stale=stale or (at - sampled_at) > policy.fallback.max_age_seconds,
        state_bytes=state_bytes,
        # arrival counts an unknown rate as 0, as the raw sum does
        produce_rate_all=scan.arrival + scan.stuck_produce,
        reported_lag_seconds=scan.reported_worst,
        topics=topics,
    )


@dataclass(frozen=True, slots=True)
class _Scan:
    """One pass over a group's partitions: sums over the ones that are not stuck, and the stuck ones."""

    arrival: float  # messages/s produced (an unknown rate counts as 0)
    consumed: float  # messages/s consumed
    rates_known: bool  # every partition that is not stuck has both rates
    lag: float  # messages behind
    lag_seconds: float  # s, the worst partition (estimated from the rates when not reported)
    stuck: int  # partitions in STALL or STOP
    stuck_lag: float  # their messages behind
    stuck_produce: float  # their produce rate
    reported_worst: float  # s, the worst reported lag, stuck partitions included (the raw signal)
    owner_rate: dict[str | None, float]  # messages/s consumed per owner
    owner_idle: set[str | None]  # owners with a partition that is not backlogged


def _scan(rows: Sequence[PartitionRow]) -> _Scan:
    """The hot loop of a cycle: identity checks and arithmetic only (no enum hashing)."""
    arrival = consumed = lag = lag_seconds = stuck_lag = stuck_produce = reported_worst = 0.0
    rates_known = bool(rows)
    stuck = 0
    owner_rate: dict[str | None, float] = {}
    owner_idle: set[str | None] = set()
    stall, stop, inf, isfinite = PartitionStatus.STALL, PartitionStatus.STOP, math.inf, math.isfinite
    for row_lag, status, row_produce, row_consume, reported, owner in rows:
        plag = row_lag or 0
        if status is stall or status is stop:
            stuck += 1
            stuck_lag += plag
            stuck_produce += row_produce or 0.0
            if reported is not None and reported > reported_worst and isfinite(reported):
                reported_worst = reported
            continue
        produce, consume = row_produce, row_consume
        if produce is None or consume is None:
            rates_known = False
            produce = produce or 0.0
            consume = consume or 0.0
        arrival += produce
        consumed += consume
        lag += plag
        behind = reported
        if behind is None or not isfinite(behind):  # unknown: estimate from the rates
            behind = 0.0 if plag <= 0 else (plag / produce if produce > 0 else inf)
        elif behind < 0:
            behind = 0.0
        elif behind > reported_worst:
            reported_worst = behind
        if plag <= 0:
            behind = 0.0  # nothing waits: an age reported from a stale time index is not a backlog
        lag_seconds = max(lag_seconds, behind)
        owner_rate[owner] = owner_rate.get(owner, 0.0) + consume
        if behind < BACKLOG_SECONDS or plag <= 0:
            owner_idle.add(owner)
    return _Scan(
        arrival,
        consumed,
        rates_known,
        lag,
        lag_seconds,
        stuck,
        stuck_lag,
        stuck_produce,
        reported_worst,
        owner_rate,
        owner_idle,
    )


def _busy(
    owner_rate: dict[str | None, float], owner_idle: set[str | None], members: int
) -> tuple[float, int]:
    """The consume rate and count of members all of whose partitions are backlogged (DS2's busy set)."""
    if list(owner_rate) == [None]:
        # No ownership reported: the whole group counts as busy only when every partition is behind.
        if None not in owner_idle and members > 0:
            return owner_rate[None], members
        return 0.0, 0
    busy_rate = 0.0
    busy_members = 0
    for owner, rate in owner_rate.items():
        if owner is not None and owner not in owner_idle:
            busy_rate += rate
            busy_members += 1
    return busy_rate, busy_members


def _covered(parts: Sequence[PartitionSample], named: tuple[str, ...]) -> tuple[str, ...]:
    """The topics ``parts`` are on, sorted (without a pass over them when the policy names one topic)."""
    if len(named) == 1:
        return named if parts else ()
    return tuple(sorted({p.topic for p in parts}))


@dataclass(frozen=True, slots=True)
class ObservationBatch:
    """The observations of W workloads as arrays of shape ``(W,)``, in the order of the policies."""

    at: FloatArray
    replicas: IntArray
    members: IntArray
    partitions: IntArray
    arrival_rate: FloatArray
    consume_rate: FloatArray
    lag: FloatArray
    lag_seconds: FloatArray
    busy_rate: FloatArray
    busy_members: IntArray
    stuck_partitions: IntArray
    stuck_lag: FloatArray
    stale: BoolArray
    state_bytes: FloatArray

    def rows(self, index: IntArray) -> ObservationBatch:
        """The observations of the workloads at ``index`` (as :meth:`PolicyArrays.rows`)."""
        return ObservationBatch(**{item.name: getattr(self, item.name)[index] for item in fields(self)})

    @classmethod
    def stack(cls, observations: Sequence[Observation]) -> ObservationBatch:
        obs = list(observations)

        # A list and np.asarray: half the cost of np.fromiter over a generator for the simulator's
        # one workload a cycle, and no slower for many.
        def f(name: str) -> FloatArray:
            return np.asarray([getattr(o, name) for o in obs], dtype=np.float64)

        def i(name: str) -> IntArray:
            return np.asarray([getattr(o, name) for o in obs], dtype=np.int64)

        return cls(
            at=f("at"),
            replicas=i("replicas"),
            members=i("members"),
            partitions=i("partitions"),
            arrival_rate=f("arrival_rate"),
            consume_rate=f("consume_rate"),
            lag=f("lag"),
            lag_seconds=f("lag_seconds"),
            busy_rate=f("busy_rate"),
            busy_members=i("busy_members"),
            stuck_partitions=i("stuck_partitions"),
            stuck_lag=f("stuck_lag"),
            stale=np.asarray([o.stale for o in obs], dtype=np.bool_),
            state_bytes=f("state_bytes"),
        )
