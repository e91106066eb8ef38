"""Burrow's rules on sampled offsets: each rule, and the vectorised form agreeing with the readable one."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lagscaler.core.signals.model import PartitionStatus as S
from lagscaler.core.signals.status import (
    STATUS_ORDER,
    HistoryPoint,
    StatusRules,
    evaluate_status,
    evaluate_statuses,
)

RULES = StatusRules(window=5, min_samples=3, min_span=10.0)


def history(committed: list[int | None], end: list[int], step: float = 5.0) -> list[HistoryPoint]:
    return [HistoryPoint(c, e, i * step) for i, (c, e) in enumerate(zip(committed, end, strict=True))]


@pytest.mark.parametrize(
    ("committed", "end", "owned", "expected"),
    [
        pytest.param([None, None, None], [5, 6, 7], True, S.UNKNOWN, id="never-committed"),
        pytest.param([10, 20, 30], [10, 20, 30], True, S.OK, id="caught-up"),
        pytest.param([0, 5], [50, 60], True, S.UNKNOWN, id="too-few-samples"),
        pytest.param([5, 5, 5, 5], [10, 20, 30, 40], False, S.STOP, id="nobody-consumes-a-moving-log"),
        pytest.param([5, 5, 5, 5], [10, 20, 30, 40], True, S.STALL, id="owner-stuck-on-an-offset"),
        pytest.param([5, 5, 5, 5], [10, 10, 10, 10], False, S.STALL, id="idle-log-with-backlog"),
        pytest.param([10, 20, 15, 25], [40, 40, 40, 40], True, S.REWIND, id="offset-went-backwards"),
        pytest.param([10, 20, 30, 35], [30, 35, 40, 45], True, S.OK, id="touched-zero-lag-in-window"),
        pytest.param([10, 20, 30, 40], [20, 35, 50, 65], True, S.WARN, id="lag-never-decreased"),
        pytest.param([10, 30, 40, 60], [30, 45, 65, 75], True, S.OK, id="lag-went-down-at-least-once"),
    ],
)
def test_each_rule(committed: list[int | None], end: list[int], owned: bool, expected: S) -> None:
    assert evaluate_status(history(committed, end), owned, RULES) is expected


def test_short_span_is_unknown_so_a_slow_committer_is_not_called_stalled() -> None:
    # Three samples one second apart of a consumer that commits every 5 s look identical.
    points = history([5, 5, 5], [50, 60, 70], step=1.0)
    assert evaluate_status(points, True, RULES) is S.UNKNOWN
    assert S.STALL.stuck
    assert S.STOP.stuck
    assert not S.WARN.stuck


def test_only_the_window_counts() -> None:
    # An old rewind outside the 5-sample window no longer matters.
    points = history([10, 5, 20, 30, 40, 50, 60], [100, 100, 110, 120, 130, 140, 150])
    assert evaluate_status(points, True, RULES) is S.WARN


def to_arrays(histories: list[list[HistoryPoint]], width: int) -> tuple[np.ndarray, ...]:
    n = len(histories)
    committed = np.full((n, width), -1, dtype=np.int64)
    end = np.zeros((n, width), dtype=np.int64)
    times = np.zeros((n, width))
    valid = np.zeros((n, width), dtype=bool)
    for i, h in enumerate(histories):
        for j, p in enumerate(h[-width:]):
            col = width - len(h[-width:]) + j
            committed[i, col] = -1 if p.committed is None else p.committed
            end[i, col] = p.end
            times[i, col] = p.time
            valid[i, col] = True
    return committed, end, times, valid


point_lists = st.lists(
    st.tuples(st.one_of(st.none(), st.integers(0, 30)), st.integers(0, 30), st.floats(0.5, 8.0)),
    min_size=1,
    max_size=12,
).map(
    lambda raw: [
        HistoryPoint(c, max(e, c or 0), sum(r[2] for r in raw[: i + 1])) for i, (c, e, _) in enumerate(raw)
    ]
)


@settings(max_examples=150)
@given(
    st.lists(st.tuples(point_lists, st.booleans()), min_size=1, max_size=8),
    st.integers(2, 6),
    st.integers(0, 3),
    st.floats(0.0, 15.0),
)
def test_vectorised_rules_agree_with_the_readable_rules(
    cases: list[tuple[list[HistoryPoint], bool]], window: int, allowed: int, span: float
) -> None:
    rules = StatusRules(window=window, min_samples=2, min_span=span, allowed_lag=allowed)
    width = 12
    committed, end, times, valid = to_arrays([h for h, _ in cases], width)
    owned = np.array([o for _, o in cases])
    codes = evaluate_statuses(committed, end, times, valid, owned=owned, rules=rules)
    assert [STATUS_ORDER[c] for c in codes] == [evaluate_status(h, o, rules) for h, o in cases]


def test_rules_are_validated() -> None:
    with pytest.raises(ValueError, match="min_samples"):
        StatusRules(window=3, min_samples=5)
