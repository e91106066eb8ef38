"""One sync of kube-controller-manager's HPA controller for an HPA with External metrics.

A faithful, synchronous re-statement of ``reconcileAutoscaler`` and what it calls in
``pkg/controller/podautoscaler/horizontal.go`` and ``replica_calculator.go`` (read at v1.35), so
that lagscaler can predict exactly what a stock HPA will do with the metric it serves, and so the
simulator can put every policy's output through the same HPA. Written from the upstream source,
not translated from it; the comments name the upstream function each part stands for.

Semantics worth knowing (all reproduced here):

* External ``AverageValue``: ``ratio = usage / (target * status.replicas)``; outside the tolerance
  the proposal is ``ceil(usage / target)`` and the current count plays no part; inside it the
  proposal is ``status.replicas`` (not ``spec.replicas``).
* External ``Value``: ``ratio = usage / target``; outside the tolerance the proposal is
  ``ceil(ratio * ready pods)``; from zero replicas it is ``ceil(ratio)`` with no tolerance.
* Several metrics: the largest proposal wins. Failed metrics freeze scaling when every metric
  failed, or when the valid ones would scale down; valid ones may still scale up.
* ``spec.replicas == 0`` with ``minReplicas != 0``: autoscaling is disabled.
* No ``behavior``: the proposal is raised to the largest recommendation of the downscale window
  (300 s by default), then limited to ``max(2 * current, 4)`` and clamped to [min, max].
* With ``behavior``: the proposal is bounded by the smallest recommendation in the scale-up window
  and the largest in the scale-down window, then rate-limited by the policies over the scale
  events of their periods, then clamped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from lagscaler.core.hpa.model import (
    MAX_INT32,
    MAX_INT64,
    ExternalMetric,
    HpaSpec,
    HpaState,
    MetricError,
    MetricReading,
    PolicyType,
    Recommendation,
    ResolvedRules,
    ScaleEvent,
    SelectPolicy,
    StepResult,
    TargetType,
    Tolerances,
)
from lagscaler.core.quantity import milli_value

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Proposal:
    replicas: int
    usage_milli: int


def _usage_milli(reading: MetricReading) -> int:
    """Sum the items as milli-values, saturating at int64 as upstream does."""
    if isinstance(reading, MetricError):  # pragma: no cover - callers filter errors first
        raise TypeError("an error has no usage")
    items = (reading,) if isinstance(reading, int | float) else tuple(reading)
    total = 0
    for item in items:
        total += milli_value(item)
    return min(total, MAX_INT64)


def _ratio(numerator: float, denominator: float) -> float:
    """IEEE division as Go does it: x/0 is ±Inf, 0/0 is NaN (and NaN is never within tolerance)."""
    if denominator == 0:
        if numerator == 0:
            return math.nan
        return math.copysign(math.inf, numerator)
    return numerator / denominator


def _ceil_int32(value: float) -> int:
    if math.isnan(value):
        return 0
    if value > MAX_INT32:
        return MAX_INT32
    return math.ceil(value)


def average_value_proposal(
    usage_milli: int, target_milli: int, status_replicas: int, tolerances: Tolerances
) -> int:
    """``GetExternalPerPodMetricReplicas``: the proposal of one External ``AverageValue`` metric."""
    ratio = _ratio(float(usage_milli), float(target_milli) * float(status_replicas))
    if tolerances.within(ratio):
        return status_replicas
    return _ceil_int32(_ratio(float(usage_milli), float(target_milli)))


def value_proposal(
    usage_milli: int,
    target_milli: int,
    spec_replicas: int,
    ready_pods: int,
    tolerances: Tolerances,
) -> int:
    """``GetExternalMetricReplicas`` / ``getUsageRatioReplicaCount`` for one External ``Value`` metric."""
    ratio = _ratio(float(usage_milli), float(target_milli))
    if spec_replicas == 0:
        # Scale from zero: no tolerance, no pods to count.
        return _ceil_int32(ratio)
    if tolerances.within(ratio):
        return spec_replicas
    return _ceil_int32(ratio * float(ready_pods))


def _metric_proposal(
    *,
    metric: ExternalMetric,
    reading: MetricReading,
    spec_replicas: int,
    status_replicas: int,
    ready_pods: int,
    tolerances: Tolerances,
) -> _Proposal | str:
    """One metric's proposal, or the error message that made it invalid."""
    if isinstance(reading, MetricError):
        return f"unable to get external metric {metric.name}: {reading.message}"
    if not isinstance(reading, int | float) and len(reading) == 0:
        return f"unable to get external metric {metric.name}: no metrics returned from external metrics API"
    usage = _usage_milli(reading)
    if metric.target_type is TargetType.AVERAGE_VALUE:
        return _Proposal(
            average_value_proposal(usage, metric.target_milli, status_replicas, tolerances), usage
        )
    # getUsageRatioReplicaCount lists the pods only outside the band: inside it, no pods is no error.
    ratio = _ratio(float(usage), float(metric.target_milli))
    if spec_replicas != 0 and not tolerances.within(ratio) and status_replicas == 0:
        return f"unable to get external metric {metric.name}: no pods returned by selector"
    return _Proposal(value_proposal(usage, metric.target_milli, spec_replicas, ready_pods, tolerances), usage)


