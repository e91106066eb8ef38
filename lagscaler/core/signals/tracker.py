"""Per-partition signals derived from successive samples: lag, rates, lag in seconds, status.

The sampler hands over one cycle's raw numbers (committed and end offsets per group partition, and
whether a member owns it); the tracker keeps bounded history and returns everything derived from
it, for all partitions at once, as numpy arrays. It is pure: no IO, no clock — ``now`` is given.

History lives in two kinds of fixed-size rings (:mod:`lagscaler.core.signals.ring`): one (end offset,
time) table per *topic partition*, shared by every group reading it (lag in seconds,
:mod:`lagscaler.core.signals.lookup`), and one (committed, end, time) history per *group partition*
(rates and status, :mod:`lagscaler.core.signals.status`). Keys absent from a cycle (a deleted topic or
group, a group no longer configured) are forgotten, so memory tracks what is sampled now.

A topic partition whose end offset goes backwards is a new log (the topic was deleted and
recreated, or truncated): its table and the history of every group on it start over.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from lagscaler.core.signals.lookup import AddResult, FloatArray, OffsetTimeTables
from lagscaler.core.signals.ring import BoolArray, IntArray, RingHistory, RowIndex
from lagscaler.core.signals.status import StatusRules, evaluate_statuses

GroupPartition = tuple[str, str, int]  # (group, topic, partition)
TopicPartitionKey = tuple[str, int]

NO_COMMIT = -1


@dataclass(frozen=True)
class TrackerSettings:
    """``history``: samples kept per partition (the lag-in-seconds table holds up to this many points)."""

    history: int = 60
    status: StatusRules = field(default_factory=StatusRules)

    def __post_init__(self) -> None:
        if self.history < max(2, self.status.window):
            raise ValueError(
                f"history ({self.history} samples) must hold at least "
                f"the status window ({self.status.window})"
            )


@dataclass(frozen=True)
class Signals:
    """Derived values per input key, aligned with the keys given to :meth:`SignalTracker.update`.

    NaN means "not known": rates and lag seconds need two samples; lag needs a committed offset.
    """

    lag: FloatArray
    produce_rate: FloatArray
    consume_rate: FloatArray
    lag_seconds: FloatArray
    lag_seconds_lower_bound: BoolArray
    status: npt.NDArray[np.int64]


class SignalTracker:
    """Bounded history for the partitions being sampled, and the signals derived from it."""

    def __init__(self, settings: TrackerSettings | None = None) -> None:
        self.settings = settings or TrackerSettings()
        window = self.settings.history
        self._groups: RowIndex[GroupPartition] = RowIndex()
        self._partitions: RowIndex[TopicPartitionKey] = RowIndex()
        self._history = RingHistory(
            window, {"committed": np.int64, "end": np.int64, "time": np.float64}, self._groups.capacity
        )
        self._tables = OffsetTimeTables(window, self._partitions.capacity)

    @property
    def tracked(self) -> tuple[int, int]:
        """(group partitions, topic partitions) currently held."""
        return len(self._groups), len(self._partitions)

    @property
    def nbytes(self) -> int:
        return self._history.nbytes + self._tables.ring.nbytes + self._tables.observations.nbytes

    def update(
        self,
        keys: Sequence[GroupPartition],
        committed: IntArray,
        end: IntArray,
        owned: BoolArray,
        now: float,
        *,
        keep: Collection[GroupPartition] = (),
        start: IntArray | None = None,
    ) -> Signals:
        """Record one cycle (keys distinct; ``committed`` −1 = no commit) and derive the signals.

        History of keys neither given nor in ``keep`` is forgotten. ``keep`` is for partitions that
        could not be sampled this cycle (their group's coordinator did not answer) but still exist.

        ``start`` is each partition's log start offset (−1: not known). A commit below it points at
        records retention (or DeleteRecords) removed before the group read them: the consumer can
        never process them — it resets to the log start (``auto.offset.reset=earliest``) or past
        it — so lag and lag in seconds count from the log start, the most the group can still have
        to read. The committed offset itself is kept as committed in the history, so retention
        moving the log start never looks like the group consuming.
        """
        committed = np.asarray(committed, dtype=np.int64)
        end = np.asarray(end, dtype=np.int64)
        start = (
            np.full(len(keys), NO_COMMIT, dtype=np.int64) if start is None else np.asarray(start, np.int64)
        )
        owned = np.asarray(owned, dtype=np.bool_)
        n = len(keys)
        if not len(committed) == len(end) == len(owned) == len(start) == n:
            raise ValueError("keys, committed, end, owned and start must have the same length")

        # Forget what is no longer sampled, then find (or allocate) rows for what is.
        self._history.clear(self._groups.retain([*keys, *keep]))
        partition_keys = list(dict.fromkeys((topic, partition) for _, topic, partition in keys))
        kept_partitions = [(topic, partition) for _, topic, partition in keep]
        self._tables.clear(self._partitions.retain([*partition_keys, *kept_partitions]))
        rows, new_rows = self._groups.assign(keys)
        self._history.ensure_rows(self._groups.capacity)
        self._history.clear(new_rows)
        prows, new_prows = self._partitions.assign(partition_keys)
        self._tables.ensure_rows(self._partitions.capacity)
        self._tables.clear(new_prows)

        # End offsets: one point per topic partition; a log that went backwards starts over.
        position = {k: i for i, k in enumerate(partition_keys)}
        key_position = np.asarray([position[(t, p)] for _, t, p in keys], dtype=np.int64)
        partition_end = np.zeros(len(partition_keys), dtype=np.int64)
        partition_end[key_position] = end  # every group on a partition sees the same end offset
        times = np.full(len(partition_keys), now)
        added = self._tables.add(prows, partition_end, times)
        restarted = added == AddResult.BACKWARDS
        if restarted.any():
            self._tables.clear(prows[restarted])
            self._tables.add(prows[restarted], partition_end[restarted], times[restarted])
            self._history.clear(rows[restarted[key_position]])
        key_prow = prows[key_position]

        # Group partitions: append this cycle (time always moves forward here; skip if it does not).
        count = self._history.count[rows]
        last_time = np.where(count > 0, self._history.last("time", rows), -np.inf)
        fresh = now > last_time
        self._history.append(rows[fresh], {"committed": committed[fresh], "end": end[fresh], "time": now})

        has_commit = committed >= 0
        # What the group will read next: its commit, or the log start when retention removed the records
        # between the two (a start past the end is a stale start of a recreated topic: ignored).
        reading = np.where(has_commit & (start <= end), np.maximum(committed, start), committed)
        # A commit past the end offset (any client may commit any offset; a log truncated by an unclean
        # leader election ends below it) leaves nothing to read: lag 0, never a negative number that
        # would cancel real lag on the group's other partitions.
        lag = np.where(has_commit, np.maximum(end - reading, 0).astype(np.float64), np.nan)

        # Rates from the last two samples.
        count = self._history.count[rows]
        two = count >= 2
        c1, c0 = self._history.last("committed", rows), self._history.last("committed", rows, back=2)
        e1, e0 = self._history.last("end", rows), self._history.last("end", rows, back=2)
        t1, t0 = self._history.last("time", rows), self._history.last("time", rows, back=2)
        dt = np.where(two, t1 - t0, np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            produce = np.where(two & (e1 >= e0) & (dt > 0), (e1 - e0) / dt, np.nan)
            consume = np.where(two & (c0 >= 0) & (c1 >= c0) & (dt > 0), (c1 - c0) / dt, np.nan)

        seconds, lower = self._tables.lag_seconds(key_prow, np.where(has_commit, reading, NO_COMMIT), now)

        slots, valid = self._history.order(rows, last=self.settings.status.window)
        status = evaluate_statuses(
            self._history.ordered("committed", rows, slots),
            self._history.ordered("end", rows, slots),
            self._history.ordered("time", rows, slots),
            valid,
            owned=owned,
            rules=self.settings.status,
        )
        return Signals(lag, produce, consume, seconds, lower, status)

    def table(self, topic: str, partition: int) -> list[tuple[int, float]]:
        """The (end offset, time) table of one partition (for tests and debugging)."""
        row = self._partitions.get((topic, partition))
        return [] if row is None else self._tables.points(row)
