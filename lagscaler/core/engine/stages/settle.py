"""Stage 6, settle: the count to serve (pacing over time), the ineffective-scale-up check, the reasons,
and the next state."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lagscaler.core.engine.decision import Decisions, Reason
from lagscaler.core.engine.observation import BACKLOG_SECONDS
from lagscaler.core.engine.params import PolicyArrays
from lagscaler.core.engine.sizing import BoolArray, FloatArray, IntArray, clamp, effective_replicas
from lagscaler.core.engine.stages.capacity import CapacityEstimate
from lagscaler.core.engine.stages.forecast import Forecast
from lagscaler.core.engine.stages.need import Need
from lagscaler.core.engine.stages.prepare import Inputs
from lagscaler.core.engine.stages.recurrence import Recurrence
from lagscaler.core.engine.stages.scale_down import ScaleDownPlan, next_scale_down
from lagscaler.core.engine.stages.scale_up import ScaleUpPlan
from lagscaler.core.engine.state import EngineState

INEFFECTIVE_GAIN = 0.1
"""A scale-up adding less than this fraction of its expected throughput is ineffective (as in Flink's)."""
INEFFECTIVE_HOLD_SECONDS = 600.0
"""How long further scale-ups are held after an ineffective one."""
LIFE_WEIGHT = 0.5
"""The weight of the newest observation in the learned life of a lower count (``_down_life``)."""


@dataclass(frozen=True, slots=True)
class Stages:
    """The results of stages 0-5, which stage 6 turns into decisions and the next state."""

    inputs: Inputs
    forecast: Forecast
    capacity: CapacityEstimate
    recurrence: Recurrence
    need: Need
    up: ScaleUpPlan
    down: ScaleDownPlan


@dataclass(frozen=True, slots=True)
class _UpCheck:
    """The ineffective-scale-up check after this cycle; ``(W,)``."""

    consume_before: FloatArray  # messages/s consumed when the checked scale-up was decided
    expected_gain: FloatArray  # messages/s that scale-up should have added
    pending: BoolArray  # a check waits for the scale-up to settle
    ineffective: BoolArray  # this cycle found the scale-up ineffective
    ineffective_until: FloatArray  # s, Unix time further scale-ups are held until


def settle(params: PolicyArrays, state: EngineState, *, stages: Stages) -> tuple[Decisions, EngineState]:
    """Stage 6 (see :mod:`lagscaler.core.engine.core`)."""
    inputs, capacity, down = stages.inputs, stages.capacity, stages.down
    now, usable, replicas = inputs.now, inputs.usable, inputs.replicas
    desired = _desired(state, stages=stages)
    check = _check_scale_up(params, state, stages=stages)
    reasons = _reasons(params, state, stages=stages, desired=desired, check=check)
    scaled_up_at = np.where(usable & (desired > replicas), now, state.scaled_up_at)
    # The dwell after a scale-down runs from when the group actually shrank, not from the decision:
    # the HPA acts at its own sync, and a decision withdrawn before it did (lag ticked up for a
    # sample) must not hold the next one off.
    shrank = usable & capacity.changed & (inputs.members < state.members_seen)
    scaled_down_at = np.where(shrank, now, state.scaled_down_at)
    next_down_after = next_scale_down(
        params,
        inputs=inputs,
        capacity=capacity,
        up_dwell_ends=scaled_up_at + down.dwell_up,
        down_dwell_ends=scaled_down_at + down.dwell_down,
    )
    need = stages.need
    decisions = Decisions(
        keys=params.keys,
        desired=desired.astype(np.int64),
        current=replicas.astype(np.int64),
        forecast_arrival_rate=np.where(usable, need.forecast, state.level),
        capacity_per_replica=capacity.per_replica,
        required_rate=np.where(usable, need.required, 0.0),
        drain_rate=np.where(usable, need.drain_rate, 0.0),
        restore_seconds=inputs.restore,
        rebalance_price=np.where(down.wants_down, down.price, 0.0),
        stuck_partitions=inputs.stuck_partitions.astype(np.int64),
        next_scale_down_at=np.maximum(
            np.maximum(next_down_after, np.where(down.wants_down, down.paced_until, -np.inf)), now
        ),
        reasons=reasons,
    )
    return decisions, _next_state(
        state,
        stages=stages,
        desired=desired,
        check=check,
        scaled_up_at=scaled_up_at,
        scaled_down_at=scaled_down_at,
        down_life=_down_life(state, inputs=inputs, desired=desired, shrank=shrank),
    )


def _down_life(state: EngineState, *, inputs: Inputs, desired: IntArray, shrank: BoolArray) -> FloatArray:
    """How long a lower count lasts on this workload, learned from its own scale-downs.

    The first scale-up after the group shrank undid that scale-down: how long the lower count lasted
    is averaged in (equal weight to the last reversal and to all before it, so a changed workload is
    followed within a few). A further scale-down with no scale-up in between says the lower count
    outlived what was learned, when it did: averaged in too. So scale-downs that are quickly reversed
    shorten it, and lower counts that last lengthen it (stage 5 prices a scale-down against it).
    """
    lived = inputs.now - state.scaled_down_at
    after_down = state.scaled_down_at > state.scaled_up_at  # the last change was a scale-down
    reversed_ = inputs.usable & (desired > inputs.replicas) & after_down
    known = np.isfinite(state.down_life)
    outlived = shrank & after_down & known & (lived > state.down_life)
    blended = np.where(known, LIFE_WEIGHT * lived + (1.0 - LIFE_WEIGHT) * state.down_life, lived)
    life: FloatArray = np.where(reversed_ | outlived, blended, state.down_life)
    return life


def _desired(state: EngineState, *, stages: Stages) -> IntArray:
    """The count to serve: a scale-up, a scale-down, one still pending, or the current count.

    A scale-down decided earlier and not yet carried out stays decided while the group is calm:
    the engine runs every sample interval, the HPA acts at its own sync, and a decision that
    reverted to "hold" on the next cycle (the dwell it just started) would be seen by the HPA only
    if a sync happened to fall in between. It is raised if the need grew, and dropped on any
    scale-up or once lag grows. An unusable row keeps its last decision.
    """
    inputs, up, down = stages.inputs, stages.up, stages.down
    usable, replicas = inputs.usable, inputs.replicas
    pending_down = (
        state.initialized
        & usable
        & ~up.scaling_up
        & ~down.scaling_down
        & down.calm
        & ~stages.recurrence.due
        & (state.desired < replicas)
    )
    pending_target = np.minimum(np.maximum(state.desired, down.need), replicas)
    held = np.where(state.initialized, state.desired, replicas)
    desired = np.where(up.scaling_up, up.target, np.where(down.scaling_down, down.candidate, replicas))
    desired = np.where(pending_down, pending_target, desired)
    desired = np.where(usable, desired, held)
    return clamp(desired, inputs.lo, inputs.hi)


def _check_scale_up(params: PolicyArrays, state: EngineState, *, stages: Stages) -> _UpCheck:
    """Did the last scale-up decided while backlogged raise throughput by at least INEFFECTIVE_GAIN?

    A scale-up that did not (a downstream bottleneck, a hot partition) holds further scale-ups for
    INEFFECTIVE_HOLD_SECONDS. The check starts with the scale-up and is made once it has settled.
    """
    inputs, capacity, up = stages.inputs, stages.capacity, stages.up
    now, consumed, partitions = inputs.now, inputs.consumed, inputs.partitions
    backlogged = inputs.age >= BACKLOG_SECONDS
    starts_check = up.scaling_up & backlogged & ~state.up_check_pending
    expected = capacity.per_replica * np.maximum(
        effective_replicas(up.target, partitions)
        - effective_replicas(np.maximum(inputs.members, 1), partitions),
        0.0,
    )
    checkable = (
        state.up_check_pending
        & inputs.usable
        & capacity.warm
        & (now > state.scaled_up_at + stages.down.dwell_up)
        & ~capacity.changed
    )
    gain = consumed - state.up_consume_before
    ineffective = checkable & backlogged & (gain < INEFFECTIVE_GAIN * state.up_expected_gain)
    return _UpCheck(
        consume_before=np.where(starts_check, consumed, state.up_consume_before),
        expected_gain=np.where(starts_check, expected, state.up_expected_gain),
        pending=np.where(checkable, False, state.up_check_pending | starts_check),
        ineffective=ineffective,
        ineffective_until=np.where(ineffective, now + INEFFECTIVE_HOLD_SECONDS, state.ineffective_until),
    )


def _reasons(
    params: PolicyArrays, state: EngineState, *, stages: Stages, desired: IntArray, check: _UpCheck
) -> IntArray:
    """The reason codes of each decision (several may apply)."""
    inputs, forecast, need, up, down = stages.inputs, stages.forecast, stages.need, stages.up, stages.down
    usable, replicas, lo, hi = inputs.usable, inputs.replicas, inputs.lo, inputs.hi
    moved_up = desired > replicas
    moved_down = desired < replicas
    drain_sets_need = (need.drain_capacity > need.arrival_need) & (need.drain_rate > 0)
    arrival_sets_need = (need.drain_capacity <= need.arrival_need) | (need.drain_rate <= 0)
    provisioned = np.maximum(forecast.level, forecast.projected)
    wants_down, dwell_over = down.wants_down, down.dwell_over
    at_limit = (desired == hi) & (need.required / stages.capacity.per_replica > hi)
    return _reason_codes(
        (moved_up, Reason.SCALE_UP),
        (moved_down, Reason.SCALE_DOWN),
        (~moved_up & ~moved_down, Reason.HOLD),
        (usable & drain_sets_need, Reason.BACKLOG),
        (usable & arrival_sets_need, Reason.ARRIVAL),
        (usable & (forecast.seasonal_peak > provisioned), Reason.SEASONAL_FLOOR),
        (usable & (need.surge > np.maximum(provisioned, forecast.seasonal_peak)), Reason.SURGE),
        (usable & (stages.recurrence.ahead > np.maximum(provisioned, need.surge)), Reason.RECURRING_BURST),
        (wants_down & ~dwell_over, Reason.DWELL),
        (wants_down & dwell_over & ~down.calm, Reason.LAG_GROWING),
        (wants_down & dwell_over & down.calm & ~down.worth_it, Reason.NOT_WORTH_IT),
        (wants_down & dwell_over & down.calm & down.worth_it & ~down.paced, Reason.ERROR_BUDGET),
        ((up.scaling_up & up.step_limited) | (down.scaling_down & down.step_limited), Reason.STEP_LIMITED),
        ((desired == lo) & (lo > 0) & (params.min_replicas == lo), Reason.AT_MIN),
        (at_limit & (hi == params.max_replicas), Reason.AT_MAX),
        (at_limit & (inputs.partitions > 0) & (hi == inputs.partitions), Reason.AT_PARTITIONS),
        (inputs.stuck_partitions > 0, Reason.STUCK_PARTITIONS),
        (up.ineffective_now | check.ineffective, Reason.INEFFECTIVE_SCALE_UP),
        (inputs.stale & state.initialized, Reason.STALE),
        (~usable & ~(inputs.stale & state.initialized), Reason.WARMING_UP),
    )


def _reason_codes(*flags: tuple[BoolArray, Reason]) -> IntArray:
    """Combine ``(mask, reason)`` pairs into one bit set per workload."""
    masks = np.stack([mask for mask, _ in flags]).astype(np.int64)
    bits = np.asarray([int(reason) for _, reason in flags], dtype=np.int64)
    codes: IntArray = bits @ masks
    return codes


def _next_state(
    state: EngineState,
    *,
    stages: Stages,
    desired: IntArray,
    check: _UpCheck,
    scaled_up_at: FloatArray,
    scaled_down_at: FloatArray,
    down_life: FloatArray,
) -> EngineState:
    """What the next cycle starts from: an unusable row keeps what it had."""
    inputs, forecast, capacity, up, down = (
        stages.inputs,
        stages.forecast,
        stages.capacity,
        stages.up,
        stages.down,
    )
    usable = inputs.usable
    season = forecast.season
    recurrence = stages.recurrence
    return EngineState(
        initialized=state.initialized | usable,
        at=np.where(usable, inputs.now, state.at),
        level=np.where(usable, forecast.level, state.level),
        trend=np.where(usable, forecast.trend_slow, state.trend),
        trend_fast=np.where(usable, forecast.trend_fast, state.trend_fast),
        last_rate=np.where(usable, inputs.arrival, state.last_rate),
        capacity=np.where(usable, capacity.learned, state.capacity),
        capacity_weight=np.where(usable, capacity.learned_weight, state.capacity_weight),
        members_seen=np.where(usable, inputs.members, state.members_seen),
        membership_changed_at=capacity.membership_changed_at,
        desired=desired.astype(np.int64),
        scaled_up_at=scaled_up_at,
        scaled_down_at=scaled_down_at,
        lag_prev=np.where(usable, inputs.lag, state.lag_prev),
        up_consume_before=check.consume_before,
        up_expected_gain=check.expected_gain,
        up_check_pending=check.pending,
        ineffective_until=check.ineffective_until,
        down_window_id=down.window.ids,
        down_window_value=down.window.values,
        up_window_id=up.window.ids,
        up_window_value=up.window.values,
        season=season.profile if season is not None else state.season,
        season_since=inputs.observed_since,
        burst_onsets=recurrence.onsets,
        burst_peaks=recurrence.peaks,
        burst_widths=recurrence.widths,
        burst_active=recurrence.active,
        burst_base=recurrence.base,
        burst_next=recurrence.next_onset,
        burst_jitter=recurrence.jitter,
        burst_rate=recurrence.rate,
        down_life=np.where(usable, down_life, state.down_life),
    )