# --- stabilization (stabilizeRecommendation / stabilizeRecommendationWithBehaviors) -------------


def _reuse_or_append(entries: tuple[_T, ...], old_index: int | None, new: _T) -> tuple[_T, ...]:
    """Reuse the slot of the last obsolete entry, else append: upstream keeps its logs this short."""
    if old_index is None:
        return (*entries, new)
    return (*entries[:old_index], new, *entries[old_index + 1 :])


def _stabilize_without_behavior(
    recommendations: tuple[Recommendation, ...], window: float, now: float, proposal: int
) -> tuple[int, tuple[Recommendation, ...]]:
    """The largest recommendation not older than the window (a sample exactly at the cutoff counts)."""
    cutoff = now - window
    stabilized = proposal
    old_index: int | None = None
    for index, rec in enumerate(recommendations):
        if rec.time < cutoff:
            old_index = index
        elif rec.replicas > stabilized:
            stabilized = rec.replicas
    return stabilized, _reuse_or_append(recommendations, old_index, Recommendation(proposal, now))


def _stabilize_with_behavior(
    *,
    recommendations: tuple[Recommendation, ...],
    up: ResolvedRules,
    down: ResolvedRules,
    now: float,
    current: int,
    proposal: int,
) -> tuple[int, str, tuple[Recommendation, ...]]:
    """Keep the count between the lowest recent recommendation (up) and the highest (down).

    A sample counts when it is strictly newer than ``now - window``; with a window of 0 only the
    new proposal counts.
    """
    up_cutoff = now - up.stabilization_window_seconds
    down_cutoff = now - down.stabilization_window_seconds
    up_limit = proposal
    down_limit = proposal
    old_index: int | None = None
    for index, rec in enumerate(recommendations):
        if rec.time > up_cutoff:
            up_limit = min(up_limit, rec.replicas)
        if rec.time > down_cutoff:
            down_limit = max(down_limit, rec.replicas)
        if rec.time < up_cutoff and rec.time < down_cutoff:
            old_index = index
    stabilized = current
    stabilized = max(stabilized, up_limit)
    stabilized = min(stabilized, down_limit)
    reason = "ScaleUpStabilized" if proposal >= current else "ScaleDownStabilized"
    stored = _reuse_or_append(recommendations, old_index, Recommendation(proposal, now))
    return stabilized, reason, stored


# --- rate limits (convertDesiredReplicasWithRules / convertDesiredReplicasWithBehaviorRate) -----


def _change_in_period(events: tuple[ScaleEvent, ...], period: int, now: float) -> int:
    cutoff = now - period
    return sum(event.change for event in events if event.time > cutoff)


def _period_start(
    current: int,
    up_events: tuple[ScaleEvent, ...],
    down_events: tuple[ScaleEvent, ...],
    period: int,
    now: float,
) -> int:
    """The replica count at the start of a policy's period: what the rate limit is measured from."""
    return current - _change_in_period(up_events, period, now) + _change_in_period(down_events, period, now)


def scale_up_limit(
    current: int,
    up_events: tuple[ScaleEvent, ...],
    down_events: tuple[ScaleEvent, ...],
    rules: ResolvedRules,
    now: float,
) -> int:
    """``calculateScaleUpLimitWithScalingRules``: the most replicas the policies allow now."""
    if rules.select_policy is SelectPolicy.DISABLED:
        return current
    proposals = []
    for policy in rules.policies:
        start = _period_start(current, up_events, down_events, policy.period_seconds, now)
        if policy.type is PolicyType.PODS:
            proposals.append(start + policy.value)
        else:
            # Rounded up, or a small percentage of a small count would never add a pod.
            proposals.append(math.ceil(float(start) * (1 + float(policy.value) / 100)))
    return min(proposals) if rules.select_policy is SelectPolicy.MIN else max(proposals)


