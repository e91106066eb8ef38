"""Liveness: once load has been low long enough, the engine reaches the count the load needs.

The safety properties (``test_engine.py``, ``test_engine_stages.py``) say what the engine never
does; none of them notices an engine that never scales down. One did: 64 replicas on 64
partitions with a 25 % step limit asked for 48, rounded 48 up to the next aligned count, 64, and
stayed there forever. These tests look for that class of defect over random policies (partition
counts, bounds, step limits in percent and replicas, the HPA's tolerance band with and without
per-HPA tolerance, stateful or not, stabilization windows, pricing) and random traffic:

* a one-cycle lemma (fast, many examples): whenever a lower count would do and one HPA sync can
  reach one, the scale-down candidate is below the current count, reachable, and not below the need;
* the closed loop (the simulator with its HPA model): after a random history, a long stretch of low
  load ends at the count that load needs, within a time bounded by the policy's own dwell, pacing and
  step limits. Where the HPA's band or the rebalance's price legitimately stops short of it, the
  test says which and checks that it is so.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

from lagscaler.core.engine import EngineState, ObservationBatch, PolicyArrays, decide, rebalance_price
from lagscaler.core.engine.core import run_stages
from lagscaler.core.engine.sizing import aligned_at_most, aligned_replicas, effective_replicas
from lagscaler.core.hpa import served_value
from lagscaler.core.hpa.metric import landing
from lagscaler.core.policy.hpa import hpa_spec_for
from lagscaler.core.policy.model import (
    Capacity,
    Hpa,
    KafkaSource,
    ScaleDown,
    ScaleTargetRef,
    ScaleUp,
    ScalingPolicy,
    Smoothing,
    Stateful,
)
from lagscaler.core.simulation.compare import compare
from lagscaler.core.simulation.model import Scenario
from lagscaler.core.simulation.trace import Trace

CAPACITY = 1000.0  # msg/s per replica, true and prior
SYNC = 15.0


@dataclass(frozen=True)
class Workload:
    policy: ScalingPolicy
    partitions: int

    @property
    def restore(self) -> float:
        s = self.policy.stateful
        if s is None or s.state_bytes is None:
            return 0.0
        return s.state_bytes / self.partitions / s.restore_bytes_per_second

    @property
    def lo(self) -> int:
        return min(self.policy.min_replicas, self.hi)

    @property
    def hi(self) -> int:
        return min(self.policy.max_replicas, self.partitions)


@st.composite
def workloads(draw: st.DrawFn) -> Workload:
    """A random policy and topic: every knob that shapes a scale-down's path, within sane ranges."""
    partitions = draw(st.one_of(st.sampled_from([1, 7, 12, 24, 32, 64]), st.integers(1, 100)))
    lo = draw(st.integers(1, 4))
    hi = draw(st.integers(lo, partitions + 6))
    slo = draw(st.floats(15.0, 300.0))
    stateful = draw(st.booleans())
    restore = draw(st.floats(1.0, 120.0)) if stateful else 0.0
    policy = ScalingPolicy(
        name="live",
        namespace="t",
        target=ScaleTargetRef("live"),
        kafka=KafkaSource("live"),
        max_lag_seconds=slo,
        capacity=Capacity(per_replica=CAPACITY, learn=draw(st.booleans())),
        min_replicas=lo,
        max_replicas=hi,
        target_utilization=draw(st.floats(0.4, 0.95)),
        slo_objective=draw(st.floats(0.9, 0.99)),
        smoothing=Smoothing(
            half_life_seconds=draw(st.floats(10.0, 300.0)),
            trend=draw(st.booleans()),
            forecast_horizon_seconds=draw(st.floats(0.0, 600.0)),
        ),
        scale_up=ScaleUp(
            stabilization_seconds=draw(st.sampled_from([0.0, 30.0, 120.0])),
            max_step_percent=draw(st.floats(10.0, 400.0)),
            max_step_replicas=draw(st.integers(1, 16)),
        ),
        scale_down=ScaleDown(
            stabilization_seconds=draw(st.floats(0.0, 1800.0)),
            max_step_percent=draw(st.floats(0.0, 100.0)),
            max_step_replicas=draw(st.integers(1, 16)),
            payback_horizon_seconds=draw(st.floats(600.0, 14400.0)),
        ),
        startup_seconds=draw(st.floats(0.0, 120.0)),
        rebalance_stall_seconds=draw(st.floats(0.0, 30.0)),
        stateful=Stateful(restore_bytes_per_second=1e6, state_bytes=restore * 1e6 * partitions)
        if stateful
        else None,
        hpa=Hpa(
            sync_period_seconds=SYNC,
            tolerance=draw(st.floats(0.0, 0.2)),
            configurable_tolerance=draw(st.booleans()),
        ),
    )
    return Workload(policy, partitions)


