"""The simulator's replica series for lagscaler on a few short traces, pinned (a refactor changes nothing).

The engine is tuned by behaviour, so a change that is meant to be a pure refactor (splitting a
stage, renaming, vectorising differently) must leave every replica count of these runs as it was.
The pinned series live in ``tests/golden/engine_replicas.json``, run-length encoded
(``[[count, steps], ...]``, one simulation step each).

When a change is *meant* to alter decisions, regenerate the file and say why in the commit::

    .venv/bin/python tests/test_engine_golden.py --update

then read the diff of the JSON (how many steps changed, and where) before committing it.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lagscaler.core.policy import load_policy_file
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
from lagscaler.core.simulation.trace import Trace, diurnal_trace, spike_trace, step_trace

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden" / "engine_replicas.json"


def _bench_like(stateful: bool) -> ScalingPolicy:
    return ScalingPolicy(
        name="golden-stateful" if stateful else "golden-stateless",
        namespace="test",
        target=ScaleTargetRef("consumer"),
        kafka=KafkaSource("consumer"),
        max_lag_seconds=30.0,
        capacity=Capacity(per_replica=2000.0),
        min_replicas=1,
        max_replicas=24,
        target_utilization=0.85,
        scale_up=ScaleUp(max_step_percent=400.0, max_step_replicas=24),
        scale_down=ScaleDown(stabilization_seconds=1800.0 if stateful else 300.0, max_step_percent=100.0),
        startup_seconds=30.0,
        rebalance_stall_seconds=10.0,
        stateful=Stateful(restore_bytes_per_second=50e6, state_bytes=60.0 * 50e6 * 24) if stateful else None,
        hpa=Hpa(configurable_tolerance=True),
    )


def _shipped(name: str) -> ScalingPolicy:
    policy = load_policy_file(ROOT / "policies" / f"{name}.yaml")
    if policy.stateful is not None and policy.stateful.state_bytes is None:
        policy = replace(policy, stateful=replace(policy.stateful, state_bytes=200e9))
    return policy


def _cases() -> dict[str, tuple[Trace, ScalingPolicy, int, float]]:
    """name -> (trace, policy, partitions, peak msg/s): short runs that still cross every stage."""
    step = step_trace(hours=6.0, every_hours=1.5)
    spike = spike_trace(hours=4.0, every_minutes=40.0)
    hourly = spike_trace(hours=4.0, every_minutes=60.0)
    diurnal = diurnal_trace(days=1.0).truncated(12 * 3600.0)
    stateless = _bench_like(False)
    seasonal = replace(
        stateless,
        smoothing=Smoothing(seasonal_period_seconds=3600.0),
        scale_up=ScaleUp(stabilization_seconds=30.0, max_step_percent=100.0, max_step_replicas=6),
        capacity=Capacity(per_replica=1500.0, prior_weight_seconds=60.0),
    )
    return {
        "step-stateless": (step, stateless, 24, 20_000.0),
        "spike-stateless": (spike, stateless, 24, 20_000.0),
        "hourly-seasonal-learning": (hourly, seasonal, 24, 20_000.0),
        "step-stateful": (step, _bench_like(True), 24, 20_000.0),
        "diurnal-stateful": (diurnal, _bench_like(True), 24, 20_000.0),
        "spike-clickstream": (spike, _shipped("clickstream"), 64, 100_000.0),
        "diurnal-sessionizer": (diurnal, _shipped("sessionizer"), 32, 70_000.0),
    }


def _series(name: str) -> list[int]:
    trace, policy, partitions, peak = _cases()[name]
    scenario = Scenario.from_policy(policy, partitions=partitions)
    result = compare(trace.rescaled(peak), policy, scenario, ("lagscaler",))
    return [int(r) for r in result.replicas["lagscaler"]]


def _encode(series: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for value in series:
        if runs and runs[-1][0] == value:
            runs[-1][1] += 1
        else:
            runs.append([value, 1])
    return runs


def _decode(runs: list[list[int]]) -> list[int]:
    return [value for value, length in runs for _ in range(length)]


@pytest.mark.parametrize("name", sorted(_cases()))
def test_replica_series_is_unchanged(name: str) -> None:
    pinned = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert name in pinned, f"{name} is not pinned: run {Path(__file__).name} --update"
    expected = _decode(pinned[name])
    actual = _series(name)
    if actual != expected:
        diff = np.flatnonzero(np.asarray(actual[: len(expected)]) != np.asarray(expected[: len(actual)]))
        first = int(diff[0]) if diff.size else min(len(actual), len(expected))
        pytest.fail(
            f"{name}: the replica series changed at step {first} of {len(expected)} "
            f"({len(diff)} steps differ; lengths {len(actual)} vs {len(expected)}); if intended, "
            f"regenerate with `.venv/bin/python tests/{Path(__file__).name} --update`"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--update", action="store_true", help="rewrite the pinned series")
    args = parser.parse_args()
    if not args.update:
        parser.error("nothing to do without --update (run the test with pytest)")
    GOLDEN.parent.mkdir(exist_ok=True)
    pinned = {name: _encode(_series(name)) for name in sorted(_cases())}
    text = "{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in pinned.items()) + "\n}\n"
    GOLDEN.write_text(text, encoding="utf-8")
    for name, runs in pinned.items():
        print(f"{name}: {sum(n for _, n in runs)} steps, {len(runs)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
