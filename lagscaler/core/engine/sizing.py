"""Partition-aware replica arithmetic, vectorised over workloads.

A consumer group spreads ``P`` partitions over ``R`` members as evenly as it can, so the busiest
member owns ``ceil(P / R)`` partitions. With load spread evenly over partitions (keyed traffic), the
group keeps up only while that busiest member does: the group's *effective* capacity is
``c · P / ceil(P / R)``, not ``c · R``. With 24 partitions, 9, 10 and 11 replicas all behave like 8,
and the smallest count that meets a demand is always one of the *aligned* counts ``ceil(P / k)``.
Sizing therefore never asks for a count that only adds cost, and a member beyond ``P`` idles.

All functions take and return arrays of shape ``(W,)``; ``partitions <= 0`` means "unknown" and
falls back to plain ``c · R`` arithmetic.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_F = TypeVar("_F", bound=Callable[..., Any])

MEMO_ROWS = 16
"""Arrays up to this many rows are remembered by :func:`memoized` functions (a key costs its bytes)."""
MEMO_ENTRIES = 4096
"""Results a :func:`memoized` function keeps before it starts afresh (each a few hundred bytes)."""


def memoized(fn: _F) -> _F:
    """``fn`` (pure, of two arrays) remembering its results for small arrays, read-only.

    A decision cycle asks the same few counts again and again (the current count, the need, the
    step limits: integers that change only when the group does), and one call of these functions
    costs a few dozen numpy operations whatever the rows, 15-30 µs for one workload: about half of
    a cycle in the simulator before they were remembered (``bench/simulator_speed.py``). The key is
    each argument's dtype, shape and bytes, so a result is returned only for bit-identical inputs,
    and it is read-only, so that no caller can change what a later call returns.
    """
    cache: dict[tuple[object, ...], npt.NDArray[Any]] = {}

    @functools.wraps(fn)
    def remembered(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> npt.NDArray[Any]:
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.size <= MEMO_ROWS >= b.size):
            computed: npt.NDArray[Any] = fn(a, b)
            return computed
        key = (a.dtype.char, a.shape, a.tobytes(), b.dtype.char, b.shape, b.tobytes())
        found = cache.get(key)
        if found is None:
            if len(cache) >= MEMO_ENTRIES:
                cache.clear()
            found = fn(a, b)
            found.flags.writeable = False
            cache[key] = found
        return found

    return cast(_F, remembered)


def filled(shape: tuple[int, ...], value: float) -> FloatArray:
    """A float array of ``value``: the ``out`` of a guarded ``np.divide``. ``np.full``/``np.full_like``
    and ``np.zeros_like`` are Python-level wrappers costing several times the division itself on
    the engine's small arrays (one workload in the simulator: ``bench/simulator_speed.py``)."""
    out = np.empty(shape)
    out.fill(value)
    return out


@memoized
def effective_replicas(replicas: IntArray | FloatArray, partitions: IntArray) -> FloatArray:
    """How many replicas' worth of throughput ``replicas`` members deliver on ``partitions``."""
    r = np.maximum(np.asarray(replicas, dtype=np.float64), 0.0)
    p = partitions.astype(np.float64)
    # Where nobody consumes, the busiest member owns "0" partitions and the group delivers 0.
    busiest = np.divide(p, r, out=np.zeros(r.shape), where=r > 0)
    np.ceil(busiest, out=busiest)
    aligned = np.divide(p, busiest, out=np.zeros(r.shape), where=busiest > 0)
    return np.where(p > 0, np.minimum(aligned, np.minimum(r, p)), r)


def aligned_replicas(needed: FloatArray, partitions: IntArray) -> IntArray:
    """The smallest replica count whose effective capacity covers ``needed`` replicas' worth.

    ``needed`` is demand divided by per-replica capacity. The answer is the smallest ``R`` with
    ``P / ceil(P / R) >= needed``: let ``k = floor(P / needed)`` partitions per member suffice, then
    ``R = ceil(P / k)``. More demand than ``P`` members can serve returns ``P`` (the caller clamps).
    """
    need = np.minimum(np.fmax(needed, 0.0), 1e12)  # fmax: NaN needs nothing
    p = partitions.astype(np.float64)
    plain = np.ceil(need - 1e-9)
    # k: how many partitions each member may own and still keep up (at least 1).
    # A need below 1e-200 would overflow the division: it is infinitely many partitions each, as is 0.
    k = np.floor(np.divide(p, need, out=filled(need.shape, np.inf), where=need > 1e-200) + 1e-9)
    k = np.minimum(np.maximum(k, 1.0), np.maximum(p, 1.0))  # >= 1: the division below needs no guard
    # Where ``need > p``, k is 1 and this is ``ceil(p - 1e-9) = p`` (p a whole number): no branch for it.
    aligned = np.ceil(p / k - 1e-9)
    result = np.where(need <= 0, 0.0, np.where(p > 0, aligned, plain))
    return result.astype(np.int64)  # every branch is >= 0 (-0.0 at worst)


