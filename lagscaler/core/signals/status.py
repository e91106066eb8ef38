"""Partition health after Burrow's evaluation rules, adapted to sampled offsets.

The rules are linkedin/Burrow's (``core/internal/evaluator/caching.go``: ``checkIfOffsetsRewind``,
``checkIfOffsetsStopped``, ``checkIfOffsetsStalled``, ``checkIfLagNotDecreasing``,
``checkIfRecentLagZero``).

Burrow reads every commit from ``__consumer_offsets``; we sample the committed offset each cycle.
The rules are the same, evaluated over the last ``window`` samples of (committed, end, time):

1. no committed offset                                   → UNKNOWN (nothing to judge)
2. current lag ≤ ``allowed_lag``                         → OK
3. fewer than ``min_samples`` samples, or they span less
   than ``min_span`` seconds                             → UNKNOWN (too little history to say)
4. committed offset unchanged over the window while the
   log end moved, and no member owns the partition       → STOP
5. committed offset went backwards                       → REWIND
6. any sample in the window with lag ≤ ``allowed_lag``   → OK
7. committed offset unchanged over the window (lag > 0)  → STALL
8. lag never decreased over the window                   → WARN
9. otherwise                                             → OK

The adaptation is in rule 4. Burrow's STOP is "no commit for longer than the window"; sampling
cannot tell "no commit" from "the same offset committed again", so membership decides: a
partition that no live member owns cannot be committed by anyone (STOP — the consumer is gone),
while one owned by a live member that does not advance is stuck on something (STALL). Both mean
more replicas will not help (:attr:`PartitionStatus.stuck`). ``min_span`` guards against calling a
healthy consumer stalled just because it commits less often (5 s auto-commit) than we sample.

:func:`evaluate_status` states the rules for one partition; :func:`evaluate_statuses` applies them
to many at once with numpy, and must agree with the former (a property test checks it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import numpy.typing as npt

from lagscaler.core.signals.model import PartitionStatus
from lagscaler.core.signals.ring import BoolArray, IntArray

FloatArray = npt.NDArray[np.float64]

#: Status codes used in arrays, in this order (index = code).
STATUS_ORDER: tuple[PartitionStatus, ...] = tuple(PartitionStatus)
_CODE = {status: code for code, status in enumerate(STATUS_ORDER)}


@dataclass(frozen=True)
class StatusRules:
    """Parameters of the evaluation; defaults suit a sampler running every 1–5 s."""

    window: int = 10
    min_samples: int = 3
    min_span: float = 10.0
    allowed_lag: int = 0

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ValueError(f"status window must hold at least 2 samples, got {self.window}")
        if not 2 <= self.min_samples <= self.window:
            raise ValueError(
                f"min_samples must be between 2 and the window ({self.window}), got {self.min_samples}"
            )
        if self.min_span < 0 or self.allowed_lag < 0:
            raise ValueError("min_span and allowed_lag must not be negative")


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    """One sample of one partition of one group (``committed`` None: no commit yet)."""

    committed: int | None
    end: int
    time: float


def evaluate_status(history: Sequence[HistoryPoint], owned: bool, rules: StatusRules) -> PartitionStatus:
    """Burrow's rules for one partition over its history (oldest first)."""
    if not history or history[-1].committed is None:
        return PartitionStatus.UNKNOWN
    latest, latest_committed = history[-1], history[-1].committed
    if latest.end - latest_committed <= rules.allowed_lag:
        return PartitionStatus.OK
    window: list[HistoryPoint] = []
    for point in reversed(history[-rules.window :]):
        if point.committed is None:
            break
        window.append(point)
    window.reverse()
    if len(window) < rules.min_samples or window[-1].time - window[0].time < rules.min_span:
        return PartitionStatus.UNKNOWN
    commits = [p.committed for p in window if p.committed is not None]
    lags = [p.end - c for p, c in zip(window, commits, strict=True)]
    constant = all(c == commits[-1] for c in commits)
    if constant and window[-1].end > window[0].end and not owned:
        return PartitionStatus.STOP
    if any(b < a for a, b in pairwise(commits)):
        return PartitionStatus.REWIND
    if any(lag <= rules.allowed_lag for lag in lags):
        return PartitionStatus.OK
    if constant:
        return PartitionStatus.STALL
    if all(b >= a for a, b in pairwise(lags)):
        return PartitionStatus.WARN
    return PartitionStatus.OK


def evaluate_statuses(
    committed: IntArray,
    end: IntArray,
    times: FloatArray,
    valid: BoolArray,
    *,
    owned: BoolArray,
    rules: StatusRules,
) -> npt.NDArray[np.int64]:
    """The same rules for many partitions: 2-D histories, right-aligned (newest last), ``-1`` = no commit.

    Returns status codes (indexes into :data:`STATUS_ORDER`).
    """
    n, width = committed.shape
    take = min(rules.window, width)
    c = committed[:, width - take :]
    e = end[:, width - take :]
    t = times[:, width - take :]
    v = valid[:, width - take :]
    lag = e - c

    bad = ~v | (c < 0)
    any_bad = bad.any(axis=1)
    last_bad = np.where(any_bad, take - 1 - np.argmax(bad[:, ::-1], axis=1), -1)
    positions = np.arange(take)
    suffix = positions[None, :] > last_bad[:, None]  # the trailing run of samples with a commit
    first = np.minimum(last_bad + 1, take - 1)
    rows = np.arange(n)
    samples = suffix.sum(axis=1)
    span = t[:, -1] - t[rows, first]

    latest_known = ~bad[:, -1]
    caught_up = latest_known & (lag[:, -1] <= rules.allowed_lag)
    too_little = (samples < rules.min_samples) | (span < rules.min_span)
    constant = np.all((c == c[:, -1:]) | ~suffix, axis=1)
    end_moved = e[:, -1] > e[rows, first]
    pair = suffix[:, :-1]  # both samples of a consecutive pair are in the run
    rewind = np.any((c[:, 1:] < c[:, :-1]) & pair, axis=1)
    any_ok = np.any((lag <= rules.allowed_lag) & suffix, axis=1)
    never_decreased = np.all((lag[:, 1:] >= lag[:, :-1]) | ~pair, axis=1)

    conditions = [
        ~latest_known,
        caught_up,
        too_little,
        constant & end_moved & ~owned,
        rewind,
        any_ok,
        constant,
        never_decreased,
    ]
    choices = [
        _CODE[PartitionStatus.UNKNOWN],
        _CODE[PartitionStatus.OK],
        _CODE[PartitionStatus.UNKNOWN],
        _CODE[PartitionStatus.STOP],
        _CODE[PartitionStatus.REWIND],
        _CODE[PartitionStatus.OK],
        _CODE[PartitionStatus.STALL],
        _CODE[PartitionStatus.WARN],
    ]
    return np.select(conditions, choices, default=_CODE[PartitionStatus.OK]).astype(np.int64)
