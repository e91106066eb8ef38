"""What a move costs: how long a moved partition is down, and the price a scale-down must beat.

In mode hpa a move is a rebalance: the group stalls and moved partitions restore on the consuming
path. In mode handover (docs/handover.md) the new generation starts, joins its own group and restores
its state while the serving one keeps consuming, so a move costs both generations' replicas for that
warm-up plus the cut-over pause (``params.rebalance_stall`` holds it for those workloads).

Used by the scale-down stage (:mod:`.scale_down`) and reported in every decision; public through
:mod:`lagscaler.core.engine` because the service and the simulator explain decisions with them.
"""

from __future__ import annotations

import numpy as np

from lagscaler.core.engine.params import PolicyArrays
from lagscaler.core.engine.sizing import (
    BoolArray,
    FloatArray,
    IntArray,
    effective_replicas,
    filled,
    finite,
    moved_fraction,
)


def restore_seconds(params: PolicyArrays, partitions: IntArray, measured_state: FloatArray) -> FloatArray:
    """How long one moved partition of a stateful workload is unavailable: its state share / restore rate."""
    state = np.where(np.isfinite(measured_state), measured_state, params.state_bytes)
    per_partition = np.divide(state, partitions, out=np.zeros(state.shape), where=partitions > 0)
    seconds = finite(per_partition / params.restore_rate, 0.0)
    return np.where(params.stateful, np.maximum(seconds, 0.0), 0.0)


def handover_warmup(params: PolicyArrays, restore: FloatArray) -> FloatArray:
    """Seconds a handover's new generation spends, after start-up, before it can serve: joining its own
    group (the policy's rebalance stall) and restoring its partitions' state, each partition at the
    policy's restore rate, all in parallel as in a rebalance; 0 in mode hpa."""
    warmup: FloatArray = np.where(params.handover, params.group_join + restore, 0.0)
    return warmup


def move_price(
    params: PolicyArrays,
    before: IntArray,
    after: IntArray,
    *,
    restore: FloatArray,
    warmup: FloatArray,
    returns: BoolArray,
) -> FloatArray:
    """The replica-seconds a move costs: :func:`rebalance_price` of what stops on the consuming path
    (``restore`` is 0 in mode handover, the stall its cut-over pause), plus, in mode handover, the new
    generation's ``after`` replicas paid for while they start and warm up beside the serving ones."""
    price = rebalance_price(params, before, after, restore, returns)
    double = after.astype(np.float64) * (params.startup + warmup)
    extra = np.where(params.handover, np.where(returns, 2.0 * double, double), 0.0)
    total: FloatArray = price + extra
    return total


def rebalance_price(
    params: PolicyArrays, before: IntArray, after: IntArray, restore: FloatArray, returns: BoolArray
) -> FloatArray:
    """The replica-seconds a move from ``before`` to ``after`` replicas costs, to weigh against its savings.

    Throughput the move destroys: the whole group stops for the stall, and the moved fraction of
    the partitions stays down for the restore (``moved fraction × state / restore rate`` of
    partition-time). When the restore is longer than the SLO, every second beyond it is a second
    of SLO violation on the moved partitions; it is priced at the group's size, i.e. as if the
    whole group had been stopped for that long. ``returns`` marks moves the forecast says will
    have to be undone within the horizon: they pay the move back as well.
    """
    replicas = np.maximum(np.maximum(before, after), 1).astype(np.float64)
    moved = moved_fraction(before, after)
    lost = replicas * (params.rebalance_stall + moved * restore)
    breach = np.maximum(params.rebalance_stall + restore - params.max_lag_seconds, 0.0)
    price = lost + replicas * breach
    return np.where(returns, 2.0 * price, price)


def breach_seconds(
    params: PolicyArrays,
    replicas: IntArray,
    *,
    partitions: IntArray,
    arrival: FloatArray,
    capacity: FloatArray,
    restore: FloatArray,
) -> FloatArray:
    """Seconds over the SLO one rebalance to ``replicas`` costs by itself (0 when stall + restore fit in it).

    Moved partitions stop for the stall and the restore, so their lag reaches ``stall + restore``
    seconds; beyond the SLO that is a miss, and it lasts until the new owner has caught up back
    under the SLO with the headroom ``replicas`` leave over the arrival rate.
    """
    over = np.maximum(params.rebalance_stall + restore - params.max_lag_seconds, 0.0)
    supply = capacity * effective_replicas(replicas, partitions)
    headroom = np.divide(supply, arrival, out=filled(supply.shape, np.inf), where=arrival > 0) - 1.0
    catch_up = np.divide(over, np.maximum(headroom, 0.05))
    return over + catch_up
