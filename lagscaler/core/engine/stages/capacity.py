"""Stage 2, capacity: the true per-replica rate, learned from busy members after each rebalance settles."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lagscaler.core.engine.params import PolicyArrays
from lagscaler.core.engine.sizing import BoolArray, FloatArray, effective_replicas
from lagscaler.core.engine.stages.prepare import Inputs
from lagscaler.core.engine.state import EngineState

CAPACITY_MEMORY_FACTOR = 4.0
"""Evidence is capped at this many prior weights, so the estimate keeps tracking a changing true rate."""


@dataclass(frozen=True, slots=True)
class CapacityEstimate:
    """What one replica can do, and whether the group has settled since it last changed; ``(W,)``."""

    changed: BoolArray  # membership differs from the last usable observation
    membership_changed_at: FloatArray  # s, Unix time of the last membership change
    warmup: FloatArray  # s after a change that belong to the rebalance: stall + restore + one sync
    warm: BoolArray  # the warm-up after the last change is over
    learned: FloatArray  # messages/s per replica, the evidence-weighted estimate (kept in the state)
    learned_weight: FloatArray  # s of evidence behind it, capped (kept in the state)
    per_replica: (
        FloatArray  # messages/s per replica the decision uses: learned, or the prior when not learning
    )
    of_members: FloatArray  # messages/s the current members deliver on these partitions


def estimate_capacity(params: PolicyArrays, state: EngineState, *, inputs: Inputs) -> CapacityEstimate:
    """Stage 2 (see :mod:`lagscaler.core.engine.core`): DS2's busy-member rate, warm-up ignored."""
    members, now = inputs.members, inputs.now
    changed = (members != state.members_seen) & ~inputs.first
    membership_changed_at = np.where(
        changed | (inputs.first & inputs.usable), now, state.membership_changed_at
    )
    warmup = params.rebalance_stall + inputs.restore + params.sync_period
    warm = now - membership_changed_at >= warmup
    busy = inputs.usable & warm & (inputs.busy_members > 0) & (inputs.busy_rate > 0)
    sample = np.divide(inputs.busy_rate, np.maximum(inputs.busy_members, 1))
    evidence = np.where(busy & params.capacity_learn, inputs.dt, 0.0)
    total = state.capacity_weight + evidence
    learned = np.where(
        evidence > 0, (state.capacity * state.capacity_weight + sample * evidence) / total, state.capacity
    )
    per_replica = np.maximum(np.where(params.capacity_learn, learned, params.capacity_prior), 1e-9)
    return CapacityEstimate(
        changed=changed,
        membership_changed_at=membership_changed_at,
        warmup=warmup,
        warm=warm,
        learned=learned,
        learned_weight=np.minimum(total, CAPACITY_MEMORY_FACTOR * params.capacity_prior_weight),
        per_replica=per_replica,
        of_members=per_replica * effective_replicas(members, inputs.partitions),
    )
