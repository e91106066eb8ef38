"""Each stage of the decision alone (``lagscaler.core.engine.stages``), over random policies and observations.

The factory builds three workloads at a time (W = 3) from random policies, an engine state that
has seen a random short history, and a random observation batch; each test runs the stages up to
the one it checks and asserts what that stage promises, whatever the policy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lagscaler.core.engine import EngineState, ObservationBatch, PolicyArrays, decide
from lagscaler.core.engine.core import run_stages
from lagscaler.core.engine.sizing import clamp, effective_replicas
from lagscaler.core.engine.stages import (
    CapacityEstimate,
    Forecast,
    Inputs,
    Need,
    ScaleDownPlan,
    ScaleUpPlan,
    Stages,
    estimate_capacity,
    forecast_arrivals,
    prepare,
    settle,
)
from lagscaler.core.engine.stages.capacity import CAPACITY_MEMORY_FACTOR
from lagscaler.core.policy.model import (
    Capacity,
    Hpa,
    KafkaSource,
    ScaleDown,
    ScaleTargetRef,
    ScaleUp,
    ScalingPolicy,
    Smoothing,
    Stateful,
)

W = 3

policies = st.builds(
    lambda lo, span, u, learn, weight, trend, seasonal, up_stab, up_pct, down_pct, down_abs, stateful: (
        ScalingPolicy(
            name="w",
            namespace="t",
            target=ScaleTargetRef("w"),
            kafka=KafkaSource("w"),
            max_lag_seconds=30.0,
            min_replicas=lo,
            max_replicas=lo + span,
            target_utilization=u,
            capacity=Capacity(per_replica=1000.0, learn=learn, prior_weight_seconds=weight),
            smoothing=Smoothing(trend=trend, seasonal_period_seconds=600.0 if seasonal else None),
            scale_up=ScaleUp(stabilization_seconds=up_stab, max_step_percent=up_pct),
            scale_down=ScaleDown(max_step_percent=down_pct, max_step_replicas=down_abs),
            stateful=Stateful(restore_bytes_per_second=1e6, state_bytes=24 * 90e6) if stateful else None,
            hpa=Hpa(sync_period_seconds=15.0),
        )
    ),
    st.integers(0, 4),
    st.integers(0, 40),
    st.floats(0.3, 1.0),
    st.booleans(),
    st.floats(1.0, 1000.0),
    st.booleans(),
    st.booleans(),
    st.sampled_from([0.0, 60.0]),
    st.floats(0.0, 400.0),
    st.floats(0.0, 100.0),
    st.integers(1, 16),
    st.booleans(),
)

rows = st.fixed_dictionaries(
    {
        "replicas": st.integers(0, 40),
        "members": st.integers(0, 40),
        "partitions": st.sampled_from([0, 1, 7, 24, 64]),
        "arrival_rate": st.one_of(st.floats(0.0, 50_000.0), st.just(float("nan"))),
        "consume_rate": st.floats(0.0, 50_000.0),
        "lag": st.floats(0.0, 1e7),
        "lag_seconds": st.floats(0.0, 3600.0),
        "busy_rate": st.floats(0.0, 50_000.0),
        "busy_members": st.integers(0, 40),
        "stale": st.booleans(),
    }
)


def batch(at: float, values: list[dict[str, object]]) -> ObservationBatch:
    def column(name: str, dtype: type) -> np.ndarray:
        return np.asarray([v[name] for v in values], dtype=dtype)

    return ObservationBatch(
        at=np.full(len(values), at),
        replicas=column("replicas", np.int64),
        members=column("members", np.int64),
        partitions=column("partitions", np.int64),
        arrival_rate=column("arrival_rate", np.float64),
        consume_rate=column("consume_rate", np.float64),
        lag=column("lag", np.float64),
        lag_seconds=column("lag_seconds", np.float64),
        busy_rate=column("busy_rate", np.float64),
        busy_members=column("busy_members", np.int64),
        stuck_partitions=np.zeros(len(values), dtype=np.int64),
        stuck_lag=np.zeros(len(values)),
        stale=column("stale", np.bool_),
        state_bytes=np.full(len(values), np.nan),
    )


@dataclass(frozen=True)
class Case:
    """Three workloads after a short random history, and this cycle's observations."""

    params: PolicyArrays
    state: EngineState
    obs: ObservationBatch

    def run(self) -> Stages:
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # as decide() runs them
            return run_stages(self.params, self.state, self.obs)


