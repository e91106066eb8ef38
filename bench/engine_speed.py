"""Engine speed: one decision cycle for 1,000 workloads (target: ≤ 50 ms).

Measures, in the same run:
* ``cycle``: building 1,000 observations from a Snapshot's GroupSamples (24 partitions each) and one
  vectorised ``decide`` over all of them: what the service does every sample cycle;
* ``decide``: the vectorised decision alone;
* baseline ``loop``: the same decisions made one workload at a time (``decide`` with W = 1, 1,000
  calls), i.e. what the engine would cost without vectorisation. The ratio says what vectorising
  buys; the absolute cycle time is what the 50 ms target is about.

    .venv/bin/python bench/engine_speed.py [--workloads 1000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from lagscaler.core.engine import EngineState, ObservationBatch, PolicyArrays, decide, observe
from lagscaler.core.policy.model import Capacity, KafkaSource, ScaleTargetRef, ScalingPolicy, Stateful
from lagscaler.core.signals.model import GroupSample, PartitionSample, PartitionStatus, Snapshot


def policies(n: int) -> list[ScalingPolicy]:
    base = ScalingPolicy(
        name="w",
        namespace="bench",
        target=ScaleTargetRef("w"),
        kafka=KafkaSource("w"),
        max_lag_seconds=30.0,
        capacity=Capacity(per_replica=2000.0),
        max_replicas=24,
    )
    out = []
    for i in range(n):
        stateful = Stateful(restore_bytes_per_second=50e6, state_bytes=1e11) if i % 3 == 0 else None
        out.append(replace(base, name=f"w{i}", kafka=KafkaSource(f"group-{i}"), stateful=stateful))
    return out


def snapshot(n: int, at: float, rng: np.random.Generator) -> Snapshot:
    groups = []
    for i in range(n):
        rate = float(rng.uniform(100, 20_000))
        parts = tuple(
            PartitionSample(
                topic="events",
                partition=p,
                committed=1000,
                end=1000 + int(rng.integers(0, 5000)),
                lag=int(rng.integers(0, 5000)),
                lag_seconds=float(rng.uniform(0, 40)),
                produce_rate=rate / 24,
                consume_rate=rate / 24 * float(rng.uniform(0.8, 1.1)),
                status=PartitionStatus.OK,
                owner=f"m{p % 6}",
            )
            for p in range(24)
        )
        groups.append(GroupSample(f"group-{i}", "Stable", 6, at, parts))
    return Snapshot(at, tuple(groups))


def timed(fn: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workloads", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    n = args.workloads
    rng = np.random.default_rng(1)
    ps = policies(n)
    params = PolicyArrays.from_policies(ps)
    state = EngineState.initial(params)
    # Warm the state up with a few cycles so every code path (windows, capacity) is live.
    for k in range(5):
        snap = snapshot(n, 15.0 * k, rng)
        batch = ObservationBatch.stack([observe(snap.group(p.kafka.group), p, replicas=6) for p in ps])
        _, state = decide(params, state, batch)
    snap = snapshot(n, 75.0, rng)
    groups = {g.group: g for g in snap.groups}

    def cycle() -> object:
        batch = ObservationBatch.stack([observe(groups.get(p.kafka.group), p, replicas=6) for p in ps])
        return decide(params, state, batch)

    batch = ObservationBatch.stack([observe(groups.get(p.kafka.group), p, replicas=6) for p in ps])
    singles = [PolicyArrays.from_policies([p]) for p in ps]
    single_states = [EngineState.initial(s) for s in singles]
    single_batches = [ObservationBatch.stack([observe(groups.get(p.kafka.group), p, replicas=6)]) for p in ps]

    def loop() -> object:
        return [decide(s, st, b) for s, st, b in zip(singles, single_states, single_batches, strict=True)]

    t_cycle = timed(cycle, args.repeat)
    t_decide = timed(lambda: decide(params, state, batch), args.repeat)
    t_loop = timed(loop, max(args.repeat // 4, 3))
    print(f"workloads: {n} (24 partitions each; a third stateful)")
    print(f"cycle (observe {n} groups + one vectorised decide): {t_cycle * 1e3:.1f} ms (target ≤ 50 ms)")
    print(f"decide alone, vectorised:                         {t_decide * 1e3:.1f} ms")
    print(f"baseline, decide one workload at a time:          {t_loop * 1e3:.1f} ms")
    print(f"vectorised decide is {t_loop / t_decide:.0f}x faster than the per-workload loop")
    print(f"full cycle is {t_loop / t_cycle:.1f}x faster than the per-workload loop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
