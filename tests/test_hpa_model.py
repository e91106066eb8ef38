"""The HPA model against upstream's own worked cases, and invariants a simulator relies on.

Each case names the upstream test in kubernetes/kubernetes ``pkg/controller/podautoscaler``
(``replica_calculator_test.go``, ``horizontal_test.go``) it re-states. Where upstream drives the
case with a CPU or Object metric, the case here uses an External metric that makes the same
proposal, and says so.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lagscaler.core.hpa import (
    Behavior,
    ExternalMetric,
    HpaScalingPolicy,
    HpaSpec,
    HpaState,
    MetricError,
    PolicyType,
    Recommendation,
    ScaleEvent,
    ScalingRules,
    SelectPolicy,
    TargetType,
    Tolerances,
    average_value_proposal,
    milli_value,
    scale_down_limit,
    scale_up_limit,
    step,
    value_proposal,
)
from lagscaler.core.hpa.controller import record_scale_event

DEFAULT_TOLERANCES = Tolerances(0.1, 0.1)
PER_POD_ONE = ExternalMetric(TargetType.AVERAGE_VALUE, 1)


def rules(pods: int = 0, pods_period: int = 0, percent: int = 0, percent_period: int = 0, window: int = 0):
    """``generateScalingRules`` from horizontal_test.go."""
    policies = []
    if pods:
        policies.append(HpaScalingPolicy(PolicyType.PODS, pods, pods_period))
    if percent:
        policies.append(HpaScalingPolicy(PolicyType.PERCENT, percent, percent_period))
    return ScalingRules(window, SelectPolicy.MAX, tuple(policies) or None)


def uniform_events(changes: list[int], period: int, now: float = 0.0) -> tuple[ScaleEvent, ...]:
    """``generateEventsUniformDistribution``: events at the centres of equal slices of the period."""
    segment = period / len(changes)
    return tuple(
        ScaleEvent(change, now - (period - segment * (index + 1) + segment / 2))
        for index, change in enumerate(changes)
    )


# --- replica_calculator_test.go -----------------------------------------------------------------


def test_replica_calc_scale_up_cm_external_ignores_unready_pods():
    # TestReplicaCalcScaleUpCMExternalIgnoresUnreadyPods: Value target, 1 of 3 pods ready.
    assert value_proposal(8600, 4400, 3, 1, DEFAULT_TOLERANCES) == 2


def test_replica_calc_scale_down_cm_external():
    # TestReplicaCalcScaleDownCMExternal
    assert value_proposal(8600, 14334, 5, 5, DEFAULT_TOLERANCES) == 3


def test_replica_calc_scale_up_per_pod_cm_external():
    # TestReplicaCalcScaleUpPerPodCMExternal: AverageValue 2150m, usage 8600m over 3 pods.
    assert average_value_proposal(8600, 2150, 3, DEFAULT_TOLERANCES) == 4


def test_replica_calc_scale_down_per_pod_cm_external():
    # TestReplicaCalcScaleDownPerPodCMExternal
    assert average_value_proposal(8600, 2867, 5, DEFAULT_TOLERANCES) == 3


def test_replica_calc_tolerance_cm_external():
    # TestReplicaCalcToleranceCMExternal: 8600/8888 = 0.968, inside the band.
    assert value_proposal(8600, 8888, 3, 3, DEFAULT_TOLERANCES) == 3


def test_replica_calc_tolerance_per_pod_cm_external():
    # TestReplicaCalcTolerancePerPodCMExternal: 8600 / (2900 * 3) = 0.989, inside the band.
    assert average_value_proposal(8600, 2900, 3, DEFAULT_TOLERANCES) == 3


def test_scale_up_from_zero_ignores_tolerance():
    # TestScaleUpFromZeroCMObject and TestScaleUpFromZeroIgnoresToleranceCMObject go through
    # getUsageRatioReplicaCount, the function External Value targets use too.
    assert value_proposal(20000, 15000, 0, 0, DEFAULT_TOLERANCES) == 2
    assert value_proposal(1000, 1000, 0, 0, DEFAULT_TOLERANCES) == 1


def test_value_target_without_pods_fails_only_outside_the_band():
    # getUsageRatioReplicaCount (v1.35.4) returns spec.replicas inside the band before it lists
    # pods; only outside it does "no pods returned by selector" fail the metric.
    spec = HpaSpec(metrics=(ExternalMetric(TargetType.VALUE, 10),), max_replicas=10)
    held = step(spec, HpaState(), 0.0, 3, [10.5], status_replicas=0, ready_pods=0)
    assert held.replicas == 3
    assert held.metric_errors == ()
    failed = step(spec, HpaState(), 0.0, 3, [30], status_replicas=0, ready_pods=0)
    assert failed.reason == "FailedGetExternalMetric"
    assert "no pods returned by selector" in failed.metric_errors[0]


def test_average_value_from_zero_status_replicas():
    # status.replicas == 0: the ratio is +Inf (never within), the proposal is ceil(usage/target);
    # zero usage over zero pods is NaN, also never within, and proposes 0.
    assert average_value_proposal(2500, 1000, 0, DEFAULT_TOLERANCES) == 3
    assert average_value_proposal(0, 1000, 0, DEFAULT_TOLERANCES) == 0


def test_tolerance_band_includes_both_ends():
    # isWithin: (1 - down) <= ratio <= (1 + up)
    assert average_value_proposal(22000, 1000, 20, DEFAULT_TOLERANCES) == 20
    assert average_value_proposal(22001, 1000, 20, DEFAULT_TOLERANCES) == 23
    assert average_value_proposal(18000, 1000, 20, DEFAULT_TOLERANCES) == 20
    assert average_value_proposal(17999, 1000, 20, DEFAULT_TOLERANCES) == 18


def test_milli_value_rounds_up_and_reads_decimals():
    assert milli_value(0.1) == 100
    assert milli_value(17.0005) == 17001
    assert milli_value(4) == 4000
    with pytest.raises(ValueError, match="finite"):
        milli_value(float("inf"))


# --- horizontal_test.go: whole syncs ------------------------------------------------------------


def spec_with(metrics, *, minimum=2, maximum=6, behavior=None, **kwargs) -> HpaSpec:
    return HpaSpec(tuple(metrics), maximum, minimum, behavior, **kwargs)


def test_scale_up_cm_external():
    # TestScaleUpCMExternal: Value 6666m, usage 8600m, 3 replicas -> ceil(1.29 * 3) = 4.
    spec = spec_with([ExternalMetric(TargetType.VALUE, 6.666)])
    result = step(spec, HpaState(), 0.0, 3, [8.6])
    assert (result.replicas, result.rescaled) == (4, True)


def test_scale_up_per_pod_cm_external():
    # TestScaleUpPerPodCMExternal: AverageValue 2222m, usage 8600m -> ceil(3.87) = 4.
    spec = spec_with([ExternalMetric(TargetType.AVERAGE_VALUE, 2.222)])
    assert step(spec, HpaState(), 0.0, 3, [8.6]).replicas == 4


def test_scale_up_one_metric_invalid():
    # TestScaleUpOneMetricInvalid (upstream's valid metric is CPU proposing 4 of 3): a valid metric
    # that says scale up wins over an invalid one.
    spec = spec_with([ExternalMetric(TargetType.VALUE, 3), ExternalMetric(TargetType.VALUE, 1, "bad")])
    result = step(spec, HpaState(), 0.0, 3, [4.0, MetricError("CheddarCheese")])
    assert (result.replicas, result.rescaled) == (4, True)
    assert result.metric_errors


def test_scale_up_from_zero_one_metric_invalid():
    # TestScaleUpFromZeroOneMetricInvalid: minReplicas 0 and 0 replicas; the valid metric proposes 4.
    spec = spec_with(
        [ExternalMetric(TargetType.VALUE, 1), ExternalMetric(TargetType.VALUE, 1, "bad")], minimum=0
    )
    result = step(spec, HpaState(), 0.0, 0, [3.5, MetricError()])
    assert result.replicas == 4


def test_scale_up_one_metric_empty():
    # TestScaleUpOneMetricEmpty: the External metric returns no items; the other scales up to 4.
    spec = spec_with([ExternalMetric(TargetType.VALUE, 3), ExternalMetric(TargetType.VALUE, 0.1, "qps")])
    assert step(spec, HpaState(), 0.0, 3, [4.0, ()]).replicas == 4


def test_no_scale_down_one_metric_empty():
    # TestNoScaleDownOneMetricEmpty: the valid metric says 3 of 5, the other failed: frozen at 5.
    spec = spec_with([PER_POD_ONE, ExternalMetric(TargetType.VALUE, 1, "qps")])
    result = step(spec, HpaState(), 0.0, 5, [3.0, ()])
    assert (result.replicas, result.rescaled, result.reason) == (5, False, "FailedGetExternalMetric")


def test_all_metrics_failing_freezes_and_records_nothing():
    # TestScaleUpBothMetricsEmpty: no valid metric, no scaling; the failure leaves no recommendation.
    spec = spec_with([PER_POD_ONE, ExternalMetric(TargetType.VALUE, 1, "qps")])
    state = HpaState(recommendations=())
    result = step(spec, state, 0.0, 3, [MetricError(), MetricError()])
    assert (result.replicas, result.reason) == (3, "FailedGetExternalMetric")
    assert result.state.recommendations == ()


def test_several_metrics_take_the_largest_proposal():
    spec = spec_with([PER_POD_ONE, ExternalMetric(TargetType.AVERAGE_VALUE, 1, "other")], maximum=20)
    assert step(spec, HpaState(), 0.0, 4, [9.0, 12.0]).replicas == 8  # 12 > max(2*4, 4)
    assert step(spec, HpaState(), 0.0, 10, [15.0, 12.0]).replicas == 15


def test_zero_replicas_disable_scaling():
    # TestZeroReplicas: minReplicas 3, the target scaled to 0 by hand: the HPA leaves it alone.
    spec = spec_with([PER_POD_ONE], minimum=3, maximum=5)
    result = step(spec, HpaState(), 0.0, 0, [50.0])
    assert (result.replicas, result.rescaled, result.reason) == (0, False, "ScalingDisabled")


def test_too_few_replicas():
    # TestTooFewReplicas: below minReplicas the HPA goes to min without reading metrics.
    spec = spec_with([PER_POD_ONE], minimum=3, maximum=5)
    result = step(spec, HpaState(), 0.0, 2, [MetricError()])
    assert (result.replicas, result.reason, result.proposal) == (3, "TooFewReplicas", None)


def test_too_many_replicas():
    # TestTooManyReplicas
    spec = spec_with([PER_POD_ONE], minimum=3, maximum=5)
    assert step(spec, HpaState(), 0.0, 10, [1.0]).replicas == 5


def test_status_replicas_not_spec_replicas_inside_the_band():
    # GetExternalPerPodMetricReplicas returns status.replicas inside the band: during a surge of one
    # extra pod the HPA "scales" spec to what status says.
    spec = spec_with([PER_POD_ONE], minimum=1, maximum=20)
    result = step(spec, HpaState(), 0.0, 10, [10.5], status_replicas=11)
    assert result.replicas == 11


@pytest.mark.parametrize(
    ("current", "proposal", "minimum", "maximum", "expected", "reason"),
    [
        # TestConvertDesiredReplicasWithRules, every case
        (5, 7, 3, 8, 7, "DesiredWithinRange"),  # prenormalized desired replicas within range
        (3, 1, 2, 8, 2, "TooFewReplicas"),  # prenormalized desired replicas < minReplicas
        (1, 0, 0, 10, 0, "DesiredWithinRange"),  # prenormalized desired zeroed replicas within range
        (20, 1000, 1, 10, 10, "TooManyReplicas"),  # maxReplicas is the limit (current > max path)
        (3, 1000, 1, 2000, 6, "ScaleUpLimit"),  # scaleUpLimit = max(2 * 3, 4) < maxReplicas
    ],
)
def test_convert_desired_replicas_with_rules(*, current, proposal, minimum, maximum, expected, reason):
    spec = spec_with([PER_POD_ONE], minimum=minimum, maximum=maximum)
    result = step(spec, HpaState(recommendations=()), 0.0, current, [float(proposal)])
    assert (result.replicas, result.reason) == (expected, reason)


@pytest.mark.parametrize(
    ("name", "recommendations", "proposal", "expected", "log_length"),
    [
        # TestNormalizeDesiredReplicas (no behavior, 5 minute downscale window), every case
        ("empty log", [], 5, 5, 1),
        ("stabilize", [(4, -120), (5, -60)], 3, 5, 3),
        ("no stabilize", [(1, -120), (2, -60)], 3, 3, 3),
        ("no stabilize - old recommendations", [(10, -600), (9, -540)], 3, 3, 2),
        ("stabilize - old recommendations", [(10, -600), (4, -60), (5, -120), (9, -540)], 3, 5, 4),
    ],
)
def test_normalize_desired_replicas(name, recommendations, proposal, expected, log_length):
    spec = spec_with([PER_POD_ONE], minimum=1, maximum=10)
    state = HpaState(tuple(Recommendation(r, t) for r, t in recommendations))
    result = step(spec, state, 0.0, 5, [float(proposal)])
    assert result.replicas == expected, name
    assert len(result.state.recommendations or ()) == log_length, name


GENEROUS = (HpaScalingPolicy(PolicyType.PODS, 10000, 15),)


@pytest.mark.parametrize(
    ("name", "recommendations", "current", "proposal", "up_window", "down_window", "expected", "stored"),
    [
        # TestNormalizeDesiredReplicasWithBehavior, every case (stabilization only: generous rates)
        ("empty recommendations for scaling down", [], 100, 5, 0, 0, 5, [5]),
        ("simple scale down stabilization", [(4, -120), (5, -60)], 100, 3, 0, 180, 5, [4, 5, 3]),
        ("simple scale up stabilization", [(4, -120), (5, -60)], 1, 7, 300, 0, 4, [4, 5, 7]),
        ("no scale down stabilization", [(1, -120), (2, -60)], 100, 3, 300, 0, 3, [1, 2, 3]),
        ("no scale up stabilization", [(4, -120), (5, -60)], 1, 3, 0, 300, 3, [4, 5, 3]),
        ("no scale down stabilization, reuse", [(10, -600), (9, -540)], 100, 3, 0, 0, 3, [10, 3]),
        ("no scale up stabilization, reuse", [(10, -600), (9, -540)], 1, 100, 0, 0, 100, [10, 100]),
        (
            "scale down stabilization, reuse one of obsolete recommendation element",
            [(10, -600), (4, -60), (5, -120), (9, -540)],
            100,
            3,
            0,
            180,
            5,
            [10, 4, 5, 3],
        ),
        (
            "scale up stabilization, reuse one of obsolete recommendation element",
            [(10, -6000), (6, -60), (5, -120), (9, -180)],
            1,
            100,
            300,
            0,
            5,
            [100, 6, 5, 9],
        ),
        (
            "do not scale up when prenormalized rec goes down",
            [(2, -6000), (3, -180)],
            2,
            1,
            300,
            300,
            2,
            None,
        ),
        (
            "do not scale down when prenormalized rec goes up",
            [(2, -6000), (1, -180)],
            2,
            3,
            300,
            300,
            2,
            None,
        ),
    ],
)
def test_normalize_desired_replicas_with_behavior(
    *, name, recommendations, current, proposal, up_window, down_window, expected, stored
):
    behavior = Behavior(
        ScalingRules(up_window, SelectPolicy.MAX, GENEROUS),
        ScalingRules(down_window, SelectPolicy.MAX, GENEROUS),
    )
    spec = spec_with([PER_POD_ONE], minimum=1, maximum=1000, behavior=behavior)
    state = HpaState(tuple(Recommendation(r, t) for r, t in recommendations))
    result = step(spec, state, 0.0, current, [float(proposal)])
    assert result.replicas == expected, name
    if stored is not None:
        assert [r.replicas for r in result.state.recommendations or ()] == stored, name


W = uniform_events


@pytest.mark.parametrize(
    (
        "name",
        "up_events",
        "down_events",
        "minimum",
        "maximum",
        "up",
        "down",
        "current",
        "proposal",
        "expected",
        "reason",
    ),
    [
        # TestScalingWithRules (convertDesiredReplicasWithBehaviorRate), every case
        ("within range", (), (), 3, 8, None, None, 5, 7, 7, "DesiredWithinRange"),
        ("< minReplicas", (), (), 2, 8, None, None, 3, 1, 2, "TooFewReplicas"),
        ("minReplicas is 0", (), (), 0, 10, None, None, 1, 0, 0, "DesiredWithinRange"),
        ("desired more than maximum", (), (), 100, 150, None, None, 100, 1000, 150, "TooManyReplicas"),
        (
            "scaleUpLimit with user policies",
            (),
            (),
            1,
            2000,
            rules(0, 0, 1, 60),
            None,
            3,
            1000,
            4,
            "ScaleUpLimit",
        ),
        (
            "scaleDownLimit with user policies",
            (),
            (),
            3,
            2000,
            None,
            rules(20, 60),
            1000,
            3,
            980,
            "ScaleDownLimit",
        ),
        ("scaleUp with default behavior", (), (), 1, 1000, None, None, 10, 50, 20, "ScaleUpLimit"),
        ("pods policy larger", (), (), 1, 1000, rules(100, 60, 100, 60), None, 10, 500, 110, "ScaleUpLimit"),
        ("percent policy larger", (), (), 1, 1000, rules(2, 60, 100, 60), None, 10, 500, 20, "ScaleUpLimit"),
        ("large pod policy", (), (), 1, 1000, rules(100, 60), None, 10, 50, 50, "DesiredWithinRange"),
        ("large percent policy", (), (), 1, 1000, rules(10000, 60), None, 10, 50, 50, "DesiredWithinRange"),
        ("pod policy limitation", (), (), 1, 1000, rules(30, 60), None, 10, 50, 40, "ScaleUpLimit"),
        (
            "percent policy limitation",
            (),
            (),
            1,
            1000,
            rules(0, 0, 200, 60),
            None,
            10,
            50,
            30,
            "ScaleUpLimit",
        ),
        (
            "down percent larger",
            (),
            (),
            1,
            1000,
            None,
            rules(20, 60, 1, 60, 300),
            100,
            2,
            80,
            "ScaleDownLimit",
        ),
        ("down pod larger", (), (), 1, 1000, None, rules(2, 60, 1, 60, 300), 100, 2, 98, "ScaleDownLimit"),
        (
            "down MinReplicas large pod",
            (),
            (),
            1,
            1000,
            None,
            rules(100, 60, 0, 0, 300),
            10,
            0,
            1,
            "TooFewReplicas",
        ),
        (
            "down MinReplicas large percent",
            (),
            (),
            5,
            1000,
            None,
            rules(0, 0, 100, 60, 300),
            10,
            2,
            5,
            "TooFewReplicas",
        ),
        ("down pod limitation", (), (), 1, 1000, None, rules(5, 60, 0, 0, 300), 10, 2, 5, "ScaleDownLimit"),
        (
            "down percent limitation",
            (),
            (),
            1,
            1000,
            None,
            rules(0, 0, 50, 60, 300),
            10,
            5,
            5,
            "DesiredWithinRange",
        ),
        (
            "up max pods events",
            W([1, 5, 9], 120),
            (),
            1,
            200,
            rules(300, 60),
            None,
            100,
            500,
            200,
            "TooManyReplicas",
        ),
        (
            "up max percent events",
            W([1, 5, 9], 120),
            (),
            1,
            200,
            rules(0, 0, 10000, 60),
            None,
            100,
            500,
            200,
            "TooManyReplicas",
        ),
        (
            "up held by recent events",
            W([1, 5, 9], 120),
            (),
            1,
            1000,
            rules(5, 120),
            None,
            100,
            500,
            100,
            "ScaleUpLimit",
        ),
        (
            "up pods after events",
            W([1, 5, 9], 120),
            (),
            1,
            1000,
            rules(150, 120),
            None,
            100,
            500,
            235,
            "ScaleUpLimit",
        ),
        (
            "up percent after events",
            W([1, 5, 9], 120),
            (),
            1,
            1000,
            rules(0, 0, 200, 120),
            None,
            100,
            500,
            255,
            "ScaleUpLimit",
        ),
        (
            "up after up and down",
            W([4], 120),
            W([2], 120),
            1,
            1000,
            rules(0, 0, 300, 300),
            None,
            6,
            24,
            16,
            "ScaleUpLimit",
        ),
        (
            "down default after events",
            (),
            W([1, 5, 9], 120),
            1,
            1000,
            None,
            None,
            10,
            5,
            5,
            "DesiredWithinRange",
        ),
        (
            "down min large pod events",
            (),
            W([1, 5, 9], 120),
            1,
            1000,
            None,
            rules(115, 120, 0, 0, 300),
            100,
            0,
            1,
            "TooFewReplicas",
        ),
        (
            "down min 5 large pod events",
            (),
            W([1, 5, 9], 120),
            5,
            1000,
            None,
            rules(130, 120, 0, 0, 300),
            100,
            0,
            5,
            "TooFewReplicas",
        ),
        (
            "down min 5 percent events",
            (),
            W([1, 5, 9], 120),
            5,
            1000,
            None,
            rules(0, 0, 100, 120, 300),
            100,
            2,
            5,
            "TooFewReplicas",
        ),
        (
            "down pod limited by events",
            (),
            W([1, 5, 9], 120),
            1,
            1000,
            None,
            rules(5, 120, 0, 0, 300),
            100,
            2,
            100,
            "ScaleDownLimit",
        ),
        (
            "down percent limited by events",
            (),
            W([2, 4, 6], 120),
            1,
            1000,
            None,
            rules(0, 0, 50, 120, 300),
            100,
            0,
            56,
            "ScaleDownLimit",
        ),
        (
            "down after up and down",
            W([2], 120),
            W([4], 120),
            1,
            1000,
            None,
            rules(0, 0, 50, 180),
            10,
            1,
            6,
            "ScaleDownLimit",
        ),
        (
            "down held by events",
            (),
            W([10, 10, 10], 120),
            1,
            1000,
            None,
            rules(0, 0, 10, 120, 300),
            100,
            0,
            100,
            "ScaleDownLimit",
        ),
        (
            "down below zero allowed",
            (),
            W([10, 10, 10], 120),
            1,
            1000,
            None,
            rules(0, 0, 1000, 120, 300),
            10,
            5,
            5,
            "DesiredWithinRange",
        ),
        (
            "outdated up, one policy",
            W([8, 12, 9, 11], 120),
            (),
            1,
            1000,
            rules(1000, 60),
            None,
            100,
            200,
            200,
            "DesiredWithinRange",
        ),
        (
            "not outdated up, two policies",
            W([8, 12, 9, 11], 120),
            (),
            1,
            1000,
            rules(1000, 120, 100, 60),
            None,
            100,
            200,
            200,
            "DesiredWithinRange",
        ),
        (
            "outdated up, two policies",
            W([8, 12, 9, 11], 120),
            (),
            1,
            1000,
            rules(1000, 30, 100, 60),
            None,
            100,
            200,
            200,
            "DesiredWithinRange",
        ),
        (
            "outdated down, one policy",
            (),
            W([8, 12, 9, 11], 120),
            1,
            1000,
            None,
            rules(1000, 60, 0, 0, 300),
            100,
            5,
            5,
            "DesiredWithinRange",
        ),
        (
            "not outdated down, two policies",
            (),
            W([8, 12, 9, 11], 120),
            1,
            1000,
            None,
            rules(1000, 120, 100, 60, 300),
            100,
            5,
            5,
            "DesiredWithinRange",
        ),
        (
            "outdated down, two policies",
            (),
            W([8, 12, 9, 11], 120),
            1,
            1000,
            None,
            rules(1000, 30, 100, 60, 300),
            100,
            5,
            5,
            "DesiredWithinRange",
        ),
    ],
)
def test_scaling_with_rules(
    *, name, up_events, down_events, minimum, maximum, up, down, current, proposal, expected, reason
):
    spec = spec_with([PER_POD_ONE], minimum=minimum, maximum=maximum, behavior=Behavior(up, down))
    # No recommendation history, so stabilization passes the proposal through untouched.
    state = HpaState((), up_events, down_events)
    result = step(spec, state, 0.0, current, [float(proposal)])
    assert (result.replicas, result.reason) == (expected, reason), name


def test_calculate_scale_up_limit_with_scaling_rules():
    # TestCalculateScaleUpLimitWithScalingRules: Min of (1 + 2 pods, ceil(1 * 1.5)) = 2.
    spec = spec_with(
        [PER_POD_ONE], behavior=Behavior(ScalingRules(300, SelectPolicy.MIN, rules(2, 60, 50, 60).policies))
    )
    assert scale_up_limit(1, (), (), spec.scale_up_rules, 0.0) == 2


def test_calculate_scale_down_limit_with_behaviors():
    # TestCalculateScaleDownLimitWithBehaviors: Min change of (5 - 2, trunc(5 * 0.5)) = 3.
    spec = spec_with(
        [PER_POD_ONE],
        behavior=Behavior(None, ScalingRules(300, SelectPolicy.MIN, rules(2, 60, 50, 60).policies)),
    )
    assert scale_down_limit(5, (), (), spec.scale_down_rules, 0.0) == 3


def test_disabled_select_policy_never_scales_that_way():
    behavior = Behavior(ScalingRules(0, SelectPolicy.DISABLED), None)
    spec = spec_with([PER_POD_ONE], minimum=1, maximum=100, behavior=behavior)
    assert step(spec, HpaState(), 0.0, 5, [50.0]).replicas == 5
    assert step(spec, HpaState(recommendations=()), 0.0, 5, [2.0]).replicas == 2


@pytest.mark.parametrize(
    ("name", "previous", "policies", "expected_change", "stored"),
    [
        # TestStoreScaleEvents (the cases with behavior); stored is (change, outdated) after storing 5
        ("empty entries with two-policy-behavior", [], rules(10, 60, 100, 60), 0, [(5, False)]),
        (
            "one outdated entry to be replaced with behavior",
            [(7, -61)],
            rules(10, 60, 100, 60),
            0,
            [(5, False)],
        ),
        (
            "one actual entry to be not touched with behavior",
            [(7, -58)],
            rules(10, 60, 100, 60),
            7,
            [(7, False), (5, False)],
        ),
        (
            "two entries, one of them to be replaced",
            [(7, -61), (6, -59)],
            rules(10, 60),
            6,
            [(5, False), (6, False)],
        ),
        (
            "replace one entry, use policies with different periods",
            [(8, -29), (6, -59), (7, -61), (9, -61)],
            rules(10, 60, 100, 30),
            14,
            [(8, False), (6, False), (7, True), (5, False)],
        ),
        (
            "two entries, both actual",
            [(7, -58), (6, -59)],
            rules(10, 120, 100, 30),
            13,
            [(7, False), (6, False), (5, False)],
        ),
    ],
)
def test_store_scale_events(name, previous, policies, expected_change, stored):
    events = tuple(ScaleEvent(change, t) for change, t in previous)
    assert sum(e.change for e in events if e.time > -60) == expected_change, name
    for behavior, before, after in ((Behavior(policies, None), 10, 15), (Behavior(None, policies), 10, 5)):
        spec = spec_with([PER_POD_ONE], minimum=1, maximum=100, behavior=behavior)
        state = HpaState((), events, events)
        new = record_scale_event(spec, state, 0.0, before, after)
        kept = new.scale_up_events if after > before else new.scale_down_events
        assert [(e.change, e.outdated) for e in kept] == stored, name


def test_no_behavior_stores_no_scale_events():
    # TestStoreScaleEvents "empty entries with default behavior"
    spec = spec_with([PER_POD_ONE], minimum=1, maximum=100)
    assert record_scale_event(spec, HpaState(), 0.0, 10, 15) == HpaState()


# --- the downscale window, end to end -----------------------------------------------------------


def run(spec: HpaSpec, start: int, readings, period: float = 15.0) -> list[tuple[float, int]]:
    """Drive the model like the controller does; returns (time, replicas) after each sync."""
    state, replicas, out = HpaState(), start, []
    for index, reading in enumerate(readings):
        now = index * period
        result = step(spec, state, now, replicas, [reading])
        state, replicas = result.state, result.replicas
        out.append((now, replicas))
    return out


def first_change(history: list[tuple[float, int]], start: int) -> float:
    return next(t for t, r in history if r != start)


def test_without_behavior_a_drop_waits_for_the_whole_window():
    # behavior absent: the max recommendation over 300 s, a sample exactly 300 s old still counting;
    # the first sync itself records the current count, so even a fresh HPA waits.
    spec = spec_with([PER_POD_ONE], minimum=1, maximum=20)
    history = run(spec, 10, [2.0] * 40)
    assert first_change(history, 10) == 315.0
    assert dict(history)[315.0] == 2


def test_with_default_behavior_a_drop_waits_for_the_window():
    # behavior present with defaults: a sample counts only while strictly newer than now - 300 s.
    spec = spec_with([PER_POD_ONE], minimum=1, maximum=20, behavior=Behavior())
    history = run(spec, 10, [2.0] * 40)
    assert first_change(history, 10) == 300.0


def test_scale_down_window_zero_acts_at_once():
    spec = spec_with([PER_POD_ONE], minimum=1, maximum=20, behavior=Behavior(None, ScalingRules(0)))
    assert run(spec, 10, [2.0])[0] == (0.0, 2)


def test_controller_restart_forgets_and_waits_again():
    spec = spec_with([PER_POD_ONE], minimum=1, maximum=20, behavior=Behavior())
    state = step(spec, HpaState(), 0.0, 10, [10.0]).state
    assert step(spec, state, 400.0, 10, [2.0]).replicas == 2  # history older than the window
    assert step(spec, HpaState(), 400.0, 10, [2.0]).replicas == 10  # restarted controller: holds


def test_window_and_period_boundaries_are_exclusive_with_behavior():
    # stabilizeRecommendationWithBehaviors counts a sample when it is After(now - window), and
    # getReplicasChangePerPeriod an event when it is After(now - period): exactly on the cutoff is out.
    up = ScalingRules(60, SelectPolicy.MAX, (HpaScalingPolicy(PolicyType.PODS, 2, 60),))
    spec = spec_with([PER_POD_ONE], minimum=1, maximum=100, behavior=Behavior(up, ScalingRules(0)))
    assert step(spec, HpaState((Recommendation(3, -60.0),)), 0.0, 3, [10.0]).replicas == 5
    assert step(spec, HpaState((Recommendation(3, -59.0),)), 0.0, 3, [10.0]).replicas == 3
    assert step(spec, HpaState((), (ScaleEvent(2, -60.0),)), 0.0, 3, [10.0]).replicas == 5
    assert step(spec, HpaState((), (ScaleEvent(2, -59.0),)), 0.0, 3, [10.0]).replicas == 3


# --- invariants ---------------------------------------------------------------------------------

readings = st.lists(
    st.one_of(
        st.floats(min_value=0, max_value=200, allow_nan=False).map(lambda v: round(v, 3)), st.just(None)
    ),
    min_size=1,
    max_size=60,
)


@st.composite
def specs(draw) -> HpaSpec:
    maximum = draw(st.integers(1, 60))
    minimum = draw(st.integers(1, maximum))
    target = draw(st.sampled_from([TargetType.AVERAGE_VALUE, TargetType.VALUE]))
    behavior = None
    if draw(st.booleans()):
        up = ScalingRules(
            draw(st.sampled_from([None, 0, 30, 120])),
            draw(st.sampled_from([None, SelectPolicy.MAX, SelectPolicy.MIN])),
            draw(
                st.sampled_from(
                    [
                        None,
                        rules(4, 15, 100, 15).policies,
                        rules(2, 60).policies,
                        rules(0, 0, 50, 30).policies,
                    ]
                )
            ),
        )
        down = ScalingRules(
            draw(st.sampled_from([None, 0, 60, 300])),
            draw(st.sampled_from([None, SelectPolicy.MAX, SelectPolicy.MIN])),
            draw(
                st.sampled_from(
                    [
                        None,
                        rules(0, 0, 100, 15).policies,
                        rules(1, 60).policies,
                        rules(3, 30, 20, 60).policies,
                    ]
                )
            ),
        )
        behavior = Behavior(up, down)
    tolerance = draw(st.sampled_from([0.1, 0.0, 0.05]))
    return HpaSpec(
        (ExternalMetric(target, draw(st.sampled_from([1, 0.5, 3]))),), maximum, minimum, behavior, tolerance
    )


def drive(spec: HpaSpec, start: int, values):
    state, replicas = HpaState(), start
    for index, value in enumerate(values):
        now = index * 15.0
        reading = MetricError() if value is None else value
        result = step(spec, state, now, replicas, [reading])
        yield now, replicas, result
        state, replicas = result.state, result.replicas


@settings(max_examples=150, deadline=None)
@given(spec=specs(), start=st.integers(1, 60), values=readings)
def test_replicas_stay_within_bounds_and_errors_freeze(spec, start, values):
    for _, before, result in drive(spec, start, values):
        if before == 0 and spec.min_replicas != 0:
            assert result.replicas == 0
        elif result.reason == "FailedGetExternalMetric":
            assert result.replicas == before
        else:
            assert spec.min_replicas <= result.replicas <= spec.max_replicas


@settings(max_examples=150, deadline=None)
@given(spec=specs(), start=st.integers(1, 60), values=readings)
def test_a_scale_down_never_goes_below_a_recommendation_inside_the_window(spec, start, values):
    window = spec.scale_down_rules.stabilization_window_seconds
    # The first sync records the starting count as if it had been recommended then.
    proposals: list[tuple[float, int]] = [(0.0, start)]
    for now, before, result in drive(spec, start, values):
        if result.proposal is None:
            continue
        if spec.behavior is None:
            recent = [p for t, p in proposals if t >= now - window]
        else:
            recent = [p for t, p in proposals if t > now - window]
        recent.append(max(0, result.proposal))
        proposals.append((now, max(0, result.proposal)))
        if result.rescaled and spec.min_replicas <= result.replicas < before <= spec.max_replicas:
            assert result.replicas >= min(before, max(recent)), (now, recent)


@settings(max_examples=150, deadline=None)
@given(spec=specs(), start=st.integers(1, 60), values=readings)
def test_scale_up_respects_the_rate_limits(spec, start, values):
    changes: list[tuple[float, int]] = []
    for now, before, result in drive(spec, start, values):
        if not result.rescaled or before < spec.min_replicas or before > spec.max_replicas:
            continue
        if result.replicas > before:
            if spec.behavior is None:
                assert result.replicas <= max(2 * before, 4)
            else:
                rules_up = spec.scale_up_rules
                allowed = []
                for policy in rules_up.policies:
                    net = sum(c for t, c in changes if t > now - policy.period_seconds)
                    start_count = before - net
                    allowed.append(
                        start_count + policy.value
                        if policy.type is PolicyType.PODS
                        else math.ceil(float(start_count) * (1 + policy.value / 100))
                    )
                bound = min(allowed) if rules_up.select_policy is SelectPolicy.MIN else max(allowed)
                assert result.replicas <= max(bound, before)
        changes.append((now, result.replicas - before))