def scale_down_limit(
    current: int,
    up_events: tuple[ScaleEvent, ...],
    down_events: tuple[ScaleEvent, ...],
    rules: ResolvedRules,
    now: float,
) -> int:
    """``calculateScaleDownLimitWithBehaviors``: the fewest replicas the policies allow now."""
    if rules.select_policy is SelectPolicy.DISABLED:
        return current
    proposals = []
    for policy in rules.policies:
        start = _period_start(current, up_events, down_events, policy.period_seconds, now)
        if policy.type is PolicyType.PODS:
            proposals.append(start - policy.value)
        else:
            # Truncated towards zero (Go's int32 conversion), so the count that stays is rounded down.
            proposals.append(math.trunc(float(start) * (1 - float(policy.value) / 100)))
    return max(proposals) if rules.select_policy is SelectPolicy.MIN else min(proposals)


def legacy_scale_up_limit(current: int) -> int:
    """``calculateScaleUpLimit``: without ``behavior`` one sync may at most double, or reach 4."""
    return max(2 * current, 4)


def _limit_without_behavior(current: int, desired: int, minimum: int, maximum: int) -> tuple[int, str]:
    """``convertDesiredReplicasWithRules``."""
    limit = legacy_scale_up_limit(current)
    if maximum > limit:
        allowed, reason = limit, "ScaleUpLimit"
    else:
        allowed, reason = maximum, "TooManyReplicas"
    if desired < minimum:
        return minimum, "TooFewReplicas"
    if desired > allowed:
        return allowed, reason
    return desired, "DesiredWithinRange"


def _limit_with_behavior(
    spec: HpaSpec, state: HpaState, now: float, current: int, desired: int
) -> tuple[int, str]:
    """``convertDesiredReplicasWithBehaviorRate``."""
    if desired > current:
        limit = scale_up_limit(
            current, state.scale_up_events, state.scale_down_events, spec.scale_up_rules, now
        )
        limit = max(limit, current)  # recent scale-ups used the budget: hold, never shrink
        if spec.max_replicas > limit:
            allowed, reason = limit, "ScaleUpLimit"
        else:
            allowed, reason = spec.max_replicas, "TooManyReplicas"
        if desired > allowed:
            return allowed, reason
    elif desired < current:
        limit = scale_down_limit(
            current, state.scale_up_events, state.scale_down_events, spec.scale_down_rules, now
        )
        limit = min(limit, current)
        if spec.min_replicas < limit:
            allowed, reason = limit, "ScaleDownLimit"
        else:
            allowed, reason = spec.min_replicas, "TooFewReplicas"
        if desired < allowed:
            return allowed, reason
    return desired, "DesiredWithinRange"


def record_scale_event(spec: HpaSpec, state: HpaState, now: float, before: int, after: int) -> HpaState:
    """``storeScaleEvent``: only HPAs with ``behavior`` keep events (nothing else reads them)."""
    if spec.behavior is None:
        return state
    up = after > before
    rules = spec.scale_up_rules if up else spec.scale_down_rules
    events = state.scale_up_events if up else state.scale_down_events
    cutoff = now - rules.longest_period_seconds
    marked = tuple(ScaleEvent(e.change, e.time, True) if e.time < cutoff else e for e in events)
    old_index = None
    for index, event in enumerate(marked):
        if event.outdated:
            old_index = index
    stored = _reuse_or_append(marked, old_index, ScaleEvent(abs(after - before), now))
    if up:
        return HpaState(state.recommendations, stored, state.scale_down_events)
    return HpaState(state.recommendations, state.scale_up_events, stored)


# --- one sync ----------------------------------------------------------------------------------


