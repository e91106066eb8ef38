"""The engine's two kinds of memory over time: sliding windows (max or min) and a seasonal profile."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lagscaler.core.engine.params import PolicyArrays
from lagscaler.core.engine.sizing import BoolArray, FloatArray, IntArray
from lagscaler.core.engine.state import SEASON_BINS, WINDOW_SLOTS, EngineState


@dataclass(frozen=True, slots=True)
class Windows:
    """A sliding window after this cycle's value went in."""

    ids: IntArray  # (W, WINDOW_SLOTS) bucket ids, to keep in the state
    values: FloatArray  # (W, WINDOW_SLOTS) max (or min) per bucket, to keep in the state
    aggregate: FloatArray  # (W,) max (or min) over the window, this cycle's value included


def window(
    *,
    ids: IntArray,
    values: FloatArray,
    now: FloatArray,
    length: FloatArray,
    value: FloatArray,
    usable: BoolArray,
    largest: bool,
) -> Windows:
    """Add ``value`` to a sliding window of ``length`` seconds and return its max (or min)."""
    rows = np.arange(ids.shape[0])
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
    extreme = masked.max(axis=1) if largest else masked.min(axis=1)
    extreme = np.maximum(extreme, value) if largest else np.minimum(extreme, value)
    return Windows(new_ids, new_values, extreme)


@dataclass(frozen=True, slots=True)
class Season:
    """The seasonal profile after this cycle's update, read ahead of now."""

    profile: FloatArray  # (W, SEASON_BINS) messages/s: arrival EWMA per bin of the period
    since: FloatArray  # (W,) s: first usable observation (a full period must be observed)
    ahead: FloatArray  # (W, SEASON_BINS) messages/s: the profile from the current bin on
    starts: FloatArray  # (W, SEASON_BINS) s: from now until each of those bins starts
    mature: BoolArray  # (W,) a full period has been observed

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


def season(
    *,
    params: PolicyArrays,
    state: EngineState,
    now: FloatArray,
    dt: FloatArray,
    arrival: FloatArray,
    usable: BoolArray,
    since: FloatArray,
) -> Season:
    """Fold this observation into the seasonal arrival profile (an EWMA per bin of the period)."""
    rows = np.arange(arrival.shape[0])
    on = params.seasonal_period > 0
    period = np.where(on, params.seasonal_period, 1.0)
    width = period / SEASON_BINS
    phase = np.mod(now, period)
    current_bin = np.minimum(np.floor(phase / width).astype(np.int64), SEASON_BINS - 1)
    into_bin = phase - current_bin * width

    old = state.season[rows, current_bin]
    alpha = 1.0 - np.exp(-dt / width)
    updated = np.where(old > 0, old + alpha * (arrival - old), arrival)
    profile = state.season.copy()
    write = usable & on
    profile[rows, current_bin] = np.where(write, updated, old)
    mature = on & (now - since >= period)

    offsets = np.arange(SEASON_BINS)
    bins = (current_bin[:, None] + offsets[None, :]) % SEASON_BINS
    ahead = profile[rows[:, None], bins]
    starts = offsets[None, :] * width[:, None] - into_bin[:, None]
    return Season(profile, since, ahead, starts, mature)
