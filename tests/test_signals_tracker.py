"""The tracker: rates, lag, lag seconds and status from successive cycles, with bounded memory."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lagscaler.core.signals.model import PartitionStatus
from lagscaler.core.signals.status import STATUS_ORDER, StatusRules
from lagscaler.core.signals.tracker import Signals, SignalTracker, TrackerSettings

KEYS = [("g", "t", 0), ("g", "t", 1), ("h", "t", 0)]


def cycle(
    tracker: SignalTracker,
    keys: list[tuple[str, str, int]],
    committed: list[int],
    end: list[int],
    *,
    now: float,
    owned: list[bool] | None = None,
) -> Signals:
    owned = [True] * len(keys) if owned is None else owned
    return tracker.update(keys, np.array(committed), np.array(end), np.array(owned), now)


def test_first_sample_has_lag_but_no_rates_or_lag_seconds() -> None:
    tracker = SignalTracker()
    s = cycle(tracker, KEYS, [10, -1, 40], [50, 60, 50], now=100.0)
    assert s.lag[0] == 40
    assert math.isnan(s.lag[1])
    assert s.lag[2] == 10
    assert np.isnan(s.produce_rate).all()
    assert np.isnan(s.consume_rate).all()
    assert np.isnan(s.lag_seconds).all()


def test_second_sample_gives_rates_and_lag_seconds() -> None:
    tracker = SignalTracker()
    cycle(tracker, KEYS, [10, -1, 40], [50, 60, 50], now=100.0)
    s = cycle(tracker, KEYS, [30, -1, 50], [70, 60, 70], now=102.0)
    assert s.produce_rate.tolist() == [10.0, 0.0, 10.0]
    assert s.consume_rate[0] == 10.0
    assert math.isnan(s.consume_rate[1])
    assert s.consume_rate[2] == 5.0
    # committed 30 < oldest table point 50: a lower bound of 2 s, flagged.
    assert s.lag_seconds[0] == pytest.approx(2.0)
    assert s.lag_seconds_lower_bound[0]
    # committed 50 sits in the table: message 50 appended at 100 + 1/20 × 2.
    assert s.lag_seconds[2] == pytest.approx(2.0 - 0.1)
    assert not s.lag_seconds_lower_bound[2]
    assert math.isnan(s.lag_seconds[1])  # no commit, no lag seconds


def test_shared_partition_table_serves_every_group() -> None:
    tracker = SignalTracker()
    cycle(tracker, KEYS, [0, 0, 0], [10, 10, 10], now=1.0)
    cycle(tracker, KEYS, [0, 0, 0], [20, 20, 20], now=2.0)
    assert tracker.tracked == (3, 2)
    assert tracker.table("t", 0) == [(10, 1.0), (20, 2.0)]


def test_removed_partitions_and_groups_are_forgotten_and_come_back_fresh() -> None:
    tracker = SignalTracker()
    cycle(tracker, KEYS, [1, 1, 1], [5, 5, 5], now=1.0)
    cycle(tracker, KEYS, [2, 2, 2], [6, 6, 6], now=2.0)
    cycle(tracker, KEYS[:1], [3], [7], now=3.0)  # group h and partition t/1 gone
    assert tracker.tracked == (1, 1)
    s = cycle(tracker, KEYS, [4, 4, 4], [8, 8, 8], now=4.0)
    assert not math.isnan(s.produce_rate[0])
    assert math.isnan(s.produce_rate[1])
    assert math.isnan(s.produce_rate[2])


def test_log_that_goes_backwards_starts_over() -> None:
    tracker = SignalTracker()
    cycle(tracker, KEYS[:1], [90], [100], now=1.0)
    cycle(tracker, KEYS[:1], [95], [110], now=2.0)
    s = cycle(tracker, KEYS[:1], [0], [5], now=3.0)  # topic deleted and recreated
    assert tracker.table("t", 0) == [(5, 3.0)]
    assert math.isnan(s.produce_rate[0])
    assert math.isnan(s.consume_rate[0])
    assert s.status[0] != STATUS_ORDER.index(PartitionStatus.REWIND)


def test_a_commit_below_the_log_start_counts_from_the_log_start() -> None:
    """Retention deleted records 10-59 before group g read them: it will resume at 60, not 10."""
    tracker = SignalTracker()
    keys = KEYS[:2]
    starts = np.array([60, -1])  # partition 1's start not known: unclamped
    owned = np.array([True, True])
    tracker.update(keys, np.array([10, 10]), np.array([100, 100]), owned, 100.0, start=starts)
    s = tracker.update(keys, np.array([10, 10]), np.array([120, 120]), owned, 110.0, start=starts)
    assert s.lag.tolist() == [60, 110]
    assert s.consume_rate.tolist() == [0.0, 0.0]  # the start moving is not the group consuming
    # Record 60 is older than the table (which starts at 100): a lower bound, like record 10.
    assert s.lag_seconds_lower_bound.tolist() == [True, True]
    # A start past the end belongs to a log that was recreated since: it is ignored.
    s = tracker.update(
        keys, np.array([10, 10]), np.array([130, 130]), owned, 120.0, start=np.array([500, -1])
    )
    assert s.lag.tolist() == [120, 120]


def test_stalled_owned_partition_is_told_apart_from_one_that_is_merely_behind() -> None:
    rules = StatusRules(window=5, min_samples=3, min_span=4.0)
    tracker = SignalTracker(TrackerSettings(history=8, status=rules))
    keys = [("g", "stuck", 0), ("g", "behind", 0)]
    for i in range(6):
        s = cycle(tracker, keys, [10, 10 * i], [100 + 10 * i, 100 + 20 * i], now=float(2 * i))
    assert [STATUS_ORDER[c] for c in s.status] == [PartitionStatus.STALL, PartitionStatus.WARN]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sets(st.integers(0, 40), max_size=30), min_size=1, max_size=60))
def test_memory_follows_live_partitions_not_uptime(cycles: list[set[int]]) -> None:
    tracker = SignalTracker(TrackerSettings(history=10, status=StatusRules(window=5)))
    peak = 0
    for n, partitions in enumerate(cycles):
        keys = [("g", "t", p) for p in sorted(partitions)]
        peak = max(peak, len(keys))
        k = len(keys)
        cycle(tracker, keys, [n] * k, [n + 5] * k, now=float(n))
        assert tracker.tracked == (k, k)
    # Rows grow by doubling from 64 only when more partitions are live at once.
    assert tracker.nbytes <= SignalTracker(
        TrackerSettings(history=10, status=StatusRules(window=5))
    ).nbytes * max(1, 2 * math.ceil(peak / 64))


def test_many_cycles_do_not_grow_memory() -> None:
    tracker = SignalTracker()
    keys = [("g", "t", p) for p in range(200)]
    cycle(tracker, keys, list(range(200)), [1000] * 200, now=0.0)
    size = tracker.nbytes
    for n in range(1, 500):
        cycle(tracker, keys, list(range(n, 200 + n)), [1000 + n] * 200, now=float(n))
    assert tracker.nbytes == size
