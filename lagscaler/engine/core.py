"""One decision cycle for W workloads at once: ``decide(params, state, observations) -> (decisions, state)``.

How a count is chosen (every step is an array operation over workloads):

1. **Forecast.** An EWMA level of the arrival rate and the trend of the measured rate, the trend
   believed only as far as a fast and a slow estimate agree (a step is one jump, not growth). The
   rate to provision for is the larger of the level and the trend projected over the *reaction
   time* (HPA sync + pod start-up + rebalance stall + state restore): capacity asked for now
   arrives no sooner. While the group is being outrun, the measured rate at its latest slope over
   the reaction time (a surge) is believed too, so a fast burst is met by one scale-up, not one per
   sync. A seasonal profile, when the policy has a period, can only raise it.
2. **Capacity.** The true per-replica rate is learned online as in DS2: only members whose every
   partition is backlogged are busy all the time, so their consume rate *is* their capacity.
   Intervals right after a membership change (stall, restore) are warm-up and ignored. The
   policy's figure is the prior, worth ``prior_weight_seconds`` of evidence.
3. **Need.** ``max(forecast / target_utilisation, arrival × (1 + excess_age / SLO))``: the second
   term asks for enough spare capacity to bring the worst partition's lag (projected to when new
   capacity can land) back under half the SLO within one SLO.
4. **Partition alignment.** The smallest count whose busiest member keeps up (``sizing``), clamped
   to ``[min, min(max, partitions)]``.
5. **Up early and fast.** Scale up when the current count would run hotter than halfway between
   the target utilisation and saturation (a dead band: aligned counts are far apart), or when the
   backlog needs more than the current count *and* a scale-up would drain it sooner, counting the
   stall and restore that scale-up itself causes. While the last rebalance settles its backlog is
   the rebalance's, not a shortage: that is what stops rebalance cascades.
6. **Down late and slowly.** A scale-down needs all of: the dwell after the last change is over
   (after a scale-up: start-up + stall + restore + one SLO of catch-up; after a scale-down or a
   restart: the policy's stabilization), lag neither growing nor above half the SLO, a lower count
   that covers the *maximum* forecast of the stabilization window (with headroom to catch moved
   partitions up after their restore when that breaks the SLO), savings over the payback horizon
   (fewer replicas × how long the forecast says the lower count will last) larger than the price
   of the rebalance (:func:`rebalance_price`), and, when the rebalance breaks the SLO by itself,
   enough error budget (``slo_objective``) since the last change to pay for that miss
   (:func:`breach_seconds`).
7. **Ineffective scale-up.** If a scale-up decided while backlogged did not raise throughput by at
   least 10 % of what it should have (a downstream bottleneck, a hot partition), further scale-ups
   are held for a while and the decision says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lagscaler.engine.decision import Decisions, Reason
from lagscaler.engine.observation import BACKLOG_SECONDS, ObservationBatch
from lagscaler.engine.params import PolicyArrays
from lagscaler.engine.sizing import (
    BoolArray,
    FloatArray,
    IntArray,
    aligned_at_most,
    aligned_replicas,
    effective_replicas,
    moved_fraction,
)
from lagscaler.engine.state import SEASON_BINS, WINDOW_SLOTS, EngineState

LN2 = math.log(2.0)
TARGET_AGE_FRACTION = 0.5
"""Backlog is drained back to this fraction of the SLO, leaving the rest as margin for the next stall."""
INEFFECTIVE_GAIN = 0.1
"""A scale-up adding less than this fraction of its expected throughput is ineffective (as in Flink's)."""
INEFFECTIVE_HOLD_SECONDS = 600.0
CAPACITY_MEMORY_FACTOR = 4.0
"""Evidence is capped at this many prior weights, so the estimate keeps tracking a changing true rate."""
MAX_LAG_SECONDS = 1e7
_BIG = 1e12


def restore_seconds(params: PolicyArrays, partitions: IntArray, measured_state: FloatArray) -> FloatArray:
    """How long one moved partition of a stateful workload is unavailable: its state share / restore rate."""
    state = np.where(np.isfinite(measured_state), measured_state, params.state_bytes)
    per_partition = np.divide(state, partitions, out=np.zeros_like(state), where=partitions > 0)
    seconds = _finite(per_partition / params.restore_rate, 0.0)
    return np.where(params.stateful, np.maximum(seconds, 0.0), 0.0)


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
    headroom = np.divide(supply, arrival, out=np.full_like(supply, np.inf), where=arrival > 0) - 1.0
    catch_up = np.divide(over, np.maximum(headroom, 0.05))
    return over + catch_up


@dataclass(frozen=True, slots=True)
class _Windows:
    ids: IntArray
    values: FloatArray
    aggregate: FloatArray


def _window(
    *,
    ids: IntArray,
    values: FloatArray,
    now: FloatArray,
    length: FloatArray,
    value: FloatArray,
    usable: BoolArray,
    largest: bool,
) -> _Windows:
    """Add ``value`` to a sliding window of ``length`` seconds and return its max (or min)."""
    w = ids.shape[0]
    rows = np.arange(w)
    width = np.maximum(length / (WINDOW_SLOTS - 1), 1e-3)
    bucket = np.floor(now / width).astype(np.int64)
    slot = bucket % WINDOW_SLOTS
    current_id = ids[rows, slot]
    current = values[rows, slot]
    merged = np.where(
        current_id == bucket, np.maximum(current, value) if largest else np.minimum(current, value), value
    )
    new_ids = ids.copy()
    new_values = values.copy()
    new_ids[rows, slot] = np.where(usable, bucket, current_id)
    new_values[rows, slot] = np.where(usable, merged, current)
    live = new_ids > (bucket - (WINDOW_SLOTS - 1))[:, None]
    fill = -np.inf if largest else np.inf
    masked = np.where(live, new_values, fill)
    agg = masked.max(axis=1) if largest else masked.min(axis=1)
    agg = np.maximum(agg, value) if largest else np.minimum(agg, value)
    return _Windows(new_ids, new_values, agg)


@dataclass(frozen=True, slots=True)
class _Season:
    """The seasonal profile after this cycle's update, read ahead of now."""

    profile: FloatArray
    since: FloatArray
    ahead: FloatArray  # (W, SEASON_BINS): the profile from the current bin on
    starts: FloatArray  # (W, SEASON_BINS): seconds from now until each of those bins starts
    mature: BoolArray  # a full period has been observed

    def peak_within(self, seconds: FloatArray) -> FloatArray:
        """The highest profile value in the next ``seconds`` (0 when not mature)."""
        inside = self.starts <= seconds[:, None]
        return np.where(self.mature, np.where(inside, self.ahead, 0.0).max(axis=1), 0.0)

    def exceeds_after(self, threshold: FloatArray, within: FloatArray) -> FloatArray:
        """Seconds until the profile first exceeds ``threshold`` (inf if not within ``within``)."""
        exceeding = (
            (self.ahead > threshold[:, None]) & (self.starts <= within[:, None]) & self.mature[:, None]
        )
        first = np.argmax(exceeding, axis=1)
        at = self.starts[np.arange(first.shape[0]), first]
        return np.where(exceeding.any(axis=1), np.maximum(at, 0.0), np.inf)


def _season(
    *,
    params: PolicyArrays,
    state: EngineState,
    now: FloatArray,
    dt: FloatArray,
    x: FloatArray,
    usable: BoolArray,
) -> _Season:
    """Fold this observation into the seasonal arrival profile (an EWMA per bin of the period)."""
    w = x.shape[0]
    rows = np.arange(w)
    on = params.seasonal_period > 0
    period = np.where(on, params.seasonal_period, 1.0)
    width = period / SEASON_BINS
    phase = np.mod(now, period)
    current_bin = np.minimum(np.floor(phase / width).astype(np.int64), SEASON_BINS - 1)
    into_bin = phase - current_bin * width

    old = state.season[rows, current_bin]
    alpha = 1.0 - np.exp(-dt / width)
    updated = np.where(old > 0, old + alpha * (x - old), x)
    profile = state.season.copy()
    write = usable & on
    profile[rows, current_bin] = np.where(write, updated, old)
    since = np.where(write, np.minimum(state.season_since, now), state.season_since)
    mature = on & (now - since >= period)

    offsets = np.arange(SEASON_BINS)
    bins = (current_bin[:, None] + offsets[None, :]) % SEASON_BINS
    ahead = profile[rows[:, None], bins]
    starts = offsets[None, :] * width[:, None] - into_bin[:, None]
    return _Season(profile, since, ahead, starts, mature)


def decide(params: PolicyArrays, state: EngineState, obs: ObservationBatch) -> tuple[Decisions, EngineState]:
    """Decide replica counts for W workloads; pure and deterministic (same inputs, same outputs)."""
    # Extreme inputs (a rate of 1e-300) overflow intermediate ratios to inf; every such ratio is
    # guarded or clamped afterwards, so the warnings carry no information.
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return _decide(params, state, obs)


def _decide(params: PolicyArrays, state: EngineState, obs: ObservationBatch) -> tuple[Decisions, EngineState]:
    w = params.size
    now = _finite(obs.at, 0.0)
    first = ~state.initialized
    arrival_in = obs.arrival_rate
    usable = ~obs.stale & np.isfinite(arrival_in) & np.isfinite(obs.consume_rate)
    dt = np.where(first, 0.0, np.minimum(np.maximum(now - state.at, 0.0), 1e6))
    dt = np.where(usable, dt, 0.0)

    replicas = np.maximum(obs.replicas, 0)
    partitions = np.maximum(obs.partitions, 0)
    hi = np.where(partitions > 0, np.minimum(params.max_replicas, partitions), params.max_replicas)
    lo = np.minimum(params.min_replicas, hi)

    # 1. Forecast: an EWMA level and the trend of the measured rate, smoothed twice (fast and slow)
    # and believed only as far as both agree. A step is one jump, not growth: the fast estimate
    # forgets it within a few half-lives (no Holt overshoot); on a real ramp both see the slope.
    x = np.where(usable, np.maximum(_finite(arrival_in, 0.0), 0.0), state.level)
    consumed = np.maximum(_finite(obs.consume_rate, 0.0), 0.0)
    alpha = 1.0 - np.exp(-dt * LN2 / params.half_life)
    beta = 1.0 - np.exp(-dt * LN2 / params.trend_half_life)
    level = np.where(first, x, state.level + alpha * (x - state.level))
    slope = np.divide(x - state.last_rate, dt, out=np.zeros(w), where=dt > 0)
    no_trend = first | ~params.trend
    trend_fast = np.where(no_trend, 0.0, state.trend_fast + alpha * (slope - state.trend_fast))
    trend_slow = np.where(no_trend, 0.0, state.trend + beta * (slope - state.trend))
    agree = (trend_fast > 0) == (trend_slow > 0)
    trend = np.where(
        agree,
        np.where(trend_fast > 0, np.minimum(trend_fast, trend_slow), np.maximum(trend_fast, trend_slow)),
        0.0,
    )

    restore = restore_seconds(params, partitions, obs.state_bytes)
    reaction = params.sync_period + params.startup + params.rebalance_stall + restore
    horizon = np.maximum(params.forecast_horizon, reaction)
    projected = level + np.maximum(trend, 0.0) * horizon
    # While the group is being outrun (arrivals above what it consumes and the lag growing), the rise
    # is not noise for the slow trend to veto: provision for where the measured rate will be when
    # capacity ordered now lands, at its latest slope. A burst climbing faster than the reaction time
    # otherwise costs one scale-up, and one rebalance stall, per sync on its way up.
    lag = np.minimum(np.maximum(_finite(obs.lag, 0.0), 0.0), _BIG)
    lag_rising = ~first & (lag > state.lag_prev)
    arrivals_ahead = x > consumed * 1.0001 + 1e-9  # more arrives than the group consumes
    outrun = lag_rising & arrivals_ahead

    # 2. Capacity (DS2: busy members' consume rate is their true rate), after warm-up only.
    members = np.maximum(obs.members, 0)
    changed = (members != state.members_seen) & ~first
    membership_changed_at = np.where(changed | (first & usable), now, state.membership_changed_at)
    warmup = params.rebalance_stall + restore + params.sync_period
    warm = now - membership_changed_at >= warmup
    busy_rate = _finite(obs.busy_rate, 0.0)
    busy = usable & warm & (obs.busy_members > 0) & (busy_rate > 0)
    sample_capacity = np.divide(busy_rate, np.maximum(obs.busy_members, 1))
    evidence = np.where(busy & params.capacity_learn, dt, 0.0)
    total = state.capacity_weight + evidence
    capacity = np.where(
        evidence > 0,
        (state.capacity * state.capacity_weight + sample_capacity * evidence) / total,
        state.capacity,
    )
    capacity_weight = np.minimum(total, CAPACITY_MEMORY_FACTOR * params.capacity_prior_weight)
    c = np.maximum(np.where(params.capacity_learn, capacity, params.capacity_prior), 1e-9)
    capacity_now = c * effective_replicas(members, partitions)

    # 3. Need: arrival at target utilisation, or arrival plus draining the backlog within the SLO.
    slo = np.maximum(params.max_lag_seconds, 1e-3)
    u = params.target_utilization
    raw_age = obs.lag_seconds
    age = np.where(np.isnan(raw_age), 0.0, np.minimum(np.maximum(raw_age, 0.0), MAX_LAG_SECONDS))
    a_now = np.maximum(x, 0.0)
    keeps_up = np.divide(capacity_now, a_now, out=np.ones(w), where=a_now > 0)
    falling_behind = np.maximum(1.0 - np.minimum(keeps_up, 1.0), 0.0)
    age_then = age + falling_behind * reaction
    excess = np.maximum(age_then - TARGET_AGE_FRACTION * slo, 0.0)
    drain_capacity = a_now * (1.0 + excess / slo)
    # With lag but no measured arrival (a stopped producer), drain the messages themselves within the SLO.
    drain_capacity = np.maximum(drain_capacity, np.where(age > TARGET_AGE_FRACTION * slo, lag / slo, 0.0))

    season = (
        _season(params=params, state=state, now=now, dt=dt, x=x, usable=usable)
        if params.any_seasonal
        else None
    )
    seasonal_peak = season.peak_within(horizon) if season is not None else np.zeros(w)
    # The surge (see the forecast above) is believed only when being outrun threatens the SLO: at the
    # current shortfall the worst partition would be past half the SLO before new capacity lands.
    # Rates measured over a second or two are noisy, and noise that threatens nothing is not a burst.
    # The measured rate is an average over the last interval, so half an interval older than ``now``.
    # A rebalance's own stall also makes the group fall behind; until it settles, that is not a
    # surge (as DS2 ignores warm-up intervals).
    rise = np.maximum(np.maximum(slope, trend_fast), 0.0)
    surging = outrun & warm & (excess > 0)
    surge = np.where(surging, np.maximum(level, x) + rise * (reaction + dt / 2.0), 0.0)
    forecast = np.maximum(np.maximum(np.maximum(level, projected), seasonal_peak), surge)
    arrival_need = forecast / u
    required = np.maximum(arrival_need, drain_capacity)
    drain_rate = np.maximum(drain_capacity - a_now, 0.0)
    need = aligned_replicas(required / c, partitions)
    need = _clamp(need, lo, hi)
    # A scale-up made while behind moves partitions that stop for the stall and their restore on top
    # of the backlog they have when the new capacity lands, and come back that far behind. Beyond the
    # SLO they must catch up within 1 / TARGET_AGE_FRACTION SLOs (as after a scale-down), or the count
    # that just paid for a rebalance drains so slowly that a second scale-up, and a second restore,
    # follows. (A scale-up with no backlog to drain is sized on arrival alone, as before.)
    moved_over = np.where(excess > 0, np.maximum(age_then + params.rebalance_stall + restore - slo, 0.0), 0.0)
    rate_then = np.maximum(forecast, a_now)
    up_catch_up = np.where(moved_over > 0, rate_then * (1.0 + moved_over * TARGET_AGE_FRACTION / slo), 0.0)
    up_need = _clamp(aligned_replicas(np.maximum(required, up_catch_up) / c, partitions), lo, hi)

    # Up-stabilization: the smallest recommendation over the window must still ask for more.
    if params.any_up_stabilization:
        up_win = _window(
            ids=state.up_window_id,
            values=state.up_window_value,
            now=now,
            length=params.up_stabilization,
            value=up_need.astype(np.float64),
            usable=usable,
            largest=False,
        )
        up_rec = np.minimum(up_win.aggregate.astype(np.int64), up_need)
    else:
        up_win = _Windows(state.up_window_id, state.up_window_value, up_need.astype(np.float64))
        up_rec = up_need
    ineffective_now = state.ineffective_until > now
    up_rec = np.where(ineffective_now, np.minimum(up_rec, replicas), up_rec)

    # Scale-up target, step-limited without stopping on a count that adds nothing.
    up_room = np.maximum(
        np.ceil(replicas * params.up_step_percent / 100.0).astype(np.int64), params.up_step_replicas
    )
    up_limit = replicas + up_room
    up_target = np.minimum(up_rec, up_limit)
    up_limited = up_target < up_rec
    aligned_up = aligned_at_most(up_target, partitions)
    up_target = np.where(up_limited & (aligned_up > replicas), aligned_up, up_target)
    # A dead band against flapping between aligned counts: scale up on arrival only once the current
    # count would run hotter than halfway between the target utilisation and saturation; a backlog
    # the current count cannot drain in time scales up at once.
    capacity_soon = c * effective_replicas(replicas, partitions)
    hot = forecast > capacity_soon * (u + (1.0 - u) / 2.0)
    # Draining faster only helps if the current count would not be done before new capacity lands
    # (start-up + stall + restore): otherwise a scale-up only adds a rebalance, whose own stall and
    # restore would then look like a backlog again (the cascade this breaks).
    spare = capacity_soon - a_now
    drain_now = np.divide(lag, spare, out=np.full(w, np.inf), where=spare > 0)
    # ...counting the backlog the new rebalance itself adds: the whole group stops for the stall and
    # the moved partitions for their restore.
    disruption = params.rebalance_stall + moved_fraction(replicas, up_rec) * restore
    lag_then = lag + np.maximum(a_now - capacity_soon, 0.0) * reaction + a_now * disruption
    spare_then = c * effective_replicas(up_rec, partitions) - a_now
    drain_then = reaction + np.divide(lag_then, spare_then, out=np.full(w, np.inf), where=spare_then > 0)
    # While the last rebalance settles (stall + restore), its backlog is the rebalance's, not a
    # shortage of capacity: as DS2 ignores warm-up intervals, so does the backlog trigger.
    behind = warm & (drain_capacity > capacity_soon) & (drain_then < drain_now)
    scaling_up = usable & (hot | behind | (replicas < lo)) & (up_rec > replicas)

    # 5. Scale-down: the count the window's peak traffic needs. The window keeps what was measured
    # (level or rate, whichever is higher), not past extrapolations: a ramp's projection overshoots
    # its peak, and a long window would hold that overshoot for its whole length.
    down_win = _window(
        ids=state.down_window_id,
        values=state.down_window_value,
        now=now,
        length=params.down_stabilization,
        value=np.maximum(level, x),
        usable=usable,
        largest=True,
    )
    # When the rebalance breaks the SLO by itself (stall + restore > SLO), the moved partitions come
    # back that far behind; the lower count must leave enough headroom to catch them up within
    # 1 / TARGET_AGE_FRACTION SLOs, or the miss drags on for minutes at a tight utilisation. The
    # catch-up happens right after the move, at today's rate: the window's peak is covered by
    # ``peak_rate / u`` (asking catch-up headroom on top of the peak kept a group at twice its need).
    peak_rate = np.maximum(down_win.aggregate, forecast)
    over = np.maximum(params.rebalance_stall + restore - slo, 0.0)
    catch_up = forecast * (1.0 + over * TARGET_AGE_FRACTION / slo)
    down_need = aligned_replicas(np.maximum(peak_rate / u, catch_up) / c, partitions)
    down_need = _clamp(np.maximum(down_need, need), lo, hi)
    down_room = np.maximum(
        np.ceil(replicas * params.down_step_percent / 100.0).astype(np.int64), params.down_step_replicas
    )
    down_floor = np.maximum(replicas - down_room, lo)
    candidate = np.maximum(down_need, down_floor)
    down_limited = candidate > down_need
    candidate = np.where(down_limited, _aligned_at_least(candidate, partitions), candidate)
    candidate = _clamp(candidate, lo, hi)

    dwell_up = params.startup + params.rebalance_stall + restore + slo
    # A fresh engine (a restart) has no window behind it: like the HPA's initial recommendation, its
    # first observation counts as a change, so the first scale-down waits a whole window.
    down_since = np.where(first & usable, now, state.scaled_down_at)
    next_down = np.maximum(
        np.maximum(state.scaled_up_at + dwell_up, down_since + params.down_stabilization),
        membership_changed_at + warmup,
    )
    dwell_over = now >= next_down
    lag_growing = lag_rising | arrivals_ahead
    calm = ~lag_growing & (age <= TARGET_AGE_FRACTION * slo)

    # How long the lower count lasts: until the trend or the seasonal profile outgrows it.
    sustainable = c * effective_replicas(candidate, partitions) * u
    until_trend = np.where(
        trend > 0, np.divide(sustainable - level, trend, out=np.full(w, np.inf), where=trend > 0), np.inf
    )
    until_trend = np.maximum(until_trend, 0.0)
    until_season = season.exceeds_after(sustainable, params.payback_horizon) if season is not None else np.inf
    lasts = np.minimum(np.minimum(until_trend, until_season), params.payback_horizon)
    returns = lasts < params.payback_horizon
    savings = (replicas - candidate).clip(0) * lasts
    price = rebalance_price(params, replicas, candidate, restore, returns)
    worth_it = savings > price

    # Error budget: a move whose stall + restore breaks the SLO by itself spends budget; pace such
    # scale-downs so that, since the last change, at least breach / (1 - objective) seconds passed.
    breach = breach_seconds(
        params, candidate, partitions=partitions, arrival=forecast, capacity=c, restore=restore
    )
    last_change = np.maximum(state.scaled_up_at, state.scaled_down_at)
    budget = np.maximum(1.0 - params.slo_objective, 1e-6)
    paced_until = last_change + breach / budget
    paced = now >= paced_until

    wants_down = usable & ~scaling_up & (candidate < replicas)
    scaling_down = wants_down & dwell_over & calm & worth_it & paced

    # A scale-down decided earlier and not yet carried out stays decided while the group is calm:
    # the engine runs every sample interval, the HPA acts at its own sync, and a decision that
    # reverted to "hold" on the next cycle (the dwell it just started) would be seen by the HPA only
    # if a sync happened to fall in between. It is raised if the need grew, and dropped on any
    # scale-up or once lag grows.
    pending_down = (
        state.initialized & usable & ~scaling_up & ~scaling_down & calm & (state.desired < replicas)
    )
    pending_target = np.minimum(np.maximum(state.desired, down_need), replicas)

    initialized = state.initialized | usable
    held = np.where(state.initialized, state.desired, replicas)
    desired = np.where(scaling_up, up_target, np.where(scaling_down, candidate, replicas))
    desired = np.where(pending_down, pending_target, desired)
    desired = np.where(usable, desired, held)
    desired = _clamp(desired, lo, hi)

    # Ineffective scale-up detection.
    backlogged = age >= BACKLOG_SECONDS
    starts_check = scaling_up & backlogged & ~state.up_check_pending
    up_consume_before = np.where(starts_check, consumed, state.up_consume_before)
    expected = c * np.maximum(
        effective_replicas(up_target, partitions) - effective_replicas(np.maximum(members, 1), partitions),
        0.0,
    )
    up_expected_gain = np.where(starts_check, expected, state.up_expected_gain)
    checkable = state.up_check_pending & usable & warm & (now > state.scaled_up_at + dwell_up) & ~changed
    gain = consumed - state.up_consume_before
    ineffective = checkable & backlogged & (gain < INEFFECTIVE_GAIN * state.up_expected_gain)
    ineffective_until = np.where(ineffective, now + INEFFECTIVE_HOLD_SECONDS, state.ineffective_until)
    up_check_pending = np.where(checkable, False, state.up_check_pending | starts_check)

    # Reasons.
    moved_up = desired > replicas
    moved_down = desired < replicas
    reasons = _reason_codes(
        (moved_up, Reason.SCALE_UP),
        (moved_down, Reason.SCALE_DOWN),
        (~moved_up & ~moved_down, Reason.HOLD),
        (usable & (drain_capacity > arrival_need) & (drain_rate > 0), Reason.BACKLOG),
        (usable & ((drain_capacity <= arrival_need) | (drain_rate <= 0)), Reason.ARRIVAL),
        (usable & (seasonal_peak > np.maximum(level, projected)), Reason.SEASONAL_FLOOR),
        (usable & (surge > np.maximum(np.maximum(level, projected), seasonal_peak)), Reason.SURGE),
        (wants_down & ~dwell_over, Reason.DWELL),
        (wants_down & dwell_over & ~calm, Reason.LAG_GROWING),
        (wants_down & dwell_over & calm & ~worth_it, Reason.NOT_WORTH_IT),
        (wants_down & dwell_over & calm & worth_it & ~paced, Reason.ERROR_BUDGET),
        ((scaling_up & up_limited) | (scaling_down & down_limited), Reason.STEP_LIMITED),
        ((desired == lo) & (lo > 0) & (params.min_replicas == lo), Reason.AT_MIN),
        ((desired == hi) & (hi == params.max_replicas) & (required / c > hi), Reason.AT_MAX),
        ((desired == hi) & (partitions > 0) & (hi == partitions) & (required / c > hi), Reason.AT_PARTITIONS),
        (obs.stuck_partitions > 0, Reason.STUCK_PARTITIONS),
        (ineffective_now | ineffective, Reason.INEFFECTIVE_SCALE_UP),
        (obs.stale & state.initialized, Reason.STALE),
        (~usable & ~(obs.stale & state.initialized), Reason.WARMING_UP),
    )

    scaled_up_at = np.where(usable & moved_up, now, state.scaled_up_at)
    # The dwell after a scale-down runs from when the group actually shrank, not from the decision:
    # the HPA acts at its own sync, and a decision withdrawn before it did (lag ticked up for a
    # sample) must not hold the next one off for a whole stabilization window.
    shrank = usable & changed & (members < state.members_seen)
    scaled_down_at = np.where(shrank, now, down_since)
    next_down_after = np.maximum(
        np.maximum(scaled_up_at + dwell_up, scaled_down_at + params.down_stabilization),
        membership_changed_at + warmup,
    )

    decisions = Decisions(
        keys=params.keys,
        desired=desired.astype(np.int64),
        current=replicas.astype(np.int64),
        forecast_arrival_rate=np.where(usable, forecast, state.level),
        capacity_per_replica=c,
        required_rate=np.where(usable, required, 0.0),
        drain_rate=np.where(usable, drain_rate, 0.0),
        restore_seconds=restore,
        rebalance_price=np.where(wants_down, price, 0.0),
        stuck_partitions=np.maximum(obs.stuck_partitions, 0).astype(np.int64),
        next_scale_down_at=np.maximum(
            np.maximum(next_down_after, np.where(wants_down, paced_until, -np.inf)), now
        ),
        reasons=reasons,
    )
    new_state = EngineState(
        initialized=initialized,
        at=np.where(usable, now, state.at),
        level=np.where(usable, level, state.level),
        trend=np.where(usable, trend_slow, state.trend),
        trend_fast=np.where(usable, trend_fast, state.trend_fast),
        last_rate=np.where(usable, x, state.last_rate),
        capacity=np.where(usable, capacity, state.capacity),
        capacity_weight=np.where(usable, capacity_weight, state.capacity_weight),
        members_seen=np.where(usable, members, state.members_seen),
        membership_changed_at=membership_changed_at,
        desired=desired.astype(np.int64),
        scaled_up_at=scaled_up_at,
        scaled_down_at=scaled_down_at,
        lag_prev=np.where(usable, lag, state.lag_prev),
        up_consume_before=up_consume_before,
        up_expected_gain=up_expected_gain,
        up_check_pending=up_check_pending,
        ineffective_until=ineffective_until,
        down_window_id=down_win.ids,
        down_window_value=down_win.values,
        up_window_id=up_win.ids,
        up_window_value=up_win.values,
        season=season.profile if season is not None else state.season,
        season_since=season.since if season is not None else state.season_since,
    )
    return decisions, new_state


def _finite(values: FloatArray, default: float) -> FloatArray:
    """``values`` with NaN and infinities replaced (cheaper than ``np.nan_to_num`` on small arrays)."""
    return np.where(np.isfinite(values), values, default)


def _clamp(values: IntArray, lo: IntArray, hi: IntArray) -> IntArray:
    return np.minimum(np.maximum(values, lo), hi)


def _reason_codes(*flags: tuple[BoolArray, Reason]) -> IntArray:
    """Combine ``(mask, reason)`` pairs into one bit set per workload."""
    masks = np.stack([mask for mask, _ in flags]).astype(np.int64)
    bits = np.asarray([int(reason) for _, reason in flags], dtype=np.int64)
    codes: IntArray = bits @ masks
    return codes


def _aligned_at_least(floor: IntArray, partitions: IntArray) -> IntArray:
    """The smallest aligned count ``>= floor`` (``floor`` itself when partitions are unknown)."""
    f = np.maximum(floor.astype(np.float64), 1.0)
    p = partitions.astype(np.float64)
    # The largest k with ceil(P/k) >= f is k = ceil(P/(f-1)) - 1 (every k when f <= 1).
    k = np.where(
        f > 1, np.ceil(np.divide(p, f - 1.0, out=np.full_like(f, np.inf), where=f > 1) - 1e-9) - 1.0, p
    )
    k = np.minimum(np.maximum(k, 1.0), np.maximum(p, 1.0))
    aligned = np.ceil(p / k - 1e-9)
    return np.where((p > 0) & (f <= p), np.maximum(aligned, f), floor).astype(np.int64)


class Engine:
    """Convenience holder: the policies as arrays plus the current state, advanced one cycle at a time.

    The pure function is :func:`decide`; this wrapper is for callers that want to keep one object.
    """

    def __init__(self, params: PolicyArrays, state: EngineState | None = None) -> None:
        self.params = params
        self.state = state if state is not None else EngineState.initial(params)

    def step(self, observations: ObservationBatch) -> Decisions:
        decisions, self.state = decide(self.params, self.state, observations)
        return decisions
