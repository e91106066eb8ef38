"""Lag in seconds: when was the next message a consumer has to read appended to the log?

Kafka does not say when an offset was written without reading the message. So, per partition, we
keep a table of (end offset, time) points from our own samples and read it backwards: the time the
log end first passed offset ``c`` is when message ``c`` was appended, and ``now − that time`` is how
far behind the consumer committed at ``c`` is (kafka-lag-exporter's approach: seglo/kafka-lag-exporter
``src/main/scala/com/lightbend/kafkalagexporter/LookupTable.scala``).

Table rules (each with a reason):

- Points must move forward in time; a point not later than the newest is ignored (clock or
  ordering glitch).
- A point whose offset is below the newest is *rejected*: end offsets do not go backwards in a
  live log. (A recreated topic does; the caller detects that rejection and resets the table.)
- Repeats collapse: a run of equal offsets keeps only its first and last point, moving the last
  one's time forward. The first says when the run started; the last says "still nothing new at
  this time" — both are needed to interpolate, and collapsing keeps an idle partition from filling
  the table with useless points and pushing out the history that still matters.
- Never extrapolate: a committed offset older than the oldest point gets ``now − oldest time``,
  a *lower bound*, and is flagged as such instead of an invented number (as seglo/kafka-lag-exporter
  issue 333 asks of its extrapolation).
- Interpolation is linear between the two points around the offset.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from lagscaler.core.signals.ring import BoolArray, IntArray, RingHistory

FloatArray = npt.NDArray[np.float64]


class AddResult(enum.IntEnum):
    ADDED = 0
    COLLAPSED = 1  # same offset as the newest run: its end time moved forward
    OUT_OF_ORDER = 2  # not later than the newest point: ignored
    BACKWARDS = 3  # offset below the newest point: rejected


class OffsetTimeTables:
    """One bounded (end offset, time) table per row, updated and queried for many rows at once."""

    def __init__(self, window: int, rows: int = 64) -> None:
        self.ring = RingHistory(window, {"offset": np.int64, "time": np.float64}, rows)
        self.observations = np.zeros(rows, dtype=np.int64)

    @property
    def window(self) -> int:
        return self.ring.window

    def ensure_rows(self, rows: int) -> None:
        before = self.ring.rows
        self.ring.ensure_rows(rows)
        if self.ring.rows > before:
            self.observations = np.concatenate(
                [self.observations, np.zeros(self.ring.rows - before, dtype=np.int64)]
            )

    def clear(self, rows: IntArray) -> None:
        self.ring.clear(rows)
        self.observations[rows] = 0

    def add(self, rows: IntArray, offsets: IntArray, times: FloatArray) -> npt.NDArray[np.int64]:
        """Add one point per row (rows distinct); returns an :class:`AddResult` per row."""
        rows = np.asarray(rows, dtype=np.int64)
        offsets = np.asarray(offsets, dtype=np.int64)
        times = np.asarray(times, dtype=np.float64)
        ring = self.ring
        count = ring.count[rows]
        has_last = count >= 1
        last_offset = np.where(has_last, ring.last("offset", rows), np.iinfo(np.int64).min)
        last_time = np.where(has_last, ring.last("time", rows), -np.inf)
        prev_offset = np.where(count >= 2, ring.last("offset", rows, back=2), np.iinfo(np.int64).min)

        result = np.full(len(rows), AddResult.ADDED, dtype=np.int64)
        result[has_last & (times <= last_time)] = AddResult.OUT_OF_ORDER
        undecided = result == AddResult.ADDED
        result[undecided & has_last & (offsets < last_offset)] = AddResult.BACKWARDS
        undecided = result == AddResult.ADDED
        collapse = undecided & (count >= 2) & (offsets == last_offset) & (prev_offset == last_offset)
        result[collapse] = AddResult.COLLAPSED

        if collapse.any():
            ring.set_last("time", rows[collapse], times[collapse])
        append = result == AddResult.ADDED
        if append.any():
            ring.append(rows[append], {"offset": offsets[append], "time": times[append]})
        accepted = (result == AddResult.ADDED) | (result == AddResult.COLLAPSED)
        self.observations[rows[accepted]] += 1
        return result

    def lag_seconds(self, rows: IntArray, committed: IntArray, now: float) -> tuple[FloatArray, BoolArray]:
        """Seconds since the message at each committed offset was appended, and lower-bound flags.

        ``committed < 0`` (no commit) and rows with fewer than two observations give NaN. A
        committed offset at or past the newest end offset is 0 seconds behind.
        """
        rows = np.asarray(rows, dtype=np.int64)
        committed = np.asarray(committed, dtype=np.int64)
        n = len(rows)
        seconds = np.full(n, np.nan)
        lower = np.zeros(n, dtype=np.bool_)
        if n == 0:
            return seconds, lower
        ring = self.ring
        slots, valid = ring.order(rows)
        offsets = ring.ordered("offset", rows, slots)
        times = ring.ordered("time", rows, slots)
        window = ring.window
        first = window - ring.count[rows]  # index of the oldest point (right-aligned)
        newest = offsets[:, -1]
        known = (committed >= 0) & (self.observations[rows] >= 2)

        caught_up = known & (committed >= newest)
        seconds[caught_up] = 0.0

        behind = known & ~caught_up
        above = valid & (offsets > committed[:, None])
        j = np.argmax(above, axis=1)  # first point past the committed offset (exists: newest > c)
        idx = np.arange(n)
        older_than_table = behind & (j <= first)
        lower[older_than_table] = True
        seconds[older_than_table] = now - times[idx, first][older_than_table]

        inside = behind & ~older_than_table
        if inside.any():
            jj = j[inside]
            ii = idx[inside]
            o0, o1 = offsets[ii, jj - 1], offsets[ii, jj]
            t0, t1 = times[ii, jj - 1], times[ii, jj]
            fraction = (committed[inside] + 1 - o0) / (o1 - o0)
            appended = t0 + np.clip(fraction, 0.0, 1.0) * (t1 - t0)
            seconds[inside] = np.maximum(now - appended, 0.0)
        return seconds, lower

    def points(self, row: int) -> list[tuple[int, float]]:
        """One row's table, oldest first (for tests and debugging)."""
        rows = np.asarray([row], dtype=np.int64)
        slots, valid = self.ring.order(rows)
        offsets = self.ring.ordered("offset", rows, slots)[0]
        times = self.ring.ordered("time", rows, slots)[0]
        return [(int(o), float(t)) for o, t, v in zip(offsets, times, valid[0], strict=True) if v]


def lag_seconds_of(points: Sequence[tuple[int, float]], committed: int, now: float) -> tuple[float, bool]:
    """The same rule for one table given as a list of points (oldest first): (seconds, lower bound).

    The readable statement of the rule; the vectorised :meth:`OffsetTimeTables.lag_seconds` must
    agree with it (a property test checks that).
    """
    newest_offset = points[-1][0]
    if committed >= newest_offset:
        return 0.0, False
    for k, (offset, time) in enumerate(points):
        if offset > committed:
            if k == 0:
                return now - time, True
            o0, t0 = points[k - 1]
            fraction = min(max((committed + 1 - o0) / (offset - o0), 0.0), 1.0)
            return max(now - (t0 + fraction * (time - t0)), 0.0), False
    raise AssertionError("unreachable: the newest point is past the committed offset")