def needed(w: Workload, rate: float) -> int:
    """The count a steady ``rate`` needs under ``w``'s policy, as the policy reference states it.

    Enough aligned capacity for the rate at the target utilisation; when a rebalance breaks the SLO by
    itself (stall + restore > SLO), enough headroom to catch the moved partitions up within two SLOs.
    """
    p = w.policy
    over = max(p.rebalance_stall_seconds + w.restore - p.max_lag_seconds, 0.0)
    rate_needed = max(rate / p.target_utilization, rate * (1.0 + over * 0.5 / p.max_lag_seconds))
    with np.errstate(over="ignore"):  # a rate of 1e-300 needs 0 replicas; its ratio overflows on the way
        count = aligned_replicas(
            np.asarray([rate_needed / p.capacity.per_replica]), np.asarray([w.partitions])
        )
    return int(np.clip(count[0], w.lo, w.hi))


def reachable(w: Workload, current: int, target: int) -> bool:
    """One HPA sync (lagscaler's manifest, this policy's tolerance) moves ``current`` to ``target``."""
    spec = hpa_spec_for(w.policy)
    return landing(spec, current, round(served_value(target, current, spec) * 1000)) == target


def single_move_pays(w: Workload, current: int, target: int) -> bool:
    """Going straight from ``current`` to ``target`` saves more over the payback horizon than it costs."""
    params = PolicyArrays.from_policies([w.policy])
    price = rebalance_price(
        params,
        np.asarray([current]),
        np.asarray([target]),
        np.asarray([w.restore]),
        np.asarray([False]),
    )
    return (current - target) * w.policy.scale_down.payback_horizon_seconds > float(price[0])


def steady_observation(at: float, *, replicas: int, partitions: int, rate: float) -> ObservationBatch:
    """One workload keeping up with ``rate`` on ``replicas`` members: no lag, nothing stuck or stale."""
    return ObservationBatch(
        at=np.asarray([at]),
        replicas=np.asarray([replicas]),
        members=np.asarray([replicas]),
        partitions=np.asarray([partitions]),
        arrival_rate=np.asarray([rate]),
        consume_rate=np.asarray([rate]),
        lag=np.zeros(1),
        lag_seconds=np.zeros(1),
        busy_rate=np.asarray([np.nan]),
        busy_members=np.zeros(1, dtype=np.int64),
        stuck_partitions=np.zeros(1, dtype=np.int64),
        stuck_lag=np.zeros(1),
        stale=np.zeros(1, dtype=np.bool_),
        state_bytes=np.asarray([np.nan]),
    )


# --- the one-cycle lemma ---------------------------------------------------------------------------


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(w=workloads(), current=st.integers(1, 110), load=st.floats(0.0, 1.0), waited=st.floats(0.0, 1e5))
def test_a_needed_scale_down_has_a_reachable_candidate_below_the_current_count(
    w: Workload, current: int, load: float, waited: float
) -> None:
    current = min(max(current, w.lo), w.hi)
    rate = load * CAPACITY * current * w.policy.target_utilization
    params = PolicyArrays.from_policies([w.policy])
    # A workload that has been at ``rate`` since long ago (no window, dwell or pacing pending).
    state = EngineState.initial(params)
    for at in (0.0, waited + 1e5):
        obs = steady_observation(at, replicas=current, partitions=w.partitions, rate=rate)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            down = run_stages(params, state, obs).down
        _, state = decide(params, state, obs)
    target = int(down.need[0])
    candidate = int(down.candidate[0])
    assert candidate >= min(target, current)
    any_reachable = any(reachable(w, current, n) for n in range(target, current))
    if target < current and any_reachable:
        assert candidate < current, f"stuck: needs {target}, candidate {candidate} == current"
        assert reachable(w, current, candidate), f"{current} -> {candidate} is inside the HPA's band"
        # Aligned unless the need itself is not (a minReplicas that is not aligned).
        assert candidate in (
            target,
            int(aligned_at_most(np.asarray([candidate]), np.asarray([w.partitions]))[0]),
        )
    if candidate < current:
        # The candidate carries the need: never less throughput than the count the need asks for.
        carries = effective_replicas(np.asarray([candidate]), np.asarray([w.partitions]))
        assert carries[0] >= effective_replicas(np.asarray([target]), np.asarray([w.partitions]))[0]


# --- the closed loop -------------------------------------------------------------------------------


def step_bound(w: Workload) -> float:
    """Seconds one scale-down step may take at most under ``w``'s policy, once load is low and steady.

    The dwell after the last change (stabilization, start-up + stall + restore + one SLO, warm-up),
    the error-budget pacing of a move whose rebalance breaks the SLO, the time the moved partitions
    take to catch up (lag calm again), and a few syncs for the HPA to act and the window to forget.
    """
    p = w.policy
    over = max(p.rebalance_stall_seconds + w.restore - p.max_lag_seconds, 0.0)
    headroom = max(1.0 / p.target_utilization - 1.0, 0.05)
    pacing = (over + over / headroom) / max(1.0 - p.slo_objective, 1e-6)
    dwell = max(
        p.scale_down.stabilization_seconds,
        p.startup_seconds + p.rebalance_stall_seconds + w.restore + p.max_lag_seconds,
    )
    catch_up = (p.rebalance_stall_seconds + w.restore) * (1.0 + 1.0 / headroom)
    return dwell + pacing + catch_up + 6 * SYNC


