"""The engine's memory between cycles, explicit and per workload (arrays of shape ``(W,)`` or ``(W, K)``).

A decision cycle takes a state and returns the next one; nothing is kept anywhere else. The
service keeps one ``EngineState`` for the lifetime of a loaded policy set and starts a fresh one
when the set changes (see :meth:`EngineState.initial`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from lagscaler.core.engine.params import PolicyArrays
from lagscaler.core.engine.sizing import BoolArray, FloatArray, IntArray

WINDOW_SLOTS = 16
"""Buckets in the sliding windows (scale-down max, scale-up min); a window is exact to 1/15 of its length."""

SEASON_BINS = 96
"""Bins per seasonal period: 15-minute bins for a daily period."""

BURST_SLOTS = 12
"""Burst onsets remembered per workload: four periods of up to three jobs sharing one period."""

BURST_HEADS = 3
"""The newest onsets each taken as the latest of a recurring series (jobs sharing one period)."""


@dataclass(frozen=True, slots=True)
class EngineState:
    initialized: BoolArray  # has seen one usable observation
    at: FloatArray  # time of the last usable observation
    level: FloatArray  # smoothed arrival rate (EWMA)
    trend: FloatArray  # its slow trend estimate, messages/s per second
    trend_fast: FloatArray  # its fast trend estimate
    last_rate: FloatArray  # the last measured arrival rate
    capacity: FloatArray  # estimated true per-replica rate
    capacity_weight: FloatArray  # seconds of evidence behind it (the prior counts as its weight)
    members_seen: IntArray
    membership_changed_at: FloatArray
    desired: IntArray
    scaled_up_at: FloatArray
    scaled_down_at: FloatArray
    lag_prev: FloatArray
    up_consume_before: FloatArray  # consume rate when the last scale-up was decided (backlogged)
    up_expected_gain: FloatArray  # the throughput that scale-up should have added
    up_check_pending: BoolArray
    ineffective_until: FloatArray
    down_window_id: IntArray  # (W, WINDOW_SLOTS) bucket ids
    down_window_value: FloatArray  # (W, WINDOW_SLOTS) max measured arrival rate per bucket
    up_window_id: IntArray
    up_window_value: FloatArray  # (W, WINDOW_SLOTS) min scale-up recommendation per bucket
    season: FloatArray  # (W, SEASON_BINS) arrival profile over the seasonal period
    # The first usable observation: the seasonal profile is used after one full period, and the
    # scale-down window is trusted after one full window (the name is from when only seasons used it).
    season_since: FloatArray
    burst_onsets: FloatArray  # (W, BURST_SLOTS) s, the last burst onsets, oldest first (-inf: none)
    burst_peaks: FloatArray  # (W, BURST_SLOTS) messages/s, each burst's peak measured rate
    burst_widths: FloatArray  # (W, BURST_SLOTS) s, each burst's duration (inf: not over yet)
    burst_active: BoolArray  # a burst is in progress
    burst_base: FloatArray  # messages/s, the smoothed level when it started
    burst_next: FloatArray  # (W, BURST_HEADS * (BURST_SLOTS - 1)) s, predicted onsets (inf: none)
    burst_jitter: FloatArray  # (W, BURST_HEADS * (BURST_SLOTS - 1)) s each prediction allows either side
    burst_rate: FloatArray  # (W, BURST_HEADS * (BURST_SLOTS - 1)) messages/s, each predicted burst
    # s a lower count lasted before a scale-up undid it, averaged over reversals (inf: none seen); a
    # scale-down pays for itself, and for the scale-up back, within this (stage 5, ``_payback``).
    down_life: FloatArray

    def rows(self, index: IntArray) -> EngineState:
        """The state of the workloads at ``index`` (as :meth:`PolicyArrays.rows`)."""
        return EngineState(**{item.name: getattr(self, item.name)[index] for item in fields(self)})

    @classmethod
    def initial(cls, params: PolicyArrays) -> EngineState:
        """The state before any observation: the capacity prior and nothing else."""
        w = params.size
        neg = np.full(w, -np.inf)
        return cls(
            initialized=np.zeros(w, dtype=np.bool_),
            at=np.zeros(w),
            level=np.zeros(w),
            trend=np.zeros(w),
            trend_fast=np.zeros(w),
            last_rate=np.zeros(w),
            capacity=params.capacity_prior.copy(),
            capacity_weight=params.capacity_prior_weight.copy(),
            members_seen=np.zeros(w, dtype=np.int64),
            membership_changed_at=neg.copy(),
            desired=np.zeros(w, dtype=np.int64),
            scaled_up_at=neg.copy(),
            scaled_down_at=neg.copy(),
            lag_prev=np.zeros(w),
            up_consume_before=np.zeros(w),
            up_expected_gain=np.zeros(w),
            up_check_pending=np.zeros(w, dtype=np.bool_),
            ineffective_until=neg.copy(),
            down_window_id=np.full((w, WINDOW_SLOTS), -(2**62), dtype=np.int64),
            down_window_value=np.zeros((w, WINDOW_SLOTS)),
            up_window_id=np.full((w, WINDOW_SLOTS), -(2**62), dtype=np.int64),
            up_window_value=np.zeros((w, WINDOW_SLOTS)),
            season=np.zeros((w, SEASON_BINS)),
            season_since=np.full(w, np.inf),
            burst_onsets=np.full((w, BURST_SLOTS), -np.inf),
            burst_peaks=np.zeros((w, BURST_SLOTS)),
            burst_widths=np.full((w, BURST_SLOTS), np.inf),
            burst_active=np.zeros(w, dtype=np.bool_),
            burst_base=np.zeros(w),
            burst_next=np.full((w, BURST_HEADS * (BURST_SLOTS - 1)), np.inf),
            burst_jitter=np.zeros((w, BURST_HEADS * (BURST_SLOTS - 1))),
            burst_rate=np.zeros((w, BURST_HEADS * (BURST_SLOTS - 1))),
            down_life=np.full(w, np.inf),
        )
