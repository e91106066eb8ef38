"""How the simulator steps time: commits, events inside a step, and results reduced to fixed memory."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_simulation import bench_like

from lagscaler.core.engine import observe
from lagscaler.core.hpa import HpaSpec, HpaState, plan_served_metric
from lagscaler.core.hpa import step as hpa_step
from lagscaler.core.policy import hpa_spec_for
from lagscaler.core.policy.model import Hpa, KafkaSource, ScalingPolicy
from lagscaler.core.simulation.compare import compare
from lagscaler.core.simulation.controllers import (
    GroupView,
    KedaController,
    LagscalerController,
    RateController,
    exact_hpa,
)
from lagscaler.core.simulation.model import Scenario
from lagscaler.core.simulation.simulator import ArrivalCurve, hpa_would_hold, simulate
from lagscaler.core.simulation.trace import Trace, diurnal_trace, spike_trace


def policy(**changes: object) -> ScalingPolicy:
    """The simulation tests' stateless policy (12 partitions, 1k msg/s a replica), with ``changes``."""
    return replace(bench_like(), **changes)  # type: ignore[arg-type]


def flat(rate: float, seconds: float) -> Trace:
    return Trace("flat", np.array([0.0, seconds]), np.array([rate, rate]))


@dataclass
class Scripted:
    """A policy that asks for a fixed count from a given time on and records every view it gets."""

    scenario: Scenario
    start: int
    then: int
    at: float
    name: str = "scripted"
    needs_lag_seconds: bool = True
    spec: HpaSpec = field(init=False)
    views: list[tuple[float, GroupView]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.spec = exact_hpa(policy())

    def initial_replicas(self) -> int:
        return self.start

    def reading(self, now: float, view: GroupView) -> float:
        self.views.append((now, view))
        wanted = self.then if now >= self.at else self.start
        return plan_served_metric(wanted, view.replicas, self.spec).value


# --- commits --------------------------------------------------------------------------------------


@pytest.mark.parametrize("commit", [0.0, 1.0, 5.0])
def test_policies_read_committed_offsets_and_the_slo_is_judged_on_true_lag(commit: float) -> None:
    # 6 members on 12 partitions at 3,600 msg/s: 300 msg/s per partition against 500 served, so the
    # true lag is 0 at every step's end. What a sampler reads lags by what was consumed since each
    # member's last commit: up to one interval's worth, 300 msg/s × the interval per partition.
    scenario = Scenario.from_policy(policy(), commit_interval_seconds=commit, metric_delay_seconds=0.0)
    controller = Scripted(scenario, 6, 6, 0.0)
    result = simulate(flat(3600.0, 600.0), scenario, [controller])
    assert result.policy("scripted").max_lag_seconds == 0.0
    seen = np.stack([view.lag for _, view in controller.views[2:]])
    ages = np.stack([view.lag_seconds for _, view in controller.views[2:]])
    if commit == 0:
        assert seen.max() == 0.0
        return
    assert seen.max() <= 300.0 * commit + 1e-6
    assert seen.mean() > 0.1 * 300.0 * commit  # members commit out of phase: it is not always ~0
    assert ages.max() <= commit + 1e-6  # lag in seconds off committed offsets: at most one interval
    # Out of phase: at one instant, some partitions were just committed and others not for a while.
    assert np.ptp(seen, axis=1).max() > 0.5 * 300.0 * commit
    # The consume rate read off committed offsets still averages the true one.
    consumed = np.stack([view.consume_rate for _, view in controller.views[2:]])
    assert consumed.sum(axis=1).mean() == pytest.approx(3600.0, rel=0.05)


# --- events inside a step -------------------------------------------------------------------------


def test_pods_join_and_syncs_run_at_their_own_times_whatever_the_step() -> None:
    # HPA sync every 3 s, pods start in 4 s, steps of 5 s: the scale-up decided at the sync at 3 s
    # joins at 7 s, so the sync at 6 s still sees one member and the one at 9 s sees two.
    scenario = replace(
        Scenario.from_policy(policy(), metric_delay_seconds=0.0),
        sync_period_seconds=3.0,
        startup_seconds=4.0,
        rebalance_stall_seconds=1.0,
    )
    controller = Scripted(scenario, 1, 2, 3.0)
    simulate(flat(500.0, 60.0), scenario, [controller])
    members = {round(now, 6): view.members for now, view in controller.views}
    assert members[3.0] == 1
    assert members[6.0] == 1
    assert members[9.0] == 2
    assert members[12.0] == 2


@pytest.mark.parametrize("step", [5.0, 2.0, 1.0, 0.5])
def test_a_stall_costs_its_own_length_not_a_whole_step(step: float) -> None:
    # One scale-up on an idle-enough group: the whole group stops for the 2 s rebalance stall, so
    # the worst partition falls 2 s behind, then catches up. The step only sets how often lag is
    # looked at: the worst reading is the stall's 2 s (at most), never a whole step's worth more.
    scenario = replace(
        Scenario.from_policy(policy(), metric_delay_seconds=0.0, step_seconds=step),
        sync_period_seconds=3.0,
        startup_seconds=3.0,
        rebalance_stall_seconds=2.0,
    )
    controller = Scripted(scenario, 2, 3, 3.0)
    result = simulate(flat(1200.0, 120.0), scenario, [controller])
    worst = result.policy("scripted").max_lag_seconds
    assert worst <= 2.0 + 1e-6
    # The join is at 6 s; a step ending inside the stall or just after it sees most of it.
    if step <= 1.0:
        assert worst >= 2.0 - step
    replica_seconds = result.policy("scripted").replica_hours * 3600
    assert replica_seconds == pytest.approx(2 * 3.0 + 3 * 117.0)  # the count changes at the 3 s sync


# --- fixed memory: series reduced to buckets, p99 from a histogram ----------------------------------


def test_bucketed_series_are_exact_reductions_of_the_per_step_ones() -> None:
    trace = spike_trace(hours=3.0).rescaled(9000.0)
    scenario = Scenario.from_policy(policy())
    full = compare(trace, policy(), scenario, ["keda", "static"], points=10**6)
    coarse = compare(trace, policy(), scenario, ["keda", "static"], points=50)
    steps = len(full.times)
    assert steps == 3 * 3600 / 5
    assert full.bucket_seconds == scenario.step_seconds
    assert len(coarse.times) <= 50
    size = round(coarse.bucket_seconds / scenario.step_seconds)
    for name in ("keda", "static"):
        lag = full.lag_seconds[name]
        replicas = full.replicas[name]
        for b in range(len(coarse.times)):
            window = slice(b * size, min((b + 1) * size, steps))
            assert coarse.lag_seconds[name][b] == pytest.approx(lag[window].max())
            assert coarse.replicas[name][b] == pytest.approx(replicas[window].mean())
        assert coarse.policy(name) == full.policy(name)  # the totals do not depend on the plot
        # Replica-hours read off the series are the run's, at any resolution.
        hours = coarse.replicas[name] @ np.diff(np.append(coarse.times, steps * 5.0)) / 3600
        assert hours == pytest.approx(full.policy(name).replica_hours)


def test_the_p99_from_the_histogram_is_the_per_step_p99() -> None:
    trace = spike_trace(hours=6.0).rescaled(9000.0)
    result = compare(trace, policy(), Scenario.from_policy(policy()), ["keda"], points=10**6)
    exact = float(np.percentile(result.lag_seconds["keda"], 99.0))
    assert exact > 1.0
    assert result.policy("keda").p99_lag_seconds == pytest.approx(exact, rel=0.003)


def test_progress_starts_at_zero_and_ends_at_the_total() -> None:
    calls: list[tuple[int, int]] = []
    trace = diurnal_trace(days=1.0).rescaled(9000.0)
    compare(
        trace,
        policy(),
        Scenario.from_policy(policy()),
        ["static"],
        progress=lambda d, t: calls.append((d, t)),
    )
    total = calls[0][1]
    assert calls[0] == (0, total)
    assert calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert total == 86400 / 5


# --- the HPA short cut and the arrival curve --------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    min_replicas=st.integers(0, 5),
    extra=st.integers(0, 60),
    tolerance=st.sampled_from([0.0, 0.05, 0.1, 0.25]),
    configurable=st.booleans(),
    history=st.lists(st.tuples(st.floats(0.0, 30.0), st.integers(0, 80)), max_size=8),
    current=st.integers(1, 70),
    later=st.integers(0, 90),
)
def test_an_hpa_that_holds_when_served_its_count_does_the_same_later_without_that_sync(
    *,
    min_replicas: int,
    extra: int,
    tolerance: float,
    configurable: bool,
    history: list[tuple[float, int]],
    current: int,
    later: int,
) -> None:
    """The simulator skips the syncs of lagscaler's HPA (and the oracle's) that are served the current
    count. Skipping must change nothing: not that sync's outcome, nor any later one's."""
    p = policy(
        min_replicas=min_replicas,
        max_replicas=max(min_replicas, 1) + extra,
        hpa=Hpa(tolerance=tolerance, configurable_tolerance=configurable),
    )
    spec = hpa_spec_for(p)
    state, now, replicas = HpaState(), 0.0, current
    for gap, value in history:  # an arbitrary past
        now += 1.0 + gap
        result = hpa_step(spec, state, now, replicas, [float(value)])
        state, replicas = result.state, result.replicas
    served = replicas * spec.metrics[0].target_milli / 1000
    assume(spec.min_replicas <= replicas <= spec.max_replicas)  # else the clamp moves it: not skipped
    assert hpa_would_hold(spec, replicas, served)
    steady = hpa_step(spec, state, now + 15.0, replicas, [served])
    assert steady.replicas == replicas
    assert not steady.rescaled
    with_sync = hpa_step(spec, steady.state, now + 30.0, replicas, [float(later)])
    without = hpa_step(spec, state, now + 30.0, replicas, [float(later)])
    assert (with_sync.replicas, with_sync.reason) == (without.replicas, without.reason)


