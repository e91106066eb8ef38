"""The simulator's model of a consumer group, its baselines and its accounting, on short traces."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from lagscaler.core.policy.model import Capacity, Hpa, KafkaSource, ScaleTargetRef, ScalingPolicy, Stateful
from lagscaler.core.simulation.compare import compare, parse_policies
from lagscaler.core.simulation.controllers import FutureMax, StaticController
from lagscaler.core.simulation.model import Scenario
from lagscaler.core.simulation.simulator import arrivals_per_step, simulate, sticky_reassign
from lagscaler.core.simulation.trace import Trace, TraceError, parse_trace, spike_trace, step_trace
from lagscaler.errors import UserError

P = 12


def bench_like(stateful: bool = False) -> ScalingPolicy:
    return ScalingPolicy(
        name="sim",
        namespace="test",
        target=ScaleTargetRef("c"),
        kafka=KafkaSource("g"),
        max_lag_seconds=30.0,
        capacity=Capacity(per_replica=1000.0),
        max_replicas=P,
        target_utilization=0.85,
        hpa=Hpa(configurable_tolerance=True),
        stateful=Stateful(restore_bytes_per_second=1e6, state_bytes=60e6 * P) if stateful else None,
    )


def flat(rate: float, hours: float) -> Trace:
    return Trace("flat", np.array([0.0, hours * 3600]), np.array([rate, rate]))


# --- traces ---------------------------------------------------------------------------------------


def test_parses_the_shared_trace_format() -> None:
    trace = parse_trace("timestamp,value\n2014-04-10 00:04:00,94.0\n2014-04-10 00:09:00,56\n", "t.csv")
    assert trace.times.tolist() == [0.0, 300.0]
    assert trace.rates.tolist() == [94.0, 56.0]
    assert trace.rescaled(1000).rates.tolist() == [1000.0, pytest.approx(56 / 94 * 1000)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "timestamp,value\n2014-04-10 00:04:00,abc\n2014-04-10 00:09:00,1\n",
            "t.csv:2: value 'abc' is not a number",
        ),
        (
            "2014-04-10 00:09:00,1\n2014-04-10 00:04:00,2\n",
            "t.csv:2: timestamp '2014-04-10 00:04:00' does not come",
        ),
        ("yesterday,1\ntoday,2\n", "t.csv:1: timestamp 'yesterday' is not a date"),
        ("1,-5\n2,3\n", "t.csv:1: value '-5' must be a finite number >= 0"),
        ("timestamp,value\n1,2\n", "at least two 'timestamp,value' rows, found 1"),
        ("just-one-column\n", "t.csv:1: expected 'timestamp,value'"),
    ],
)
def test_a_bad_csv_is_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(TraceError) as err:
        parse_trace(text, "t.csv")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_arrivals_integrate_the_interpolated_rate_exactly() -> None:
    trace = Trace("ramp", np.array([0.0, 100.0, 160.0]), np.array([0.0, 100.0, 40.0]))
    _, rates = arrivals_per_step(trace, 5.0)
    assert rates.sum() * 5.0 == pytest.approx(100 * 100 / 2 + 60 * (100 + 40) / 2)


# --- the group model ------------------------------------------------------------------------------


def test_sticky_reassignment_balances_and_moves_as_little_as_possible() -> None:
    four = sticky_reassign(np.full(P, -1), 4, P)
    assert np.bincount(four).tolist() == [3, 3, 3, 3]
    six = sticky_reassign(four, 6, P)
    assert np.bincount(six).tolist() == [2] * 6
    assert int((six != four).sum()) == 4  # the two newcomers take two partitions each
    three = sticky_reassign(six, 3, P)
    assert int((three != six).sum()) == 6  # only the leavers' partitions move


def test_enough_static_capacity_keeps_lag_at_zero_and_costs_replicas_times_hours() -> None:
    policy = bench_like()
    scenario = Scenario.from_policy(policy)
    result = simulate(flat(3000.0, 1.0), scenario, [StaticController(policy, scenario, 3000.0)])
    static = result.policy("static")
    assert static.replica_hours == pytest.approx(3.0)  # 3 members own 4 partitions each: 3000 msg/s
    assert static.max_lag_seconds < 1e-3
    assert static.scale_events == 0
    assert result.fluid_bound_replica_hours == pytest.approx(3.0)


def test_the_busiest_member_sets_the_pace() -> None:
    # 5 members on 12 partitions: two own 3 partitions and fall behind at 4200 msg/s (350 per partition,
    # 333 per partition for them), although 5 x 1000 msg/s would be enough in aggregate.
    policy = bench_like()
    scenario = Scenario.from_policy(policy)
    controller = StaticController(policy, scenario, 4000.0)
    controller.replicas = 5
    result = simulate(flat(4200.0, 0.5), scenario, [controller])
    assert result.policy("static").slo_violation_fraction > 0.5


def test_stall_and_restore_misses_are_separated_from_capacity_misses() -> None:
    trace = step_trace(hours=2.0, every_hours=0.75).rescaled(9000.0)
    stateless = compare(trace, bench_like(), Scenario.from_policy(bench_like()), ["keda"])
    stateful_policy = bench_like(stateful=True)
    stateful = compare(trace, stateful_policy, Scenario.from_policy(stateful_policy), ["keda"])
    for result in (stateless, stateful):
        keda = result.policy("keda")
        assert keda.scale_events > 0
        assert keda.stall_seconds > 0
        assert 0 <= keda.stall_violation_fraction <= keda.slo_violation_fraction
    # A 60 s restore against a 30 s SLO makes every rebalance a miss by itself.
    assert (
        stateful.policy("keda").stall_violation_fraction > stateless.policy("keda").stall_violation_fraction
    )


def test_every_policy_is_compared_and_lagscaler_beats_keda_on_a_spiky_trace() -> None:
    trace = spike_trace(hours=3.0).rescaled(9000.0)
    policy = bench_like()
    result = compare(trace, policy, Scenario.from_policy(policy))
    names = [p.name for p in result.policies]
    assert names == ["lagscaler", "keda", "hpa-rate", "static", "oracle"]
    lagscaler, keda, oracle = (result.policy(n) for n in ("lagscaler", "keda", "oracle"))
    assert lagscaler.replica_hours < keda.replica_hours
    assert lagscaler.scale_events < keda.scale_events
    assert lagscaler.slo_violation_fraction <= keda.slo_violation_fraction
    assert oracle.replica_hours >= result.fluid_bound_replica_hours
    shape = result.as_json()
    assert set(shape["policies"]["lagscaler"]) >= {  # type: ignore[index]
        "replica_hours",
        "slo_violation_fraction",
        "max_lag_seconds",
        "p99_lag_seconds",
        "scale_events",
        "stall_seconds",
    }


def test_future_max_matches_a_direct_window_max() -> None:
    values = np.random.default_rng(3).random(1000)
    fm = FutureMax(values)
    starts = np.arange(0, 1000, 37)
    for length in (1, 5, 64, 333):
        expected = [values[s : s + length].max() for s in starts]
        assert fm.ahead(starts, length).tolist() == pytest.approx(expected)


def test_baseline_names_are_checked() -> None:
    assert parse_policies(["keda,static", "oracle"]) == ("keda", "static", "oracle")
    assert parse_policies(None)[0] == "lagscaler"
    with pytest.raises(UserError, match="unknown baseline 'kedda'"):
        parse_policies(["kedda"])


def test_the_oracle_scales_for_each_burst_once_and_meets_the_slo() -> None:
    """With foresight, bursts are cheaper to serve than to hold for: one scale-up before each, covering
    the whole ramp, and no scale-down stacking its stall on a backlog still draining."""
    trace = spike_trace(hours=3.0).rescaled(20000.0)
    policy = replace(bench_like(), capacity=Capacity(per_replica=2000.0), max_replicas=24)
    result = compare(trace, policy, Scenario.from_policy(policy, partitions=24), ["static", "oracle"])
    oracle, static = result.policy("oracle"), result.policy("static")
    assert oracle.slo_violation_fraction <= 0.01
    assert oracle.replica_hours < 0.7 * static.replica_hours
