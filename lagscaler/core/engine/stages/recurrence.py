"""Stage 2b, recurrence: bursts that come back on a stable period, and the next one's rate ahead of it.

A scheduled batch job pours a burst into the topic every period. The burst is first seen at the next
observation after it starts, and a scale-up ordered then lands a reaction time later (sync +
start-up + stall + restore): a short burst is over, or its SLO broken, before the capacity serves.
Capacity is ready at the onset only if it was ordered before it, which takes knowing when the next
burst comes. This stage learns that from the traffic alone:

* **Episodes.** A burst *starts* when the measured arrival rate is at least ``ONSET_RATIO`` times the
  smoothed level before it and at least one replica's worth (at the target utilisation) above it (a
  smaller rise needs no more replicas, so predicting it would change nothing); it *ends* when the
  rate falls back below halfway between that level and the episode's peak. Each onset time, peak
  rate and duration go into a ring of the last ``BURST_SLOTS`` (fixed size per workload, whatever the
  history).
* **Recurrence.** For each of the newest ``HEADS`` onsets (several jobs may share one period) and each
  older onset, the gap between them is a candidate period. From the head, the chain of onsets one
  candidate period apart is followed back (each step anchored on the onset found, so that jitter
  does not accumulate); at least ``MIN_INTERVALS`` consecutive intervals must match. A line fitted
  through the chain's onsets gives the period and the next onset; every onset must lie within
  ``JITTER_FRACTION`` of a period (plus one sync, the resolution an onset is observed at) of the line,
  and every burst of the chain must have been over within ``MAX_WIDTH_FRACTION`` of the period.
  Twice that residual, at least ``WINDOW_FRACTION`` of the period, is the jitter the prediction
  allows for on either side.
* **Ahead.** From the predicted onset minus its jitter minus the lead (the reaction time, one sync for
  the data's age, and one sync per further step the scale-up limit needs) until the onset plus its
  jitter and one sync (the burst is then measured, and the scale-down window holds it), the rate to
  provision for includes the largest peak of the chain's bursts.

It switches itself off: a prediction whose onset passed with no burst is in the past, and a chain
needs ``MIN_INTERVALS`` fresh matches again. A flash crowd (one onset), a staircase or random spikes
(gaps that do not repeat within the jitter) never form a chain. It only ever adds a rate to the
maximum the need is sized for; the predictions are recomputed only in a cycle where some workload's
episode starts or ends, so a cycle without one costs a few comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lagscaler.core.engine.params import PolicyArrays
from lagscaler.core.engine.sizing import BoolArray, FloatArray
from lagscaler.core.engine.stages.capacity import CapacityEstimate
from lagscaler.core.engine.stages.prepare import Inputs
from lagscaler.core.engine.state import BURST_HEADS, EngineState

BASELINE_HALF_LIVES = 2.0
"""No burst starts until the level has been observed for this many half-lives: before, the level is
the first sample (often an empty interval's 0), and any traffic would read as a burst that lasts."""

ONSET_RATIO = 2.0
"""A burst starts when the arrival rate is at least this multiple of the smoothed level before it."""

END_FRACTION = 0.5
"""A burst ends when the rate falls below this fraction of the way from its starting level to its peak."""

MIN_INTERVALS = 3
"""Consecutive matching intervals (onsets one period apart, so four bursts) before a period is believed.

Three points at equal gaps turn up by chance among a night's random spikes; four rarely do."""

JITTER_FRACTION = 0.05
"""The most an onset may stray from the fitted line, as a fraction of the period (plus one sync).

A cron job keeps to the clock within seconds; a load-dependent chain of jobs drifts by a few per
cent. A staircase whose steps last 30 % more or less, summed over a ladder, strays further."""

WINDOW_FRACTION = 0.03
"""The least a prediction allows either side of its onset, as a fraction of the period (plus one sync).

A line through four onsets fits them more closely than it predicts the fifth: with onsets strewn
over ±1 % of the period about their slots, the next one may lie 2.5 % from the line while the four
lie within 0.5 % of it. The window is also at least twice the worst residual."""

MAX_WIDTH_FRACTION = 0.5
"""A burst is over within this fraction of its period. A rise that lasts longer (a staircase's ladder,
a busy day) is a level the forecast and the scale-down window follow, not a burst to be ready for."""

MIN_PERIOD_REACTIONS = 2.0
"""A period shorter than this many reaction times is not predicted: capacity could not be ordered and
given back in between, and the scale-down window already spans such gaps."""

MAX_STEPS = 16
"""Scale-up steps counted when the step limit lengthens the lead (beyond, the lead stops growing)."""


@dataclass(frozen=True, slots=True)
class Recurrence:
    """Burst episodes, the period learned from their onsets, and what is predicted now."""

    onsets: FloatArray  # (W, BURST_SLOTS) s, Unix times of the last onsets, oldest first (-inf: none)
    peaks: FloatArray  # (W, BURST_SLOTS) messages/s, each burst's peak measured rate
    widths: FloatArray  # (W, BURST_SLOTS) s, each burst's duration (inf: not over yet)
    active: BoolArray  # (W,) a burst is in progress
    base: FloatArray  # (W,) messages/s, the smoothed level when it started
    next_onset: FloatArray  # (W, BURST_HEADS * (BURST_SLOTS - 1)) s, predicted onsets (inf: none)
    jitter: FloatArray  # (W, BURST_HEADS * (BURST_SLOTS - 1)) s each prediction allows either side
    rate: FloatArray  # (W, BURST_HEADS * (BURST_SLOTS - 1)) messages/s, each prediction's burst
    lead: FloatArray  # (W,) s before a predicted onset that capacity is ordered
    ahead: FloatArray  # (W,) messages/s, the predicted burst to be ready for now (0: none)

    @property
    def due(self) -> BoolArray:
        """A predicted burst is due (``(W,)``): no scale-down now, pending or new (stages 5 and 6)."""
        due: BoolArray = self.ahead > 0
        return due


def predict_bursts(
    params: PolicyArrays, state: EngineState, *, inputs: Inputs, capacity: CapacityEstimate
) -> Recurrence:
    """Stage 2b: record burst episodes, refit the period when one starts or ends, read the prediction."""
    on = params.burst_recurrence & inputs.usable & ~inputs.first
    arrival, base_before = inputs.arrival, state.level
    one_replica = capacity.per_replica * params.target_utilization
    settled = inputs.now - inputs.observed_since >= BASELINE_HALF_LIVES * params.half_life
    starts = (
        on
        & settled
        & ~state.burst_active
        & (arrival >= ONSET_RATIO * base_before)
        & (arrival - base_before >= one_replica)
    )
    top = np.maximum(state.burst_peaks[:, -1], arrival)
    ends = on & state.burst_active & (arrival < state.burst_base + END_FRACTION * (top - state.burst_base))
    onsets, peaks = _recorded(state, inputs=inputs, starts=starts, grows=on & state.burst_active, top=top)
    widths = np.where(
        starts[:, None],
        np.concatenate([state.burst_widths[:, 1:], np.full((starts.shape[0], 1), np.inf)], axis=1),
        state.burst_widths,
    )
    widths[:, -1] = np.where(ends, inputs.now - onsets[:, -1], widths[:, -1])
    active = np.where(on, (state.burst_active | starts) & ~ends, state.burst_active)
    base = np.where(starts, base_before, state.burst_base)
    if starts.any() or ends.any():
        # Only the rows whose ring changed are refitted: with hundreds of workloads some episode starts
        # or ends in most cycles, and the fit is (rows, heads, candidates, slots) wide.
        rows = np.flatnonzero(starts | ends)
        refit = _fit(
            onsets=onsets[rows],
            peaks=peaks[rows],
            widths=widths[rows],
            sync=params.sync_period[rows],
            reaction=inputs.reaction[rows],
        )
        next_onset, jitter, rate = state.burst_next.copy(), state.burst_jitter.copy(), state.burst_rate.copy()
        next_onset[rows], jitter[rows], rate[rows] = refit
    else:
        next_onset, jitter, rate = state.burst_next, state.burst_jitter, state.burst_rate
    lead = (
        _lead(params, inputs=inputs)
        if np.isfinite(next_onset).any()
        else inputs.reaction + params.sync_period + params.up_stabilization
    )
    sync = params.sync_period[:, None]
    window_opens = next_onset - jitter - lead[:, None]
    window_closes = next_onset + jitter + sync
    now = inputs.now[:, None]
    live = (now >= window_opens) & (now <= window_closes) & params.burst_recurrence[:, None]
    ahead = np.where(live, rate, 0.0).max(axis=1)
    return Recurrence(
        onsets=onsets,
        peaks=peaks,
        widths=widths,
        active=active,
        base=base,
        next_onset=next_onset,
        jitter=jitter,
        rate=rate,
        lead=lead,
        ahead=np.where(inputs.usable, ahead, 0.0),
    )


def _recorded(
    state: EngineState, *, inputs: Inputs, starts: BoolArray, grows: BoolArray, top: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """The onset ring with this cycle's onset pushed in (oldest dropped), the newest peak updated."""
    shifted_onsets = np.concatenate([state.burst_onsets[:, 1:], inputs.now[:, None]], axis=1)
    shifted_peaks = np.concatenate([state.burst_peaks[:, 1:], inputs.arrival[:, None]], axis=1)
    onsets = np.where(starts[:, None], shifted_onsets, state.burst_onsets)
    peaks = np.where(starts[:, None], shifted_peaks, state.burst_peaks)
    # While a burst lasts its peak grows; an onset this cycle starts its own peak at this rate.
    peaks[:, -1] = np.where(starts, inputs.arrival, np.where(grows, top, peaks[:, -1]))
    return onsets, peaks


def _fit(
    *, onsets: FloatArray, peaks: FloatArray, widths: FloatArray, sync: FloatArray, reaction: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Predicted next onsets, their jitter and rates, one per (head, candidate period); inf where none.

    For head ``h`` (one of the newest ``BURST_HEADS`` onsets) and an older onset ``j``, the
    candidate period is ``o[h] - o[j]``. The chain walks back from ``o[h]``: at each step the onset
    nearest to one period before the last one found, if within twice the allowed jitter. A line
    through the first ``MIN_INTERVALS + 1`` chain points (least squares on their index) must keep every
    point within the allowed jitter; it predicts the onset one period after the head.
    """
    w, k = onsets.shape
    heads = np.arange(k - BURST_HEADS, k)  # (H,)
    older = np.arange(k - 1)  # (C,)
    head_t = onsets[:, heads]  # (W, H)
    period = head_t[:, :, None] - onsets[:, None, older]  # (W, H, C)
    valid = np.isfinite(period) & (period > 0)
    period = np.where(valid, period, np.inf)
    quantum = sync[:, None, None]
    allowed = JITTER_FRACTION * period + quantum  # (W, H, C)
    chain = np.empty((w, BURST_HEADS, k - 1, MIN_INTERVALS + 1))
    chain_peak = np.broadcast_to(peaks[:, heads][:, :, None], period.shape).copy()
    chain_width = np.broadcast_to(widths[:, heads][:, :, None], period.shape).copy()
    chain[..., 0] = head_t[:, :, None]
    found = valid.copy()
    all_onsets = onsets[:, None, None, :]  # (W, 1, 1, K)
    all_peaks = peaks[:, None, None, :]
    all_widths = widths[:, None, None, :]
    for step in range(1, MIN_INTERVALS + 1):
        expected = chain[..., step - 1] - period  # (W, H, C)
        distance = np.abs(all_onsets - expected[..., None])  # (W, H, C, K)
        distance = np.where(np.isfinite(distance), distance, np.inf)
        nearest = np.argmin(distance, axis=-1)
        gap = np.take_along_axis(distance, nearest[..., None], axis=-1)[..., 0]
        # Within twice the allowed jitter (two onsets each stray), never as far as half a period.
        found &= gap <= np.minimum(2.0 * allowed, 0.5 * period)
        pick = nearest[..., None]
        at = np.take_along_axis(np.broadcast_to(all_onsets, distance.shape), pick, axis=-1)[..., 0]
        peak = np.take_along_axis(np.broadcast_to(all_peaks, distance.shape), pick, axis=-1)[..., 0]
        chain[..., step] = np.where(found, at, 0.0)
        chain_peak = np.maximum(chain_peak, np.where(found, peak, 0.0))
        width = np.take_along_axis(np.broadcast_to(all_widths, distance.shape), pick, axis=-1)[..., 0]
        chain_width = np.maximum(chain_width, np.where(found, width, 0.0))
    # Least squares of time on index (0 = the head, 1 = one period before, ...).
    index = -np.arange(MIN_INTERVALS + 1, dtype=np.float64)
    centred = index - index.mean()
    times = np.where(found[..., None], chain, 0.0)
    mean_t = times.mean(axis=-1)
    slope = (times * centred).sum(axis=-1) / (centred**2).sum()  # s per period
    fitted = mean_t[..., None] + slope[..., None] * centred
    residual = np.abs(times - fitted).max(axis=-1)
    confident = (
        found
        & (slope >= MIN_PERIOD_REACTIONS * reaction[:, None, None])
        & (residual <= JITTER_FRACTION * slope + quantum)
        & (chain_width <= MAX_WIDTH_FRACTION * slope)
    )
    predicted = mean_t + slope * (1.0 - index.mean())  # the line at index +1
    next_onset = np.where(confident, predicted, np.inf).reshape(w, -1)
    spread = np.maximum(2.0 * residual, WINDOW_FRACTION * slope) + quantum
    jitter = np.where(confident, spread, 0.0).reshape(w, -1)
    rate = np.where(confident, chain_peak, 0.0).reshape(w, -1)
    return next_onset, jitter, rate


def _lead(params: PolicyArrays, *, inputs: Inputs) -> FloatArray:
    """Seconds before an onset that capacity must be ordered: reaction, data age, stabilization, steps.

    Up-stabilization holds a scale-up until its window agrees; a step-limited scale-up from the
    current count to the partition limit takes one sync per step beyond the first; the lead counts
    them (an upper bound: the burst may need fewer).
    """
    count = np.maximum(inputs.replicas, 1).astype(np.float64)
    hi = inputs.hi.astype(np.float64)
    steps = np.zeros(count.shape)
    for _ in range(MAX_STEPS):
        short = count < hi
        if not short.any():
            break
        count = np.where(short, np.minimum(count + params.up_room(count), hi), count)
        steps += short
    extra = np.maximum(steps - 1.0, 0.0) * params.sync_period
    lead: FloatArray = inputs.reaction + params.sync_period + params.up_stabilization + extra
    return lead