@st.composite
def cases(draw: st.DrawFn, **overrides: object) -> Case:
    ps = [draw(policies) for _ in range(W)]
    params = PolicyArrays.from_policies([replace(p, name=f"w{i}") for i, p in enumerate(ps)])
    for name, value in overrides.items():
        params = replace(params, **{name: np.full(W, value, dtype=getattr(params, name).dtype)})
    state = EngineState.initial(params)
    at = 0.0
    for _ in range(draw(st.integers(0, 4))):
        at += draw(st.sampled_from([1.0, 15.0, 120.0]))
        _, state = decide(params, state, batch(at, [draw(rows) for _ in range(W)]))
    at += draw(st.sampled_from([1.0, 15.0, 120.0]))
    return Case(params, state, batch(at, [draw(rows) for _ in range(W)]))


@settings(max_examples=60, deadline=None)
@given(case=cases(trend=False))
def test_without_a_trend_the_projection_is_the_level(case: Case) -> None:
    inputs = prepare(case.params, case.state, case.obs)
    forecast: Forecast = forecast_arrivals(case.params, case.state, inputs=inputs)
    assert np.array_equal(forecast.projected, forecast.level)
    assert not forecast.trend.any()


@settings(max_examples=60, deadline=None)
@given(case=cases())
def test_the_forecast_never_provisions_below_the_level(case: Case) -> None:
    stages = case.run()
    assert np.all(stages.need.forecast >= stages.forecast.level)
    assert np.all(stages.forecast.projected >= stages.forecast.level)


@settings(max_examples=60, deadline=None)
@given(case=cases())
def test_capacity_evidence_is_capped_and_no_evidence_changes_nothing(case: Case) -> None:
    inputs: Inputs = prepare(case.params, case.state, case.obs)
    capacity: CapacityEstimate = estimate_capacity(case.params, case.state, inputs=inputs)
    cap = CAPACITY_MEMORY_FACTOR * case.params.capacity_prior_weight
    assert np.all(capacity.learned_weight <= cap)
    no_evidence = ~inputs.usable | ~capacity.warm | (inputs.busy_members <= 0) | ~case.params.capacity_learn
    assert np.array_equal(capacity.learned[no_evidence], case.state.capacity[no_evidence])
    assert np.all(capacity.per_replica > 0)


@settings(max_examples=60, deadline=None)
@given(case=cases())
def test_the_need_is_within_bounds(case: Case) -> None:
    stages = case.run()
    need: Need = stages.need
    inputs = stages.inputs
    assert np.all((inputs.lo <= need.replicas) & (need.replicas <= inputs.hi))
    assert np.all(need.required >= need.arrival_need)
    assert np.all(need.drain_rate >= 0)


@settings(max_examples=60, deadline=None)
@given(case=cases())
def test_a_scale_up_goes_up_and_an_ineffective_hold_never_asks_for_more(case: Case) -> None:
    stages = case.run()
    up: ScaleUpPlan = stages.up
    replicas = stages.inputs.replicas
    assert np.all(up.target[up.scaling_up] > replicas[up.scaling_up])
    assert np.all(up.recommended[up.ineffective_now] <= replicas[up.ineffective_now])
    assert np.all(up.target <= up.recommended)


@settings(max_examples=60, deadline=None)
@given(case=cases())
def test_a_scale_down_goes_down_but_never_below_the_need(case: Case) -> None:
    stages = case.run()
    down: ScaleDownPlan = stages.down
    inputs, need = stages.inputs, stages.need.replicas
    chosen = down.scaling_down
    assert np.all(need[chosen] <= down.candidate[chosen])
    assert np.all(down.candidate[chosen] < inputs.replicas[chosen])
    assert not np.any(chosen & stages.up.scaling_up)
    # The candidate carries what the need carries (aligned counts: never less throughput).
    carries = effective_replicas(down.candidate, inputs.partitions)
    assert np.all(carries[chosen] >= effective_replicas(need, inputs.partitions)[chosen])


@settings(max_examples=60, deadline=None)
@given(case=cases())
def test_settle_serves_a_count_within_bounds_and_an_unusable_row_holds(case: Case) -> None:
    stages = case.run()
    decisions, state = settle(case.params, case.state, stages=stages)
    inputs = stages.inputs
    assert np.all((inputs.lo <= decisions.desired) & (decisions.desired <= inputs.hi))
    held = np.where(case.state.initialized, case.state.desired, inputs.replicas)
    unusable = ~inputs.usable
    assert np.array_equal(decisions.desired[unusable], clamp(held, inputs.lo, inputs.hi)[unusable])
    assert np.array_equal(state.level[unusable], case.state.level[unusable])
    assert np.array_equal(state.at[unusable], case.state.at[unusable])