def test_keda_and_plain_hpas_always_sync() -> None:
    # Without behavior the downscale window remembers every proposal: no sync may be skipped.
    scenario = Scenario.from_policy(policy())
    for spec in (KedaController(scenario, 1).spec, RateController(scenario, 1, 0.85).spec):
        assert not hpa_would_hold(spec, 2, 2 * spec.metrics[0].target_milli / 1000)


@settings(max_examples=100, deadline=None)
@given(
    # Traces are sampled on whole seconds, and a rate is silent or at least 0.001 msg/s. Otherwise the
    # count can grow by less than a double tells apart (6e-8 msg/s after 260k messages, or a knot 1e-13 s
    # before a step edge), and "when the next message arrives" is ambiguous by whole seconds.
    rates=st.lists(st.just(0.0) | st.floats(1e-3, 5000.0), min_size=2, max_size=12),
    gaps=st.lists(st.integers(1, 900).map(float), min_size=11, max_size=11),
    step=st.sampled_from([0.5, 1.0, 5.0]),
)
def test_message_arrival_times_invert_the_cumulative_curve_at_step_edges(
    rates: list[float], gaps: list[float], step: float
) -> None:
    times = np.concatenate(([0.0], np.cumsum(gaps[: len(rates) - 1])))
    curve = ArrivalCurve(Trace("t", times, np.asarray(rates)), step)
    edges = np.arange(0.0, times[-1], step)
    edges = edges[curve.at(edges) < curve.at(times[-1:])[0]]  # a message still arrives after them
    counts = curve.at(edges)
    arrived = curve.when(counts)
    # Every edge where messages are still to come maps back onto itself, or (after a silent stretch)
    # onto the end of the stretch, where the next message arrives.
    assert np.all(arrived >= edges - 1e-6)
    later = curve.at(arrived)
    assert np.allclose(later, counts, rtol=1e-9, atol=1e-6)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), topics=st.sampled_from([(), ("clicks",), ("clicks", "views")]))
