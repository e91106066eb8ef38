"""The control channel: a compacted, single-partition Kafka topic, read from its start and tailed.

Both sides use :class:`ControlChannel`: the controller to publish its record and watch worker statuses,
the worker SDK to watch its workload's controller record and publish its own status. On start it reads
the topic up to its end offset before returning, so a process that starts (or restarts) knows the
current state before it acts; it then keeps tailing and wakes waiters on every record it applies.

Only the newest controller record of each workload counts, by ``(term, seq)``: a record of a lower
term than one already seen is ignored, which is what keeps a deposed controller from undoing its
successor's decisions (``docs/handover.md`` §6).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition as _TP

from lagscaler.core.handover.protocol import (
    DEFAULT_CONTROL_TOPIC,
    ControllerRecord,
    ProtocolError,
    WorkerStatus,
    decode,
    encode,
)
from lagscaler.edges.kafka.errors import (
    CLUSTER_AUTHORIZATION_FAILED,
    TOPIC_AUTHORIZATION_FAILED,
    KafkaRequestFailed,
    error_name,
    refusal,
)
from lagscaler.errors import UserError

__all__ = ["DEFAULT_CONTROL_TOPIC", "ControlChannel", "ControlTopicUnusable", "ensure_control_topic"]

_log = logging.getLogger("lagscaler.edges.handover.channel")

# Compaction keeps the newest record per key; a small segment lets it run soon on a topic this small.
# Tombstones (a deleted generation's statuses) are kept a day so a reader that was away still sees them.
CONTROL_TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "segment.ms": "3600000",
    "min.cleanable.dirty.ratio": "0.1",
    "delete.retention.ms": "86400000",
}


REFUSED_PAUSE = 5.0  # s between two reads of the control topic while the broker refuses them


class ControlTopicUnusable(UserError):
    """The control topic exists but cannot serve as one (not exactly one partition): no retry fixes it."""


async def ensure_control_topic(client_options: Mapping[str, Any], topic: str) -> None:
    """Create the control topic (1 partition, compacted) unless it exists; wait until it has a leader.

    A broker that refuses to describe or create it (no ACL for lagscaler's principal) raises
    :class:`KafkaRequestFailed` at once: waiting for a leader of a topic one may not see only ended,
    30 s later, in a "no leader" timeout that named the wrong cause.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: PLC0415 - the controller only

    admin = AIOKafkaAdminClient(**client_options)
    await admin.start()
    try:
        existing = [t for t in await admin.describe_topics([topic]) if t["topic"] == topic]
        _refused(topic, "Describe", [t["error_code"] for t in existing])
        found = [t for t in existing if t["error_code"] == 0]
        if found:
            if len(found[0]["partitions"]) != 1:
                raise ControlTopicUnusable(
                    f"control topic {topic} has {len(found[0]['partitions'])} partitions; it needs exactly 1"
                    " (one total order of records): give --handover-control-topic another name, or delete it"
                )
        else:
            # As durable as the cluster allows, up to three copies (a single-broker laptop gets one).
            brokers = len(admin._client.cluster.brokers())  # aiokafka exposes no broker count
            replication = max(1, min(3, brokers))
            response = await admin.create_topics(
                [
                    NewTopic(
                        topic,
                        num_partitions=1,
                        replication_factor=replication,
                        topic_configs=CONTROL_TOPIC_CONFIG,
                    )
                ]
            )
            # CreateTopicsResponse, every version: topic_errors is (name, error_code, ...) per topic.
            _refused(topic, "Create", [entry[1] for entry in response.topic_errors])
    finally:
        await admin.close()
    deadline = time.monotonic() + 30
    consumer = AIOKafkaConsumer(**client_options)
    await consumer.start()
    try:
        while True:
            with contextlib.suppress(Exception):
                await consumer.end_offsets([_TP(topic, 0)])
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"control topic {topic} has no leader after 30 s")
            await asyncio.sleep(0.1)
    finally:
        await consumer.stop()


def _refused(topic: str, operation: str, codes: list[int]) -> None:
    """Raise :class:`KafkaRequestFailed` if a broker refused ``operation`` on ``topic`` for lack of an
    ACL; any other error (the topic does not exist yet, or exists already) is the caller's to handle."""
    refused = sorted({c for c in codes if c in (TOPIC_AUTHORIZATION_FAILED, CLUSTER_AUTHORIZATION_FAILED)})
    if refused:
        raise KafkaRequestFailed(
            f"{operation} of control topic {topic} refused: {', '.join(error_name(c) for c in refused)}"
        )


