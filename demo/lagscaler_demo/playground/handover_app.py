"""A consumer application built on the worker SDK that writes down everything it processes, and its checker.

``python -m lagscaler_demo.playground.handover_app --sink TOPIC`` is a :class:`lagscaler.worker.Worker`
(configured from the environment a backend sets) whose handler reads each record's per-partition
sequence number (:class:`~lagscaler_demo.playground.producer.ProducerSettings` with ``sequenced``) and
writes, per batch, one *sink* record: which worker and generation processed which sequence numbers,
with each record's creation time and the processing time. The handler returns only once the sink (and,
stateful, the changelog) acknowledged the write, so "processed" means "in the sink": a record a
worker processed and did not commit before it died appears twice.

With ``--changelog TOPIC`` it is stateful: each partition's state is (records seen, last sequence
number), checked against every record (a restored state that is wrong shows up as a *mismatch*), and
written to the changelog after every batch, before the offsets are committed; the warm-up hook restores
it from the changelog up to the given offsets, as a Kafka Streams task restores its store.

:func:`read_sink` and :func:`check` turn the sink back into a verdict: per partition, every sequence
number the producer acknowledged seen at least once (no loss), how many were seen more than once and
which worker processed the first copy (duplicates must come only from crashed workers), and the
timings ``bench/handover.py`` reports (consumption gaps, end-to-end latency).

Fault injection for the tests: ``--exit-in-generations`` makes a worker of those generations exit at
once (a generation that cannot start), ``--fail-warm-up-in-generations`` makes its warm-up hook raise,
``--block-handler-in-generations`` makes its handler hang on the first batch before processing anything,
``--crash-on-first-batch-in-generations`` makes the process exit there (each a generation that starts at
the cut and makes no progress).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import struct
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from lagscaler.worker import Batch, Worker, WorkerConfig
from lagscaler_demo.playground.probe import topic_partitions
from lagscaler_demo.playground.producer import SEQUENCE_BYTES

__all__ = ["HANGS", "SinkBatch", "SinkReport", "check", "main", "read_sink"]

HANGS = "handler hangs (injected)"  # what a worker with --block-handler-in-generations logs as it hangs
_HEADER = struct.Struct(">iiqiH")  # partition, generation, processed_ms, mismatches, worker id length
_STATE = struct.Struct(">qqq")  # next offset, records seen, last sequence number


@dataclass(frozen=True, slots=True)
class SinkBatch:
    """One sink record: who processed which sequence numbers of a partition, and when."""

    partition: int
    generation: int
    worker: str
    processed_ms: int
    mismatches: int
    seqs: np.ndarray  # (n,) int64
    created_ms: np.ndarray  # (n,) int64


def encode_batch(
    *, partition: int, generation: int, worker: str, mismatches: int, pairs: Sequence[tuple[int, int]]
) -> bytes:
    name = worker.encode()
    header = _HEADER.pack(partition, generation, int(time.time() * 1000), mismatches, len(name))
    body = np.asarray(pairs, dtype=">i8").tobytes() if pairs else b""
    return header + name + body


def decode_batch(value: bytes) -> SinkBatch:
    partition, generation, processed_ms, mismatches, length = _HEADER.unpack_from(value)
    start = _HEADER.size
    worker = value[start : start + length].decode()
    pairs = np.frombuffer(value, dtype=">i8", offset=start + length).reshape(-1, 2).astype(np.int64)
    return SinkBatch(partition, generation, worker, processed_ms, mismatches, pairs[:, 0], pairs[:, 1])


class SequenceApp:
    """The handler, the warm-up hook and the clients they use (opened by :meth:`resources`)."""

    def __init__(
        self,
        config: WorkerConfig,
        *,
        sink: str,
        changelog: str | None,
        fail_warm_up: bool = False,
        block_handler: bool = False,
        crash_on_first_batch: bool = False,
    ) -> None:
        self.config = config
        self.sink = sink
        self.changelog = changelog
        self.fail_warm_up = fail_warm_up
        self.block_handler = block_handler
        self.crash_on_first_batch = crash_on_first_batch
        self.generation = config.handover.generation if config.handover is not None else 0
        self.state: dict[int, tuple[int, int]] = {}  # partition → (records seen, last sequence number)
        # The changelog as read so far: partition → next offset → state after it.
        self._entries: dict[int, dict[int, tuple[int, int]]] = {}
        self._read_to: dict[int, int] = {}  # changelog partition → how far it has been read
        self._producer: AIOKafkaProducer | None = None
        self._reader: AIOKafkaConsumer | None = None

    @contextlib.asynccontextmanager
    async def resources(self) -> AsyncIterator[None]:
        options = self.config.client_kwargs()
        # Idempotent, so a send retried across a broker restart lands once: a second copy in the sink would
        # read as a record processed twice, which is what the checker exists to catch in the worker.
        producer = AIOKafkaProducer(**options, acks="all", linger_ms=1, enable_idempotence=True)
        await producer.start()
        self._producer = producer
        try:
            if self.changelog is not None:
                reader = AIOKafkaConsumer(**options, enable_auto_commit=False)
                await reader.start()
                self._reader = reader
            yield
        finally:
            if self._reader is not None:
                await self._reader.stop()
            await producer.stop()

    async def handle(self, batch: Batch) -> None:
        if self.block_handler:
            # Said in the worker's log, so a test knows the worker hangs and does not merely wait for records.
            print(f"{self.config.worker}: {HANGS}", file=sys.stderr, flush=True)
            await asyncio.Event().wait()  # hangs: nothing of the batch reaches the sink
        if self.crash_on_first_batch:
            os._exit(3)  # dies as a crash does: no commit, no status, nothing of the batch in the sink
        partition = batch.partition.partition
        pairs = []
        mismatches = 0
        seen, last = self.state.get(partition, (0, -1))
        for record in batch.records:
            seq = int.from_bytes(record.value[:SEQUENCE_BYTES], "big")
            if seq != last + 1:
                mismatches += 1
            seen, last = seen + 1, seq
            pairs.append((seq, record.timestamp))
        self.state[partition] = (seen, last)
        assert self._producer is not None
        sends = []
        if self.changelog is not None:
            value = _STATE.pack(batch.records[-1].offset + 1, seen, last)
            sends.append(
                await self._producer.send(
                    self.changelog, value, key=str(partition).encode(), partition=partition
                )
            )
        payload = encode_batch(
            partition=partition,
            generation=self.generation,
            worker=self.config.worker,
            mismatches=mismatches if self.changelog is not None else 0,
            pairs=pairs,
        )
        sends.append(await self._producer.send(self.sink, payload, partition=partition))
        await asyncio.gather(*sends)

    async def warm_up(self, upto: Mapping[TopicPartition, int]) -> None:
        """Restore each partition's state as of ``upto`` from the changelog (incrementally)."""
        if self.fail_warm_up:
            raise RuntimeError("warm-up failure injected for this generation")
        reader = self._reader
        assert reader is not None
        assert self.changelog is not None
        wanted = sorted({TopicPartition(self.changelog, tp.partition) for tp in upto})
        for tp in wanted:
            self._entries.setdefault(tp.partition, {})
        # assign() forgets positions, so every read position is kept here and sought again.
        reader.assign(wanted)
        for tp in wanted:
            if tp.partition in self._read_to:
                reader.seek(tp, self._read_to[tp.partition])
            else:
                await reader.seek_to_beginning(tp)
        ends = await reader.end_offsets(wanted)
        remaining = {tp for tp in wanted if await reader.position(tp) < ends[tp]}
        while remaining:
            fetched = await reader.getmany(*remaining, timeout_ms=500)
            for tp, records in fetched.items():
                for record in records:
                    next_offset, seen, last = _STATE.unpack(record.value)
                    self._entries[tp.partition][next_offset] = (seen, last)
            remaining = {tp for tp in remaining if await reader.position(tp) < ends[tp]}
        for tp in wanted:
            self._read_to[tp.partition] = await reader.position(tp)
        for tp, offset in upto.items():
            self.state[tp.partition] = self._entries[tp.partition].get(offset, (0, -1))


