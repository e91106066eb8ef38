"""Rate profiles: what the load producer owes by each moment, for step schedules and replayed traces."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from lagscaler_demo.playground import RateProfile

from lagscaler.core.simulation.trace import Trace
from lagscaler.errors import UserError

steps = st.lists(
    st.tuples(st.floats(0.01, 1000), st.floats(0, 1e5)),
    min_size=1,
    max_size=8,
)


@given(steps)
def test_a_schedule_asks_for_exactly_each_steps_rate_times_its_length(
    schedule: list[tuple[float, float]],
) -> None:
    profile = RateProfile.from_schedule(schedule)
    expected = 0.0
    t = 0.0
    for seconds, rate in schedule:
        assert profile.rate_at(t + seconds / 2) == rate
        expected += seconds * rate
        t += seconds
        assert profile.messages_by(t) == pytest.approx(expected, rel=1e-9, abs=1e-6)
    assert profile.duration == pytest.approx(t)
    assert profile.total_messages == pytest.approx(expected, rel=1e-9, abs=1e-6)
    assert profile.messages_by(t + 100) == profile.total_messages  # nothing is owed after the end
    assert profile.rate_at(t + 1) == 0


@given(steps, st.lists(st.floats(0, 1.2), min_size=2, max_size=20))
def test_what_is_owed_never_decreases(schedule: list[tuple[float, float]], fractions: list[float]) -> None:
    profile = RateProfile.from_schedule(schedule)
    moments = sorted(f * profile.duration for f in fractions)
    owed = [profile.messages_by(t) for t in moments]
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(owed))


def test_a_trace_is_rescaled_to_the_peak_and_played_one_row_per_given_seconds() -> None:
    # Rows every 300 s (five minutes), one of them 600 s apart: the median spacing decides the compression.
    trace = Trace("t", np.array([0.0, 300, 600, 1200, 1500]), np.array([10.0, 40, 20, 20, 0]))
    profile = RateProfile.from_trace(trace, peak_rate=2000, seconds_per_row=2.0)
    assert profile.duration == pytest.approx(10.0)  # 1500 s of trace at 300 s per 2 s
    assert profile.peak == pytest.approx(2000)
    assert profile.rate_at(2.0) == pytest.approx(2000)
    assert profile.rate_at(1.0) == pytest.approx(1250)  # linear between rows, as the simulator reads traces
    # The integral of the piecewise-linear rate (trapezoids), in wall seconds.
    expected = 2 * (500 + 2000) / 2 + 2 * (2000 + 1000) / 2 + 4 * 1000 + 2 * (1000 + 0) / 2
    assert profile.total_messages == pytest.approx(expected)
    assert profile.messages_by(3.0) == pytest.approx(2 * (500 + 2000) / 2 + (2000 + 1500) / 2)


@given(
    st.lists(st.one_of(st.just(0.0), st.floats(1e-6, 1e4)), min_size=2, max_size=30),
    st.floats(1, 5000),
    st.floats(0.05, 10),
)
def test_a_replayed_trace_peaks_at_the_asked_rate(values: list[float], peak: float, per_row: float) -> None:
    if max(values) == 0:
        return
    trace = Trace("t", np.arange(len(values)) * 60.0, np.array(values))
    profile = RateProfile.from_trace(trace, peak_rate=peak, seconds_per_row=per_row)
    assert profile.peak == pytest.approx(peak)
    assert profile.duration == pytest.approx((len(values) - 1) * per_row)
    assert max(profile.rate_at(t) for t in profile.times[:-1]) <= peak * (1 + 1e-9)


def test_truncation_keeps_the_profile_up_to_the_cut() -> None:
    profile = RateProfile.from_schedule([(10, 100), (10, 300)])
    cut = profile.truncated(15)
    assert cut.duration == 15
    assert cut.total_messages == pytest.approx(10 * 100 + 5 * 300)
    assert profile.truncated(100) is profile
    trace = RateProfile.from_trace(
        Trace("t", np.array([0.0, 60, 120]), np.array([0.0, 10, 0])), peak_rate=100, seconds_per_row=10
    )
    assert trace.truncated(5).total_messages == pytest.approx(trace.messages_by(5))


def test_a_trace_file_is_read_with_the_simulators_parser(tmp_path: Path) -> None:
    csv = tmp_path / "shop.csv"
    csv.write_text("timestamp,value\n2014-04-10 00:00:00,5\n2014-04-10 00:05:00,10\n2014-04-10 00:10:00,5\n")
    profile = RateProfile.from_trace_file(csv, peak_rate=1000, seconds_per_row=1)
    assert profile.name == "shop.csv"
    assert profile.duration == 2
    assert profile.total_messages == pytest.approx(1500)

    (tmp_path / "bad.csv").write_text("timestamp,value\n2014-04-10 00:00:00,5\n2014-04-10 00:05:00,oops\n")
    with pytest.raises(UserError, match=r"bad\.csv:3: value 'oops' is not a number"):
        RateProfile.from_trace_file(tmp_path / "bad.csv", peak_rate=1000, seconds_per_row=1)
    with pytest.raises(UserError, match="cannot read trace"):
        RateProfile.from_trace_file(tmp_path / "missing.csv", peak_rate=1000, seconds_per_row=1)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ([], "at least one"),
        ([(0, 10)], "step 0: duration must be > 0"),
        ([(1, 10), (1, -1)], "step 1: rate must be >= 0"),
        ([(math.inf, 10)], "duration must be > 0"),
        ([(1, math.nan)], "rate must be >= 0"),
    ],
)
def test_bad_schedules_get_one_line_errors(schedule: list[tuple[float, float]], message: str) -> None:
    with pytest.raises(UserError, match=message):
        RateProfile.from_schedule(schedule)


def test_bad_replay_settings_get_one_line_errors() -> None:
    trace = Trace("t", np.array([0.0, 60]), np.array([1.0, 2.0]))
    with pytest.raises(UserError, match="seconds per trace row must be > 0"):
        RateProfile.from_trace(trace, peak_rate=10, seconds_per_row=0)
    with pytest.raises(UserError, match="peak-rate must be a positive number"):
        RateProfile.from_trace(trace, peak_rate=-1, seconds_per_row=1)
