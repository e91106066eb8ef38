"""Stage 5, scale down late and slowly: the count to shrink to, and every gate it must pass."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lagscaler.core.engine.params import PolicyArrays
from lagscaler.core.engine.sizing import (
    BoolArray,
    FloatArray,
    IntArray,
    aligned_at_least,
    aligned_replicas,
    clamp,
    effective_replicas,
)
from lagscaler.core.engine.stages.capacity import CapacityEstimate
from lagscaler.core.engine.stages.forecast import Forecast
from lagscaler.core.engine.stages.need import TARGET_AGE_FRACTION, Need
from lagscaler.core.engine.stages.prepare import Inputs
from lagscaler.core.engine.stages.pricing import breach_seconds, rebalance_price
from lagscaler.core.engine.stages.scale_up import ScaleUpPlan
from lagscaler.core.engine.stages.windows import Windows, window
from lagscaler.core.engine.state import EngineState


@dataclass(frozen=True, slots=True)
class ScaleDownPlan:
    """A scale-down's size and its gates; ``(W,)``."""

    window: Windows  # down-stabilization: the highest measured arrival rate over the window
    need: IntArray  # the count the window's peak (and catch-up after the move) needs, >= the need
    candidate: IntArray  # the count to shrink to: ``need`` or the step-limited floor, aligned
    step_limited: BoolArray  # the step limit kept the candidate above ``need``
    dwell_up: FloatArray  # s a scale-up blocks scale-downs: start-up + stall + restore + one SLO
    down_since: FloatArray  # s, Unix time the last scale-down (or a restart) started the stabilization
    dwell_over: BoolArray  # every dwell since the last change is over
    calm: BoolArray  # lag neither growing nor above TARGET_AGE_FRACTION of the SLO
    price: FloatArray  # replica-seconds the move to ``candidate`` costs
    worth_it: BoolArray  # it saves more than that over the payback horizon
    paced_until: FloatArray  # s, Unix time the error budget allows the move
    paced: BoolArray  # the error budget allows it now
    wants_down: BoolArray  # a lower count would do (and no scale-up)
    scaling_down: BoolArray  # scale down now


def plan_scale_down(
    params: PolicyArrays,
    state: EngineState,
    *,
    inputs: Inputs,
    forecast: Forecast,
    capacity: CapacityEstimate,
    need: Need,
    up: ScaleUpPlan,
) -> ScaleDownPlan:
    """Stage 5 (see :mod:`lagscaler.core.engine.core`)."""
    peak, down_need = _window_need(
        params, state, inputs=inputs, forecast=forecast, capacity=capacity, need=need
    )
    candidate, step_limited = _step_limited(params, inputs=inputs, down_need=down_need)
    dwell_up = params.startup + params.rebalance_stall + inputs.restore + inputs.slo
    # A fresh engine (a restart) has no window behind it: like the HPA's initial recommendation, its
    # first observation counts as a change, so the first scale-down waits a whole window.
    down_since = np.where(inputs.first & inputs.usable, inputs.now, state.scaled_down_at)
    next_down = np.maximum(
        np.maximum(state.scaled_up_at + dwell_up, down_since + params.down_stabilization),
        capacity.membership_changed_at + capacity.warmup,
    )
    dwell_over = inputs.now >= next_down
    lag_growing = forecast.lag_rising | forecast.arrivals_ahead
    calm = ~lag_growing & (inputs.age <= TARGET_AGE_FRACTION * inputs.slo)
    price, worth_it = _payback(
        params, inputs=inputs, forecast=forecast, capacity=capacity, candidate=candidate
    )
    paced_until = _paced_until(
        params, state, inputs=inputs, capacity=capacity, need=need, candidate=candidate
    )
    paced = inputs.now >= paced_until
    wants_down = inputs.usable & ~up.scaling_up & (candidate < inputs.replicas)
    return ScaleDownPlan(
        window=peak,
        need=down_need,
        candidate=candidate,
        step_limited=step_limited,
        dwell_up=dwell_up,
        down_since=down_since,
        dwell_over=dwell_over,
        calm=calm,
        price=price,
        worth_it=worth_it,
        paced_until=paced_until,
        paced=paced,
        wants_down=wants_down,
        scaling_down=wants_down & dwell_over & calm & worth_it & paced,
    )


