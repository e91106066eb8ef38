"""Look at a consumer group from outside, as an operator would: members, committed offsets, end offsets.

Plain aiokafka clients (the admin client and an unsubscribed consumer), independent of lagscaler's own
sampler, so tests and the demo can check the pool and the sampler against what Kafka itself says.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

__all__ = [
    "GroupView",
    "committed_offsets",
    "describe_group",
    "end_offsets",
    "topic_partitions",
    "wait_for_members",
]


@dataclass(frozen=True, slots=True)
class GroupView:
    """DescribeGroups' answer: the group state and each member's client id (sorted)."""

    state: str
    client_ids: tuple[str, ...]

    @property
    def members(self) -> int:
        return len(self.client_ids)


async def describe_group(bootstrap: str, group: str) -> GroupView:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="lagscaler-playground-probe")
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    for response in responses:
        for described in response.groups:
            _error, group_id, state, _protocol_type, _protocol, members = described[:6]
            if group_id != group:
                continue
            # DescribeGroups v4+ puts group_instance_id second; the client id comes after it.
            ids = sorted(str(m[2] if len(m) == 6 else m[1]) for m in members)
            return GroupView(str(state), tuple(ids))
    return GroupView("Dead", ())


async def wait_for_members(bootstrap: str, group: str, count: int, *, within: float = 30.0) -> GroupView:
    """Wait until the group is ``Stable`` with ``count`` members (a rebalance has completed around them)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        view = await describe_group(bootstrap, group)
        if view.state == "Stable" and view.members == count:
            return view
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(
                f"group {group} is {view.state} with {view.members} members, not Stable with {count}"
            )
        await asyncio.sleep(0.2)


async def committed_offsets(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    """The group's committed offsets per (topic, partition); partitions without a commit are absent."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="lagscaler-playground-probe")
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


async def topic_partitions(bootstrap: str, topic: str) -> list[int]:
    """The partition ids of ``topic``; empty when it does not exist (answered at once, never awaited)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="lagscaler-playground-probe")
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(p["partition"] for t in described if t["topic"] == topic for p in t["partitions"])


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The log end offset of every partition of ``topic`` (messages ever produced, on a fresh topic)."""
    partitions = await topic_partitions(bootstrap, topic)
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id="lagscaler-playground-probe")
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}