# --- the checker --------------------------------------------------------------------------------------


async def read_sink(bootstrap: str, sink: str) -> list[SinkBatch]:
    """Every sink record, partition by partition in log order."""
    partitions = [TopicPartition(sink, p) for p in await topic_partitions(bootstrap, sink)]
    if not partitions:
        raise RuntimeError(f"sink topic {sink} has no partitions (does it exist?)")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        out: dict[int, list[SinkBatch]] = {tp.partition: [] for tp in partitions}
        remaining = {tp for tp in partitions if ends[tp] > 0}
        while remaining:
            fetched = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in fetched.items():
                out[tp.partition].extend(decode_batch(r.value) for r in records)
            remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
        return [b for p in sorted(out) for b in out[p]]
    finally:
        await consumer.stop()


@dataclass
class SinkReport:
    """The verdict on a run: what was lost, duplicated, mis-restored, and how the timing looked."""

    produced: int
    processed: int  # sink entries (copies included)
    lost: int
    lost_examples: list[tuple[int, int]] = field(default_factory=list)  # (partition, seq)
    duplicates: int = 0
    duplicated_first_by: Counter[str] = field(default_factory=Counter)  # worker of each first copy
    mismatches: int = 0  # stateful: records whose restored state did not match
    unexpected: int = 0  # sequence numbers beyond what was produced
    generations: set[int] = field(default_factory=set)

    @property
    def consistent(self) -> bool:
        return self.lost == 0 and self.unexpected == 0 and self.mismatches == 0

    def summary(self) -> str:
        return (
            f"produced {self.produced}, processed {self.processed}, lost {self.lost}, "
            f"duplicated {self.duplicates} (first copies by {dict(self.duplicated_first_by)}), "
            f"state mismatches {self.mismatches}, unexpected {self.unexpected}, "
            f"generations {sorted(self.generations)}"
        )