def step(
    spec: HpaSpec,
    state: HpaState,
    now: float,
    current_replicas: int,
    metrics: Sequence[MetricReading],
    *,
    status_replicas: int | None = None,
    ready_pods: int | None = None,
) -> StepResult:
    """Run one HPA sync at time ``now``.

    ``current_replicas`` is the scale target's ``spec.replicas``; ``status_replicas`` its
    ``status.replicas`` (every pod, ready or not; defaults to ``current_replicas``), which is what
    ``AverageValue`` divides by; ``ready_pods`` the running and ready pods (defaults to
    ``status_replicas``), which ``Value`` multiplies by. ``metrics`` holds one reading per entry of
    ``spec.metrics``, in order. Call it every sync period (15 s by default) with the state it
    returned last time.
    """
    if len(metrics) != len(spec.metrics):
        raise ValueError(f"expected {len(spec.metrics)} metric readings, got {len(metrics)}")
    if current_replicas < 0:
        raise ValueError(f"current replicas must be >= 0, got {current_replicas}")
    status = current_replicas if status_replicas is None else status_replicas
    ready = status if ready_pods is None else ready_pods
    if state.recommendations is None:  # recordInitialRecommendation
        state = HpaState(
            (Recommendation(current_replicas, now),), state.scale_up_events, state.scale_down_events
        )

    if current_replicas == 0 and spec.min_replicas != 0:
        return StepResult(state, current_replicas, rescaled=False, reason="ScalingDisabled")
    proposal: int | None = None
    errors: tuple[str, ...] = ()
    if current_replicas > spec.max_replicas:
        desired, reason = spec.max_replicas, "TooManyReplicas"
    elif current_replicas < spec.min_replicas:
        desired, reason = spec.min_replicas, "TooFewReplicas"
    else:
        proposal, errors = _replicas_for_metrics(
            spec, metrics, spec_replicas=current_replicas, status_replicas=status, ready_pods=ready
        )
        if proposal is None or (errors and proposal < current_replicas):
            # computeReplicasForMetrics: every metric failed, or the valid ones say scale down.
            return StepResult(state, current_replicas, False, "FailedGetExternalMetric", metric_errors=errors)
        desired, reason, recommendations = _normalize_desired_replicas(
            spec, state, now, current_replicas, max(0, proposal)
        )
        state = HpaState(recommendations, state.scale_up_events, state.scale_down_events)

    if desired == current_replicas:
        return StepResult(state, current_replicas, False, reason, proposal, errors)
    state = record_scale_event(spec, state, now, current_replicas, desired)
    return StepResult(state, desired, True, reason, proposal, errors)


def _replicas_for_metrics(
    spec: HpaSpec,
    metrics: Sequence[MetricReading],
    *,
    spec_replicas: int,
    status_replicas: int,
    ready_pods: int,
) -> tuple[int | None, tuple[str, ...]]:
    """``computeReplicasForMetrics``: the largest valid proposal (``None`` if none) and the errors.

    The largest wins so that any one metric under pressure can scale the workload up; the errors
    are returned rather than raised because the caller decides whether they freeze scaling.
    """
    best: int | None = None
    errors: list[str] = []
    for metric, reading in zip(spec.metrics, metrics, strict=True):
        outcome = _metric_proposal(
            metric=metric,
            reading=reading,
            spec_replicas=spec_replicas,
            status_replicas=status_replicas,
            ready_pods=ready_pods,
            tolerances=spec.tolerances,
        )
        if isinstance(outcome, str):
            errors.append(outcome)
        elif best is None or outcome.replicas > best:
            best = outcome.replicas
    return best, tuple(errors)


def _normalize_desired_replicas(
    spec: HpaSpec, state: HpaState, now: float, current: int, proposal: int
) -> tuple[int, str, tuple[Recommendation, ...]]:
    """``normalizeDesiredReplicas`` / ``normalizeDesiredReplicasWithBehaviors``.

    Stabilizes the proposal, then rate-limits and clamps it, and names the step that changed it
    (the limit first, then stabilization), because that is the condition reason the controller
    reports. Also returns the recommendation log with this proposal recorded.
    """
    recommendations = state.recommendations or ()
    if spec.behavior is None:
        stabilized, recommendations = _stabilize_without_behavior(
            recommendations, spec.downscale_stabilization_seconds, now, proposal
        )
        stabilized_reason = "ScaleDownStabilized"
        desired, limit_reason = _limit_without_behavior(
            current, stabilized, spec.min_replicas, spec.max_replicas
        )
    else:
        stabilized, stabilized_reason, recommendations = _stabilize_with_behavior(
            recommendations=recommendations,
            up=spec.scale_up_rules,
            down=spec.scale_down_rules,
            now=now,
            current=current,
            proposal=proposal,
        )
        desired, limit_reason = _limit_with_behavior(spec, state, now, current, stabilized)
    if desired != stabilized:
        return desired, limit_reason, recommendations
    if stabilized != proposal:
        return desired, stabilized_reason, recommendations
    return desired, "DesiredWithinRange", recommendations
