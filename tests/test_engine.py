"""The engine's decisions: sizing, capacity learning, stuck partitions, pacing, and its invariants."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lagscaler.core.engine import (
    Decisions,
    EngineState,
    Observation,
    ObservationBatch,
    PolicyArrays,
    Reason,
    decide,
    observe,
)
from lagscaler.core.engine.observation import BACKLOG_SECONDS
from lagscaler.core.engine.sizing import aligned_replicas, effective_replicas, moved_fraction
from lagscaler.core.policy.model import (
    Capacity,
    KafkaSource,
    ScaleDown,
    ScaleTargetRef,
    ScalingPolicy,
    Stateful,
)
from lagscaler.core.signals.model import GroupSample, PartitionSample, PartitionStatus

CAP = 1000.0


def policy(**changes: object) -> ScalingPolicy:
    base = ScalingPolicy(
        name="orders",
        namespace="shop",
        target=ScaleTargetRef("orders"),
        kafka=KafkaSource("orders"),
        max_lag_seconds=30.0,
        capacity=Capacity(per_replica=CAP),
        max_replicas=24,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def obs(
    at: float, *, replicas: int, arrival: float, members: int | None = None, **fields: object
) -> Observation:
    members = replicas if members is None else members
    values: dict[str, object] = {
        "at": at,
        "replicas": replicas,
        "members": members,
        "partitions": 24,
        "arrival_rate": arrival,
        "consume_rate": arrival,
    }
    values.update(fields)
    return Observation(**values)  # type: ignore[arg-type]


def run(
    p: ScalingPolicy, observations: list[Observation], state: EngineState | None = None
) -> tuple[Decisions, EngineState]:
    params = PolicyArrays.from_policies([p])
    state = state or EngineState.initial(params)
    decisions: Decisions | None = None
    for o in observations:
        decisions, state = decide(params, state, ObservationBatch.stack([o]))
    assert decisions is not None
    return decisions, state


def steady(p: ScalingPolicy, replicas: int, arrival: float, seconds: float = 600.0) -> list[Observation]:
    return [obs(t, replicas=replicas, arrival=arrival) for t in np.arange(0.0, seconds, 15.0)]


def follow(
    p: ScalingPolicy, replicas: int, arrival: float, seconds: float, *, first_arrival: float | None = None
) -> tuple[Decisions, EngineState, int]:
    """Feed a steady arrival rate for ``seconds``, applying every decision (members join at once)."""
    params = PolicyArrays.from_policies([p])
    state = EngineState.initial(params)
    decisions: Decisions | None = None
    for t in np.arange(0.0, seconds, 15.0):
        rate = first_arrival if first_arrival is not None and t == 0 else arrival
        decisions, state = decide(
            params, state, ObservationBatch.stack([obs(t, replicas=replicas, arrival=rate)])
        )
        replicas = int(decisions.desired[0])
    assert decisions is not None
    return decisions, state, replicas


# --- sizing ---------------------------------------------------------------------------------------


def test_aligned_count_is_the_smallest_whose_busiest_member_keeps_up() -> None:
    partitions = np.full(4, 24)
    # 9 replicas' worth on 24 partitions: 9, 10 and 11 members still leave one with 3 partitions.
    assert aligned_replicas(np.array([9.0, 8.0, 4.5, 0.5]), partitions).tolist() == [12, 8, 5, 1]
    assert effective_replicas(np.array([9, 10, 11, 12]), partitions).tolist() == [8.0, 8.0, 8.0, 12.0]


def test_demand_beyond_the_partitions_is_capped_at_the_partition_count() -> None:
    decisions, _, replicas = follow(policy(max_replicas=100), 4, 200 * CAP, 120)
    assert replicas == 24
    assert "AT_PARTITIONS" in decisions[0].reasons


def test_moved_fraction_of_a_sticky_assignor() -> None:
    assert moved_fraction(np.array([4, 8, 3]), np.array([8, 4, 3])).tolist() == [0.5, 0.5, 0.0]


# --- decisions ------------------------------------------------------------------------------------


def test_scales_up_at_once_when_arrival_outgrows_capacity() -> None:
    p = policy()
    history = [*steady(p, 4, 2500.0), obs(600.0, replicas=4, arrival=7000.0, consume_rate=4000.0)]
    decision = run(p, history)[0][0]
    assert decision.desired_replicas >= 8  # 7000 msg/s at 70 % of 1000 msg/s, aligned on 24 partitions
    assert "SCALE_UP" in decision.reasons


def test_scales_down_late_and_only_when_lag_is_calm() -> None:
    p = policy(scale_down=ScaleDown(stabilization_seconds=120.0))
    decisions, state, replicas = follow(p, 12, 2000.0, 60.0)
    assert replicas == 12  # not before the stabilization window has seen the load
    assert "DWELL" in decisions[0].reasons
    _, _, later = follow(p, 12, 2000.0, 1200.0)
    assert later < 12

    growing = obs(60.0, replicas=12, arrival=2000.0, lag=5000.0, lag_seconds=2.5, consume_rate=1500.0)
    held = run(p, [growing], state)[0][0]
    assert held.desired_replicas == 12


def test_a_scale_down_whose_restore_breaks_the_slo_waits_for_the_error_budget() -> None:
    # 240 s to restore a moved partition against a 30 s SLO: every rebalance is a miss by itself.
    stateful = policy(stateful=Stateful(restore_bytes_per_second=1e6, state_bytes=24 * 240e6))
    decisions, _, replicas = follow(stateful, 4, 1000.0, 1800.0, first_arrival=9000.0)
    assert replicas == 12  # scaled up for the first burst, then held
    decision = decisions[0]
    assert "ERROR_BUDGET" in decision.reasons
    assert decision.restore_seconds == pytest.approx(240.0)
    assert decision.next_scale_down_at > 1800.0
    # The same workload without state scales back down.
    assert follow(policy(), 4, 1000.0, 1800.0, first_arrival=9000.0)[2] < 12


def test_learns_the_true_capacity_from_busy_members() -> None:
    p = policy(capacity=Capacity(per_replica=CAP, prior_weight_seconds=60.0))
    busy = [
        obs(
            t,
            replicas=4,
            arrival=5000.0,
            consume_rate=2400.0,
            busy_rate=2400.0,
            busy_members=4,
            lag=1e6,
            lag_seconds=200.0,
        )
        for t in np.arange(0.0, 1800.0, 15.0)
    ]
    decision = run(p, busy)[0][0]
    assert decision.capacity_per_replica == pytest.approx(600.0, rel=0.05)


def test_a_prior_that_is_not_learned_stays() -> None:
    p = policy(capacity=Capacity(per_replica=CAP, learn=False))
    busy = [
        obs(
            t,
            replicas=4,
            arrival=5000.0,
            consume_rate=2400.0,
            busy_rate=2400.0,
            busy_members=4,
            lag=1e6,
            lag_seconds=200.0,
        )
        for t in np.arange(0.0, 600.0, 15.0)
    ]
    assert run(p, busy)[0][0].capacity_per_replica == CAP


def test_an_ineffective_scale_up_is_detected_and_not_repeated() -> None:
    p = policy()
    history = steady(p, 4, 3000.0, 300.0)
    # Backlogged at 4 members consuming 3000 msg/s: the engine scales up ...
    behind: dict[str, float] = {
        "lag": 3e5,
        "lag_seconds": 100.0,
        "consume_rate": 3000.0,
        "busy_rate": 3000.0,
        "busy_members": 4,
    }
    history.append(obs(300.0, replicas=4, arrival=4000.0, **behind))
    decisions, state = run(p, history)
    scaled_to = decisions[0].desired_replicas
    assert scaled_to > 4
    # ... the new members join, but throughput does not move (a downstream bottleneck).
    later = [
        obs(t, replicas=scaled_to, members=scaled_to, arrival=4000.0, **behind)
        for t in np.arange(315.0, 600.0, 15.0)
    ]
    decisions, _ = run(p, later, state)
    assert "INEFFECTIVE_SCALE_UP" in decisions[0].reasons
    assert decisions[0].desired_replicas <= scaled_to


def test_stuck_partitions_never_drive_a_scale_out_and_are_reported() -> None:
    parts = tuple(
        PartitionSample(
            topic="orders",
            partition=i,
            committed=0,
            end=10**7 if i == 0 else 100,
            lag=10**7 if i == 0 else 0,
            lag_seconds=5000.0 if i == 0 else 0.0,
            produce_rate=100.0,
            consume_rate=0.0 if i == 0 else 100.0,
            status=PartitionStatus.STALL if i == 0 else PartitionStatus.OK,
            owner=f"m{i % 4}",
        )
        for i in range(24)
    )
    sample = GroupSample(group="orders", state="Stable", members=4, sampled_at=1000.0, partitions=parts)
    p = policy()
    o = observe(sample, p, replicas=4)
    assert o.stuck_partitions == 1
    assert o.lag == 0
    assert o.arrival_rate == pytest.approx(2300.0)
    decisions, _ = run(p, [replace(o, at=1000.0 - 15 * k) for k in range(10, 0, -1)] + [o])
    assert decisions[0].desired_replicas <= 4
    assert decisions[0].stuck_partitions == 1
    assert "STUCK_PARTITIONS" in decisions[0].reasons


def test_stale_data_holds_the_last_decision() -> None:
    p = policy()
    decisions, state = run(p, steady(p, 6, 3000.0, 120.0))
    last = decisions[0].desired_replicas
    stale = Observation.missing(200.0, replicas=6, partitions=24)
    decision = run(p, [stale], state)[0][0]
    assert decision.desired_replicas == last
    assert "STALE" in decision.reasons


def test_observe_uses_only_the_policys_topics_and_marks_old_samples_stale() -> None:
    parts = (
        PartitionSample("orders", 0, 0, 10, 10, 1.0, produce_rate=5.0, consume_rate=5.0),
        PartitionSample("other", 0, 0, 99, 99, 9.0, produce_rate=50.0, consume_rate=50.0),
    )
    sample = GroupSample("orders", "Stable", 1, 100.0, parts)
    p = policy(kafka=KafkaSource("orders", topics=("orders",)))
    o = observe(sample, p, replicas=1, now=100.0)
    assert (o.partitions, o.lag, o.arrival_rate, o.stale) == (1, 10.0, 5.0, False)
    assert observe(sample, p, replicas=1, now=100.0 + p.fallback.max_age_seconds + 1).stale


def test_decisions_by_key_and_reason_codes() -> None:
    a, b = policy(name="a"), policy(name="b")
    params = PolicyArrays.from_policies([a, b])
    batch = ObservationBatch.stack(
        [obs(0.0, replicas=2, arrival=100.0), obs(0.0, replicas=2, arrival=9000.0)]
    )
    decisions, _ = decide(params, EngineState.initial(params), batch)
    by_key = decisions.by_key()
    assert set(by_key) == {"shop/a", "shop/b"}
    assert by_key["shop/b"].desired_replicas > by_key["shop/a"].desired_replicas
    assert Reason(Reason.SCALE_UP | Reason.ARRIVAL).codes() == ("SCALE_UP", "ARRIVAL")


# --- invariants (hypothesis) ---------------------------------------------------------------------

policies = st.builds(
    lambda lo, span, u, stateful, learn: policy(
        min_replicas=lo,
        max_replicas=lo + span,
        target_utilization=u,
        capacity=Capacity(per_replica=CAP, learn=learn),
        stateful=Stateful(restore_bytes_per_second=1e6, state_bytes=24 * 90e6) if stateful else None,
    ),
    st.integers(1, 6),
    st.integers(0, 40),
    st.floats(0.3, 1.0),
    st.booleans(),
    st.booleans(),
)
rates = st.floats(0.0, 60_000.0, allow_nan=False)
lags = st.floats(0.0, 5e6, allow_nan=False)


def situation(p: ScalingPolicy, replicas: int, history_rate: float, history_lag: float) -> EngineState:
    """An engine that has seen a few minutes of this workload."""
    history = [
        obs(
            t,
            replicas=replicas,
            arrival=history_rate,
            lag=history_lag,
            lag_seconds=history_lag / max(history_rate, 1),
        )
        for t in np.arange(0.0, 900.0, 60.0)
    ]
    return run(p, history)[1]


def one(p: ScalingPolicy, state: EngineState, o: Observation) -> Decisions:
    return decide(PolicyArrays.from_policies([p]), state, ObservationBatch.stack([o]))[0]


@settings(max_examples=40, deadline=None)
@given(
    p=policies,
    replicas=st.integers(0, 30),
    before=rates,
    now=rates,
    lag=lags,
    partitions=st.sampled_from([1, 7, 24]),
)
def test_result_is_within_min_and_max_and_partitions(
    *, p: ScalingPolicy, replicas: int, before: float, now: float, lag: float, partitions: int
) -> None:
    state = situation(p, replicas, before, 0.0)
    o = obs(
        900.0, replicas=replicas, arrival=now, lag=lag, lag_seconds=lag / max(now, 1.0), partitions=partitions
    )
    desired = one(p, state, o)[0].desired_replicas
    hi = min(p.max_replicas, partitions)
    assert min(p.min_replicas, hi) <= desired <= hi


@settings(max_examples=40, deadline=None)
@given(p=policies, replicas=st.integers(1, 24), before=rates, low=rates, high=rates, lag=lags)
def test_non_decreasing_in_arrival_rate(
    *, p: ScalingPolicy, replicas: int, before: float, low: float, high: float, lag: float
) -> None:
    low, high = sorted((low, high))
    state = situation(p, replicas, before, 0.0)
    age = lag / max(before, 1.0)
    d_low = one(
        p, state, obs(900.0, replicas=replicas, arrival=low, consume_rate=before, lag=lag, lag_seconds=age)
    )
    d_high = one(
        p, state, obs(900.0, replicas=replicas, arrival=high, consume_rate=before, lag=lag, lag_seconds=age)
    )
    assert d_low[0].desired_replicas <= d_high[0].desired_replicas


@settings(max_examples=40, deadline=None)
@given(policies, st.integers(1, 24), rates, lags, lags)
def test_non_decreasing_in_lag(p: ScalingPolicy, replicas: int, rate: float, low: float, high: float) -> None:
    low, high = sorted((low, high))
    state = situation(p, replicas, rate, 0.0)
    per = max(rate, 1.0)
    d_low = one(p, state, obs(900.0, replicas=replicas, arrival=rate, lag=low, lag_seconds=low / per))
    d_high = one(p, state, obs(900.0, replicas=replicas, arrival=rate, lag=high, lag_seconds=high / per))
    assert d_low[0].desired_replicas <= d_high[0].desired_replicas


@settings(max_examples=40, deadline=None)
@given(policies, st.integers(1, 24), rates, lags, st.floats(1.0, 1e6))
def test_no_scale_down_while_a_backlog_grows(
    p: ScalingPolicy, replicas: int, rate: float, lag: float, growth: float
) -> None:
    # A backlog: at least BACKLOG_SECONDS behind (below it, lag moving is offset commits' cadence,
    # tests/test_engine_cadence.py).
    state = situation(p, replicas, rate, lag)
    grown = lag + growth
    behind = max(grown / max(rate, 1.0), BACKLOG_SECONDS)
    o = obs(900.0, replicas=replicas, arrival=rate, lag=grown, lag_seconds=behind)
    assert one(p, state, o)[0].desired_replicas >= min(replicas, p.max_replicas, 24)


@settings(max_examples=40, deadline=None)
@given(
    policies,
    st.integers(0, 30),
    st.one_of(rates, st.just(math.nan), st.just(math.inf)),
    st.one_of(lags, st.just(math.nan), st.just(math.inf)),
    st.booleans(),
)
def test_never_nan_or_negative_and_deterministic(
    p: ScalingPolicy, replicas: int, rate: float, lag: float, stale: bool
) -> None:
    state = situation(p, max(replicas, 1), 1000.0, 0.0)
    o = obs(900.0, replicas=replicas, arrival=rate, lag=lag, lag_seconds=lag, stale=stale)
    first = one(p, state, o)
    again = one(p, state, o)
    for name in (
        "desired",
        "forecast_arrival_rate",
        "capacity_per_replica",
        "required_rate",
        "drain_rate",
        "restore_seconds",
        "rebalance_price",
        "next_scale_down_at",
    ):
        values = getattr(first, name)
        assert np.all(np.isfinite(values)), name
        assert np.all(values >= 0), name
        assert np.array_equal(values, getattr(again, name)), name
    assert first.reasons.tolist() == again.reasons.tolist()


def test_only_members_whose_every_partition_is_behind_count_as_busy() -> None:
    def part(i: int, owner: str | None, behind: float) -> PartitionSample:
        return PartitionSample(
            "orders",
            i,
            0,
            1000,
            int(behind * 100),
            behind,
            produce_rate=100.0,
            consume_rate=90.0,
            owner=owner,
        )

    p = policy()
    # m0 is behind on both its partitions; m1 has one partition caught up, so its rate is not its capacity.
    owned = (part(0, "m0", 60.0), part(1, "m0", 40.0), part(2, "m1", 60.0), part(3, "m1", 0.0))
    o = observe(GroupSample("orders", "Stable", 2, 0.0, owned), p, replicas=2)
    assert (o.busy_members, o.busy_rate) == (1, 180.0)
    # Without ownership the group is busy only when every partition is behind.
    anonymous = tuple(part(i, None, 60.0) for i in range(4))
    o = observe(GroupSample("orders", "Stable", 2, 0.0, anonymous), p, replicas=2)
    assert (o.busy_members, o.busy_rate) == (2, 360.0)
    o = observe(GroupSample("orders", "Stable", 2, 0.0, (*anonymous[:3], part(3, None, 0.0))), p, replicas=2)
    assert o.busy_members == 0
