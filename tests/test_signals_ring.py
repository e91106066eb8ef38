"""Fixed-size ring history: bounded memory, right-aligned ordered reads, row reuse."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lagscaler.core.signals.ring import RingHistory, RowIndex


def test_ordered_reads_are_oldest_first_and_right_aligned() -> None:
    ring = RingHistory(4, {"v": np.int64}, rows=2)
    rows = np.array([0, 1])
    for value in (1, 2, 3, 4, 5, 6):
        ring.append(rows[:1], {"v": [value]})
    ring.append(rows[1:], {"v": [10]})
    slots, valid = ring.order(rows)
    values = ring.ordered("v", rows, slots)
    assert values[0].tolist() == [3, 4, 5, 6]
    assert valid[0].all()
    assert values[1, -1] == 10
    assert valid[1].tolist() == [False, False, False, True]


@given(st.lists(st.integers(1, 50), min_size=1, max_size=40), st.integers(2, 8))
def test_history_is_the_last_window_samples_and_memory_is_fixed(values: list[int], window: int) -> None:
    ring = RingHistory(window, {"v": np.int64}, rows=1)
    before = ring.nbytes
    row = np.array([0])
    for v in values:
        ring.append(row, {"v": [v]})
    slots, valid = ring.order(row)
    kept = ring.ordered("v", row, slots)[0][valid[0]].tolist()
    assert kept == values[-window:]
    assert ring.nbytes == before  # appending never allocates


@settings(max_examples=60)
@given(st.lists(st.sets(st.integers(0, 30), max_size=20), min_size=1, max_size=30))
def test_row_index_reuses_rows_and_grows_only_with_live_keys(cycles: list[set[int]]) -> None:
    index: RowIndex[int] = RowIndex(capacity=4)
    for keys in cycles:
        index.retain(keys)
        ordered = sorted(keys)
        rows, _new = index.assign(ordered)
        assert len(set(rows.tolist())) == len(ordered)  # distinct keys, distinct rows
        assert all(0 <= r < index.capacity for r in rows.tolist())
        assert len(index) == len(keys)
    peak = max(len(k) for k in cycles)
    assert index.capacity <= max(4, 2 * peak)


def test_growing_rows_keeps_existing_history() -> None:
    ring = RingHistory(3, {"v": np.int64}, rows=1)
    ring.append(np.array([0]), {"v": [7]})
    ring.ensure_rows(5)
    assert ring.rows == 5
    assert ring.last("v", np.array([0])).tolist() == [7]
    assert ring.count.tolist() == [1, 0, 0, 0, 0]