def test_lagscaler_reads_the_view_as_observe_reads_its_group_sample(
    data: st.DataObject, topics: tuple[str, ...]
) -> None:
    """The simulator's lagscaler reduces each view without building a GroupSample (for speed): the
    observation must be the one ``observe`` makes of the view's sample, whatever the view holds."""
    partitions = data.draw(st.integers(1, 40))
    members = data.draw(st.integers(0, 12))
    at = data.draw(st.floats(0.0, 1e6))
    delay = data.draw(st.floats(0.0, 600.0))
    values = st.floats(0.0, 1e7, allow_subnormal=False)
    column = st.lists(values, min_size=partitions, max_size=partitions).map(np.asarray)
    sparse = st.one_of(column, st.just(np.zeros(partitions)))  # all caught up, or not
    owners = st.lists(st.integers(-1, members - 1), min_size=partitions, max_size=partitions)
    view = GroupView(
        at=at,
        lag=data.draw(sparse),
        lag_seconds=data.draw(sparse),
        produce_rate=data.draw(column),
        consume_rate=data.draw(column),
        end_offsets=np.full(partitions, 1e9),
        owners=np.asarray(data.draw(owners) if members else [-1] * partitions, dtype=np.int64),
        members=members,
        replicas=data.draw(st.integers(0, 50)),
    )
    lagscaler_policy = replace(policy(), kafka=KafkaSource("g", topics))
    controller = LagscalerController(lagscaler_policy, Scenario.from_policy(lagscaler_policy), start=1)
    now = at + delay
    sample = view.group_sample("g", topics[0] if topics else "events")
    assert controller.observation(now, view) == observe(
        sample, lagscaler_policy, replicas=view.replicas, now=now
    )
