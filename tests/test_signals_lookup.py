"""Lag in seconds from (end offset, time) tables: interpolate, collapse, reject, never extrapolate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lagscaler.core.signals.lookup import AddResult, OffsetTimeTables, lag_seconds_of


def table_with(points: list[tuple[int, float]], window: int = 8) -> OffsetTimeTables:
    tables = OffsetTimeTables(window, rows=1)
    for offset, time in points:
        tables.add(np.array([0]), np.array([offset]), np.array([time]))
    return tables


def lookup(tables: OffsetTimeTables, committed: int, now: float) -> tuple[float, bool]:
    seconds, lower = tables.lag_seconds(np.array([0]), np.array([committed]), now)
    return float(seconds[0]), bool(lower[0])


def test_interpolates_between_the_points_around_the_committed_offset() -> None:
    # 10 messages per second: offset 100 at t=10, 200 at t=20, 300 at t=30.
    tables = table_with([(100, 10.0), (200, 20.0), (300, 30.0)])
    seconds, lower = lookup(tables, committed=149, now=30.0)
    assert seconds == pytest.approx(15.0)  # message 149 was appended when the end passed 150, at t=15
    assert not lower


def test_caught_up_is_zero_and_no_commit_or_one_sample_is_unknown() -> None:
    tables = table_with([(100, 10.0), (200, 20.0)])
    assert lookup(tables, committed=200, now=20.0) == (0.0, False)
    assert math.isnan(lookup(tables, committed=-1, now=20.0)[0])
    single = table_with([(100, 10.0)])
    assert math.isnan(lookup(single, committed=50, now=10.0)[0])


def test_older_than_the_table_is_a_flagged_lower_bound_not_an_extrapolation() -> None:
    tables = table_with([(1000, 50.0), (1100, 60.0)])
    seconds, lower = lookup(tables, committed=3, now=60.0)
    assert lower
    assert seconds == pytest.approx(10.0)  # at least since the oldest point; no invented number


def test_repeats_collapse_to_first_and_last_point() -> None:
    tables = table_with([(100, 1.0), (100, 2.0), (100, 3.0), (100, 4.0)])
    assert tables.points(0) == [(100, 1.0), (100, 4.0)]
    # After an idle stretch, the next message is dated after the end of the idle run.
    tables.add(np.array([0]), np.array([110]), np.array([5.0]))
    seconds, lower = lookup(tables, committed=100, now=5.0)
    assert seconds == pytest.approx(0.9)  # appended between t=4 and t=5: at 4 + 1/10
    assert not lower


def test_backwards_and_out_of_order_points_are_rejected() -> None:
    tables = table_with([(100, 1.0), (200, 2.0)])
    results = [
        tables.add(np.array([0]), np.array([150]), np.array([3.0]))[0],
        tables.add(np.array([0]), np.array([300]), np.array([2.0]))[0],
    ]
    assert results == [AddResult.BACKWARDS, AddResult.OUT_OF_ORDER]
    assert tables.points(0) == [(100, 1.0), (200, 2.0)]


def test_memory_is_bounded_by_the_window() -> None:
    tables = table_with([(i * 10, float(i)) for i in range(1, 100)], window=5)
    assert [o for o, _ in tables.points(0)] == [950, 960, 970, 980, 990]


points_strategy = st.lists(
    st.tuples(st.integers(0, 50), st.floats(0.01, 10.0, allow_nan=False)), min_size=2, max_size=25
).map(
    # cumulative: offsets never decrease, times strictly increase
    lambda steps: [
        (sum(s[0] for s in steps[: i + 1]), sum(s[1] for s in steps[: i + 1])) for i in range(len(steps))
    ]
)


@settings(max_examples=200)
@given(points_strategy, st.integers(0, 1300), st.floats(0.0, 50.0), st.integers(2, 10))
def test_vectorised_lookup_agrees_with_the_rule(
    raw: list[tuple[int, float]], committed: int, extra: float, window: int
) -> None:
    tables = table_with(raw, window=window)
    now = raw[-1][1] + extra
    expected = lag_seconds_of(tables.points(0), committed, now)
    got = lookup(tables, committed, now)
    assert got[1] == expected[1]
    assert got[0] == pytest.approx(expected[0])


@settings(max_examples=200)
@given(points_strategy, st.integers(0, 1300), st.integers(0, 1300))
def test_lag_seconds_properties(raw: list[tuple[int, float]], c1: int, c2: int) -> None:
    tables = table_with(raw)
    points = tables.points(0)
    now = raw[-1][1]
    oldest_time = points[0][1]
    low, high = sorted((c1, c2))
    s_low, lower_low = lookup(tables, low, now)
    s_high, _ = lookup(tables, high, now)
    assert s_low >= s_high - 1e-9  # committing further never makes you more behind
    assert 0.0 <= s_low <= now - oldest_time + 1e-9  # never beyond what the table can know
    assert lower_low == (low < points[0][0])  # flagged exactly when older than the table


@given(st.integers(1, 100_000), st.integers(3, 12), st.floats(0.0, 1.0))
def test_steady_production_gives_backlog_over_rate(rate: int, samples: int, behind_fraction: float) -> None:
    # Messages appended at a constant rate, sampled every second: the table is exact.
    points = [(rate * t, float(t)) for t in range(samples)]
    tables = table_with(points, window=samples)
    end = points[-1][0]
    committed = int(points[1][0] + behind_fraction * (end - points[1][0] - 1))
    seconds, lower = lookup(tables, committed, now=float(samples - 1))
    assert not lower
    assert seconds == pytest.approx((end - committed - 1) / rate, abs=1e-6)
