"""The comparison over two processes (issue 9: a 30-day trace with every baseline on 2 cores).

``simulate`` steps the engine's lanes here and the baselines in a worker process when that gives
bit for bit the result of one run: every lane's own events on step edges. Over random policies,
scenarios and traces, the result with a real spawned worker process must equal the result of one
run exactly (every float of every policy and series), whether or not the run was split.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_simulation import P, bench_like
from test_simulation_handover import cases as handover_cases

from lagscaler.core.policy.model import Mode, ScalingPolicy
from lagscaler.core.simulation.compare import HANDOVER, POLICIES, compare
from lagscaler.core.simulation.controllers import LagscalerController, StaticController
from lagscaler.core.simulation.model import Scenario, SimulationResult
from lagscaler.core.simulation.simulator import lanes_split_exactly
from lagscaler.core.simulation.trace import Trace


@pytest.fixture(scope="module")
def pool() -> Iterator[Executor]:
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as executor:
        yield executor


@st.composite
def cases(draw: st.DrawFn) -> tuple[ScalingPolicy, Scenario, Trace]:
    """A random policy, scenario and trace, often with every event on a step edge (then the run splits)."""
    scenario, trace, handover, _ = draw(handover_cases())
    step = draw(st.sampled_from([5.0, 2.5, 10.0]))
    on_edges = draw(st.booleans())
    startup = step * draw(st.integers(0, 12)) if on_edges else draw(st.floats(0.0, 60.0))
    policy = replace(
        handover.policy, startup_seconds=startup, mode=draw(st.sampled_from([Mode.HPA, Mode.HANDOVER]))
    )
    return policy, replace(scenario, step_seconds=step, startup_seconds=startup), trace


def assert_identical(split: SimulationResult, whole: SimulationResult) -> None:
    assert split.policies == whole.policies  # names in order, every float exactly
    assert split.fluid_bound_replica_hours == whole.fluid_bound_replica_hours
    assert split.peak_arrival_rate == whole.peak_arrival_rate
    for a, b in ((split.times, whole.times), (split.arrival_rate, whole.arrival_rate)):
        assert a.tobytes() == b.tobytes()
    for name in (p.name for p in whole.policies):
        assert split.lag_seconds[name].tobytes() == whole.lag_seconds[name].tobytes()
        assert split.replicas[name].tobytes() == whole.replicas[name].tobytes()
    assert list(split.lag_seconds) == list(whole.lag_seconds)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases())
def test_two_processes_give_exactly_the_result_of_one_run(
    pool: Executor, case: tuple[ScalingPolicy, Scenario, Trace]
) -> None:
    policy, scenario, trace = case
    chosen = (*POLICIES, HANDOVER)
    assert_identical(
        compare(trace, policy, scenario, chosen, pool=pool), compare(trace, policy, scenario, chosen)
    )


def test_the_split_needs_every_lane_event_on_a_step_edge() -> None:
    policy = bench_like()
    engine = LagscalerController(policy, Scenario.from_policy(policy, partitions=P), 2)
    on_edges = Scenario.from_policy(replace(policy, startup_seconds=25.0), partitions=P)
    assert lanes_split_exactly(on_edges, [engine])
    # Pods joining mid-step would split the other lanes' steps in one run, not in two.
    assert not lanes_split_exactly(replace(on_edges, startup_seconds=27.0), [engine])
    assert not lanes_split_exactly(replace(on_edges, sync_period_seconds=12.0), [engine])
    # A step of 0.1 s: multiples of it are not exact in floating point.
    assert not lanes_split_exactly(replace(on_edges, step_seconds=0.1, startup_seconds=0.5), [engine])
    static = StaticController(policy, on_edges, 1000.0)
    assert lanes_split_exactly(on_edges, [engine, static])
