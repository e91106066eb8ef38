"""The engine on traffic shapes the shared traces lack (``lagscaler.core.simulation.shapes``).

Batch bursts that are over before a scale-up lands, staircases, flash crowds and quiet nights with
spikes, each run through the simulator beside KEDA's defaults and a plain HPA on msg/s. Short
variants with their own seeds (not the bench's). What a user relies on here: no more SLO misses
than the plain HPA, never more scale events or replica-hours than KEDA, a flash crowd met by one
scale-up rather than one per sync, and no replicas kept idle between batch jobs.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lagscaler.core.engine.stages.recurrence import MIN_INTERVALS
from lagscaler.core.policy.model import (
    Capacity,
    Hpa,
    KafkaSource,
    ScaleDown,
    ScaleTargetRef,
    ScaleUp,
    ScalingPolicy,
)
from lagscaler.core.simulation import shapes
from lagscaler.core.simulation.compare import compare
from lagscaler.core.simulation.model import Scenario, SimulationResult
from lagscaler.core.simulation.trace import Trace

PEAK = 10_000.0
PARTITIONS = 24

POLICY = ScalingPolicy(
    name="shapes",
    namespace="t",
    target=ScaleTargetRef("c"),
    kafka=KafkaSource("g"),
    max_lag_seconds=30.0,
    capacity=Capacity(per_replica=1000.0),
    max_replicas=PARTITIONS,
    target_utilization=0.85,
    scale_up=ScaleUp(max_step_percent=400.0, max_step_replicas=PARTITIONS),
    scale_down=ScaleDown(max_step_percent=100.0, max_step_replicas=PARTITIONS),
    hpa=Hpa(configurable_tolerance=True),
)

TRACES = {
    "bursts": shapes.batch_bursts(seed=21, hours=4.0, period=1800.0, burst_seconds=60.0),
    "staircase": shapes.staircase(seed=22, hours=4.0, steps=4, hold=900.0),
    "flash": shapes.flash_crowd(seed=23, hours=4.0, crowds=2, decay_seconds=900.0),
    "night": shapes.quiet_night(seed=24, days=0.5, spikes=4),
}


def run(trace: Trace) -> SimulationResult:
    scenario = Scenario.from_policy(POLICY, partitions=PARTITIONS)
    return compare(trace.rescaled(PEAK), POLICY, scenario, ("lagscaler", "keda", "hpa-rate"))


@pytest.fixture(scope="module")
def results() -> dict[str, SimulationResult]:
    return {name: run(trace) for name, trace in TRACES.items()}


@pytest.mark.slow
@pytest.mark.parametrize("shape", sorted(TRACES))
def test_no_more_misses_than_a_plain_hpa_and_no_more_churn_or_cost_than_keda(
    results: dict[str, SimulationResult], shape: str
) -> None:
    result = results[shape]
    ours, keda, rate = (result.policy(n) for n in ("lagscaler", "keda", "hpa-rate"))
    assert ours.slo_violation_fraction <= rate.slo_violation_fraction
    assert ours.scale_events <= keda.scale_events
    assert ours.replica_hours <= keda.replica_hours


def starts(trace: Trace, above: float = 0.5) -> list[float]:
    """When the (unit-peak) rate first crosses ``above`` after being below it."""
    high = trace.rates >= above
    return [float(trace.times[i]) for i in np.flatnonzero(high[1:] & ~high[:-1]) + 1]


@pytest.mark.slow
def test_a_flash_crowd_is_met_by_one_scale_up(results: dict[str, SimulationResult]) -> None:
    result = results["flash"]
    replicas = result.replicas["lagscaler"].astype(np.int64)
    for start in starts(TRACES["flash"]):
        window = (result.times >= start) & (result.times < start + 600.0)
        ups = np.count_nonzero(np.diff(replicas[window]) > 0)
        assert ups == 1, f"{ups} scale-ups in the 10 minutes after the crowd at {start:.0f} s"


@pytest.mark.slow
def test_no_replicas_kept_idle_between_batch_jobs_and_ready_once_their_period_is_learned(
    results: dict[str, SimulationResult],
) -> None:
    # A burst's capacity is not held for the next one: halfway between two jobs the base's count is
    # back. Once four jobs have come one period apart, the next one's count runs when it starts.
    result = results["bursts"]
    replicas = result.replicas["lagscaler"]
    base = int(np.ceil(0.15 * PEAK / POLICY.target_utilization / 1000.0))  # the base at its noisiest
    jobs = starts(TRACES["bursts"])
    for previous, start in itertools.pairwise(jobs):
        between = int(replicas[np.searchsorted(result.times, (previous + start) / 2.0)])
        assert between <= base, (
            f"{between} replicas halfway between the jobs at {previous:.0f} and {start:.0f} s"
        )
    burst_count = 12  # 10k msg/s at 1000 per replica and 0.85: 12 of 24 partitions (2 each)
    for start in jobs[MIN_INTERVALS + 1 :]:
        ready = int(replicas[np.searchsorted(result.times, start)])
        assert ready >= burst_count, f"{ready} replicas when the job at {start:.0f} s starts"
