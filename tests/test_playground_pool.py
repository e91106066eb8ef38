"""The worker pool on the real broker: it consumes, within capacity, scales the group, and leaves no orphans.

Everything is checked from outside through Kafka itself (committed offsets, DescribeGroups) or the
process table, never from timings: where time enters (the capacity bound), it is an upper bound on
how long the pool could have worked, so a slow machine can only make the check easier to pass.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from lagscaler_demo.localkafka import KafkaEndpoint
from lagscaler_demo.playground import PoolSettings, WorkerPool, WorkerState
from lagscaler_demo.playground.probe import committed_offsets, describe_group, wait_for_members
from lagscaler_demo.seed import create_topics, produce
from support import eventually

pytestmark = pytest.mark.kafka

PARTITIONS = 4


def gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie waiting for a reaper that is not us)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


async def members(kafka: KafkaEndpoint, group: str, count: int) -> tuple[str, ...]:
    """Wait until the group is Stable with ``count`` members; returns their client ids."""
    return (await wait_for_members(kafka.bootstrap, group, count)).client_ids


async def committed_total(kafka: KafkaEndpoint, group: str) -> int:
    return sum((await committed_offsets(kafka.bootstrap, group)).values())


def settings(kafka: KafkaEndpoint, group: str, topic: str, **overrides: object) -> PoolSettings:
    base: dict[str, object] = {
        "bootstrap": kafka.bootstrap,
        "group": group,
        "topics": (topic,),
        "capacity_per_replica": 400.0,
        "commit_interval_seconds": 0.5,
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 500,
        "stop_grace_seconds": 5.0,
    }
    return PoolSettings(**{**base, **overrides})  # type: ignore[arg-type]


@pytest.fixture
async def topic(kafka: KafkaEndpoint, unique: str) -> str:
    await create_topics(kafka.bootstrap, {unique: PARTITIONS})
    return unique


@pytest.mark.slow
async def test_pool_consumes_everything_and_scaling_changes_group_membership(
    kafka: KafkaEndpoint, topic: str, unique: str
) -> None:
    group = f"{unique}-g"
    await produce(kafka.bootstrap, {(topic, p): 150 for p in range(PARTITIONS)})
    async with WorkerPool(settings(kafka, group, topic)) as pool:
        await pool.scale_to(2)
        assert (pool.replicas, pool.status_replicas) == (2, 2)
        await pool.wait_ready(within=30)
        assert await members(kafka, group, 2) == (f"{group}-0", f"{group}-1")

        async def all_committed() -> bool:
            return await committed_total(kafka, group) == 600

        await eventually(all_committed, within=30, what="every message committed")
        await pool.wait_until(lambda p: p.processed >= 600, within=10, what="processed counts reported")
        assert pool.processed == 600  # each message processed once: no rebalance happened meanwhile

        await pool.scale_to(3)
        await pool.wait_ready(within=30)
        assert await members(kafka, group, 3) == (f"{group}-0", f"{group}-1", f"{group}-2")
        # Every partition has an owner once the members have read their assignments.
        await pool.wait_until(
            lambda p: sum(len(w.partitions) for w in p.workers) == PARTITIONS, within=10, what="assignments"
        )
        assert all(w.partitions for w in pool.workers)

        await pool.scale_to(1)
        assert (pool.replicas, pool.status_replicas) == (1, 1)  # terminating workers no longer count
        await pool.wait_ready(within=30)
        assert await members(kafka, group, 1) == (f"{group}-0",)  # the newest went first
        assert [w.name for w in pool.workers] == [f"{group}-0"]
        assert pool.failures == ()
        pids = pool.pids()
    assert len(pids) == 3
    assert all(gone(pid) for pid in pids)
    assert (await describe_group(kafka.bootstrap, group)).members == 0  # left cleanly, not timed out


async def test_one_worker_cannot_process_faster_than_its_capacity(
    kafka: KafkaEndpoint, topic: str, unique: str
) -> None:
    group = f"{unique}-g"
    capacity = 150.0
    await produce(kafka.bootstrap, {(topic, p): 1000 for p in range(PARTITIONS)})
    began = time.monotonic()
    async with WorkerPool(settings(kafka, group, topic, capacity_per_replica=capacity)) as pool:
        await pool.scale_to(1)
        await pool.wait_ready(within=30)
        await pool.wait_until(lambda p: p.processed >= 300, within=30, what="300 messages processed")
        committed = await committed_total(kafka, group)
        elapsed = time.monotonic() - began  # longer than the worker could have been consuming
    # One work chunk (capacity / 10) may be in flight beyond the pace; allow 20 % on top for clocks.
    assert 0 < committed <= 1.2 * capacity * elapsed + capacity / 10
    assert pool.processed <= 1.2 * capacity * (time.monotonic() - began) + capacity / 10
    assert committed < 4000  # a worker without the cap drains 4000 messages in well under a second


async def test_stateful_workers_restore_partitions_they_newly_own_before_processing(
    kafka: KafkaEndpoint, topic: str, unique: str
) -> None:
    group = f"{unique}-g"
    per_partition = 0.4
    await produce(kafka.bootstrap, {(topic, p): 400 for p in range(PARTITIONS)})
    pool_settings = settings(
        kafka, group, topic, capacity_per_replica=100.0, restore_seconds_per_partition=per_partition
    )
    async with WorkerPool(pool_settings) as pool:
        await pool.scale_to(1)
        await pool.wait_until(lambda p: p.processed > 0, within=30, what="the first worker to process")
        await pool.scale_to(2)
        await pool.wait_ready(within=30)
        await pool.wait_until(
            lambda p: all(w.processed > 0 and not w.restoring for w in p.workers),
            within=30,
            what="both workers",
        )
        events = list(pool.events)

    first, second = f"{group}-0", f"{group}-1"
    assigned = {
        name: [e.fields for e in events if e.worker == name and e.event == "assigned"]
        for name in (first, second)
    }
    # The first worker restored all four partitions; after the scale-up it kept two of them and restores nothing.
    assert assigned[first][0]["new"] == PARTITIONS
    assert assigned[first][0]["restore_seconds"] == pytest.approx(PARTITIONS * per_partition)
    assert assigned[first][1]["new"] == 0
    assert assigned[first][1]["restore_seconds"] == 0
    # The second worker pays for exactly the partitions that moved to it.
    moved = len(assigned[second][0]["partitions"])
    assert moved == PARTITIONS // 2
    assert assigned[second][0]["new"] == moved
    assert assigned[second][0]["restore_seconds"] == pytest.approx(moved * per_partition)
    # Neither processed anything before its restore was over.
    for name in (first, second):
        mine = [e for e in events if e.worker == name]
        restored = next(i for i, e in enumerate(mine) if e.event == "restored")
        assert not any(e.event == "committed" and e.fields["processed"] > 0 for e in mine[:restored])


@pytest.mark.slow
async def test_a_worker_that_dies_is_reported_and_replaced_and_a_hung_one_is_killed(
    kafka: KafkaEndpoint, topic: str, unique: str
) -> None:
    group = f"{unique}-g"
    pool_settings = settings(kafka, group, topic, restart_backoff_seconds=0.2, stop_grace_seconds=1.0)
    async with WorkerPool(pool_settings) as pool:
        await pool.scale_to(1)
        await pool.wait_ready(within=30)
        victim = pool.workers[0]
        os.kill(victim.pid, signal.SIGKILL)
        await pool.wait_until(lambda p: len(p.failures) == 1, within=10, what="the failure to be seen")
        assert pool.failures[0].name == victim.name
        assert pool.failures[0].returncode == -signal.SIGKILL
        await pool.wait_ready(within=30)
        replacement = pool.workers[0]
        assert replacement.name == f"{group}-1"
        assert replacement.state is WorkerState.READY
        os.kill(replacement.pid, signal.SIGSTOP)  # hung: SIGTERM stays pending, only SIGKILL ends it
    assert gone(victim.pid)
    assert gone(replacement.pid)


@pytest.mark.slow
async def test_workers_stop_when_the_process_that_started_them_is_killed(
    kafka: KafkaEndpoint, topic: str, unique: str
) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio
        from lagscaler_demo.playground.pool import PoolSettings, WorkerPool

        async def main():
            settings = PoolSettings({kafka.bootstrap!r}, {unique!r}, ({topic!r},), 100.0, heartbeat_interval_ms=500)
            async with WorkerPool(settings) as pool:
                await pool.scale_to(2)
                await pool.wait_ready(within=60)
                print(*pool.pids(), flush=True)
                await asyncio.sleep(120)

        asyncio.run(main())
        """
    )
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert parent.stdout is not None
        line = await asyncio.wait_for(parent.stdout.readline(), 60)
        pids = [int(p) for p in line.split()]
        assert len(pids) == 2
        assert not any(gone(pid) for pid in pids)
    finally:
        parent.kill()  # SIGKILL: no cleanup code of the parent runs
        await parent.wait()

    async def all_gone() -> bool:
        return all(gone(pid) for pid in pids)

    await eventually(all_gone, within=15, what="orphaned workers to notice and exit")
