"""Put a known state into a cluster: topics, message counts per partition, committed offsets per group.

The demo, the benchmark and the integration tests all need "a group with exactly this lag"; they
build it with these few calls on aiokafka's public clients. Committing for a group is
:func:`lagscaler.edges.kafka.commit.commit_from_outside` (generation −1, which Kafka accepts while the
group has no active members — the state a seeded group is in).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic, RecordsToDelete
from aiokafka.structs import TopicPartition as _TP

from lagscaler.edges.kafka.admin import KafkaAdmin, TopicPartition
from lagscaler.edges.kafka.commit import commit_from_outside
from lagscaler.edges.kafka.settings import KafkaSettings


def _settings(target: KafkaSettings | str) -> KafkaSettings:
    return target if isinstance(target, KafkaSettings) else KafkaSettings(bootstrap=(target,))


async def wait_for_topics(
    target: KafkaSettings | str, expected: Mapping[str, int | None], *, within: float = 30.0
) -> None:
    """Wait until each topic has the given number of partitions, all served by a leader (``None``: is gone).

    Topic creation and deletion return before every broker has caught up; seeding and tests wait
    here instead of racing the metadata propagation.
    """
    settings = _settings(target)
    deadline = asyncio.get_running_loop().time() + within
    async with KafkaAdmin(settings) as admin:
        while True:
            layout = await admin.metadata(list(expected))
            done = all(
                (topic in layout.missing)
                if partitions is None
                else len(layout.topics.get(topic, {})) == partitions
                and all(leader >= 0 for leader in layout.topics[topic].values())
                for topic, partitions in expected.items()
            )
            if done:
                # Metadata can name a leader before that broker serves the partition: ask it.
                live = [(t, n) for t, n in expected.items() if n is not None]
                ends = await admin.list_end_offsets(list(layout.partitions(t for t, _ in live)), layout)
                if not ends.errors and not ends.missing:
                    return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"topics did not reach {dict(expected)} within {within:g}s")
            await asyncio.sleep(0.1)


async def create_topics(target: KafkaSettings | str, topics: Mapping[str, int]) -> None:
    """Create topics with the given partition counts (replication 1), waiting until they have leaders."""
    options = _settings(target).client_options()
    admin = AIOKafkaAdminClient(**options)
    await admin.start()
    try:
        new = [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in topics.items()]
        for start in range(0, len(new), 500):
            await admin.create_topics(new[start : start + 500])
    finally:
        await admin.close()
    await wait_for_topics(target, topics)


async def add_partitions(target: KafkaSettings | str, topic: str, total: int) -> None:
    """Grow ``topic`` to ``total`` partitions."""
    admin = AIOKafkaAdminClient(**_settings(target).client_options())
    await admin.start()
    try:
        await admin.create_partitions({topic: NewPartitions(total_count=total)})
    finally:
        await admin.close()
    await wait_for_topics(target, {topic: total})


async def delete_topics(target: KafkaSettings | str, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(**_settings(target).client_options())
    await admin.start()
    try:
        await admin.delete_topics(topics)
    finally:
        await admin.close()
    await wait_for_topics(target, dict.fromkeys(topics))


async def delete_records(target: KafkaSettings | str, before: Mapping[TopicPartition, int]) -> None:
    """Delete every record below the given offset of each partition (what retention does, on demand)."""
    admin = AIOKafkaAdminClient(**_settings(target).client_options())
    await admin.start()
    try:
        await admin.delete_records({_TP(t, p): RecordsToDelete(offset) for (t, p), offset in before.items()})
    finally:
        await admin.close()


async def delete_groups(target: KafkaSettings | str, groups: list[str]) -> None:
    """Delete consumer groups that have no active members (aiokafka has no call for it)."""
    async with KafkaAdmin(_settings(target)) as admin:
        result = await admin.delete_groups(groups)
    if result.errors:
        raise RuntimeError("; ".join(result.errors.values()))


async def produce(
    target: KafkaSettings | str, counts: Mapping[TopicPartition, int], *, size: int = 16
) -> None:
    """Append exactly ``counts[(topic, partition)]`` messages to each partition."""
    producer = AIOKafkaProducer(**_settings(target).client_options(), linger_ms=5, acks=1)
    await producer.start()
    try:
        payload = b"x" * size
        pending = []
        for (topic, partition), n in counts.items():
            for _ in range(n):
                pending.append(await producer.send(topic, payload, partition=partition))
            if len(pending) > 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def commit(target: KafkaSettings | str, group: str, offsets: Mapping[TopicPartition, int]) -> None:
    """Commit ``offsets`` for ``group`` (which must have no active members)."""
    await commit_from_outside(_settings(target), group, offsets)


async def commit_many(
    target: KafkaSettings | str, offsets: Mapping[str, Mapping[TopicPartition, int]], *, concurrency: int = 8
) -> None:
    """Commit for many groups, a few at a time."""
    slots = asyncio.Semaphore(concurrency)

    async def one(group: str, group_offsets: Mapping[TopicPartition, int]) -> None:
        async with slots:
            await commit(target, group, group_offsets)

    await asyncio.gather(*(one(g, o) for g, o in offsets.items()))


class _Assigned(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no type hints
    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def on_partitions_revoked(self, revoked: object) -> None:
        self.event.clear()

    async def on_partitions_assigned(self, assigned: object) -> None:
        self.event.set()


async def join_group(
    target: KafkaSettings | str,
    group: str,
    topics: list[str],
    *,
    client_id: str = "lagscaler-seed",
    within: float = 30.0,
) -> AIOKafkaConsumer:
    """Start a live member of ``group`` subscribed to ``topics`` and wait until it holds its partitions.

    The caller owns the returned consumer and must ``await consumer.stop()``.
    """
    consumer = AIOKafkaConsumer(
        **_settings(target).client_options() | {"client_id": client_id},
        group_id=group,
        enable_auto_commit=False,
    )
    listener = _Assigned()
    consumer.subscribe(topics, listener=listener)
    await consumer.start()
    try:
        # The rebalance runs in the consumer's background task; poll once to let it join quickly.
        async with asyncio.timeout(within):
            while not listener.event.is_set():
                await consumer.getmany(timeout_ms=100)
    except BaseException:
        await consumer.stop()
        raise
    return consumer
