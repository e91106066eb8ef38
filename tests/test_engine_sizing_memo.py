"""The engine's remembered partition arithmetic (``sizing.memoized``) answers exactly as it computes.

The simulator's speed (issue 9) comes partly from remembering the results of the sizing functions
for small arrays. A remembered answer must be the computed one bit for bit, for any sequence of
calls (a stale or mixed-up entry would change decisions silently), and no caller may change it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lagscaler.core.engine.sizing import (
    MEMO_ROWS,
    aligned_at_least,
    aligned_at_most,
    effective_replicas,
    moved_fraction,
)
from lagscaler.core.engine.stages.scale_down import _reachable_below

Fn = Callable[[npt.NDArray[Any], npt.NDArray[Any]], npt.NDArray[Any]]

counts = st.integers(-3, 200)
REMEMBERED: list[tuple[Fn, st.SearchStrategy[Any]]] = [
    (effective_replicas, st.one_of(counts, st.floats(-5.0, 300.0))),
    (aligned_at_most, counts),
    (aligned_at_least, counts),
    (moved_fraction, counts),
]


def arrays(rows: int, values: st.SearchStrategy[Any]) -> st.SearchStrategy[npt.NDArray[Any]]:
    return st.lists(values, min_size=rows, max_size=rows).map(np.asarray)


@st.composite
def call_sequences(draw: st.DrawFn) -> list[tuple[int, npt.NDArray[Any], npt.NDArray[Any]]]:
    """Calls of random remembered functions, on few distinct inputs (so that entries are hit)."""
    pool = []
    for _ in range(draw(st.integers(1, 6))):
        index = draw(st.integers(0, len(REMEMBERED) - 1))
        rows = draw(st.integers(1, MEMO_ROWS + 2))  # past MEMO_ROWS too: not remembered there
        values = REMEMBERED[index][1]
        pool.append((index, draw(arrays(rows, values)), draw(arrays(rows, counts))))
    return draw(st.lists(st.sampled_from(pool), min_size=1, max_size=20))


@settings(max_examples=200, deadline=None)
@given(calls=call_sequences())
def test_a_remembered_result_is_the_computed_one_bit_for_bit(
    calls: list[tuple[int, npt.NDArray[Any], npt.NDArray[Any]]],
) -> None:
    for index, a, b in calls:
        fn = REMEMBERED[index][0]
        with np.errstate(all="ignore"):
            got, computed = fn(a, b), fn.__wrapped__(a, b)  # type: ignore[attr-defined]
        assert got.dtype == computed.dtype
        assert got.shape == computed.shape
        assert got.tobytes() == computed.tobytes()


def test_the_same_bytes_in_another_dtype_are_a_different_question() -> None:
    same_bytes = np.array([8.0]).view(np.int64)  # 4620693217682128896 replicas
    partitions = np.array([24])
    assert effective_replicas(same_bytes, partitions).tolist() == [24.0]
    assert effective_replicas(np.array([8.0]), partitions).tolist() == [8.0]


def test_a_remembered_result_cannot_be_changed_by_a_caller() -> None:
    first = aligned_at_least(np.array([48]), np.array([64]))
    with pytest.raises(ValueError, match="read-only"):
        first[0] = 1
    assert aligned_at_least(np.array([48]), np.array([64])).tolist() == [64]


def test_the_stage_function_it_remembers_too() -> None:
    replicas, tolerance = np.array([10, 64, 1]), np.array([0.1, 0.0, 0.5])
    assert (
        _reachable_below(replicas, tolerance).tobytes()
        == _reachable_below.__wrapped__(replicas, tolerance).tobytes()  # type: ignore[attr-defined]
    )
