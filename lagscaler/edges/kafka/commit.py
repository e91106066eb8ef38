"""Committing offsets for a consumer group from outside it: what a hand-back leaves the workload's group.

A consumer that is *assigned* partitions (never subscribed) never joins its group, so it commits with
generation −1 and an empty member id: aiokafka 0.14, ``aiokafka/consumer/group_coordinator.py``,
``GroupCoordinator.__init__`` sets ``self.generation = OffsetCommitRequest.DEFAULT_GENERATION_ID`` (−1)
and ``self.member_id = JoinGroupRequest.UNKNOWN_MEMBER_ID`` (""), which only a join changes, and
``_do_commit_offsets`` sends both in its OffsetCommit. Kafka's group coordinator accepts such a commit
only while the group is Empty (REFERENCE §3.2); a group with members answers ``UNKNOWN_MEMBER_ID``,
which aiokafka raises as ``CommitFailedError`` — nothing is written then.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition as _TP

from lagscaler.edges.kafka.admin import TopicPartition
from lagscaler.edges.kafka.settings import KafkaSettings

__all__ = ["commit_from_outside"]


async def commit_from_outside(
    settings: KafkaSettings, group: str, offsets: Mapping[TopicPartition, int]
) -> None:
    """Commit ``offsets`` for ``group``, which must have no active members (else ``CommitFailedError``)."""
    if not offsets:
        return
    consumer = AIOKafkaConsumer(**settings.client_options(), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([_TP(t, p) for t, p in offsets])
        await consumer.commit({_TP(t, p): o for (t, p), o in offsets.items()})
    finally:
        await consumer.stop()
