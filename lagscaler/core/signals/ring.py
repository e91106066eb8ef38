"""Fixed-size history per key, in numpy arrays: memory is O(keys × window) and never grows with uptime.

A sampler that runs for months must not accumulate history. Each key (a partition, or a group's
partition) owns one *row* of a 2-D array whose width is the window; new samples overwrite the
oldest. Rows of keys that disappear (a deleted topic, a deleted group) are freed and reused, and
the row count grows (by doubling) only when more keys are live at once — so memory follows the
number of partitions, not the number of cycles.

Reads are vectorised across rows: :meth:`RingHistory.ordered` returns, for many rows at once, their
samples oldest → newest, *right-aligned* (the newest sample is always the last column; columns
before ``window − count`` are padding), which is what the status and lag-in-seconds code consumes.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

K = TypeVar("K", bound=Hashable)

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


class RowIndex(Generic[K]):
    """Stable row numbers for keys. Freed rows are reused; ``capacity`` only grows with live keys."""

    def __init__(self, capacity: int = 64) -> None:
        self._rows: dict[K, int] = {}
        self._free: list[int] = list(range(capacity - 1, -1, -1))
        self.capacity = capacity

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def get(self, key: K) -> int | None:
        return self._rows.get(key)

    def assign(self, keys: Sequence[K]) -> tuple[IntArray, IntArray]:
        """Rows for ``keys`` (allocating new ones) → (rows, which of them are new)."""
        rows = np.empty(len(keys), dtype=np.int64)
        new: list[int] = []
        for i, key in enumerate(keys):
            row = self._rows.get(key)
            if row is None:
                if not self._free:
                    self._free = list(range(2 * self.capacity - 1, self.capacity - 1, -1))
                    self.capacity *= 2
                row = self._free.pop()
                self._rows[key] = row
                new.append(row)
            rows[i] = row
        return rows, np.asarray(new, dtype=np.int64)

    def retain(self, keys: Iterable[K]) -> IntArray:
        """Forget every key not in ``keys``; returns the freed rows (for the caller to clear)."""
        keep = set(keys)
        gone = [k for k in self._rows if k not in keep]
        freed = [self._rows.pop(k) for k in gone]
        self._free.extend(freed)
        return np.asarray(freed, dtype=np.int64)


class RingHistory:
    """Per-row ring buffers of ``window`` samples, with one numpy array per named column."""

    def __init__(self, window: int, columns: Mapping[str, npt.DTypeLike], rows: int = 64) -> None:
        if window < 2:
            raise ValueError(f"a history window needs at least 2 samples, got {window}")
        self.window = window
        self._dtypes = {name: np.dtype(dtype) for name, dtype in columns.items()}
        self.columns: dict[str, npt.NDArray[Any]] = {
            name: np.zeros((rows, window), dtype=dtype) for name, dtype in self._dtypes.items()
        }
        self.head = np.zeros(rows, dtype=np.int64)  # next slot to write
        self.count = np.zeros(rows, dtype=np.int64)  # valid samples (≤ window)

    @property
    def rows(self) -> int:
        return len(self.head)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.columns.values()) + self.head.nbytes + self.count.nbytes

    def ensure_rows(self, rows: int) -> None:
        """Grow to at least ``rows`` rows (new rows are empty)."""
        if rows <= self.rows:
            return
        extra = rows - self.rows
        for name, array in self.columns.items():
            self.columns[name] = np.concatenate([array, np.zeros((extra, self.window), dtype=array.dtype)])
        self.head = np.concatenate([self.head, np.zeros(extra, dtype=np.int64)])
        self.count = np.concatenate([self.count, np.zeros(extra, dtype=np.int64)])

    def clear(self, rows: IntArray) -> None:
        self.head[rows] = 0
        self.count[rows] = 0

    def append(self, rows: IntArray, values: Mapping[str, npt.ArrayLike]) -> None:
        """Append one sample to each of ``rows`` (rows must be distinct)."""
        slots = self.head[rows]
        for name, array in self.columns.items():
            array[rows, slots] = values[name]
        self.head[rows] = (slots + 1) % self.window
        self.count[rows] = np.minimum(self.count[rows] + 1, self.window)

    def last_slot(self, rows: IntArray, back: int = 1) -> IntArray:
        """Slot of the ``back``-th newest sample of each row (valid only where ``count ≥ back``)."""
        return np.asarray((self.head[rows] - back) % self.window, dtype=np.int64)

    def last(self, name: str, rows: IntArray, back: int = 1) -> npt.NDArray[Any]:
        return self.columns[name][rows, self.last_slot(rows, back)]

    def set_last(self, name: str, rows: IntArray, values: npt.ArrayLike) -> None:
        self.columns[name][rows, self.last_slot(rows)] = values

    def order(self, rows: IntArray, last: int | None = None) -> tuple[IntArray, BoolArray]:
        """Slot indices oldest → newest, right-aligned, and which positions hold a sample.

        ``last`` limits the result to the newest ``last`` positions (cheaper when only they matter).
        """
        width = self.window if last is None else min(last, self.window)
        positions = np.arange(self.window - width, self.window)
        slots = (self.head[rows][:, None] + positions[None, :]) % self.window
        valid = positions[None, :] >= (self.window - self.count[rows])[:, None]
        return slots, valid

    def ordered(self, name: str, rows: IntArray, slots: IntArray) -> npt.NDArray[Any]:
        return self.columns[name][rows[:, None], slots]
