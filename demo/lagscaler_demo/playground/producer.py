"""A load producer: sends to a topic at the rate a :class:`~.rates.RateProfile` asks for.

Every ``tick_seconds`` it sends what the profile's integral says is due by now, minus what it has
already sent, so the total never drifts from the profile, however late a tick or slow an ack.
Messages go round-robin over the topic's partitions (one batch per partition per tick, through
aiokafka's batch API: a trace at a few thousand msg/s costs little CPU), so every partition sees
the same share of the load and per-partition lag is comparable.

Use it as an async context manager; it starts producing on entry and stops early on exit::

    profile = RateProfile.from_schedule([(10, 500), (10, 1500)])
    async with LoadProducer(ProducerSettings(bootstrap, "orders"), profile) as producer:
        await producer.finished()
    producer.stats.produced  # acknowledged messages (exactly the profile's integral, rounded down)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaProducer

from lagscaler.errors import UserError
from lagscaler.logs import get_logger
from lagscaler_demo.playground.probe import topic_partitions
from lagscaler_demo.playground.rates import RateProfile

__all__ = ["LoadProducer", "ProducedPoint", "ProducerSettings", "ProducerStats"]

log = get_logger(__name__)

SEQUENCE_BYTES = 8


@dataclass(frozen=True, slots=True)
class ProducerSettings:
    """Where to produce and how. ``payload_bytes`` is the value size of every message."""

    bootstrap: str
    topic: str
    payload_bytes: int = 32
    tick_seconds: float = 0.1
    linger_ms: int = 5
    client_id: str = "lagscaler-playground-producer"
    # Every value starts with its per-partition sequence number (8 bytes, big-endian, from 0), so a
    # consumer-side checker can prove no gap and no duplicate (lagscaler_demo.playground.handover_app).
    sequenced: bool = False
    # Produce to these partitions only (empty: every partition the topic has when the producer starts),
    # e.g. to load partitions added to a topic later without restarting the sequence of the others.
    partitions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.topic:
            raise UserError("the producer needs a topic")
        if self.payload_bytes < 0:
            raise UserError(f"payload size must be >= 0 bytes, got {self.payload_bytes}")
        if self.sequenced and self.payload_bytes < SEQUENCE_BYTES:
            raise UserError(
                f"a sequenced payload needs at least {SEQUENCE_BYTES} bytes, got {self.payload_bytes}"
            )
        if not (math.isfinite(self.tick_seconds) and 0 < self.tick_seconds <= 10):
            raise UserError(f"producer tick must be in (0, 10] seconds, got {self.tick_seconds}")


@dataclass(frozen=True, slots=True)
class ProducedPoint:
    """One tick: seconds since the start, the profile's rate then, and messages acknowledged so far."""

    at: float
    rate: float
    produced: int


@dataclass
class ProducerStats:
    """What was produced, as the broker acknowledged it."""

    produced: int = 0
    per_partition: dict[int, int] = field(default_factory=dict)
    timeline: list[ProducedPoint] = field(default_factory=list)
    started_at: float | None = None  # unix time of the first tick


