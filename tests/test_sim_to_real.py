"""The simulator against the live loop: the same load and policy, run for real and through ``simulate``.

Live: a producer follows the load into a real 12-partition topic, a pool of real consumer processes
(bounded capacity, offsets committed every second) consumes it, ``lagscaler serve`` decides and
serves the metric, and the local HPA loop scales the pool (the machinery of ``lagscaler demo`` and
tests/test_e2e.py). Simulated: the same load as a trace, the same policy, the same HPA, in 1 s
steps with a 1 s commit interval, and the start-up and rebalance stall the live workers showed.

What a user relies on when they trust ``simulate``: the replicas it predicts cost what the live
group costs, and the worst lag it predicts is the live one, to within the step plus the commit
interval (the live figure is read from committed offsets, so it lags by up to one commit).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import replace

import numpy as np
import pytest
from lagscaler_demo.cli.scaling import ScalingDemoResult, ScalingDemoSettings, run_scaling_demo
from lagscaler_demo.localkafka import KafkaEndpoint

from lagscaler.core.simulation.compare import compare
from lagscaler.core.simulation.model import Scenario
from lagscaler.core.simulation.trace import Trace

# The load runs for 150 s; starting the pool and serve, and stopping them, take the rest.
pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(480)]

PARTITIONS = 12
CAPACITY = 150.0  # msg/s per worker: at 70 % utilisation, 105 msg/s per replica
STEP = 1.0
COMMIT = 1.0  # the workers' commit interval (PoolSettings' default)
# A quiet start, a ramp, a plateau, a spike over it, and quiet again (seconds, msg/s; linear in
# between). Each level sits between two partition-aligned counts (1, 2, 3, 4, 6, 12 on 12
# partitions), so a few percent of capacity either way does not change the count it needs:
# 60 msg/s needs 1, 350 needs 4, 550 needs 6.
LOAD = (
    (0.0, 60.0),
    (15.0, 60.0),
    (45.0, 350.0),
    (85.0, 350.0),
    (90.0, 550.0),
    (105.0, 550.0),
    (110.0, 350.0),
    (115.0, 350.0),
    (120.0, 60.0),
    (150.0, 60.0),
)


def _replica_seconds(timeline: list[tuple[float, int]], start: float, end: float) -> float:
    """The integral over ``[start, end]`` of the count each HPA sync left (a step function)."""
    total = 0.0
    current = next((r for t, r in reversed(timeline) if t <= start), timeline[0][1])
    at = start
    for t, replicas in timeline:
        if t <= start:
            continue
        if t >= end:
            break
        total += current * (t - at)
        at, current = t, replicas
    return total + current * (end - at)


def _measured_timing(result: ScalingDemoResult) -> tuple[float, float]:
    """The live workers' start-up and rebalance stall, as the simulator's scenario describes them.

    A rebalance is a burst of ``revoked`` and ``assigned`` events (no gap over a second); its stall
    runs from the first revocation (processing stops) to the last assignment. Start-up runs from an
    HPA sync that scaled up to the next rebalance (the new pods have started and joined).
    """
    bursts: list[list[float]] = []
    for at, event in sorted(result.events, key=lambda e: e[0]):
        if event.event not in ("revoked", "assigned"):
            continue
        if bursts and at - bursts[-1][-1] <= 1.0:
            bursts[-1].append(at)
        else:
            bursts.append([at])
    stalls = [burst[-1] - burst[0] for burst in bursts]
    ups = [t for (t, r), (_, before) in zip(result.replicas[1:], result.replicas, strict=False) if r > before]
    startups = [min(b[0] for b in bursts if b[0] > t) - t for t in ups if any(b[0] > t for b in bursts)]
    return statistics.median(startups), statistics.median(stalls)


async def test_simulate_predicts_the_live_loop(kafka: KafkaEndpoint, unique: str) -> None:
    demo = ScalingDemoSettings(
        topic=f"{unique}-load",
        group=f"{unique}-workers",
        partitions=PARTITIONS,
        capacity=CAPACITY,
        low=60.0,
        peak=550.0,
        duration=LOAD[-1][0],
        load=LOAD,
    )
    lines: list[str] = []
    live = await run_scaling_demo(kafka.bootstrap, demo, say=lines.append)
    assert live.policy is not None
    assert live.metric_errors == 0, "\n".join(lines)

    startup, stall = _measured_timing(live)
    scenario = Scenario.from_policy(
        live.policy,
        partitions=PARTITIONS,
        metric_delay_seconds=1.0,  # the service decides once a second; the HPA reads the latest
        step_seconds=STEP,
        commit_interval_seconds=COMMIT,
    )
    scenario = replace(scenario, startup_seconds=startup, rebalance_stall_seconds=stall)
    knots = np.asarray(LOAD)
    trace = Trace("load", knots[:, 0], knots[:, 1])
    sim = compare(trace, live.policy, scenario, ["lagscaler"])
    predicted = sim.policy("lagscaler")

    live_seconds = _replica_seconds(live.replicas, 0.0, demo.duration)
    sim_seconds = predicted.replica_hours * 3600.0
    live_max = max(v for t, v in live.lag_seconds if 0 <= t <= demo.duration and math.isfinite(v))
    sim_replicas = sim.replicas["lagscaler"]
    story = "\n".join(
        [
            *lines,
            f"measured start-up {startup:.2f} s, stall {stall:.2f} s",
            f"replica-seconds live {live_seconds:.0f}, simulated {sim_seconds:.0f}",
            f"max lag live {live_max:.2f} s, simulated {predicted.max_lag_seconds:.2f} s",
            f"live replicas: {[(round(t, 1), r) for t, r in live.replicas if 0 <= t <= demo.duration]}",
            f"simulated replicas every 3 s: {sim_replicas[::3].tolist()}",
            "worker events: "
            + str([(round(t, 2), e.worker[-2:], e.event) for t, e in live.events if e.event != "committed"]),
        ]
    )
    print(story)  # shown with pytest -rP: how close the prediction came
    assert abs(sim_seconds - live_seconds) <= 0.10 * live_seconds, story
    assert abs(predicted.max_lag_seconds - live_max) <= STEP + COMMIT, story
    assert int(sim_replicas.max()) == max(r for t, r in live.replicas if 0 <= t <= demo.duration), story
