"""Stage 3, need: the rate to provision for (forecast, surge) and the count that carries it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lagscaler.core.engine.params import PolicyArrays
from lagscaler.core.engine.sizing import (
    FloatArray,
    IntArray,
    aligned_replicas,
    clamp,
    filled,
    sized_with_headroom,
)
from lagscaler.core.engine.stages.capacity import CapacityEstimate
from lagscaler.core.engine.stages.forecast import Forecast
from lagscaler.core.engine.stages.prepare import Inputs
from lagscaler.core.engine.stages.recurrence import Recurrence

TARGET_AGE_FRACTION = 0.5
"""Backlog is drained back to this fraction of the SLO, leaving the rest as margin for the next stall."""

HOT_FRACTION = 0.5
"""A count runs *hot* past this fraction of the way from the target utilisation to saturation (stage 4)."""

SHRINK_FRACTION = 0.25
"""Across a partition cliff a scale-down may run this far from the target utilisation to saturation.

Below ``HOT_FRACTION``: the gap between the two is the hysteresis that keeps noise from shrinking a
group across a cliff and growing it back on the next sync.
"""


@dataclass(frozen=True, slots=True)
class Need:
    """What the group must process and the aligned count that does it; ``(W,)``."""

    age_then: FloatArray  # s the worst partition will be behind when capacity ordered now lands
    excess: FloatArray  # s of that beyond TARGET_AGE_FRACTION of the SLO (0: no backlog to drain)
    drain_capacity: FloatArray  # messages/s that bring the backlog back under the target within one SLO
    surge: FloatArray  # messages/s, the measured rate at its slope when capacity lands (0: not surging)
    forecast: FloatArray  # messages/s to provision for: max(level, projected, seasonal peak, surge, burst)
    arrival_need: FloatArray  # messages/s, forecast / target utilisation
    required: FloatArray  # messages/s, max(arrival_need, drain_capacity)
    drain_rate: FloatArray  # messages/s beyond arrival spent on the backlog
    cliff_up: FloatArray  # utilisation a scale-up may size for across a partition cliff
    cliff_down: FloatArray  # the same for a scale-down, below ``cliff_up`` (hysteresis)
    replicas: IntArray  # the smallest aligned count carrying ``required``, within [lo, hi]


def size_need(
    params: PolicyArrays,
    *,
    inputs: Inputs,
    forecast: Forecast,
    capacity: CapacityEstimate,
    recurrence: Recurrence,
) -> Need:
    """Stage 3 (see :mod:`lagscaler.core.engine.core`).

    The surge belongs here, not to the forecast: it is believed only once the last rebalance has
    settled (``capacity.warm``) and while the backlog threatens the SLO (``excess > 0``), which
    the forecast alone cannot know.
    """
    arrival, slo = inputs.arrival, inputs.slo
    keeps_up = np.divide(capacity.of_members, arrival, out=filled(arrival.shape, 1.0), where=arrival > 0)
    falling_behind = np.maximum(1.0 - np.minimum(keeps_up, 1.0), 0.0)
    age_then = inputs.age + falling_behind * inputs.reaction
    excess = np.maximum(age_then - TARGET_AGE_FRACTION * slo, 0.0)
    drain_capacity = arrival * (1.0 + excess / slo)
    # With lag but no measured arrival (a stopped producer), drain the messages themselves within the SLO.
    drain_capacity = np.maximum(
        drain_capacity, np.where(inputs.age > TARGET_AGE_FRACTION * slo, inputs.lag / slo, 0.0)
    )
    # The measured rate is an average over the last interval, so half an interval older than ``now``.
    # One interval's jump may be a step, not the start of a ramp. Where a rebalance breaks the SLO by
    # itself (stall + restore > SLO), a scale-up is held for hours (error-budget pacing): believe only
    # the slope the fast trend has confirmed. Elsewhere the excess is given back within a window,
    # while a second scale-up would cost another stall: believe the latest interval's slope.
    breaks_slo = params.rebalance_stall + inputs.restore > slo
    rise = np.maximum(
        np.where(breaks_slo, forecast.trend_fast, np.maximum(forecast.slope, forecast.trend_fast)), 0.0
    )
    surging = forecast.outrun & capacity.warm & (excess > 0)
    surge = np.where(
        surging, np.maximum(forecast.level, arrival) + rise * (inputs.reaction + inputs.dt / 2.0), 0.0
    )
    # A recurring burst due within the lead (stage 2b) only ever adds to the maximum.
    to_provision = np.maximum(
        np.maximum(np.maximum(forecast.level, forecast.projected), forecast.seasonal_peak),
        np.maximum(surge, recurrence.ahead),
    )
    arrival_need = to_provision / params.target_utilization
    # Across a partition cliff (see ``sized_with_headroom``) a count may run hotter than the target,
    # but not where a rebalance breaks the SLO by itself: there a scale-up the margin would have
    # avoided costs an SLO miss and hours of pacing, so the margin the rounding adds is kept.
    u = params.target_utilization
    cliff_up = np.where(breaks_slo, u, u + (1.0 - u) * HOT_FRACTION)
    cliff_down = np.where(breaks_slo, u, u + (1.0 - u) * SHRINK_FRACTION)
    required = np.maximum(arrival_need, drain_capacity)
    # The count carrying ``required``: its arrival part sized across cliffs, its drain part not.
    return Need(
        age_then=age_then,
        excess=excess,
        drain_capacity=drain_capacity,
        surge=surge,
        forecast=to_provision,
        arrival_need=arrival_need,
        required=required,
        drain_rate=np.maximum(drain_capacity - arrival, 0.0),
        cliff_up=cliff_up,
        cliff_down=cliff_down,
        replicas=clamp(
            np.maximum(
                sized_with_headroom(to_provision, capacity.per_replica, u, cliff_up, inputs.partitions),
                aligned_replicas(drain_capacity / capacity.per_replica, inputs.partitions),
            ),
            inputs.lo,
            inputs.hi,
        ),
    )
