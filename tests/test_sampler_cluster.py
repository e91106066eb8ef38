"""Two coordinators: per-coordinator batching, a real NOT_COORDINATOR, and a coordinator that goes away.

A single broker coordinates every group, so it can never answer NOT_COORDINATOR. This module runs
its own two-broker KRaft cluster (node 1 is also the controller) with ``__consumer_offsets`` spread
over both, so groups have two different coordinators — and a request sent to the wrong one gets
Kafka's genuine NOT_COORDINATOR. Topics are placed on node 1 only, so stopping node 2 takes away
coordinators and nothing else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from lagscaler_demo.localkafka import BrokerConfig, LocalBroker
from lagscaler_demo.localkafka.broker import probe, run_coroutine_sync
from lagscaler_demo.seed import commit, produce, wait_for_topics
from support import eventually

from lagscaler.core.signals import Snapshot
from lagscaler.edges.kafka import KafkaAdmin, KafkaSettings
from lagscaler.edges.sampler import Sampler, SamplerSettings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[LocalBroker, LocalBroker]]:
    first = LocalBroker(BrokerConfig(extra_properties={"offsets.topic.num.partitions": "4"}))
    second = first.joining(2)
    try:
        first.start()
        second.start()
        for _ in range(100):  # both registered before __consumer_offsets is created
            if run_coroutine_sync(probe(first.bootstrap)) == 2:
                break
        yield first, second
    finally:
        second.kill()  # nothing to flush: SIGKILL saves the graceful shutdown's seconds
        first.kill()
        second.close()
        first.close()


async def groups_per_coordinator(settings: KafkaSettings, prefix: str, each: int = 2) -> dict[int, list[str]]:
    """Group names until each broker coordinates ``each`` of them."""
    found: dict[int, list[str]] = {1: [], 2: []}
    async with KafkaAdmin(settings) as admin:
        n = 0
        while min(len(v) for v in found.values()) < each:
            names = [f"{prefix}-g{n + i}" for i in range(8)]
            n += 8
            coordinators = (await admin.find_coordinators(names)).values
            for name, node in coordinators.items():
                if len(found[node]) < each:
                    found[node].append(name)
    return found


async def seed(settings: KafkaSettings, prefix: str) -> tuple[str, dict[int, list[str]]]:
    topic = f"{prefix}-t"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap[0])
    await admin.start()
    try:  # both partitions on node 1: stopping node 2 takes away coordinators only
        await admin.create_topics([NewTopic(topic, -1, -1, replica_assignments={0: [1], 1: [1]})])
    finally:
        await admin.close()
    await wait_for_topics(settings, {topic: 2})
    await produce(settings, {(topic, 0): 10, (topic, 1): 10})
    groups = await groups_per_coordinator(settings, prefix)
    for node, names in groups.items():
        for i, name in enumerate(names):
            await commit(settings, name, {(topic, 0): node + i, (topic, 1): 5})
    return topic, groups


def expected_lags(groups: dict[int, list[str]]) -> dict[str, int]:
    """What :func:`seed` committed: offset node+i of 10 on partition 0, 5 of 10 on partition 1."""
    return {name: (10 - (node + i)) + 5 for node, names in groups.items() for i, name in enumerate(names)}


async def test_one_batch_per_coordinator_and_real_not_coordinator(
    cluster: tuple[LocalBroker, LocalBroker], unique: str
) -> None:
    first, _ = cluster
    settings = KafkaSettings(bootstrap=(first.bootstrap,), request_timeout=5.0)
    _topic, groups = await seed(settings, unique)
    names = tuple(n for ns in groups.values() for n in ns)
    async with Sampler(settings, SamplerSettings(groups=names)) as sampler:
        snapshot = await sampler.sample()
        requests = dict(snapshot.requests)
        # Two coordinators: two OffsetFetch and two DescribeGroups, however many groups each has.
        assert (requests["OffsetFetch"], requests["DescribeGroups"]) == (2, 2)
        assert {g.group: g.total_lag for g in snapshot.groups} == expected_lags(groups)

        # Point every group at the other broker, as if each coordinator had just moved.
        for node, ns in groups.items():
            for name in ns:
                sampler.admin.pin_coordinator(name, 3 - node)
        moved = await sampler.sample()
    assert {g.group: g.total_lag for g in moved.groups} == expected_lags(groups)
    assert not any(g.stale for g in moved.groups)
    assert sampler.stats.retries["OffsetFetch:NOT_COORDINATOR"] == len(names)
    assert sampler.stats.retries["DescribeGroups:NOT_COORDINATOR"] == len(names)


async def test_a_coordinator_going_away_stales_only_its_groups_and_they_come_back(
    cluster: tuple[LocalBroker, LocalBroker], unique: str
) -> None:
    first, second = cluster
    settings = KafkaSettings(bootstrap=(first.bootstrap,), request_timeout=3.0)
    _topic, groups = await seed(settings, unique)
    names = tuple(n for ns in groups.values() for n in ns)
    async with Sampler(settings, SamplerSettings(groups=names, cycle_timeout=20)) as sampler:
        before = await sampler.sample()
        await asyncio.to_thread(second.stop)
        try:
            during = await sampler.sample()
        finally:
            await asyncio.to_thread(second.start)

        async def all_fresh() -> Snapshot:  # node 2 reloads its part of __consumer_offsets first
            snapshot = await sampler.sample()
            assert not any(g.stale for g in snapshot.groups)
            return snapshot

        after = await eventually(all_fresh, within=30, every=0.5, what="every group fresh again")
    on_first, on_second = set(groups[1]), set(groups[2])
    assert not during.stale  # the cycle itself succeeded
    for g in during.groups:
        if g.group in on_first:
            assert (g.stale, g.total_lag) == (False, expected_lags(groups)[g.group])
        else:
            assert g.stale
            assert g.error
            assert g.partitions == before.group(g.group).partitions  # type: ignore[union-attr]
    assert after is not None
    assert on_second
    assert not any(g.stale for g in after.groups)
    assert {g.group: g.total_lag for g in after.groups} == expected_lags(groups)