class LoadProducer:
    """Produce ``profile`` to ``settings.topic`` in the background while the context is open."""

    def __init__(
        self, settings: ProducerSettings, profile: RateProfile, *, start_immediately: bool = True
    ) -> None:
        self.settings = settings
        self.profile = profile
        self.stats = ProducerStats()
        self._start_immediately = start_immediately
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._partitions: list[int] = []
        self._next_partition = 0
        self._sequence: dict[int, int] = {}  # partition → next sequence number (sequenced mode)

    async def __aenter__(self) -> LoadProducer:
        # Asked up front: aiokafka's producer would wait a whole request timeout for a missing topic.
        partitions = await topic_partitions(self.settings.bootstrap, self.settings.topic)
        if not partitions:
            raise UserError(f"topic {self.settings.topic!r} has no partitions (does it exist?)")
        unknown = sorted(set(self.settings.partitions) - set(partitions))
        if unknown:
            raise UserError(f"topic {self.settings.topic!r} has no partitions {unknown}")
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap,
            client_id=self.settings.client_id,
            linger_ms=self.settings.linger_ms,
            # Sequenced records prove exactly-once downstream, so the log itself must not duplicate a
            # retried batch: idempotence (which needs acks=all) makes the broker drop the retry.
            acks="all" if self.settings.sequenced else 1,
            enable_idempotence=self.settings.sequenced,
        )
        await producer.start()
        self._producer = producer
        self._partitions = sorted(self.settings.partitions or partitions)
        if self._start_immediately:
            self.start()
        return self

    def start(self) -> None:
        """Start following the profile now (entering the context does this unless told otherwise)."""
        if self._task is not None:
            raise RuntimeError("the producer has already started")
        if self._producer is None:
            raise RuntimeError("enter the producer's context before starting it")
        self._task = asyncio.create_task(self._run(self._producer), name="playground-producer")

    async def finished(self) -> ProducerStats:
        """Wait until the whole profile is produced and acknowledged."""
        if self._task is None:
            raise RuntimeError("the producer has not started")
        await asyncio.shield(self._task)
        return self.stats

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        task, self._task = self._task, None
        try:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        finally:
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None

    def _batches(self, producer: AIOKafkaProducer, count: int) -> list[tuple[int, Any, int]]:
        """``count`` messages as (partition, batch, size), continuing the round-robin where it stopped."""
        payload = b"x" * self.settings.payload_bytes
        n = len(self._partitions)
        shares = [count // n] * n
        for k in range(count % n):
            shares[(self._next_partition + k) % n] += 1
        self._next_partition = (self._next_partition + count) % n
        batches = []
        timestamp_ms = int(time.time() * 1000)
        sequenced = self.settings.sequenced
        padding = payload[SEQUENCE_BYTES:]
        for index, share in enumerate(shares):
            remaining = share
            partition = self._partitions[index]
            while remaining:
                batch = producer.create_batch()
                added = 0
                while added < remaining:
                    if sequenced:
                        seq = self._sequence.get(partition, 0)
                        payload = seq.to_bytes(SEQUENCE_BYTES, "big") + padding
                    if not batch.append(key=None, value=payload, timestamp=timestamp_ms):
                        break
                    added += 1
                    if sequenced:
                        self._sequence[partition] = seq + 1
                if added == 0:  # pragma: no cover - a 32-byte record always fits an empty batch
                    raise RuntimeError("a record does not fit in an empty batch")
                batches.append((partition, batch, added))
                remaining -= added
        return batches

    async def _send(self, producer: AIOKafkaProducer, count: int) -> None:
        # Count a batch when the broker acknowledges it, not when this coroutine gets to look: a producer
        # left early is cancelled here while batches it handed over are still in flight, and the
        # producer's stop() delivers them. Counting in the callback keeps ``produced`` equal to what the
        # topic holds.
        futures = []
        for partition, batch, size in self._batches(producer, count):
            sent = await producer.send_batch(batch, self.settings.topic, partition=partition)
            sent.add_done_callback(functools.partial(self._acknowledged, partition, size))
            futures.append(sent)
        if futures:
            # asyncio.wait, not gather or await: a cancelled wait leaves the delivery futures alone.
            await asyncio.wait(futures)
            for sent in futures:
                sent.result()  # a failed delivery is the producer's failure

    def _acknowledged(self, partition: int, size: int, sent: asyncio.Future[Any]) -> None:
        if sent.cancelled() or sent.exception() is not None:
            return
        self.stats.produced += size
        self.stats.per_partition[partition] = self.stats.per_partition.get(partition, 0) + size

    async def _run(self, producer: AIOKafkaProducer) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        self.stats.started_at = time.time()
        requested = 0
        while True:
            elapsed = loop.time() - start
            due = math.floor(self.profile.messages_by(elapsed) + 1e-9)
            if due > requested:
                await self._send(producer, due - requested)
                requested = due
            self.stats.timeline.append(
                ProducedPoint(elapsed, self.profile.rate_at(elapsed), self.stats.produced)
            )
            if elapsed >= self.profile.duration:
                log.info("producer finished", profile=self.profile.name, produced=self.stats.produced)
                return
            next_tick = (
                start + (math.floor(elapsed / self.settings.tick_seconds) + 1) * self.settings.tick_seconds
            )
            await asyncio.sleep(max(0.0, min(next_tick, start + self.profile.duration) - loop.time()))
