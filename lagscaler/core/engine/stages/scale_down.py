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
    aligned_at_most,
    aligned_replicas,
    clamp,
    effective_replicas,
    filled,
    memoized,
    sized_with_headroom,
)
from lagscaler.core.engine.stages.capacity import CapacityEstimate
from lagscaler.core.engine.stages.forecast import Forecast
from lagscaler.core.engine.stages.need import TARGET_AGE_FRACTION, Need
from lagscaler.core.engine.stages.prepare import Inputs
from lagscaler.core.engine.stages.pricing import breach_seconds, move_price
from lagscaler.core.engine.stages.recurrence import MAX_STEPS, Recurrence
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
    dwell_up: FloatArray  # s a scale-up blocks scale-downs: start-up + stall + restore (+ warm-up) + one SLO
    dwell_down: FloatArray  # s a scale-down blocks the next: stall + restore + one SLO
    dwell_over: BoolArray  # every dwell since the last change is over
    calm: BoolArray  # lag neither growing nor above TARGET_AGE_FRACTION of the SLO
    lasts: FloatArray  # s the lower count is expected to last (at most the payback horizon)
    price: FloatArray  # replica-seconds the move to ``candidate`` costs, and the climb back if it returns
    worth_it: BoolArray  # it saves more than that while the lower count lasts
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
    recurrence: Recurrence,
    need: Need,
    up: ScaleUpPlan,
) -> ScaleDownPlan:
    """Stage 5 (see :mod:`lagscaler.core.engine.core`).

    No scale-down while a recurring burst is due: the capacity is about to be needed, and a decision
    that only ever holds or grows can never fall below the one the engine makes without the prediction.
    """
    peak, down_need = _window_need(
        params, state, inputs=inputs, forecast=forecast, capacity=capacity, need=need
    )
    candidate, step_limited = _step_limited(params, inputs=inputs, down_need=down_need)
    dwell_up = params.startup + params.rebalance_stall + inputs.restore + inputs.warmup + inputs.slo
    dwell_down = params.rebalance_stall + inputs.restore + inputs.slo
    next_down = next_scale_down(
        params,
        inputs=inputs,
        capacity=capacity,
        up_dwell_ends=state.scaled_up_at + dwell_up,
        down_dwell_ends=state.scaled_down_at + dwell_down,
    )
    dwell_over = inputs.now >= next_down
    calm = ~forecast.lag_growing & (inputs.age <= TARGET_AGE_FRACTION * inputs.slo)
    # Seconds over the SLO the move to the candidate costs by itself (0 when stall + restore fit in it).
    down_breach = breach_seconds(
        params,
        candidate,
        partitions=inputs.partitions,
        arrival=need.forecast,
        capacity=capacity.per_replica,
        restore=inputs.restore,
    )
    payback = _payback(
        params,
        state,
        inputs=inputs,
        forecast=forecast,
        capacity=capacity,
        recurrence=recurrence,
        need=need,
        candidate=candidate,
        down_breach=down_breach,
    )
    paced_until = np.maximum(_paced_until(params, state, breach=down_breach), payback.affordable_after)
    paced = inputs.now >= paced_until
    wants_down = inputs.usable & ~up.scaling_up & (candidate < inputs.replicas) & ~recurrence.due
    return ScaleDownPlan(
        window=peak,
        need=down_need,
        candidate=candidate,
        step_limited=step_limited,
        dwell_up=dwell_up,
        dwell_down=dwell_down,
        dwell_over=dwell_over,
        calm=calm,
        lasts=payback.lasts,
        price=payback.price,
        worth_it=payback.worth_it,
        paced_until=paced_until,
        paced=paced,
        wants_down=wants_down,
        scaling_down=wants_down & dwell_over & calm & payback.worth_it & paced,
    )