def sized_with_headroom(
    rate: FloatArray,
    per_replica: FloatArray,
    utilization: FloatArray,
    band: FloatArray,
    partitions: IntArray,
) -> IntArray:
    """The aligned count for ``rate`` at ``utilization``, not rounding up across a partition cliff.

    The target utilisation asks for a margin of ``1 - u`` above the rate. Rounding up to an aligned
    count can add far more: on 64 partitions every count from 33 to 63 is as slow as 32, so a rate
    a hair above ``u`` of what 32 carry asks for 64, twice the capacity, for a margin the policy
    never asked for. Where the aligned count ``u`` asks for has more than ``1 / u`` times the
    throughput of the aligned count ``band`` asks for (``u <= band < 1``: the rounding alone would
    add more margin than the policy's own), the smaller count is taken: it carries the rate at no
    more than ``band``. Where aligned counts lie close together, or ``band == u``, this is plain
    ``aligned_replicas(rate / (c · u))``.
    """
    c = np.maximum(per_replica, 1e-12)
    # Both counts in one call each (rows ``:W`` at the target, ``W:`` at the band): a call costs the
    # same for 2W rows as for W on the engine's small arrays, and every operation is element-wise.
    w = partitions.shape[0]
    both = np.concatenate((partitions, partitions))
    counts = aligned_replicas(
        np.concatenate((rate / (c * utilization), rate / (c * np.maximum(band, utilization)))), both
    )
    effective = effective_replicas(counts, both)
    at_target, below = counts[:w], counts[w:]
    cliff = effective[:w] * utilization > effective[w:]
    return np.where((below < at_target) & cliff & (below > 0), below, at_target)


@memoized
def aligned_at_most(limit: IntArray, partitions: IntArray) -> IntArray:
    """The largest aligned count ``<= limit`` (``limit`` itself when partitions are unknown).

    Used when a step limit cuts a move short: stopping on a non-aligned count would pay for a
    replica that adds no throughput.
    """
    lim = np.maximum(limit.astype(np.float64), 0.0)
    p = partitions.astype(np.float64)
    # The aligned counts are ceil(P/k); the largest one <= lim has the smallest k with ceil(P/k) <= lim,
    # i.e. k = ceil(P / lim).
    k = np.ceil(np.divide(p, lim, out=filled(lim.shape, np.inf), where=lim > 0) - 1e-9)
    aligned = np.ceil(np.divide(p, k, out=np.zeros(p.shape), where=np.isfinite(k) & (k > 0)) - 1e-9)
    result = np.where((p > 0) & (lim > 0), np.minimum(aligned, lim), lim)
    return result.astype(np.int64)


@memoized
def aligned_at_least(floor: IntArray, partitions: IntArray) -> IntArray:
    """The smallest aligned count ``>= floor`` (``floor`` itself when partitions are unknown or fewer)."""
    f = np.maximum(floor.astype(np.float64), 1.0)
    p = partitions.astype(np.float64)
    # The largest k with ceil(P/k) >= f is k = ceil(P/(f-1)) - 1 (every k when f <= 1).
    k = np.where(
        f > 1, np.ceil(np.divide(p, f - 1.0, out=filled(f.shape, np.inf), where=f > 1) - 1e-9) - 1.0, p
    )
    k = np.minimum(np.maximum(k, 1.0), np.maximum(p, 1.0))
    aligned = np.ceil(p / k - 1e-9)
    return np.where((p > 0) & (f <= p), np.maximum(aligned, f), floor).astype(np.int64)


@memoized
def moved_fraction(before: IntArray, after: IntArray) -> FloatArray:
    """Fraction of partitions that change owner when a sticky assignor goes from ``before`` to ``after``.

    Growing from ``R`` to ``R'`` hands each newcomer ``1/R'`` of the partitions, taken from the
    others: ``(R' - R) / R'`` moves. Shrinking gives away the leavers' share: ``(R - R') / R``.
    """
    b = np.maximum(before.astype(np.float64), 0.0)
    a = np.maximum(after.astype(np.float64), 0.0)
    larger = np.maximum(a, b)
    moved: FloatArray = np.divide(np.abs(a - b), larger, out=np.zeros(larger.shape), where=larger > 0)
    return moved


def clamp(values: IntArray, lo: IntArray, hi: IntArray) -> IntArray:
    """``values`` within ``[lo, hi]`` element-wise (``hi`` wins where ``lo > hi``)."""
    return np.minimum(np.maximum(values, lo), hi)


def finite(values: FloatArray, default: float) -> FloatArray:
    """``values`` with NaN and infinities replaced (cheaper than ``np.nan_to_num`` on small arrays)."""
    return np.where(np.isfinite(values), values, default)
