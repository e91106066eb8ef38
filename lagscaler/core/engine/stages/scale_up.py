"""Stage 4, scale up early and fast: the count to grow to, and whether to grow now."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lagscaler.core.engine.params import PolicyArrays
from lagscaler.core.engine.sizing import (
    BoolArray,
    IntArray,
    aligned_at_most,
    aligned_replicas,
    clamp,
    effective_replicas,
    filled,
    moved_fraction,
)
from lagscaler.core.engine.stages.capacity import CapacityEstimate
from lagscaler.core.engine.stages.need import HOT_FRACTION, TARGET_AGE_FRACTION, Need
from lagscaler.core.engine.stages.prepare import Inputs
from lagscaler.core.engine.stages.windows import Windows, window
from lagscaler.core.engine.state import EngineState


@dataclass(frozen=True, slots=True)
class ScaleUpPlan:
    """A scale-up's size and trigger; counts ``(W,)``."""

    need: IntArray  # the count the need asks for, with catch-up headroom when moved partitions come back late
    window: Windows  # up-stabilization: the smallest recommendation over the window
    ineffective_now: BoolArray  # the last scale-up was ineffective and its hold is not over
    recommended: IntArray  # the count to grow to: stabilized, and held at ``replicas`` while ineffective
    target: IntArray  # ``recommended`` within the step limit, on an aligned count
    step_limited: BoolArray  # the step limit cut the move short
    hot: BoolArray  # the current count would run past halfway between target utilisation and saturation
    behind: BoolArray  # a backlog the current count drains later than a scale-up would
    scaling_up: BoolArray  # scale up now


def plan_scale_up(
    params: PolicyArrays,
    state: EngineState,
    *,
    inputs: Inputs,
    capacity: CapacityEstimate,
    need: Need,
) -> ScaleUpPlan:
    """Stage 4 (see :mod:`lagscaler.core.engine.core`)."""
    up_need = _catch_up_need(params, inputs=inputs, capacity=capacity, need=need)
    stabilized = _stabilized(params, state, inputs=inputs, up_need=up_need)
    ineffective_now = state.ineffective_until > inputs.now
    recommended = np.where(
        ineffective_now, np.minimum(stabilized.aggregate_count, inputs.replicas), stabilized.aggregate_count
    )
    target, step_limited = _step_limited(params, inputs=inputs, recommended=recommended)
    replicas, partitions = inputs.replicas, inputs.partitions
    per_replica, arrival = capacity.per_replica, inputs.arrival
    u = params.target_utilization
    # A dead band against flapping between aligned counts: scale up on arrival only once the current
    # count would run hotter than halfway between the target utilisation and saturation.
    capacity_soon = per_replica * effective_replicas(replicas, partitions)
    hot = need.forecast > capacity_soon * (u + (1.0 - u) * HOT_FRACTION)
    # Draining faster only helps if the current count would not be done before new capacity lands
    # (start-up + stall + restore), counting the backlog the new rebalance itself adds (the whole
    # group stops for the stall, the moved partitions for their restore): otherwise a scale-up only
    # adds a rebalance whose stall and restore look like a backlog again (the cascade this breaks).
    spare = capacity_soon - arrival
    drain_now = np.divide(inputs.lag, spare, out=filled(spare.shape, np.inf), where=spare > 0)
    disruption = params.rebalance_stall + moved_fraction(replicas, recommended) * inputs.restore
    lag_then = inputs.lag + np.maximum(arrival - capacity_soon, 0.0) * inputs.reaction + arrival * disruption
    spare_then = per_replica * effective_replicas(recommended, partitions) - arrival
    drain_then = inputs.reaction + np.divide(
        lag_then, spare_then, out=filled(spare.shape, np.inf), where=spare_then > 0
    )
    # While the last rebalance settles, its backlog is the rebalance's, not a shortage of capacity.
    behind = capacity.warm & (need.drain_capacity > capacity_soon) & (drain_then < drain_now)
    return ScaleUpPlan(
        need=up_need,
        window=stabilized.window,
        ineffective_now=ineffective_now,
        recommended=recommended,
        target=target,
        step_limited=step_limited,
        hot=hot,
        behind=behind,
        scaling_up=inputs.usable & (hot | behind | (replicas < inputs.lo)) & (recommended > replicas),
    )


def _catch_up_need(
    params: PolicyArrays, *, inputs: Inputs, capacity: CapacityEstimate, need: Need
) -> IntArray:
    """The need, or more when a scale-up made while behind brings moved partitions back past the SLO.

    A scale-up made while behind moves partitions that stop for the stall and their restore on top
    of the backlog they have when the new capacity lands, and come back that far behind. Beyond
    the SLO they must catch up within 1 / TARGET_AGE_FRACTION SLOs (as after a scale-down), or the
    count that just paid for a rebalance drains so slowly that a second scale-up, and a second
    restore, follows. A scale-up with no backlog to drain is sized on arrival alone.
    """
    slo = inputs.slo
    moved_over = np.where(
        need.excess > 0,
        np.maximum(need.age_then + params.rebalance_stall + inputs.restore - slo, 0.0),
        0.0,
    )
    rate_then = np.maximum(need.forecast, inputs.arrival)
    catch_up = np.where(moved_over > 0, rate_then * (1.0 + moved_over * TARGET_AGE_FRACTION / slo), 0.0)
    needed = np.maximum(need.replicas, aligned_replicas(catch_up / capacity.per_replica, inputs.partitions))
    return clamp(needed, inputs.lo, inputs.hi)


@dataclass(frozen=True, slots=True)
class _Stabilized:
    window: Windows
    aggregate_count: IntArray  # (W,) the smallest recommendation over the window, at most ``up_need``


def _stabilized(
    params: PolicyArrays, state: EngineState, *, inputs: Inputs, up_need: IntArray
) -> _Stabilized:
    """Up-stabilization: the smallest recommendation over the window must still ask for more."""
    if not params.any_up_stabilization:
        return _Stabilized(
            Windows(state.up_window_id, state.up_window_value, up_need.astype(np.float64)), up_need
        )
    smallest = window(
        ids=state.up_window_id,
        values=state.up_window_value,
        now=inputs.now,
        length=params.up_stabilization,
        value=up_need.astype(np.float64),
        usable=inputs.usable,
        largest=False,
    )
    return _Stabilized(smallest, np.minimum(smallest.aggregate.astype(np.int64), up_need))


def _step_limited(
    params: PolicyArrays, *, inputs: Inputs, recommended: IntArray
) -> tuple[IntArray, BoolArray]:
    """The target within the step limit, not stopping on a count that adds nothing; and whether cut."""
    replicas = inputs.replicas
    target = np.minimum(recommended, replicas + params.up_room(replicas))
    limited = target < recommended
    aligned = aligned_at_most(target, inputs.partitions)
    return np.where(limited & (aligned > replicas), aligned, target), limited