def next_scale_down(
    params: PolicyArrays,
    *,
    inputs: Inputs,
    capacity: CapacityEstimate,
    up_dwell_ends: FloatArray,
    down_dwell_ends: FloatArray,
) -> FloatArray:
    """When a scale-down may next happen: the dwells after the last scale-up and scale-down are over.

    The window must also have been observed whole since the engine started (a fresh engine has no
    window behind it: like the HPA's initial recommendation, its first scale-down waits a whole
    window), and the warm-up after the last membership change must be over. A scale-down is not
    followed by a whole window's wait: the window's peak already says what the traffic allows, and
    each step is priced and paced; it waits for its own rebalance to settle (``dwell_down``).
    """
    ends: FloatArray = np.maximum(
        np.maximum(up_dwell_ends, down_dwell_ends),
        np.maximum(
            inputs.observed_since + params.down_stabilization,
            capacity.membership_changed_at + capacity.warmup,
        ),
    )
    return ends


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

    The window keeps the measured rates, neither past extrapolations (a ramp's projection
    overshoots its peak, and a long window would hold that overshoot for its whole length) nor the
    smoothed level (after a burst it decays for minutes past the window, stepping the count down
    one aligned count, and one rebalance, at a time). When the rebalance breaks the SLO by itself
    (stall + restore > SLO), the moved partitions come back that far behind; the lower count must
    leave enough headroom to catch them up within 1 / TARGET_AGE_FRACTION SLOs, or the miss drags
    on for minutes at a tight utilisation. The catch-up happens right after the move, at today's rate:
    the window's peak is covered by ``peak_rate / u`` (asking catch-up headroom on top of the peak
    kept a group at twice its need).
    """
    peak = window(
        ids=state.down_window_id,
        values=state.down_window_value,
        now=inputs.now,
        length=params.down_stabilization,
        value=inputs.arrival,
        usable=inputs.usable,
        largest=True,
    )
    peak_rate = np.maximum(peak.aggregate, need.forecast)
    over = np.maximum(params.rebalance_stall + inputs.restore - inputs.slo, 0.0)
    catch_up = need.forecast * (1.0 + over * TARGET_AGE_FRACTION / inputs.slo)
    sized = np.maximum(
        sized_with_headroom(
            peak_rate, capacity.per_replica, params.target_utilization, need.cliff_down, inputs.partitions
        ),
        aligned_replicas(catch_up / capacity.per_replica, inputs.partitions),
    )
    return peak, clamp(np.maximum(sized, need.replicas), inputs.lo, inputs.hi)


def _step_limited(params: PolicyArrays, *, inputs: Inputs, down_need: IntArray) -> tuple[IntArray, BoolArray]:
    """The count to shrink to, as far toward ``down_need`` as the step limit lets one HPA sync go.

    Returns the candidate and whether the step limit kept it above ``down_need``. Every candidate
    below the current count is one the HPA can actually carry out, so a scale-down, once its gates
    open, always moves (liveness: ``tests/test_engine_liveness.py``).
    """
    replicas, partitions = inputs.replicas, inputs.partitions
    room = np.maximum(
        np.ceil(replicas * params.down_step_percent / 100.0).astype(np.int64), params.down_step_replicas
    )
    floor = np.maximum(replicas - room, inputs.lo)
    limited = floor > down_need
    # Round the floor up to an aligned count: a count in between pays for replicas that add no
    # throughput. When that rounds back up to the current count, the limit leaves no aligned count
    # to stop on: take the next aligned count below. A smaller, unaligned step would lose as much
    # throughput (the busiest member sets the pace) and cost a rebalance more; staying would never
    # scale down (64 replicas on 64 partitions with a 25 % limit: 48 rounds up to 64, forever).
    aligned = aligned_at_least(floor, partitions)
    next_below = np.maximum(aligned_at_most(replicas - 1, partitions), down_need)
    candidate = np.where(limited, np.where(aligned < replicas, aligned, next_below), down_need)
    # The HPA ignores a usage ratio inside its tolerance band (hpa/metric.py): a smaller step down
    # than the band would be served and never carried out. Widen it to the largest aligned count
    # the HPA reaches, or hold when even the need is inside the band.
    reach = _reachable_below(replicas, params.down_tolerance)
    wider = np.maximum(aligned_at_most(reach, partitions), down_need)
    fallback = np.where(_reachable(wider, reach, params) & (wider < replicas), wider, replicas)
    candidate = np.where((candidate >= replicas) | _reachable(candidate, reach, params), candidate, fallback)
    candidate = clamp(candidate, inputs.lo, inputs.hi)
    return candidate, candidate > down_need


@memoized  # a function of the current count alone: recomputed only when the group changes
def _reachable_below(replicas: IntArray, tolerance: FloatArray) -> IntArray:
    """The largest count one HPA sync can scale ``replicas`` down to (``replicas`` when the band is 0).

    The HPA keeps the count while ``usage / (target × replicas) >= 1 - tolerance``, and lagscaler
    serves ``D - 0.999`` for ``D`` replicas (``(1000 D - 999)`` milli, hpa/metric.py): ``D`` is
    reachable when ``(1000 D - 999) / (1000 R) < 1 - tolerance``.
    """
    r = replicas.astype(np.float64)
    ratio_limit = 1.0 - tolerance
    guess = np.ceil((ratio_limit * 1000.0 * r + 999.0) / 1000.0) - 1.0
    for _ in range(2):  # correct float rounding either way, with the HPA's own comparison
        guess = np.where(_ratio(guess + 1.0, r) < ratio_limit, guess + 1.0, guess)
        guess = np.where(_ratio(guess, r) < ratio_limit, guess, guess - 1.0)
    return np.minimum(np.maximum(guess, 0.0), r).astype(np.int64)


def _ratio(count: FloatArray, replicas: FloatArray) -> FloatArray:
    """The usage ratio the HPA computes when lagscaler serves ``count`` replicas to scale down."""
    ratio: FloatArray = np.divide(
        count * 1000.0 - 999.0, replicas * 1000.0, out=filled(count.shape, np.inf), where=replicas > 0
    )
    return ratio


def _reachable(count: IntArray, reach: IntArray, params: PolicyArrays) -> BoolArray:
    """One HPA sync can land on ``count``: within reach, or ``minReplicas`` (the HPA's clamp stops there)."""
    reachable: BoolArray = (count <= reach) | (count == params.min_replicas)
    return reachable


@dataclass(frozen=True, slots=True)
class _Payback:
    lasts: FloatArray
    price: FloatArray
    worth_it: BoolArray
    affordable_after: FloatArray  # s, Unix time the error budget affords both moves (-inf: now)


def _payback(
    params: PolicyArrays,
    state: EngineState,
    *,
    inputs: Inputs,
    forecast: Forecast,
    capacity: CapacityEstimate,
    recurrence: Recurrence,
    need: Need,
    candidate: IntArray,
    down_breach: FloatArray,
) -> _Payback:
    """The move's price, and whether the replicas it saves while the lower count lasts exceed it.

    The lower count lasts, at most the payback horizon, until the first of: the trend or the seasonal
    profile outgrows it; a predicted burst it does not carry is due (stage 2b: the capacity is ordered
    its lead before the onset); and the life learned from this workload's own scale-downs
    (``EngineState.down_life``, how long lower counts lasted before a scale-up undid them), which
    the time since the last change raises (a count that has held that long is as likely to hold as
    long again, so a workload whose scale-downs were once reversed quickly is not held forever).

    A move that will have to be undone within the horizon pays for the climb back too: each
    scale-up step the step limit needs from the candidate back to the current count, priced as a move
    of its own. When the moves break the SLO by themselves (a rebalance's stall and restore longer
    than the SLO), the scale-down and every step of the climb back must also fit the error budget
    (``1 - sloObjective`` of the time) earned while the lower count lasts:

    * until capacity is ordered for a predicted burst it does not carry; if they do not fit, the
      capacity is held through the burst and the move reconsidered once the burst has passed;
    * for the life learned from the workload's reversals; if they do not fit, the move waits until
      the time since the last change affords them (a self-tuning backoff: quickly reversed
      scale-downs hold the next one longer, and a count that held that long scales down).
    """
    level, trend = forecast.level, forecast.trend
    horizon = params.payback_horizon
    sustainable = (
        capacity.per_replica * effective_replicas(candidate, inputs.partitions) * params.target_utilization
    )
    until_trend = np.where(
        trend > 0,
        np.divide(sustainable - level, trend, out=filled(trend.shape, np.inf), where=trend > 0),
        np.inf,
    )
    until_trend = np.maximum(until_trend, 0.0)
    until_season = (
        forecast.season.exceeds_after(sustainable, horizon) if forecast.season is not None else np.inf
    )
    until_burst, burst_passed = _next_burst(
        params, inputs=inputs, recurrence=recurrence, sustainable=sustainable
    )
    last_change = np.maximum(state.scaled_up_at, state.scaled_down_at)
    learned = np.maximum(state.down_life, inputs.now - last_change)
    lasts = np.minimum(np.minimum(np.minimum(until_trend, until_season), until_burst), learned)
    lasts = np.minimum(lasts, horizon)
    returns = lasts < horizon
    savings = np.maximum(inputs.replicas - candidate, 0) * lasts
    down_price = move_price(
        params,
        inputs.replicas,
        candidate,
        restore=inputs.restore,
        warmup=inputs.warmup,
        returns=np.zeros_like(returns),
    )
    climb_price, climb_breach = _climb(
        params, inputs=inputs, capacity=capacity, arrival=need.forecast, start=candidate
    )
    price = down_price + np.where(returns, climb_price, 0.0)
    # Seconds over the SLO the move and the climb back cost, against the budget earned meanwhile.
    breach = down_breach + climb_breach
    rate = np.maximum(1.0 - params.slo_objective, 1e-6)
    held_for_burst = np.isfinite(until_burst) & (breach > rate * until_burst)
    held_by_reversals = np.isfinite(state.down_life) & (breach > rate * state.down_life)
    affordable_after = np.maximum(
        np.where(held_for_burst, burst_passed, -np.inf),
        np.where(held_by_reversals, last_change + breach / rate, -np.inf),
    )
    return _Payback(
        lasts=lasts,
        price=price,
        worth_it=savings > price,
        affordable_after=affordable_after,
    )


def _next_burst(
    params: PolicyArrays, *, inputs: Inputs, recurrence: Recurrence, sustainable: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Seconds until capacity is ordered for the next predicted burst that outruns ``sustainable``
    (inf: none), and the Unix time its prediction window closes (the burst is then measured).

    A prediction whose window has closed is in the past (stage 2b switches itself off with it).
    """
    until, passed = filled(inputs.now.shape, np.inf), filled(inputs.now.shape, -np.inf)
    # Only rows with a prediction (most have none: a cycle without costs one pass over the onsets).
    rows = np.flatnonzero(params.burst_recurrence & np.isfinite(recurrence.next_onset).any(axis=1))
    if not rows.size:
        return until, passed
    onset, jitter, rate = recurrence.next_onset[rows], recurrence.jitter[rows], recurrence.rate[rows]
    now = inputs.now[rows, None]
    opens = onset - jitter - recurrence.lead[rows, None]
    closes = onset + jitter + params.sync_period[rows, None]
    binding = np.isfinite(onset) & (closes > now) & (rate > sustainable[rows, None])
    until[rows] = np.where(binding, np.maximum(opens - now, 0.0), np.inf).min(axis=1)
    passed[rows] = np.where(binding, closes, -np.inf).max(axis=1)
    return until, passed


def _climb(
    params: PolicyArrays,
    *,
    inputs: Inputs,
    capacity: CapacityEstimate,
    arrival: FloatArray,
    start: IntArray,
) -> tuple[FloatArray, FloatArray]:
    """What climbing back from ``start`` to the current count costs: replica-seconds and seconds over the SLO.

    One move per step the scale-up limit allows (``maxStepPercent`` / ``maxStepReplicas``, as stage 4
    steps), each priced by :func:`move_price` and :func:`breach_seconds` at today's rate; beyond
    ``MAX_STEPS`` steps the rest is not counted (a lower bound then). Only the rows with a count to
    climb back to are computed.
    """
    price, breach = np.zeros(start.shape), np.zeros(start.shape)
    rows = np.flatnonzero(start < inputs.replicas)
    if not rows.size:
        return price, breach
    p = params.rows(rows)
    stop, count = inputs.replicas[rows], start[rows]
    restore, warmup, partitions = inputs.restore[rows], inputs.warmup[rows], inputs.partitions[rows]
    per_replica, rate = capacity.per_replica[rows], arrival[rows]
    never = np.zeros(rows.shape, dtype=np.bool_)
    for _ in range(MAX_STEPS):
        short = count < stop
        if not short.any():
            break
        room = np.maximum(np.ceil(count * p.up_step_percent / 100.0).astype(np.int64), p.up_step_replicas)
        step = np.where(short, np.minimum(count + room, stop), count)
        moved = move_price(p, count, step, restore=restore, warmup=warmup, returns=never)
        over = breach_seconds(
            p, step, partitions=partitions, arrival=rate, capacity=per_replica, restore=restore
        )
        price[rows] += np.where(short, moved, 0.0)
        breach[rows] += np.where(short, over, 0.0)
        count = step
    return price, breach


def _paced_until(params: PolicyArrays, state: EngineState, *, breach: FloatArray) -> FloatArray:
    """When the error budget allows a move whose stall + restore breaks the SLO by itself.

    Such a move spends budget (``breach``, :func:`breach_seconds`); since the last change at least
    ``breach / (1 - objective)`` seconds must have passed.
    """
    last_change = np.maximum(state.scaled_up_at, state.scaled_down_at)
    budget = np.maximum(1.0 - params.slo_objective, 1e-6)
    paced_until: FloatArray = last_change + breach / budget
    return paced_until