def steps_bound(w: Workload, start: int, target: int) -> int:
    """Each step reaches at least the next aligned count below (or the HPA's reach): count them."""
    counts = {math.ceil(w.partitions / k) for k in range(1, w.partitions + 1)}
    return 2 + sum(1 for c in counts if target < c < start)


@pytest.mark.slow
@settings(
    max_examples=int(os.environ.get("LIVENESS_EXAMPLES", "10")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(
    w=workloads(),
    history=st.lists(st.tuples(st.floats(120.0, 1800.0), st.floats(0.0, 1.3)), min_size=1, max_size=4),
    low=st.floats(0.0, 0.6),
)
def test_after_low_load_the_engine_reaches_the_count_the_load_needs(
    w: Workload, history: list[tuple[float, float]], low: float
) -> None:
    peak = CAPACITY * w.hi
    # A random history (up to 130 % of what the largest group can carry: backlogs too), then low load.
    times, rates = [0.0], [history[0][1] * peak]
    for seconds, level in history:
        times += [times[-1] + 60.0, times[-1] + seconds]
        rates += [level * peak, level * peak]
    rate = low * peak * w.policy.target_utilization
    target = needed(w, rate)
    assume(needed(w, rate * 1.02) == target and needed(w, rate * 0.98) == target)  # not on a boundary
    start = w.hi
    settle = steps_bound(w, start, target) * step_bound(w) + 3600.0  # + draining the history's backlog
    assume(settle <= 6 * 3600.0)  # keeps the test's run time bounded; slower policies are just slower
    times += [times[-1] + 60.0, times[-1] + 60.0 + settle]
    rates += [rate, rate]
    trace = Trace("liveness", np.asarray(times), np.asarray(rates))
    scenario = Scenario.from_policy(w.policy, partitions=w.partitions, step_seconds=SYNC)
    result = compare(trace, w.policy, scenario, ("lagscaler",))
    series = result.replicas["lagscaler"]
    note(f"{w}\nhistory {history}, low {low}: needs {target}; series (per 5 min) {series[::20].tolist()}")
    assert int(series.min()) >= w.lo  # safety, all along
    assert int(series.max()) <= max(w.hi, w.policy.min_replicas)  # the HPA keeps minReplicas pods
    final = int(series[-1])
    if final == target:
        return
    if final < target:
        # Below the need only inside the scale-up dead band: the load never ran this count hot.
        u = w.policy.target_utilization
        carries = effective_replicas(np.asarray([final]), np.asarray([w.partitions]))[0] * CAPACITY
        assert rate <= carries * (u + (1.0 - u) / 2.0), f"below the need and hot: {final} < {target}"
        return
    # Stopping short is right only where no lower count helps: each count between is out of the
    # HPA's reach, or not worth a rebalance even as one move to the need.
    stuck = [n for n in range(target, final) if reachable(w, final, n) and single_move_pays(w, final, n)]
    assert not stuck, (
        f"stuck at {final} replicas for {settle / 3600:.1f} h of low load needing {target}; "
        f"{stuck} reachable and worth it; policy {w.policy}, partitions {w.partitions}"
    )


def test_64_replicas_on_64_partitions_with_a_25_percent_step_scale_down() -> None:
    """64 replicas on 64 partitions, a 25 % step limit: it used to stay at 64 forever."""
    policy = ScalingPolicy(
        name="clickstream",
        namespace="t",
        target=ScaleTargetRef("c"),
        kafka=KafkaSource("c"),
        max_lag_seconds=30.0,
        capacity=Capacity(per_replica=2500.0),
        min_replicas=2,
        max_replicas=64,
        scale_down=ScaleDown(stabilization_seconds=300.0, max_step_percent=25.0, max_step_replicas=8),
        startup_seconds=25.0,
        rebalance_stall_seconds=5.0,
    )
    w = Workload(policy, 64)
    trace = Trace("t", np.asarray([0.0, 1800.0, 1860.0, 4 * 3600.0]), np.asarray([2e5, 2e5, 5000.0, 5000.0]))
    result = compare(
        trace, policy, Scenario.from_policy(policy, partitions=64, step_seconds=SYNC), ("lagscaler",)
    )
    series = result.replicas["lagscaler"]
    assert int(series[: 1800 // 15].max()) == 64
    assert int(series[-1]) == needed(w, 5000.0)
