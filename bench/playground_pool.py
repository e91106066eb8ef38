"""What the playground worker pool really delivers, and what it costs in CPU, on the local broker.

    .venv/bin/python bench/playground_pool.py [--workers 3] [--capacity 1000] [--seconds 8]

A backlogged topic (6 partitions) is consumed by ``--workers`` worker processes capped at
``--capacity`` msg/s each; the achieved rate (from committed offsets over a steady window after every
worker is ready) is compared with the nominal ``workers × capacity``, and the workers' CPU time
(``/proc/<pid>/stat``) gives cores used and CPU per 1,000 messages. Baseline in the same run: one
worker with no practical cap (``--capacity 1e6``), i.e. the most one worker process can consume on
this machine — the ceiling under every capacity a demo or test may configure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from lagscaler_demo.localkafka import kafka_endpoint
from lagscaler_demo.playground import PoolSettings, WorkerPool
from lagscaler_demo.playground.probe import committed_offsets
from lagscaler_demo.seed import create_topics, produce

PARTITIONS = 6


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    bootstrap: str, topic: str, *, workers: int, capacity: float, seconds: float
) -> dict[str, float]:
    group = f"{topic}-g"
    settings = PoolSettings(
        bootstrap, group, (topic,), capacity, heartbeat_interval_ms=500, session_timeout_ms=6000
    )
    async with WorkerPool(settings) as pool:
        await pool.scale_to(workers)
        await pool.wait_ready(within=60)
        await asyncio.sleep(2.0)  # past the first fetches and commits
        pids = [w.pid for w in pool.workers]
        c0, cpu0, t0 = (
            sum((await committed_offsets(bootstrap, group)).values()),
            sum(map(cpu_seconds, pids)),
            time.monotonic(),
        )
        await asyncio.sleep(seconds)
        c1, cpu1, t1 = (
            sum((await committed_offsets(bootstrap, group)).values()),
            sum(map(cpu_seconds, pids)),
            time.monotonic(),
        )
    rate = (c1 - c0) / (t1 - t0)
    cores = (cpu1 - cpu0) / (t1 - t0)
    return {
        "rate": rate,
        "cores": cores,
        "cpu_ms_per_1k": 1000 * cores / rate * 1000 if rate else float("nan"),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--capacity", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    backlog = int(args.workers * args.capacity * (args.seconds + 6) * 1.5 + 200_000)
    with kafka_endpoint() as kafka:
        topics = {"bench-capped": PARTITIONS, "bench-uncapped": PARTITIONS}
        await create_topics(kafka.bootstrap, topics)
        for topic in topics:
            await produce(kafka.bootstrap, {(topic, p): backlog // PARTITIONS for p in range(PARTITIONS)})
        baseline = await measure(
            kafka.bootstrap, "bench-uncapped", workers=1, capacity=1e6, seconds=args.seconds
        )
        capped = await measure(
            kafka.bootstrap,
            "bench-capped",
            workers=args.workers,
            capacity=args.capacity,
            seconds=args.seconds,
        )
    nominal = args.workers * args.capacity
    print(f"{'case':<34}{'msg/s':>10}{'cores':>8}{'CPU ms/1k msg':>15}")
    label = f"{args.workers} workers x {args.capacity:g} msg/s"
    for name, row in (("1 worker, uncapped (baseline)", baseline), (label, capped)):
        print(f"{name:<34}{row['rate']:>10.0f}{row['cores']:>8.2f}{row['cpu_ms_per_1k']:>15.1f}")
    print(f"achieved / nominal capacity: {capped['rate'] / nominal:.3f}")
    print(f"nominal per-worker capacity / uncapped ceiling: {args.capacity / baseline['rate']:.3f}")


if __name__ == "__main__":
    asyncio.run(main())
