"""The worker SDK taking partitions over at a cut, on the real broker: what the controller's verification
(docs/handover.md §4.3) waits for.

The controller verifies a new generation by its group's commits *past* the cut. A worker used to make
its first such commit only a whole ``commit_interval`` after it committed the cut itself, so a
generation whose commit interval was as long as ``verify_timeout`` raced its own revert (a CI run
reverted a healthy generation that way: the fault tests commit every 30 s, and the deadline was 30 s).
These tests give the worker a commit interval of an hour, so only the commit of its first processed
records can satisfy them.

The worker is run in-process (its ``stats`` are read directly) against a controller record the test
writes itself: the control topic is real, the controller is not needed for what is under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import GroupCoordinatorNotAvailableError
from lagscaler_demo.localkafka import KafkaEndpoint
from lagscaler_demo.playground.probe import committed_offsets, describe_group, end_offsets
from lagscaler_demo.seed import create_topics
from support import eventually

from lagscaler.core.handover.protocol import (
    ControllerRecord,
    Handover,
    Phase,
    Serving,
    Status,
    WorkerStatus,
)
from lagscaler.edges.handover import ControlChannel, ensure_control_topic
from lagscaler.edges.kafka import KafkaSettings
from lagscaler.worker import Batch, BatchHandler, HandoverIdentity, Worker, WorkerConfig

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 4
BEFORE_CUT = 20  # records per partition the previous generation processed
AFTER_CUT = 30  # records per partition already waiting beyond the cut when the worker starts


@dataclass
class Sink:
    """What the handler was given, per partition, in order."""

    batches: dict[int, list[list[int]]] = field(default_factory=lambda: defaultdict(list))

    async def handle(self, batch: Batch) -> None:
        self.batches[batch.partition.partition].append([r.offset for r in batch.records])

    def offsets(self, partition: int) -> list[int]:
        return [o for batch in self.batches[partition] for o in batch]

    def batch_ends(self, partition: int) -> set[int]:
        """Where a commit of exactly what was processed can be: after a completed batch."""
        return {batch[-1] + 1 for batch in self.batches[partition]}


@dataclass
class Takeover:
    """A topic with records on both sides of a cut, and a control record telling generation 1 to start
    serving there (STARTING, as the controller writes it)."""

    kafka: KafkaSettings
    bootstrap: str
    topic: str
    group: str
    workload: str
    control_topic: str
    cut: dict[tuple[str, int], int]
    channel: ControlChannel
    producer: AIOKafkaProducer

    async def produce(self, per_partition: int) -> None:
        for _ in range(per_partition):
            for p in range(PARTITIONS):
                await self.producer.send_and_wait(self.topic, b"x", partition=p)

    def worker(
        self, name: str, *, handler: BatchHandler | None = None, max_poll_interval_ms: int = 300_000
    ) -> Worker:
        config = WorkerConfig(
            bootstrap=(self.bootstrap,),
            group=self.group,
            topics=(self.topic,),
            worker=name,
            handover=HandoverIdentity(self.workload, 1, self.control_topic),
            commit_interval=3600.0,  # never within a test: only the first-progress commit can count
            max_batch=7,  # several batches per partition, so "the first batch" is not "everything"
            max_poll_interval_ms=max_poll_interval_ms,
        )
        return Worker(config, batch_handler=handler or self.sink.handle, poll_timeout=0.5)

    sink: Sink = field(default_factory=Sink)


@contextlib.asynccontextmanager
async def takeover(kafka: KafkaEndpoint, unique: str, *, beyond: int = AFTER_CUT) -> AsyncIterator[Takeover]:
    """The world of a takeover at the cut, with ``beyond`` records per partition waiting past it."""
    settings = KafkaSettings(bootstrap=(kafka.bootstrap,))
    topic, control = f"{unique}-in", f"{unique}-control"
    await create_topics(settings, {topic: PARTITIONS})
    await ensure_control_topic(settings.client_options(), control)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", linger_ms=0)
    await producer.start()
    channel = ControlChannel(settings.client_options(), control)
    await channel.start()
    try:
        cut = {(topic, p): BEFORE_CUT for p in range(PARTITIONS)}
        group = f"{unique}-gen-1"
        workload = f"test/{unique}"
        world = Takeover(settings, kafka.bootstrap, topic, group, workload, control, cut, channel, producer)
        await world.produce(BEFORE_CUT + beyond)
        now = time.time()
        starting = Handover(
            source=None,
            target=1,
            group=group,
            replicas=1,
            phase=Phase.STARTING,
            warm_to=cut,
            deadline=now + 3600,
            started_at=now,
            cut=cut,
        )
        await channel.publish(
            ControllerRecord(
                workload=workload,
                term=1,
                seq=0,
                serving=Serving(1, group, 1, cut),
                handover=starting,
                next_generation=2,
            )
        )
        yield world
    finally:
        await channel.close()
        await producer.stop()


async def churn(world: Takeover) -> None:
    """Control records without end, as other workers' statuses and a controller's rewrites make them."""
    while True:
        status = WorkerStatus(world.workload, "someone-else", 1, Status.SERVING, at=time.time())
        await world.channel.publish(status)


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    task = asyncio.create_task(worker.serve())
    try:
        yield worker
    finally:
        worker.stop()
        await task


async def committed_past(world: Takeover) -> dict[int, int]:
    """The group's commits, once every partition's is past the cut (else an AssertionError: not yet)."""
    try:
        committed = await committed_offsets(world.bootstrap, world.group)
    except GroupCoordinatorNotAvailableError as exc:  # a fresh broker still electing the coordinator
        raise AssertionError(f"no coordinator for {world.group} yet") from exc
    by_partition = {p: committed.get((world.topic, p), -1) for p in range(PARTITIONS)}
    assert all(o > BEFORE_CUT for o in by_partition.values()), f"committed {by_partition}"
    return by_partition


async def test_a_worker_that_takes_partitions_at_the_cut_commits_its_first_records_at_once(
    kafka: KafkaEndpoint, unique: str
) -> None:
    async with takeover(kafka, unique) as world, running(world.worker(f"{unique}-w")) as worker:
        committed = await eventually(lambda: committed_past(world), what="commits past the cut")
    assert worker.failure is None
    for p in range(PARTITIONS):
        offsets = world.sink.offsets(p)
        assert offsets[0] == BEFORE_CUT, f"partition {p} did not start at the cut"
        assert offsets == list(range(BEFORE_CUT, offsets[-1] + 1)), f"partition {p}: gap or repeat"
        # Exactly what was processed: the end of a batch the handler completed, nothing read ahead.
        assert committed[p] in world.sink.batch_ends(p), (p, committed[p], world.sink.batches[p])


async def test_a_stream_of_control_records_cuts_polls_short_but_loses_and_delays_nothing(
    kafka: KafkaEndpoint, unique: str
) -> None:
    """The worker ends a poll when the control topic changes (its fetch left in flight for the next
    round). Under a continuous stream of control records (other workers' statuses, controller
    rewrites) every record must still be processed exactly once and the takeover still proven by a
    commit past the cut."""
    async with takeover(kafka, unique) as world:
        writer = asyncio.create_task(churn(world))
        try:
            async with running(world.worker(f"{unique}-w")) as worker:
                await eventually(
                    lambda: worker.stats.polls_interrupted >= 20, what="control records cutting polls short"
                )
                await world.produce(AFTER_CUT)  # arrives while polls keep being cut short
                await eventually(lambda: committed_past(world), what="commits past the cut")
                produced = await end_offsets(world.bootstrap, world.topic)
                await eventually(
                    lambda: all(world.sink.offsets(p)[-1:] == [produced[p] - 1] for p in range(PARTITIONS)),
                    what="every record processed",
                )
                interrupted = worker.stats.polls_interrupted
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
    assert worker.failure is None
    assert interrupted >= 20  # the stream really cut polls short while records flowed
    for p in range(PARTITIONS):
        assert world.sink.offsets(p) == list(range(BEFORE_CUT, produced[p])), f"partition {p}"


async def test_a_worker_whose_handler_hangs_leaves_its_group_after_max_poll_interval(
    kafka: KafkaEndpoint, unique: str
) -> None:
    """A handler that never returns holds its partitions only until ``max_poll_interval_ms``: then the
    consumer leaves its group, as any Kafka consumer that stops polling does, and its partitions need
    not wait until a fence kills it. Control records cut its polls short first: aiokafka 0.14 counted
    every cancelled ``getmany`` as a fetch in progress for good, so such a worker looked busy forever."""
    hung, release = asyncio.Event(), asyncio.Event()

    async def hang(batch: Batch) -> None:
        hung.set()
        await release.wait()

    async with takeover(kafka, unique, beyond=0) as world:
        writer = asyncio.create_task(churn(world))
        worker = world.worker(f"{unique}-w", handler=hang, max_poll_interval_ms=3_000)
        try:
            async with running(worker):
                try:
                    await eventually(lambda: worker.stats.polls_interrupted >= 10, what="polls cut short")
                    await eventually(lambda: _members(world, 1), within=60, what="the worker in its group")
                    await world.produce(1)
                    await eventually(hung.is_set, what="the handler hanging")
                    await eventually(
                        lambda: _members(world, 0), within=60, what="the worker out of its group"
                    )
                finally:
                    release.set()  # before the worker is stopped: a stop waits for the handler
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
    assert worker.failure is None


async def _members(world: Takeover, count: int) -> None:
    """The worker's group has ``count`` members (else an AssertionError: not yet)."""
    view = await describe_group(world.bootstrap, world.group)
    assert view.members == count, view
