"""The served metric drives a stock HPA (the model) to the engine's count, or as close as the HPA allows.

Every claim is checked by running the HPA model on the value lagscaler would serve.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lagscaler.core.hpa import ExternalMetric, HpaSpec, HpaState, TargetType, step
from lagscaler.core.hpa.metric import plan_served_metric, reachable, served_value
from lagscaler.core.policy.hpa import hpa_spec_for
from lagscaler.core.policy.model import Capacity, Hpa, KafkaSource, ScaleTargetRef, ScalingPolicy


def policy(minimum: int = 1, maximum: int = 48, *, configurable: bool = False, tolerance: float = 0.1):
    return ScalingPolicy(
        name="orders",
        namespace="shop",
        target=ScaleTargetRef("orders-consumer"),
        kafka=KafkaSource("orders"),
        max_lag_seconds=30,
        capacity=Capacity(2000),
        min_replicas=minimum,
        max_replicas=maximum,
        hpa=Hpa(tolerance=tolerance, configurable_tolerance=configurable),
    )


def one_sync(spec: HpaSpec, current: int, value: float, state: HpaState | None = None) -> int:
    return step(spec, state or HpaState(), 0.0, current, [value]).replicas


def test_twenty_to_twenty_one_is_out_of_reach_with_the_default_band():
    spec = hpa_spec_for(policy())
    # 21/20 = 1.05 and 22/20 = 1.1 are inside the band: serving the count changes nothing.
    assert one_sync(spec, 20, 21.0) == 20
    assert one_sync(spec, 20, 22.0) == 20
    plan = plan_served_metric(21, 20, spec)
    assert (plan.exact, plan.replicas) == (False, 23)
    assert "overshooting to 23" in plan.reason
    assert one_sync(spec, 20, plan.value) == 23


def test_per_hpa_zero_tolerance_makes_twenty_one_reachable():
    spec = hpa_spec_for(policy(configurable=True))
    plan = plan_served_metric(21, 20, spec)
    assert (plan.exact, plan.milli) == (True, 21000)
    assert one_sync(spec, 20, plan.value) == 21


def test_a_scale_down_inside_the_band_uses_the_low_end_of_the_interval():
    spec = hpa_spec_for(policy())
    assert one_sync(spec, 20, 18.0) == 20  # 18/20 = 0.9: inside the band
    plan = plan_served_metric(18, 20, spec)
    assert (plan.exact, plan.milli) == (True, 17001)  # ceil(17.001) = 18 and 17.001/20 < 0.9
    assert one_sync(spec, 20, plan.value) == 18


def test_an_unreachable_scale_down_holds_and_never_undershoots():
    spec = hpa_spec_for(policy())
    plan = plan_served_metric(19, 20, spec)  # 18.001/20 = 0.90005: inside the band
    assert (plan.exact, plan.replicas) == (False, 20)
    assert one_sync(spec, 20, plan.value) == 20


@pytest.mark.parametrize("partitions", [11, 12, 24, 48, 64, 100, 256])
def test_no_stall_one_short_of_the_partition_count(partitions):
    spec = hpa_spec_for(policy(maximum=partitions))
    plan = plan_served_metric(partitions, partitions - 1, spec)
    assert plan.exact
    assert one_sync(spec, partitions - 1, plan.value) == partitions


@pytest.mark.parametrize("partitions", [11, 12, 24, 64])
def test_the_model_reproduces_keda_stalling_at_p_minus_one(partitions):
    # kedacore/keda issues 2908 and 4791: total lag capped at partitions * lagThreshold, AverageValue lagThreshold,
    # default behavior: from P-1 replicas the ratio P/(P-1) <= 1.1 and the HPA never moves.
    threshold = 10
    spec = HpaSpec((ExternalMetric(TargetType.AVERAGE_VALUE, threshold),), 100)
    state, replicas = HpaState(), partitions - 1
    for sync in range(20):
        result = step(spec, state, sync * 15.0, replicas, [float(partitions * threshold)])
        state, replicas = result.state, result.replicas
    assert replicas == partitions - 1


def test_the_clamp_at_min_makes_the_floor_reachable():
    spec = hpa_spec_for(policy(minimum=19, maximum=40))
    plan = plan_served_metric(19, 20, spec)  # 19/20 is inside the band, but 19 is minReplicas
    assert plan.exact
    assert one_sync(spec, 20, plan.value) == 19


def test_steady_state_holds_even_with_a_zero_band():
    spec = hpa_spec_for(policy(configurable=True))
    plan = plan_served_metric(17, 17, spec)
    assert plan.milli == 17000
    assert one_sync(spec, 17, plan.value) == 17


def test_unknown_current_serves_the_count():
    spec = hpa_spec_for(policy())
    assert served_value(7, None, spec) == 7.0


def test_desired_outside_the_hpa_bounds_is_clamped():
    spec = hpa_spec_for(policy(minimum=2, maximum=10))
    assert plan_served_metric(50, 4, spec).replicas == 10
    assert plan_served_metric(0, 4, spec).replicas == 2


def test_a_target_at_zero_is_left_alone():
    spec = hpa_spec_for(policy(minimum=1))
    plan = plan_served_metric(5, 0, spec)
    assert (plan.exact, plan.replicas) == (False, 0)
    assert one_sync(spec, 0, plan.value) == 0


def test_needs_lagscalers_metric_shape():
    spec = HpaSpec((ExternalMetric(TargetType.VALUE, 1),), 10)
    with pytest.raises(ValueError, match="AverageValue"):
        plan_served_metric(3, 2, spec)


# --- properties: the plan is what the HPA does ---------------------------------------------------


@st.composite
def situations(draw):
    maximum = draw(st.integers(1, 300))
    minimum = draw(st.integers(1, maximum))
    configurable = draw(st.booleans())
    tolerance = draw(st.sampled_from([0.1, 0.05, 0.2, 0.0]))
    spec = hpa_spec_for(policy(minimum, maximum, configurable=configurable, tolerance=tolerance))
    current = draw(st.integers(minimum, maximum))
    desired = draw(st.integers(minimum, maximum))
    return spec, current, desired


def oracle_reachable(spec: HpaSpec, current: int, desired: int) -> bool:
    """Closed form from the controller's arithmetic, independent of the planner's search."""
    tol = spec.tolerances
    if desired == current:
        return True
    if desired > current:
        return desired == spec.max_replicas or desired * 1000 / (1000 * current) > 1 + tol.scale_up
    return desired == spec.min_replicas or ((desired - 1) * 1000 + 1) / (1000 * current) < 1 - tol.scale_down


@settings(max_examples=400, deadline=None)
@given(situations())
def test_one_sync_lands_where_the_plan_says_and_never_below_desired(situation):
    spec, current, desired = situation
    plan = plan_served_metric(desired, current, spec)
    landed = one_sync(spec, current, plan.value)
    assert landed == plan.replicas
    assert landed >= desired
    assert plan.exact == (landed == desired) == oracle_reachable(spec, current, desired)
    if spec.tolerances.scale_up == spec.tolerances.scale_down == 0:
        assert plan.exact
    if desired > current and not plan.exact:
        # the overshoot is the nearest count beyond the band, never past maxReplicas
        assert landed <= min(spec.max_replicas, math.floor((1 + spec.tolerances.scale_up) * current) + 2)
    if desired < current and not plan.exact:
        assert landed == current


@settings(max_examples=200, deadline=None)
@given(situations())
def test_serving_a_constant_decision_settles_in_at_most_two_scale_events(situation):
    spec, start, desired = situation
    state, replicas, events = HpaState(), start, 0
    history = []
    for sync in range(12):
        value = served_value(desired, replicas, spec)
        result = step(spec, state, sync * 15.0, replicas, [value])
        events += result.rescaled
        state, replicas = result.state, result.replicas
        history.append(replicas)
    assert events <= 2
    assert history[-1] == history[-2] >= desired  # settled, never short
    assert reachable(desired, start, spec) <= (history[0] == desired)