def _window_need(
    params: PolicyArrays,
    state: EngineState,
    *,
    inputs: Inputs,
    forecast: Forecast,
    capacity: CapacityEstimate,
    need: Need,
) -> tuple[Windows, IntArray]:
    """The count the window's peak traffic needs (never below the need).

    The window keeps what was measured (level or rate, whichever is higher), not past
    extrapolations: a ramp's projection overshoots its peak, and a long window would hold that
    overshoot for its whole length. When the rebalance breaks the SLO by itself (stall + restore >
    SLO), the moved partitions come back that far behind; the lower count must leave enough
    headroom to catch them up within 1 / TARGET_AGE_FRACTION SLOs, or the miss drags on for
    minutes at a tight utilisation. The catch-up happens right after the move, at today's rate:
    the window's peak is covered by ``peak_rate / u`` (asking catch-up headroom on top of the peak
    kept a group at twice its need).
    """
    peak = window(
        ids=state.down_window_id,
        values=state.down_window_value,
        now=inputs.now,
        length=params.down_stabilization,
        value=np.maximum(forecast.level, inputs.arrival),
        usable=inputs.usable,
        largest=True,
    )
    peak_rate = np.maximum(peak.aggregate, need.forecast)
    over = np.maximum(params.rebalance_stall + inputs.restore - inputs.slo, 0.0)
    catch_up = need.forecast * (1.0 + over * TARGET_AGE_FRACTION / inputs.slo)
    sized = aligned_replicas(
        np.maximum(peak_rate / params.target_utilization, catch_up) / capacity.per_replica, inputs.partitions
    )
    return peak, clamp(np.maximum(sized, need.replicas), inputs.lo, inputs.hi)


def _step_limited(params: PolicyArrays, *, inputs: Inputs, down_need: IntArray) -> tuple[IntArray, BoolArray]:
    """The candidate within the step limit, on an aligned count; and whether the limit cut it."""
    replicas = inputs.replicas
    room = np.maximum(
        np.ceil(replicas * params.down_step_percent / 100.0).astype(np.int64), params.down_step_replicas
    )
    floor = np.maximum(replicas - room, inputs.lo)
    candidate = np.maximum(down_need, floor)
    limited = candidate > down_need
    candidate = np.where(limited, aligned_at_least(candidate, inputs.partitions), candidate)
    return clamp(candidate, inputs.lo, inputs.hi), limited


def _payback(
    params: PolicyArrays,
    *,
    inputs: Inputs,
    forecast: Forecast,
    capacity: CapacityEstimate,
    candidate: IntArray,
) -> tuple[FloatArray, BoolArray]:
    """The move's price, and whether the replicas it saves while the lower count lasts exceed it.

    The lower count lasts until the trend or the seasonal profile outgrows it, at most the payback
    horizon; a move that will have to be undone within the horizon pays for both moves.
    """
    level, trend = forecast.level, forecast.trend
    sustainable = (
        capacity.per_replica * effective_replicas(candidate, inputs.partitions) * params.target_utilization
    )
    until_trend = np.where(
        trend > 0,
        np.divide(sustainable - level, trend, out=np.full(trend.shape[0], np.inf), where=trend > 0),
        np.inf,
    )
    until_trend = np.maximum(until_trend, 0.0)
    until_season = (
        forecast.season.exceeds_after(sustainable, params.payback_horizon)
        if forecast.season is not None
        else np.inf
    )
    lasts = np.minimum(np.minimum(until_trend, until_season), params.payback_horizon)
    returns = lasts < params.payback_horizon
    savings = (inputs.replicas - candidate).clip(0) * lasts
    price = rebalance_price(params, inputs.replicas, candidate, inputs.restore, returns)
    return price, savings > price


def _paced_until(
    params: PolicyArrays,
    state: EngineState,
    *,
    inputs: Inputs,
    capacity: CapacityEstimate,
    need: Need,
    candidate: IntArray,
) -> FloatArray:
    """When the error budget allows a move whose stall + restore breaks the SLO by itself.

    Such a move spends budget; since the last change at least ``breach / (1 - objective)``
    seconds must have passed.
    """
    breach = breach_seconds(
        params,
        candidate,
        partitions=inputs.partitions,
        arrival=need.forecast,
        capacity=capacity.per_replica,
        restore=inputs.restore,
    )
    last_change = np.maximum(state.scaled_up_at, state.scaled_down_at)
    budget = np.maximum(1.0 - params.slo_objective, 1e-6)
    paced_until: FloatArray = last_change + breach / budget
    return paced_until
