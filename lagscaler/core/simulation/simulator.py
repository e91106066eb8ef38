"""Replay a trace into a simulated consumer group, once per policy, all policies in lockstep (pure).

The model, and why:

* **Open-loop arrivals, one queue per partition.** Producers do not slow down when consumers lag,
  so the recorded rate is the arrival rate whatever the consumers do. Load is spread evenly over
  partitions (keyed traffic); each partition is a FIFO queue served by its owner. A member owning
  ``k`` partitions serves each at ``capacity / k``: the busiest member sets the pace, which is what
  makes 9, 10 and 11 members of a 24-partition topic no faster than 8. An aggregate queue would
  hide that, and the fact that a rebalance moves *some* partitions' lag and state, not all.
* **Lag in seconds** is exact FIFO age: how long ago the oldest unconsumed message of the worst
  partition arrived, read off the cumulative arrival curve (:class:`ArrivalCurve`).
* **Pods** start ``startup_seconds`` after the HPA adds them and then join the group; leaving pods
  go at once (newest first, pods still starting before running ones). Every membership change is
  a rebalance: all partitions stop for ``rebalance_stall_seconds``; partitions that changed owner
  (a sticky assignor moves as few as it can) then stay stopped for ``restore_seconds`` more.
* **Commits.** Each member commits every ``commit_interval_seconds`` (members out of phase), and
  every member commits when a rebalance revokes its partitions. What a policy reads — lag, lag in
  seconds, consume rate — comes from committed offsets, as a sampler's does; the SLO is judged on
  the true lag.
* **Each policy's HPA** syncs every ``sync_period_seconds`` on data ``metric_delay_seconds`` old.
* A counterfactual queue per policy runs the same replica schedule without stalls or restores;
  SLO misses it does not have are the ones stalls and restores caused.
* **Handover mode** (a :class:`~lagscaler.core.simulation.handover.HandoverController`): no HPA
  and no rebalance; a decision warms a new generation up beside the serving one and cuts over
  with a short pause (:mod:`lagscaler.core.simulation.handover` says how and why).

Time advances in steps of ``step_seconds`` (5 s by default): the arrival rate is constant within a
step, and lag, SLO misses and replicas are accounted per step. Start-ups, rebalances and HPA syncs
happen at their exact times: a step with one of them inside is advanced in two parts.

Memory does not grow with the trace: steps run in chunks, each chunk's per-step results are folded
into running totals, a histogram of lag (for the p99) and a fixed number of plot buckets, and the
oracle's look-ahead is loaded a chunk at a time.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace

import numpy as np

from lagscaler.core.engine.params import HANDOVER_CUTOVER_SECONDS
from lagscaler.core.engine.sizing import FloatArray, IntArray
from lagscaler.core.handover.machine import superseded
from lagscaler.core.hpa import HpaSpec, HpaState, TargetType
from lagscaler.core.hpa import step as hpa_step
from lagscaler.core.policy.model import MAX_SECONDS
from lagscaler.core.simulation.controllers import Controller, GroupView, LagscalerController, Lookahead
from lagscaler.core.simulation.handover import HandoverController, warmup_seconds
from lagscaler.core.simulation.model import PolicyResult, Scenario, SimulationResult
from lagscaler.core.simulation.trace import Trace, TraceError

Progress = Callable[[int, int], None]
"""Called as ``progress(done_steps, total_steps)``: once with 0 when stepping starts, then now and then."""

CHUNK_STEPS = 4096
MAX_STEPS = 10_000_000
"""Most steps one run takes: 366 days at the default 5 s step is 6.3 million, about half an hour of CPU
(30 days took 162 s, bench/RESULTS.md "Simulator speed"). A trace spanning 1e18 s would otherwise
step for longer than anyone waits, with no error."""
"""Steps whose per-step results are held at once before being folded into the totals."""
PLOT_POINTS = 20_000
"""Buckets kept per series by default: every step of a run up to 27 hours in 5 s steps (what tests
and benches read step by step), 160 KB a policy whatever the length. A plot asks for fewer."""
_EPS = 1e-6  # seconds: events this close to a step's end belong to that step
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0  # spreads members' commit phases evenly, deterministically

# Lag histogram for the p99: bin 0 holds ages under 1 ms (including 0), then 2,000 bins a decade
# up to 1e8 s (each 0.12 % wide), so the p99 is exact to that and memory stays fixed.
_HIST_FLOOR = -3.0
_HIST_PER_DECADE = 2000
_HIST_BINS = 1 + 11 * _HIST_PER_DECADE
_HIST_LOWEST = 10.0**_HIST_FLOOR


class ArrivalCurve:
    """Cumulative arrivals of a trace (its rate interpolated linearly), and their inverse.

    ``at(t)`` is how many messages arrived by ``t``, exactly. ``when(x)`` is the time message
    number ``x`` arrived as the queues see it: the arrivals of each step of ``step`` seconds spread
    evenly over the step (its rate is constant, as in the queues), so lag in messages and lag in
    seconds agree. After a silent stretch, a message arrived at the stretch's end. Both cost memory
    in the trace's points, not its steps.
    """

    def __init__(self, trace: Trace, step: float) -> None:
        self.step = step
        self.times = trace.times
        self.rates = trace.rates
        span = np.diff(self.times)
        self.slopes = np.diff(self.rates) / span
        self.area = np.concatenate(([0.0], np.cumsum(span * (self.rates[:-1] + self.rates[1:]) / 2.0)))
        self._last = len(self.times) - 2

    def at(self, t: FloatArray) -> FloatArray:
        # np.minimum/np.maximum rather than np.clip, a Python-level wrapper (this runs every HPA sync).
        j = np.minimum(np.maximum(np.searchsorted(self.times, t, side="right") - 1, 0), self._last)
        tau = t - self.times[j]
        cumulative: FloatArray = self.area[j] + tau * (self.rates[j] + 0.5 * self.slopes[j] * tau)
        return cumulative

    def when(self, x: FloatArray) -> FloatArray:
        # The step that message lies in is the one the exact curve reaches it in (the two curves
        # agree at step edges); within it, arrivals are spread evenly.
        k = np.floor(self._exact_when(x) / self.step)
        start = k * self.step
        before = self.at(start)
        within = self.at(start + self.step) - before
        frac = np.divide(x - before, within, out=np.zeros(within.shape), where=within > 0)
        arrived: FloatArray = start + self.step * np.minimum(np.maximum(frac, 0.0), 1.0)
        return arrived

    def _exact_when(self, x: FloatArray) -> FloatArray:
        j = np.minimum(np.maximum(np.searchsorted(self.area, x, side="right") - 1, 0), self._last)
        d = np.maximum(x - self.area[j], 0.0)
        b = self.rates[j]
        # Solve area + b·τ + slope/2·τ² = x in the form that is stable for any sign of the slope.
        root = b + np.sqrt(np.maximum(b * b + 2.0 * self.slopes[j] * d, 0.0))
        tau = np.divide(2.0 * d, root, out=np.zeros(d.shape), where=root > 0)
        arrived: FloatArray = self.times[j] + np.minimum(tau, self.times[j + 1] - self.times[j])
        return arrived


def steps_in(trace: Trace, step: float) -> int:
    """How many whole steps of ``step`` seconds a run over ``trace`` has (at least one).

    Raises :class:`TraceError` for a run nobody could wait for: a trace spanning more than
    ``MAX_SECONDS`` (366 days, the longest duration lagscaler takes anywhere), or more than
    :data:`MAX_STEPS` steps.
    """
    span = trace.duration
    if not span <= MAX_SECONDS:
        raise TraceError(
            f"{trace.name}: the trace spans {span:g} s ({span / 86400:g} days); at most {MAX_SECONDS} s "
            "(366 days) can be simulated: cut it with --hours"
        )
    steps = max(math.floor(span / step + 1e-9), 1)
    if steps > MAX_STEPS:
        raise TraceError(
            f"{trace.name}: {span:g} s at a step of {step:g} s is {steps} steps; at most {MAX_STEPS} can be "
            "simulated: use a larger --step, or --hours"
        )
    return steps


def step_rates(curve: ArrivalCurve, first: int, count: int) -> FloatArray:
    """The mean arrival rate within steps ``first .. first + count - 1`` (exact for the linear rate)."""
    edges = (first + np.arange(count + 1, dtype=np.float64)) * curve.step
    rates: FloatArray = np.maximum(np.diff(curve.at(edges)) / curve.step, 0.0)
    return rates


def arrivals_per_step(trace: Trace, step: float) -> tuple[FloatArray, FloatArray]:
    """Step start times and the mean arrival rate within each step, for the whole trace at once."""
    n = steps_in(trace, step)
    return np.arange(n, dtype=np.float64) * step, step_rates(ArrivalCurve(trace, step), 0, n)


def peak_step_rate(trace: Trace, step: float) -> float:
    """The highest mean arrival rate of any step (computed a chunk at a time)."""
    curve = ArrivalCurve(trace, step)
    n = steps_in(trace, step)
    return max(
        float(step_rates(curve, first, min(CHUNK_STEPS, n - first)).max())
        for first in range(0, n, CHUNK_STEPS)
    )


def sticky_reassign(owners: IntArray, members: int, partitions: int) -> IntArray:
    """Balance partitions over ``members`` (ids ``0..members-1``) moving as few as possible."""
    if members <= 0:
        return np.full(partitions, -1, dtype=np.int64)
    base, extra = divmod(partitions, members)
    quota = [base + (1 if m < extra else 0) for m in range(members)]
    new = np.full(partitions, -1, dtype=np.int64)
    held = [0] * members
    # Keep partitions with owners that stay, up to their quota; the current heaviest keep theirs first.
    for p, owner in enumerate(owners.tolist()):
        if 0 <= owner < members and held[owner] < quota[owner]:
            new[p] = owner
            held[owner] += 1
    free = [m for m in range(members) for _ in range(quota[m] - held[m])]
    for p in np.flatnonzero(new < 0).tolist():
        new[p] = free.pop(0)
    return new


def _service_rates(owners: IntArray, capacity: float) -> FloatArray:
    """Per-partition service rate: each member splits its capacity over the partitions it owns."""
    owned = owners >= 0
    counts = np.bincount(owners[owned], minlength=int(owners.max(initial=-1)) + 1)
    rates = np.zeros(owners.shape[0])
    rates[owned] = capacity / counts[owners[owned]]
    return rates


def hpa_would_hold(spec: HpaSpec, current: int, value: float) -> bool:
    """Whether a sync of this HPA at ``current`` replicas, served ``value``, keeps the count without
    using or changing anything a later sync reads: such a sync can be skipped.

    True for an HPA with ``behavior`` whose stabilization windows are both 0 and whose one metric is
    an External ``AverageValue``, served exactly ``current × target`` while ``current`` is within
    ``[minReplicas, maxReplicas]``: the usage ratio is exactly 1, inside any tolerance, so the
    proposal is the current count (``GetExternalPerPodMetricReplicas``, replica_calculator.go); a
    zero window consults no earlier recommendation (``stabilizeRecommendationWithBehaviors``,
    horizontal.go); no clamp applies; and no scale event is stored when the count does not change
    (kubernetes v1.35, as modelled in :mod:`lagscaler.core.hpa.controller`). Without ``behavior`` the
    300 s downscale window remembers every proposal, so those HPAs always sync.
    """
    return (
        spec.behavior is not None
        and len(spec.metrics) == 1
        and spec.metrics[0].target_type is TargetType.AVERAGE_VALUE
        and spec.min_replicas <= current <= spec.max_replicas
        and value == current * spec.metrics[0].target_milli / 1000
        and spec.scale_up_rules.stabilization_window_seconds == 0
        and spec.scale_down_rules.stabilization_window_seconds == 0
    )


@dataclass
class _Lane:
    controller: Controller
    hpa_state: HpaState = field(default_factory=HpaState)
    members: int = 0
    pending: list[float] = field(default_factory=list)  # join times of starting pods
    owners: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    scale_events: int = 0
    rebalances: int = 0
    warming: int = 0  # handover mode: replicas of the generation warming up beside the serving one
    ready_at: float = math.inf  # when it is ready to take over
    cutovers: int = 0

    @property
    def replicas(self) -> int:
        """The replicas paid for: members, starting pods, and a warming generation."""
        return self.members + len(self.pending) + self.warming


@dataclass(frozen=True, slots=True)
class _Seen:
    """What a sampler could read at ``at``: per-partition lag and committed offsets, and the end offsets."""

    at: float
    lag: FloatArray  # (L, P) messages behind the committed offset
    committed: FloatArray  # (L, P) cumulative messages committed
    arrived: float  # cumulative messages produced (all partitions)


class _Totals:
    """Running aggregates of the per-step results, folded in a chunk at a time (fixed memory)."""

    def __init__(self, lanes: int, steps: int, step: float, points: int, slo: float) -> None:
        self.step = step
        self.slo = slo
        self.steps = steps
        self.replica_seconds = np.zeros(lanes)
        self.over = np.zeros(lanes, dtype=np.int64)
        self.over_by_stalls = np.zeros(lanes, dtype=np.int64)
        self.max_age = np.zeros(lanes)
        self.peak_rate = 0.0
        self.histogram = np.zeros(lanes * _HIST_BINS, dtype=np.int64)
        self.bucket = max(math.ceil(steps / max(points, 1)), 1)  # steps per plot bucket
        buckets = math.ceil(steps / self.bucket)
        self.arrival_sum = np.zeros(buckets)
        self.replica_sum = np.zeros((buckets, lanes))
        self.lag_max = np.zeros((buckets, lanes))
        self.counts = np.full(buckets, self.bucket, dtype=np.int64)  # steps per bucket
        self.counts[-1] = steps - (buckets - 1) * self.bucket

    def fold(
        self,
        first: int,
        rates: FloatArray,
        ages: FloatArray,
        ages_cf: FloatArray,
        reps: FloatArray,
    ) -> None:
        """Steps ``first ..`` of one chunk: arrival rates (C,), lag ages and replicas (C, L)."""
        lanes = ages.shape[1]
        self.peak_rate = max(self.peak_rate, float(rates.max()))
        self.replica_seconds += reps.sum(axis=0) * self.step
        over = ages > self.slo
        self.over += over.sum(axis=0)
        self.over_by_stalls += (over & ~(ages_cf > self.slo)).sum(axis=0)
        np.maximum(self.max_age, ages.max(axis=0), out=self.max_age)
        scaled = (np.log10(np.maximum(ages, _HIST_LOWEST)) - _HIST_FLOOR) * _HIST_PER_DECADE
        bins = np.where(ages < _HIST_LOWEST, 0, np.minimum(scaled.astype(np.int64) + 1, _HIST_BINS - 1))
        offsets = np.arange(lanes, dtype=np.int64) * _HIST_BINS
        self.histogram += np.bincount((bins + offsets).ravel(), minlength=lanes * _HIST_BINS)
        # Plot buckets: the chunk's steps reduced per bucket, merged into the buckets they share.
        index = (first + np.arange(len(rates))) // self.bucket
        starts = np.flatnonzero(np.diff(index, prepend=index[0] - 1))
        lo, hi = int(index[0]), int(index[-1]) + 1
        self.arrival_sum[lo:hi] += np.add.reduceat(rates, starts)
        self.replica_sum[lo:hi] += np.add.reduceat(reps, starts, axis=0)
        np.maximum(self.lag_max[lo:hi], np.maximum.reduceat(ages, starts, axis=0), out=self.lag_max[lo:hi])

    def p99(self, lane: int) -> float:
        """The 99th percentile of the lane's per-step lag as ``numpy.percentile`` defines it (linear
        between the two order statistics around rank ``0.99 (n - 1)``), each order statistic placed
        within its histogram bin."""
        counts = self.histogram[lane * _HIST_BINS : (lane + 1) * _HIST_BINS]
        cumulative = np.cumsum(counts)
        rank = 0.99 * (float(cumulative[-1]) - 1.0)
        low, high = math.floor(rank), math.ceil(rank)
        below, above = (
            self._order_statistic(counts, cumulative, low),
            self._order_statistic(counts, cumulative, high),
        )
        return below + (rank - low) * (above - below)

    @staticmethod
    def _order_statistic(counts: IntArray, cumulative: IntArray, index: int) -> float:
        b = int(np.searchsorted(cumulative, index, side="right"))
        if b == 0:  # under a millisecond
            return 0.0
        within = (index - float(cumulative[b - 1]) + 0.5) / float(counts[b])
        return float(10.0 ** (_HIST_FLOOR + (b - 1 + within) / _HIST_PER_DECADE))


class _Run:
    """One simulation: the group of every lane, stepped together."""

    def __init__(
        self,
        trace: Trace,
        scenario: Scenario,
        controllers: Sequence[Controller],
        lookahead: Lookahead | None,
        points: int,
    ) -> None:
        s = scenario
        self.s = s
        self.curve = ArrivalCurve(trace, scenario.step_seconds)
        self.dt = s.step_seconds
        self.n = steps_in(trace, self.dt)
        self.P = P = s.partitions
        self.lookahead = lookahead
        self.lanes = [_Lane(c) for c in controllers]
        L = len(self.lanes)
        self.lag = np.zeros((L, P))
        self.lag_cf = np.zeros((L, P))  # counterfactual: same schedule, no stalls or restores
        self.paused = np.zeros((L, P))  # time until which each partition is stopped
        self.paused_until = 0.0  # the latest of them: before it, steps account for pauses
        self.consumed = np.zeros((L, P))
        self.uncommitted = np.zeros((L, P))  # consumed since the owner's last commit
        self.phase = np.zeros((L, P))  # when each partition's owner commits, modulo the interval
        self.mu = np.zeros((L, P))
        self.stall_time = np.zeros(L)
        self.replica_counts = np.zeros(L)
        for i, lane in enumerate(self.lanes):
            lane.members = min(max(lane.controller.initial_replicas(), 0), s.max_replicas)
            lane.owners = sticky_reassign(np.full(P, -1, dtype=np.int64), lane.members, P)
            self._owners_changed(i)
        self.mu_step = self.mu * self.dt
        self.next_join = math.inf
        self.syncs = 1  # the next sync is at syncs × period
        self.next_sync = s.sync_period_seconds
        self.arrived = 0.0  # messages produced so far (all partitions)
        # Captures come at every step's end and every sync; keep those of the delay plus one sample
        # interval (rates are measured over one sync period), and a few more.
        back = s.metric_delay_seconds + s.sync_period_seconds
        keep = math.ceil(back * (1.0 / self.dt + 1.0 / s.sync_period_seconds)) + 4
        self.history: deque[_Seen] = deque(maxlen=keep)
        self.history.append(_Seen(0.0, self.lag.copy(), self.consumed.copy(), 0.0))
        self.totals = _Totals(L, self.n, self.dt, points, s.max_lag_seconds)

    # --- the group ------------------------------------------------------------------------------

    def _owners_changed(self, i: int) -> None:
        lane = self.lanes[i]
        self.mu[i] = _service_rates(lane.owners, self.s.capacity_per_replica)
        c = self.s.commit_interval_seconds
        if c > 0:
            member_phase = np.mod(np.arange(max(lane.members, 1)) * _GOLDEN, 1.0) * c
            self.phase[i] = np.where(lane.owners >= 0, member_phase[np.maximum(lane.owners, 0)], 0.0)

    def _rebalance(self, i: int, at: float) -> None:
        s = self.s
        lane = self.lanes[i]
        new = sticky_reassign(lane.owners, lane.members, self.P)
        moved = new != lane.owners
        lane.owners = new
        lane.rebalances += 1
        self._owners_changed(i)
        self.mu_step[i] = self.mu[i] * self.dt
        self.paused[i] = np.maximum(self.paused[i], at + s.rebalance_stall_seconds)
        if s.restore_seconds > 0:
            self.paused[i, moved] = np.maximum(
                self.paused[i, moved], at + s.rebalance_stall_seconds + s.restore_seconds
            )
        self.paused_until = max(self.paused_until, float(self.paused[i].max(initial=0.0)))
        self.uncommitted[i] = 0.0  # every member commits what it processed when its partitions are revoked

    def _advance(self, a: float, b: float, rate: float) -> None:
        """Run every queue from ``a`` to ``b`` (within one step, no event in between)."""
        span = b - a
        inflow = rate * span / self.P
        full = self.mu_step if span == self.dt else self.mu * span
        if self.paused_until > a:
            active = np.minimum(np.maximum((b - self.paused) / span, 0.0), 1.0)
            capacity = full * active
            self.stall_time += np.minimum(np.maximum(self.paused.max(axis=1) - a, 0.0), span)
        else:
            capacity = full
        self.arrived += rate * span
        total = self.lag + inflow
        after = np.maximum(total - capacity, 0.0)
        served = total - after
        self.lag = after
        self.consumed += served
        self.lag_cf = np.maximum(self.lag_cf + (inflow - full), 0.0)
        c = self.s.commit_interval_seconds
        if c > 0:
            since = np.mod(b - self.phase, c)  # time since the owner's last commit
            self.uncommitted = np.where(since < span, served * (since / span), self.uncommitted + served)

    def _capture(self, at: float) -> None:
        """Remember what a sampler would read now (for syncs that act on delayed data)."""
        if self.s.commit_interval_seconds > 0:
            seen = _Seen(at, self.lag + self.uncommitted, self.consumed - self.uncommitted, self.arrived)
        else:
            seen = _Seen(at, self.lag.copy(), self.consumed.copy(), self.arrived)
        if self.history and self.history[-1].at >= at - _EPS:
            self.history.pop()
        self.history.append(seen)

    def _seen_at(self, at: float) -> _Seen:
        """The latest capture at or before ``at`` (the oldest one kept when there is none)."""
        for seen in reversed(self.history):
            if seen.at <= at + _EPS:
                return seen
        return self.history[0]

    # --- events ---------------------------------------------------------------------------------

    def _joins(self, at: float) -> None:
        for i, lane in enumerate(self.lanes):
            if lane.ready_at <= at + _EPS:
                self._cut_over(i, at)
            if lane.pending and lane.pending[0] <= at + _EPS:
                joined = sum(1 for t in lane.pending if t <= at + _EPS)
                del lane.pending[:joined]
                lane.members += joined
                self._rebalance(i, at)
        self._next_join()

    def _next_join(self) -> None:
        self.next_join = min(
            min((lane.pending[0] for lane in self.lanes if lane.pending), default=math.inf),
            min((lane.ready_at for lane in self.lanes), default=math.inf),
        )

    def _cut_over(self, i: int, at: float) -> None:
        """Handover mode: the warm generation takes over at exactly what the old one processed."""
        lane = self.lanes[i]
        lane.members, lane.warming, lane.ready_at = lane.warming, 0, math.inf
        lane.cutovers += 1
        # Its own group, formed while warming: an assignment of its own, nothing carried over.
        lane.owners = sticky_reassign(np.full(self.P, -1, dtype=np.int64), lane.members, self.P)
        self._owners_changed(i)
        self.mu_step[i] = self.mu[i] * self.dt
        self.paused[i] = np.maximum(self.paused[i], at + HANDOVER_CUTOVER_SECONDS)
        self.paused_until = max(self.paused_until, at + HANDOVER_CUTOVER_SECONDS)
        self.uncommitted[i] = 0.0  # fenced workers commit exactly what they processed
        self.replica_counts[i] = lane.replicas

    def _sync(self, now: float) -> None:
        """One HPA sync for every policy: read its metric from delayed data, step its HPA, apply it."""
        s, P = self.s, self.P
        self._capture(now)
        seen = self._seen_at(now - s.metric_delay_seconds)
        before = self._seen_at(seen.at - s.sync_period_seconds)
        span = max(seen.at - before.at, self.dt)
        produce = np.full(P, (seen.arrived - before.arrived) / P / span)
        ends = np.full(P, seen.arrived / P)
        consume = (seen.committed - before.committed) / span
        unknown = np.zeros(P)
        for i, lane in enumerate(self.lanes):
            c = lane.controller
            lag_row = seen.lag[i]
            if c.needs_lag_seconds:
                arrived = self.curve.when(seen.arrived - P * lag_row)
                lag_seconds = np.where(lag_row > 0, np.maximum(seen.at - arrived, 0.0), 0.0)
            else:
                lag_seconds = unknown
            handover = isinstance(c, HandoverController)
            view = GroupView(
                at=seen.at,
                lag=lag_row,
                lag_seconds=lag_seconds,
                produce_rate=produce,
                consume_rate=consume[i],
                end_offsets=ends,
                owners=lane.owners,
                members=lane.members,
                # Live, the engine of a handover workload counts the serving generation's members.
                replicas=lane.members if handover else lane.replicas,
            )
            if isinstance(c, HandoverController):
                self._hand_over(i, c.desired(now, view), now)
                continue
            value = c.reading(now, view)
            current = lane.replicas
            if hpa_would_hold(c.spec, current, value):
                continue
            result = hpa_step(c.spec, lane.hpa_state, now, current, [value])
            lane.hpa_state = result.state
            if result.replicas != current:
                lane.scale_events += 1
                self._apply(i, result.replicas, now)
        self._next_join()

    def _hand_over(self, i: int, desired: int, now: float) -> None:
        """A decision in handover mode: start a generation at ``desired`` unless one is warming.

        As the controller's machine does (:func:`~lagscaler.core.handover.machine.superseded`), a
        warming scale-down is abandoned once the decision rises above its target, and a warming
        scale-up once the decision asks for at least twice its increase (the serving generation keeps
        consuming; the next attempt starts at once: live, a few controller ticks later); any other
        warming handover is carried to its cut, whatever later decisions say.
        """
        lane = self.lanes[i]
        if lane.warming and superseded(lane.members, lane.warming, desired):
            lane.warming, lane.ready_at = 0, math.inf
            self.replica_counts[i] = lane.replicas
        if lane.warming or desired == lane.members:
            return
        lane.scale_events += 1
        lane.warming, lane.ready_at = desired, now + warmup_seconds(self.s)
        self.replica_counts[i] = lane.replicas

    def _apply(self, i: int, target: int, now: float) -> None:
        """Scale the simulated Deployment: new pods start, surplus pods go (starting ones first)."""
        lane = self.lanes[i]
        current = lane.replicas
        if target > current:
            lane.pending.extend([now + self.s.startup_seconds] * (target - current))
            lane.pending.sort()
        else:
            surplus = current - target
            drop_pending = min(surplus, len(lane.pending))
            if drop_pending:
                del lane.pending[len(lane.pending) - drop_pending :]
            leaving = surplus - drop_pending
            if leaving:
                lane.members -= leaving
                self._rebalance(i, now)
        self.replica_counts[i] = lane.replicas

    # --- the run --------------------------------------------------------------------------------

    def run(self, progress: Progress | None) -> None:
        n, dt = self.n, self.dt
        L = len(self.lanes)
        self.replica_counts = np.asarray([lane.replicas for lane in self.lanes], dtype=np.float64)
        horizon = self.lookahead.horizon_steps if self.lookahead is not None else 0
        if progress is not None:
            progress(0, n)
        for first in range(0, n, CHUNK_STEPS):
            count = min(CHUNK_STEPS, n - first)
            rates = step_rates(self.curve, first, min(count + horizon + 1, n - first))
            if self.lookahead is not None:
                self.lookahead.load(first, rates, count, n)
            worst = np.zeros((count, 2 * L))
            reps = np.zeros((count, L))
            for j in range(count):
                k = first + j
                a, b = k * dt, (k + 1) * dt
                rate = float(rates[j])
                t = a
                weighted = None
                while min(self.next_join, self.next_sync) <= b + _EPS:
                    event = max(min(self.next_join, self.next_sync), t)
                    if event > t:
                        self._advance(t, event, rate)
                        part = self.replica_counts * (event - t)
                        weighted = part if weighted is None else weighted + part
                        t = event
                    # A sync at the instant pods join sees the group as it was (the join's
                    # rebalance is not visible to the sync that coincides with it).
                    if self.next_sync <= event + _EPS:
                        self._sync(event)
                        self.syncs += 1
                        self.next_sync = self.syncs * self.s.sync_period_seconds
                    if self.next_join <= event + _EPS:
                        self._joins(event)
                if b > t + _EPS:
                    self._advance(t, b, rate)
                    part = self.replica_counts * (b - t)
                    weighted = part if weighted is None else weighted + part
                self._capture(b)
                reps[j] = self.replica_counts if weighted is None else weighted / dt
                worst[j, :L] = self.lag.max(axis=1)
                worst[j, L:] = self.lag_cf.max(axis=1)
            ages = self._ages(first, count, worst)
            self.totals.fold(first, rates[:count], ages[:, :L], ages[:, L:], reps)
            if progress is not None:
                progress(first + count, n)

    def _ages(self, first: int, count: int, worst: FloatArray) -> FloatArray:
        """Lag in seconds at each step's end from the worst partition's lag in messages."""
        ages = np.zeros_like(worst)
        behind = worst > 0
        if behind.any():
            ends = (first + 1 + np.arange(count, dtype=np.float64)) * self.dt
            end_ix, _ = np.nonzero(behind)
            at = ends[end_ix]
            arrived = self.curve.when(self.curve.at(at) - self.P * worst[behind])
            ages[behind] = np.maximum(at - arrived, 0.0)
        return ages

    def result(self, name: str) -> SimulationResult:
        s, totals, n, dt = self.s, self.totals, self.n, self.dt
        policies = []
        for i, lane in enumerate(self.lanes):
            policies.append(
                PolicyResult(
                    name=lane.controller.name,
                    replica_hours=float(totals.replica_seconds[i] / 3600.0),
                    slo_violation_fraction=float(totals.over[i] / n),
                    stall_violation_fraction=float(totals.over_by_stalls[i] / n),
                    max_lag_seconds=float(totals.max_age[i]),
                    p99_lag_seconds=totals.p99(i),
                    scale_events=lane.scale_events,
                    stall_seconds=float(self.stall_time[i]),
                    rebalances=lane.rebalances,
                    cutovers=lane.cutovers if isinstance(lane.controller, HandoverController) else None,
                )
            )
        counts = np.maximum(totals.counts, 1)
        total_messages = float(self.curve.at(np.asarray([n * dt]))[0])
        return SimulationResult(
            trace=name,
            scenario=s,
            duration_seconds=n * dt,
            fluid_bound_replica_hours=total_messages / s.capacity_per_replica / 3600.0,
            policies=tuple(policies),
            times=np.arange(len(counts), dtype=np.float64) * totals.bucket * dt,
            arrival_rate=totals.arrival_sum / counts,
            lag_seconds={lane.controller.name: totals.lag_max[:, i] for i, lane in enumerate(self.lanes)},
            replicas={
                lane.controller.name: totals.replica_sum[:, i] / counts for i, lane in enumerate(self.lanes)
            },
            bucket_seconds=totals.bucket * dt,
            peak_arrival_rate=totals.peak_rate,
        )


def simulate(
    trace: Trace,
    scenario: Scenario,
    controllers: Sequence[Controller],
    *,
    lookahead: Lookahead | None = None,
    progress: Progress | None = None,
    points: int = PLOT_POINTS,
    pool: Executor | None = None,
) -> SimulationResult:
    """Run every controller against the same arrivals; ``trace`` is already rescaled to msg/s.

    ``lookahead`` is the window of future rates the oracle controllers read (loaded here, a chunk
    at a time). ``points`` bounds the plot series (see :class:`SimulationResult`).

    With a ``pool`` (an executor whose workers can import lagscaler: a process pool, so that both
    cores work), the controllers that run the engine step here while the others (the baselines and
    the oracle's candidates, which together cost a fraction of one engine lane) step in the pool,
    when :func:`lanes_split_exactly` says that gives the same result as one run of all of them;
    otherwise all run here. ``progress`` reports the lanes run here.
    """
    steps_in(trace, scenario.step_seconds)  # refuse a run nobody can wait for before starting any part
    engine = [c for c in controllers if isinstance(c, LagscalerController)]
    rest = [c for c in controllers if not isinstance(c, LagscalerController)]
    if pool is None or not engine or not rest or not lanes_split_exactly(scenario, controllers):
        return _simulate(trace, scenario, controllers, lookahead, points, progress=progress)
    theirs = pool.submit(_simulate, trace, scenario, rest, lookahead, points)
    ours = _simulate(trace, scenario, engine, None, points, progress=progress)
    return _merged(controllers, ours, theirs.result())


def _simulate(
    trace: Trace,
    scenario: Scenario,
    controllers: Sequence[Controller],
    lookahead: Lookahead | None,
    points: int,
    *,
    progress: Progress | None = None,
) -> SimulationResult:
    """One run of ``controllers`` stepped together (module level: a process pool calls it)."""
    run = _Run(trace, scenario, controllers, lookahead, points)
    run.run(progress)
    return run.result(trace.name)


def lanes_split_exactly(scenario: Scenario, controllers: Sequence[Controller]) -> bool:
    """Whether running ``controllers`` in separate runs gives bit for bit what one run gives.

    Lanes share nothing but the clock: a step with an event inside (a sync, pods joining, a
    handover's cut-over) is advanced in two parts for every lane, which rounds differently from one
    part. Syncs come at the same times in every run; joins (``startup_seconds`` after a sync) and
    cut-overs (:func:`~lagscaler.core.simulation.handover.warmup_seconds` after one) are a lane's
    own. When every such time is a whole number of steps, exactly (each a multiple of a step that is
    a whole number of 1/1024 s, so the sums are exact in floating point), every event falls on a
    step's edge, where it splits nothing, and the runs agree. A lane's pause is its own too: another
    lane's pause makes a step account for pauses, which for a lane that is not paused multiplies its
    capacity by exactly 1.0 and adds exactly 0 to its stall time.
    """
    step = scenario.step_seconds
    spans = [scenario.sync_period_seconds, scenario.startup_seconds]
    if any(isinstance(c, HandoverController) for c in controllers):
        spans.append(warmup_seconds(scenario))
    return (step * 1024).is_integer() and all((span / step).is_integer() for span in spans)


def _merged(controllers: Sequence[Controller], *parts: SimulationResult) -> SimulationResult:
    """One result from runs of disjoint sets of ``controllers``, in the controllers' order (the
    series they share, arrivals and buckets, are the same in every run)."""
    by_name = {p.name: p for part in parts for p in part.policies}
    lag = {name: series for part in parts for name, series in part.lag_seconds.items()}
    replicas = {name: series for part in parts for name, series in part.replicas.items()}
    names = [c.name for c in controllers]
    return replace(
        parts[0],
        policies=tuple(by_name[name] for name in names),
        lag_seconds={name: lag[name] for name in names},
        replicas={name: replicas[name] for name in names},
    )