class ControlChannel:
    """Read (and write) the control topic; ``async with ControlChannel(...) as channel``.

    ``workload``: only that workload's records are kept (a worker); None keeps every workload's
    (the controller). ``controllers`` holds the newest controller record per workload, ``statuses``
    the newest status per (workload, worker).
    """

    def __init__(
        self,
        client_options: Mapping[str, Any],
        topic: str = DEFAULT_CONTROL_TOPIC,
        *,
        workload: str | None = None,
        client_id: str = "lagscaler-handover",
        keep_history: bool = False,
    ) -> None:
        self._options = {**client_options, "client_id": client_id}
        self.topic = topic
        self.workload = workload
        self._prefix = f"{workload}/" if workload is not None else ""
        self.controllers: dict[str, ControllerRecord] = {}
        self.statuses: dict[str, dict[str, WorkerStatus]] = {}
        # Every controller record applied, in order (keep_history): what tests and the demo replay.
        self.history: list[ControllerRecord] | None = [] if keep_history else None
        self.records = 0  # applied so far
        self.rejected = 0  # records that could not be decoded (logged once each)
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self._version = 0
        self._tp = _TP(topic, 0)

    # --- lifetime -----------------------------------------------------------------------------------

    async def __aenter__(self) -> ControlChannel:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect, read the topic to its current end (the state as of now), then tail it."""
        consumer = AIOKafkaConsumer(
            **self._options,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,  # bounds how long a fetch waits: also how fresh last_heard() is
        )
        producer = AIOKafkaProducer(**self._options, acks="all", linger_ms=0)
        try:
            await consumer.start()
            await producer.start()
            consumer.assign([self._tp])
            await consumer.seek_to_beginning(self._tp)
            end = (await consumer.end_offsets([self._tp]))[self._tp]
            while await consumer.position(self._tp) < end:
                self._apply_batch(await consumer.getmany(self._tp, timeout_ms=500))
        except BaseException:
            await producer.stop()
            await consumer.stop()
            raise
        self._consumer, self._producer = consumer, producer
        self._task = asyncio.create_task(self._tail(), name=f"control-channel-{self.topic}")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    # --- reading ------------------------------------------------------------------------------------

    async def _tail(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            try:
                batch = await consumer.getmany(self._tp, timeout_ms=1000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broker restart: aiokafka reconnects; keep reading
                fix = refusal(exc)
                if fix is None:
                    _log.warning("control topic read failed: %s", exc)
                    await asyncio.sleep(0.2)
                else:  # refused (an ACL revoked): only a change outside will help; say so, less often
                    _log.error("control topic %s read refused: %s; %s", self.topic, exc, fix)
                    await asyncio.sleep(REFUSED_PAUSE)
                continue
            if batch:
                self._apply_batch(batch)
                async with self._changed:
                    self._version += 1
                    self._changed.notify_all()

    def _apply_batch(self, batch: Mapping[Any, list[Any]]) -> None:
        for records in batch.values():
            for message in records:
                self._apply(message.key, message.value)

    def _apply(self, raw_key: bytes | None, value: bytes | None) -> None:
        key = raw_key.decode(errors="replace") if raw_key else ""
        if not key.startswith(self._prefix):
            return
        self.records += 1
        if value is None:  # a tombstone: a forgotten status (controller records are never deleted)
            parts = key.split("/worker/", 1)
            if len(parts) == 2 and "/" in parts[1]:
                worker = parts[1].split("/", 1)[1]
                self.statuses.get(parts[0], {}).pop(worker, None)
            return
        try:
            record = decode(value)
        except ProtocolError as exc:
            self.rejected += 1
            _log.warning("ignoring control record %s: %s", key, exc)
            return
        if isinstance(record, ControllerRecord):
            if record.newer_than(self.controllers.get(record.workload)):
                self.controllers[record.workload] = record
                if self.history is not None:
                    self.history.append(record)
        else:
            self.statuses.setdefault(record.workload, {})[record.worker] = record

    def controller(self, workload: str) -> ControllerRecord | None:
        return self.controllers.get(workload)

    def workers(self, workload: str) -> dict[str, WorkerStatus]:
        """The newest status of every worker of ``workload`` (a copy)."""
        return dict(self.statuses.get(workload, {}))

    def last_heard(self) -> float:
        """Seconds since the last successful fetch from the control topic (records or not)."""
        consumer = self._consumer
        if consumer is None:
            return float("inf")
        with contextlib.suppress(AssertionError, KeyError, TypeError):
            stamp = consumer.last_poll_timestamp(self._tp)
            if stamp:
                return max(0.0, time.time() - float(stamp) / 1000)
        return float("inf")

    @property
    def version(self) -> int:
        """Increases whenever records were applied; pass it to :meth:`wait_changed`."""
        return self._version

    async def wait_changed(self, since: int, within: float) -> bool:
        """Wait until records newer than ``since`` were applied (True) or ``within`` seconds pass (False)."""
        try:
            async with asyncio.timeout(within):
                async with self._changed:
                    await self._changed.wait_for(lambda: self._version != since)
        except TimeoutError:
            return False
        return True

    # --- writing ------------------------------------------------------------------------------------

    async def publish(self, record: ControllerRecord | WorkerStatus) -> None:
        """Write a record and wait for the broker's acknowledgement (all in-sync replicas)."""
        key, value = encode(record)
        await self._send(key, value)

    async def delete(self, key: str) -> None:
        """Write a tombstone for ``key``."""
        await self._send(key, None)

    async def _send(self, key: str, value: bytes | None) -> None:
        if self._producer is None:
            raise RuntimeError("the control channel is not started")
        await self._producer.send_and_wait(self.topic, value=value, key=key.encode(), partition=0)