def check(batches: Sequence[SinkBatch], produced: Mapping[int, int]) -> SinkReport:
    """Judge the sink against what the producer acknowledged (partition → records)."""
    report = SinkReport(produced=sum(produced.values()), processed=0, lost=0)
    first: dict[int, dict[int, str]] = {p: {} for p in produced}
    counts: dict[int, np.ndarray] = {p: np.zeros(n, dtype=np.int64) for p, n in produced.items()}
    for batch in batches:
        report.generations.add(batch.generation)
        report.mismatches += batch.mismatches
        report.processed += len(batch.seqs)
        n = produced.get(batch.partition, 0)
        inside = batch.seqs[(batch.seqs >= 0) & (batch.seqs < n)]
        report.unexpected += len(batch.seqs) - len(inside)
        if batch.partition not in counts:
            continue
        seen = counts[batch.partition]
        np.add.at(seen, inside, 1)
        owners = first[batch.partition]
        for seq in inside[seen[inside] > 1].tolist():
            if seen[seq] == 2:
                report.duplicated_first_by[owners.get(seq, "?")] += 1
        for seq in inside[seen[inside] == 1].tolist():
            owners.setdefault(seq, batch.worker)
    for partition, seen in counts.items():
        missing = np.flatnonzero(seen == 0)
        report.lost += len(missing)
        report.lost_examples.extend((partition, int(s)) for s in missing[:5])
        report.duplicates += int(np.maximum(seen - 1, 0).sum())
    return report


# --- the process ------------------------------------------------------------------------------------


def _generations(text: str) -> frozenset[int]:
    return frozenset(int(part) for part in text.split(",") if part.strip())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lagscaler_demo.playground.handover_app", description=__doc__
    )
    parser.add_argument("--sink", required=True, help="topic to write what was processed to")
    parser.add_argument(
        "--changelog", help="stateful: the changelog topic (as many partitions as the source)"
    )
    parser.add_argument("--commit-interval", type=float, default=1.0)
    parser.add_argument("--max-batch", type=int, default=500)
    parser.add_argument("--exit-in-generations", type=_generations, default=frozenset())
    parser.add_argument("--fail-warm-up-in-generations", type=_generations, default=frozenset())
    parser.add_argument("--block-handler-in-generations", type=_generations, default=frozenset())
    parser.add_argument("--crash-on-first-batch-in-generations", type=_generations, default=frozenset())
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    config = WorkerConfig.from_env(commit_interval=args.commit_interval, max_batch=args.max_batch)
    generation = config.handover.generation if config.handover is not None else 0
    if generation in args.exit_in_generations:
        print(f"{config.worker}: exit injected for generation {generation}", file=sys.stderr)
        return 3
    app = SequenceApp(
        config,
        sink=args.sink,
        changelog=args.changelog,
        fail_warm_up=generation in args.fail_warm_up_in_generations,
        block_handler=generation in args.block_handler_in_generations,
        crash_on_first_batch=generation in args.crash_on_first_batch_in_generations,
    )
    worker = Worker(
        config,
        batch_handler=app.handle,
        warm_up=app.warm_up if args.changelog else None,
        resources=app.resources,
    )
    print(f"{config.worker}: pid {os.getpid()} generation {generation} group {config.group}", file=sys.stderr)
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
