"""The value lagscaler serves for ``lagscaler_desired_replicas``, so a stock HPA lands on the engine's count.

The encoding
------------
One External metric, ``lagscaler_desired_replicas{lagscaler.io/workload=<policy name>}``, one
item, with an ``AverageValue`` target of ``1`` (:data:`TARGET_PER_REPLICA`). For ``AverageValue``
the controller proposes ``ceil(value / target)`` whenever ``value / (target * status.replicas)``
leaves the tolerance band, whatever the current count is; inside the band it keeps
``status.replicas``. So serving ``D`` means "``D`` replicas", and any value in ``(D - 1, D]`` means
the same thing: lagscaler picks, inside that interval, the end that gets out of the band.

Why not ``Value``: its proposal is ``ceil(ratio * ready pods)``, so the outcome depends on how many
pods happen to be ready (starting pods are not), which lagscaler does not control.

What is reachable in one sync, from ``S = status.replicas`` with tolerances ``u`` (up), ``d`` (down)
--------------------------------------------------------------------------------------------------
* up to any ``D > (1 + u) * S``: serve ``D``;
* down to any ``D`` with ``(D - 1 + 0.001) < (1 - d) * S``: serve ``D - 0.999`` (still ``ceil`` = D);
* to ``maxReplicas`` from anywhere below it, and to ``minReplicas`` from anywhere above it: serve a
  value far outside the band and let the HPA's own clamp stop exactly there;
* nothing else: ``D`` in ``((1 - d) * S + 1 - 0.001, (1 + u) * S]`` is inside the dead band.

With the default 10 % band that means: every step up from ``S <= 9``, every step down from
``S <= 19``, and nothing closer than 10 % above ``S >= 10`` -- 20 -> 21 and 20 -> 22 cannot happen
(21/20 and 22/20 are both <= 1.1), 20 -> 23 can. The P-1 stall KEDA users hit (kedacore/keda
issues 2908 and 4791: a metric capped at ``P`` per-replica units leaves ``P - 1`` replicas because
``P/(P-1) <= 1.1`` for ``P >= 11``) does not happen here as long as the HPA's ``maxReplicas`` is
the cap: lagscaler then serves a value beyond the band and the clamp lands on ``P`` exactly.

The fix for the dead band is per-HPA tolerance: ``behavior.scaleUp.tolerance: 0`` and
``behavior.scaleDown.tolerance: 0`` (feature gate ``HPAConfigurableTolerance``, alpha in 1.33, beta
and on by default in 1.35). With a zero band every count is reachable and lagscaler's value is
exact; it is safe because the served value is the decision itself, not a noisy measurement (the
steady-state value is exactly ``S``, a ratio of exactly 1.0).

When the exact count is out of reach
------------------------------------
* Scale up: overshoot to the smallest reachable count above ``D`` (at most ``floor((1+u)*S) + 1``,
  never above ``maxReplicas``). Staying at ``S`` would leave the workload short of the capacity the
  SLO needs, and lag grows while it is short; the overshoot costs at most ~10 % of ``S`` plus one
  replica, and the engine may trim it later when a scale-down pays for its rebalance.
* Scale down: hold at ``S``. Undershooting below ``D`` would trade SLO for cost; holding costs
  less than 10 % extra, and a scale-down that saves under 10 % rarely pays for its rebalance anyway.

The engine is expected to pass its own decision, already gated (it answers ``S`` when a scale-down
is not worth its rebalance); this module only maps that decision onto what the HPA can do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lagscaler.core.hpa.controller import average_value_proposal
from lagscaler.core.hpa.model import HpaSpec, TargetType

TARGET_PER_REPLICA = 1  # the HPA's AverageValue target: one unit of the metric per replica


@dataclass(frozen=True, slots=True)
class MetricPlan:
    """What to serve for one workload this cycle, and where it will take the HPA.

    ``milli`` is the value in thousandths: serve it as the quantity ``f"{milli}m"`` (or any exact
    rendering of ``milli / 1000``, never a float's binary expansion); ``value`` is the same as a
    float. ``replicas`` is where one HPA sync moves the target from ``current`` (ignoring
    stabilization windows and rate limits, which lagscaler's manifest turns off). ``exact`` says
    whether that is the requested count; ``reason`` says why not.
    """

    milli: int
    replicas: int
    exact: bool
    reason: str

    @property
    def value(self) -> float:
        return self.milli / 1000


def _target_milli(spec: HpaSpec) -> int:
    if len(spec.metrics) != 1 or spec.metrics[0].target_type is not TargetType.AVERAGE_VALUE:
        raise ValueError("lagscaler's metric design needs an HPA with its one External AverageValue metric")
    return spec.metrics[0].target_milli


def landing(spec: HpaSpec, current: int, milli: int) -> int:
    """Where one HPA sync moves the target from ``current`` replicas when ``milli`` is served.

    Counts the replica calculator and the ``[minReplicas, maxReplicas]`` clamp; stabilization and
    rate limits are left out on purpose (see :class:`MetricPlan`).
    """
    if current == 0 and spec.min_replicas != 0:
        return 0  # autoscaling disabled: the HPA leaves a target at zero alone
    if current > spec.max_replicas:
        return spec.max_replicas
    if current < spec.min_replicas:
        return spec.min_replicas
    proposal = average_value_proposal(milli, _target_milli(spec), current, spec.tolerances)
    return min(spec.max_replicas, max(spec.min_replicas, proposal))


def plan_served_metric(desired: int, current: int | None, spec: HpaSpec) -> MetricPlan:
    """Choose the value to serve so the HPA goes from ``current`` to ``desired`` replicas, or as close
    as it can without ever landing below ``desired``.

    ``current`` is the scale target's ``status.replicas`` (what the HPA divides by); when it is not
    known, the plain count is served, which is exact whenever the step leaves the dead band.
    """
    target = _target_milli(spec)
    wanted = min(spec.max_replicas, max(spec.min_replicas, desired))
    if current is None:
        return MetricPlan(wanted * target, wanted, True, "current replicas unknown: serving the count")
    if current < 0:
        raise ValueError(f"current replicas must be >= 0, got {current}")
    if wanted == current:
        return MetricPlan(current * target, current, True, "steady")
    if current == 0 and spec.min_replicas != 0:
        return MetricPlan(
            wanted * target,
            0,
            False,
            f"the target is at 0 replicas and minReplicas is {spec.min_replicas}: the HPA does not act",
        )

    up = wanted > current
    candidates = [wanted * target if up else max(0, (wanted - 1) * target + 1)]
    if wanted == spec.min_replicas:
        candidates.append(0)  # far below the band; the minReplicas clamp stops on the count
    if up:
        # The smallest count strictly beyond the band; past maxReplicas the clamp stops on max.
        beyond = max(wanted, math.floor((1 + spec.tolerances.scale_up) * current) + 1)
        candidates.extend((beyond * target, (beyond + 1) * target))
    outcomes = [(landing(spec, current, milli), milli) for milli in candidates]
    exact = [milli for replicas, milli in outcomes if replicas == wanted]
    if exact:
        return MetricPlan(exact[0], wanted, True, "exact")
    if not up:
        return MetricPlan(
            current * target,
            current,
            False,
            f"dead band: {wanted} is within the HPA's tolerance below {current}; holding {current}",
        )
    above = sorted((replicas, milli) for replicas, milli in outcomes if replicas > wanted)
    if not above:
        return MetricPlan(current * target, current, False, f"the HPA cannot scale above {current} from here")
    replicas, milli = above[0]
    return MetricPlan(
        milli,
        replicas,
        False,
        f"dead band: {wanted} is within the HPA's tolerance above {current}; overshooting to {replicas}",
    )


def served_value(desired: int, current: int | None, spec: HpaSpec) -> float:
    """The value to serve for ``lagscaler_desired_replicas`` (see :func:`plan_served_metric`)."""
    return plan_served_metric(desired, current, spec).value


def reachable(desired: int, current: int, spec: HpaSpec) -> bool:
    """Whether one HPA sync can move the target from ``current`` to exactly ``desired`` replicas."""
    return plan_served_metric(desired, current, spec).exact
