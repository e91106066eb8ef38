"""Replay a trace into a simulated consumer group, once per policy, all policies in lockstep (pure).

The model, and why:

* **Open-loop arrivals, one queue per partition.** Producers do not slow down when consumers lag,
  so the recorded rate is the arrival rate whatever the consumers do. Load is spread evenly over
  partitions (keyed traffic); each partition is a FIFO queue served by its owner. A member owning
  ``k`` partitions serves each at ``capacity / k``: the busiest member sets the pace, which is what
  makes 9, 10 and 11 members of a 24-partition topic no faster than 8. An aggregate queue would
  hide that, and the fact that a rebalance moves *some* partitions' lag and state, not all.
* **Lag in seconds** is exact FIFO age: how long ago the oldest unconsumed message of the worst
  partition arrived, read off the cumulative arrival curve.
* **Pods** start ``startup_seconds`` after the HPA adds them and then join the group; leaving pods
  go at once (newest first, pods still starting before running ones). Every membership change is
  a rebalance: all partitions stop for ``rebalance_stall_seconds``; partitions that changed owner
  (a sticky assignor moves as few as it can) then stay stopped for ``restore_seconds`` more.
* **Each policy's HPA** syncs every ``sync_period_seconds`` on data ``metric_delay_seconds`` old.
* A counterfactual queue per policy runs the same replica schedule without stalls or restores;
  SLO misses it does not have are the ones stalls and restores caused.

Time advances in steps of ``step_seconds`` (5 s by default); rates are constant within a step.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from lagscaler.engine.sizing import FloatArray, IntArray
from lagscaler.hpa import HpaState
from lagscaler.hpa import step as hpa_step
from lagscaler.simulation.controllers import Controller, GroupView
from lagscaler.simulation.model import PolicyResult, Scenario, SimulationResult, percentile
from lagscaler.simulation.trace import Trace

Progress = Callable[[int, int], None]
"""Called as ``progress(done_steps, total_steps)`` now and then."""


def arrivals_per_step(trace: Trace, step: float) -> tuple[FloatArray, FloatArray]:
    """Step start times and the mean arrival rate within each step (exact for linear interpolation)."""
    n = max(math.floor(trace.duration / step), 1)
    edges = np.arange(n + 1, dtype=np.float64) * step
    # Integrate the piecewise-linear rate exactly: cumulative area at the trace points, then interpolate.
    seg = np.diff(trace.times) * (trace.rates[:-1] + trace.rates[1:]) / 2.0
    area = np.concatenate(([0.0], np.cumsum(seg)))
    rate_at_edges = np.interp(edges, trace.times, trace.rates)
    idx = np.clip(np.searchsorted(trace.times, edges, side="right") - 1, 0, len(trace.times) - 2)
    cumulative = area[idx] + (edges - trace.times[idx]) * (trace.rates[idx] + rate_at_edges) / 2.0
    rates = np.maximum(np.diff(cumulative) / step, 0.0)
    return edges[:-1], rates


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


@dataclass
class _Lane:
    controller: Controller
    hpa_state: HpaState = field(default_factory=HpaState)
    members: int = 0
    pending: list[float] = field(default_factory=list)  # join times of starting pods
    owners: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    scale_events: int = 0
    rebalances: int = 0

    @property
    def replicas(self) -> int:
        return self.members + len(self.pending)


def simulate(
    trace: Trace,
    scenario: Scenario,
    controllers: Sequence[Controller],
    *,
    progress: Progress | None = None,
) -> SimulationResult:
    """Run every controller against the same arrivals; ``trace`` is already rescaled to msg/s."""
    s = scenario
    dt = s.step_seconds
    P = s.partitions
    starts, rates = arrivals_per_step(trace, dt)
    n = len(rates)
    cumulative = np.concatenate(([0.0], np.cumsum(rates * dt)))
    # Strictly increasing for inversion (a silent stretch would make "when did this offset arrive" ambiguous).
    inverse_curve = cumulative + np.arange(n + 1) * 1e-9
    edge_times = np.arange(n + 1, dtype=np.float64) * dt
    sync_every = max(round(s.sync_period_seconds / dt), 1)
    delay_steps = round(s.metric_delay_seconds / dt)
    window = sync_every  # sample interval for rates

    lanes = [_Lane(c) for c in controllers]
    L = len(lanes)
    mu = np.zeros((L, P))
    for i, lane in enumerate(lanes):
        lane.members = min(max(lane.controller.initial_replicas(), 0), s.max_replicas)
        lane.owners = sticky_reassign(np.full(P, -1, dtype=np.int64), lane.members, P)
        mu[i] = _service_rates(lane.owners, s.capacity_per_replica)
    lag = np.zeros((L, P))
    lag_cf = np.zeros((L, P))  # counterfactual: same schedule, no stalls or restores
    paused = np.zeros((L, P))  # time until which each partition is stopped
    consumed = np.zeros((L, P))
    ages = np.zeros((L, n), dtype=np.float32)
    ages_cf = np.zeros((L, n), dtype=np.float32)
    replica_series = np.zeros((L, n), dtype=np.int32)
    stall_time = np.zeros(L)
    history: deque[tuple[FloatArray, FloatArray, float]] = deque(maxlen=delay_steps + window + 2)
    history.append((lag.copy(), consumed.copy(), 0.0))

    def rebalance(i: int, now: float) -> None:
        lane = lanes[i]
        new = sticky_reassign(lane.owners, lane.members, P)
        moved = new != lane.owners
        lane.owners = new
        lane.rebalances += 1
        mu[i] = _service_rates(new, s.capacity_per_replica)
        paused[i] = np.maximum(paused[i], now + s.rebalance_stall_seconds)
        if s.restore_seconds > 0:
            paused[i, moved] = np.maximum(
                paused[i, moved], now + s.rebalance_stall_seconds + s.restore_seconds
            )

    report_every = max(n // 200, 1)
    for k in range(n):
        t0 = k * dt
        t1 = t0 + dt
        for i, lane in enumerate(lanes):
            if lane.pending and lane.pending[0] <= t0 + 1e-9:
                joined = sum(1 for t in lane.pending if t <= t0 + 1e-9)
                del lane.pending[:joined]
                lane.members += joined
                rebalance(i, t0)
            replica_series[i, k] = lane.replicas

        inflow = rates[k] * dt / P
        active = np.minimum(np.maximum((t1 - paused) / dt, 0.0), 1.0)
        total = lag + inflow
        after = np.maximum(total - mu * active * dt, 0.0)
        consumed += total - after
        lag = after
        lag_cf = np.maximum(lag_cf + inflow - mu * dt, 0.0)
        stall_time += np.minimum(np.maximum(paused.max(axis=1) - t0, 0.0), dt)

        end = cumulative[k + 1]
        worst = np.concatenate((lag.max(axis=1), lag_cf.max(axis=1)))
        arrived_at = np.interp(end - P * worst, inverse_curve, edge_times)
        age = np.maximum(t1 - arrived_at, 0.0)
        ages[:, k] = age[:L]
        ages_cf[:, k] = age[L:]
        history.append((lag.copy(), consumed.copy(), end))

        if (k + 1) % sync_every == 0:
            _sync(
                lanes=lanes,
                s=s,
                now=t1,
                history=history,
                delay_steps=delay_steps,
                window=window,
                inverse_curve=inverse_curve,
                edge_times=edge_times,
                rebalance=rebalance,
            )
        if progress is not None and (k % report_every == 0 or k == n - 1):
            progress(k + 1, n)

    slo = s.max_lag_seconds
    results = []
    for i, lane in enumerate(lanes):
        over = ages[i] > slo
        over_cf = ages_cf[i] > slo
        results.append(
            PolicyResult(
                name=lane.controller.name,
                replica_hours=float(replica_series[i].sum(dtype=np.float64) * dt / 3600.0),
                slo_violation_fraction=float(over.mean()),
                stall_violation_fraction=float((over & ~over_cf).mean()),
                max_lag_seconds=float(ages[i].max(initial=0.0)),
                p99_lag_seconds=percentile(ages[i].astype(np.float64), 99.0),
                scale_events=lane.scale_events,
                stall_seconds=float(stall_time[i]),
                rebalances=lane.rebalances,
            )
        )
    total_messages = float(cumulative[-1])
    return SimulationResult(
        trace=trace.name,
        scenario=s,
        duration_seconds=n * dt,
        fluid_bound_replica_hours=total_messages / s.capacity_per_replica / 3600.0,
        policies=tuple(results),
        times=starts,
        arrival_rate=rates,
        lag_seconds={lane.controller.name: ages[i] for i, lane in enumerate(lanes)},
        replicas={lane.controller.name: replica_series[i] for i, lane in enumerate(lanes)},
    )


def _service_rates(owners: IntArray, capacity: float) -> FloatArray:
    """Per-partition service rate: each member splits its capacity over the partitions it owns."""
    owned = owners >= 0
    counts = np.bincount(owners[owned], minlength=int(owners.max(initial=-1)) + 1)
    rates = np.zeros(owners.shape[0])
    rates[owned] = capacity / counts[owners[owned]]
    return rates


def _sync(
    *,
    lanes: list[_Lane],
    s: Scenario,
    now: float,
    history: deque[tuple[FloatArray, FloatArray, float]],
    delay_steps: int,
    window: int,
    inverse_curve: FloatArray,
    edge_times: FloatArray,
    rebalance: Callable[[int, float], None],
) -> None:
    """One HPA sync for every policy: read its metric from delayed data, step its HPA, apply the result."""
    P = s.partitions
    newest = len(history) - 1
    seen = max(newest - delay_steps, 0)
    before = max(seen - window, 0)
    lag_seen, consumed_seen, end_seen = history[seen]
    _, consumed_before, end_before = history[before]
    span = max((seen - before) * s.step_seconds, s.step_seconds)
    at = now - (newest - seen) * s.step_seconds
    produce = np.full(P, (end_seen - end_before) / P / span)
    ends = np.full(P, end_seen / P)
    for i, lane in enumerate(lanes):
        c = lane.controller
        lag_row = lag_seen[i]
        if c.needs_lag_seconds:
            arrived = np.interp(end_seen - P * lag_row, inverse_curve, edge_times)
            lag_seconds = np.maximum(at - arrived, 0.0)
        else:
            lag_seconds = np.zeros(P)
        view = GroupView(
            at=at,
            lag=lag_row,
            lag_seconds=lag_seconds,
            produce_rate=produce,
            consume_rate=(consumed_seen[i] - consumed_before[i]) / span,
            end_offsets=ends,
            owners=lane.owners,
            members=lane.members,
            replicas=lane.replicas,
        )
        value = c.reading(now, view)
        result = hpa_step(c.spec, lane.hpa_state, now, lane.replicas, [value])
        lane.hpa_state = result.state
        if result.replicas != lane.replicas:
            lane.scale_events += 1
            _apply(lane, i, result.replicas, now=now, s=s, rebalance=rebalance)


def _apply(
    lane: _Lane, index: int, target: int, *, now: float, s: Scenario, rebalance: Callable[[int, float], None]
) -> None:
    """Scale the simulated Deployment: new pods start, surplus pods go (starting ones first)."""
    current = lane.replicas
    if target > current:
        lane.pending.extend([now + s.startup_seconds] * (target - current))
        lane.pending.sort()
        return
    surplus = current - target
    drop_pending = min(surplus, len(lane.pending))
    if drop_pending:
        del lane.pending[len(lane.pending) - drop_pending :]
    leaving = surplus - drop_pending
    if leaving:
        lane.members -= leaving
        rebalance(index, now)
