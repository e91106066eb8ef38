"""One consumer replica of the playground pool: ``python -m lagscaler_demo.playground.worker ...``.

It stands in for one pod of a Kafka consumer Deployment: a real member of a consumer group on a real
broker, whose work per message is simulated. What it models, because the autoscaler must cope with it:

* **Bounded capacity.** Each message costs ``1 / capacity`` seconds of (sleeping) work, so a replica
  never processes more than ``capacity`` msg/s, however much is waiting.
* **At-least-once with manual commits.** Processed offsets are committed every
  ``commit_interval`` seconds, when partitions are revoked, and on shutdown; a batch fetched before a
  rebalance is dropped, not processed on partitions this replica no longer owns.
* **Stateful restore.** With ``restore_seconds_per_partition > 0``, after each (re)assignment the
  replica replays "state" for that long per partition it did not own before; those partitions are
  paused meanwhile while the ones it kept go on (as Kafka Streams restores a moved task's changelog
  before the task runs), so a rebalance costs what it costs.
* **Clean shutdown.** SIGTERM (or SIGINT) commits and leaves the group (a LeaveGroup, so the group
  rebalances at once instead of waiting out the session timeout). When its parent goes away (stdin
  reaches end of file) it shuts down too: a crashed pool never leaves orphans consuming.

It reports on stdout, one JSON object per line (``{"event": ..., ...}``), so the pool learns about
joins and assignments the moment they happen, in order, and learns that the process is gone from the
end of the pipe; the events are listed in :data:`EVENTS`. Logs go to stderr.

This module imports only aiokafka and the standard library: a worker starts in well under a second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata, TopicPartition

__all__ = ["EVENTS", "WorkerSettings", "main", "run_worker"]

_log = logging.getLogger("lagscaler_demo.playground.worker")

# started:   {"pid"}                                  the consumer has started (joining the group)
# assigned:  {"partitions": [[topic, p]...], "new": n, "restore_seconds": s}   a rebalance finished
# revoked:   {"partitions": [[topic, p]...]}          a rebalance started
# restored:  {"partitions": n}                        the n restoring partitions are processed from now
# committed: {"processed": total, "committed": m}     a commit succeeded (m offsets)
# stopped:   {"processed": total}                     left the group; the process exits next
EVENTS = ("started", "assigned", "revoked", "restored", "committed", "stopped")

_WORK_CHUNK_SECONDS = 0.1  # at most this much simulated work between checks for revocation and stop


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """One replica's settings; :meth:`argv` and :func:`parse_args` carry them to the process."""

    bootstrap: str
    group: str
    topics: tuple[str, ...]
    capacity: float  # messages per second this replica can process
    name: str = "worker"  # the Kafka client id (what describe-group shows)
    restore_seconds_per_partition: float = 0.0  # 0: stateless
    commit_interval_seconds: float = 1.0
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 1_000
    auto_offset_reset: str = "earliest"

    def __post_init__(self) -> None:
        if not self.topics:
            raise ValueError("a worker needs at least one topic")
        if not (math.isfinite(self.capacity) and self.capacity > 0):
            raise ValueError(f"capacity must be > 0 msg/s, got {self.capacity}")
        if not (
            math.isfinite(self.restore_seconds_per_partition) and self.restore_seconds_per_partition >= 0
        ):
            raise ValueError(
                f"restore seconds per partition must be >= 0, got {self.restore_seconds_per_partition}"
            )
        if not (math.isfinite(self.commit_interval_seconds) and self.commit_interval_seconds > 0):
            raise ValueError(f"commit interval must be > 0 seconds, got {self.commit_interval_seconds}")
        if not 0 < self.heartbeat_interval_ms < self.session_timeout_ms:
            raise ValueError("the heartbeat interval must be positive and shorter than the session timeout")
        if self.auto_offset_reset not in ("earliest", "latest"):
            raise ValueError(f"auto offset reset must be earliest or latest, got {self.auto_offset_reset!r}")

    @property
    def chunk_records(self) -> int:
        """Records fetched per batch: about :data:`_WORK_CHUNK_SECONDS` of work."""
        return max(1, math.ceil(self.capacity * _WORK_CHUNK_SECONDS))

    def argv(self) -> list[str]:
        return [
            "--bootstrap", self.bootstrap,
            "--group", self.group,
            "--capacity", repr(self.capacity),
            "--name", self.name,
            "--restore-seconds-per-partition", repr(self.restore_seconds_per_partition),
            "--commit-interval", repr(self.commit_interval_seconds),
            "--session-timeout-ms", str(self.session_timeout_ms),
            "--heartbeat-interval-ms", str(self.heartbeat_interval_ms),
            "--auto-offset-reset", self.auto_offset_reset,
            "--",
            *self.topics,
        ]  # fmt: skip


def parse_args(argv: Sequence[str]) -> WorkerSettings:
    parser = argparse.ArgumentParser(prog="python -m lagscaler_demo.playground.worker", description=__doc__)
    parser.add_argument("topics", nargs="+")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--capacity", type=float, required=True, help="messages per second")
    parser.add_argument("--name", default="worker")
    parser.add_argument("--restore-seconds-per-partition", type=float, default=0.0)
    parser.add_argument("--commit-interval", type=float, default=1.0)
    parser.add_argument("--session-timeout-ms", type=int, default=10_000)
    parser.add_argument("--heartbeat-interval-ms", type=int, default=1_000)
    parser.add_argument("--auto-offset-reset", default="earliest")
    args = parser.parse_args(list(argv))
    try:
        return WorkerSettings(
            bootstrap=args.bootstrap,
            group=args.group,
            topics=tuple(args.topics),
            capacity=args.capacity,
            name=args.name,
            restore_seconds_per_partition=args.restore_seconds_per_partition,
            commit_interval_seconds=args.commit_interval,
            session_timeout_ms=args.session_timeout_ms,
            heartbeat_interval_ms=args.heartbeat_interval_ms,
            auto_offset_reset=args.auto_offset_reset,
        )
    except ValueError as exc:
        parser.error(str(exc))


def _emit(event: str, **fields: Any) -> None:
    """One status line on stdout (the pool reads it); a closed pipe means the pool is gone."""
    line = json.dumps({"event": event, **fields}, separators=(",", ":"))
    with contextlib.suppress(BrokenPipeError, ValueError):
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _pairs(partitions: Sequence[TopicPartition] | set[TopicPartition]) -> list[list[object]]:
    return [[tp.topic, tp.partition] for tp in sorted(partitions)]


class _Replica(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no type hints
    """The consumer loop and its rebalance callbacks, sharing one lock around processing and commits."""

    def __init__(self, settings: WorkerSettings, consumer: AIOKafkaConsumer) -> None:
        self.settings = settings
        self.consumer = consumer
        self.lock = asyncio.Lock()
        self.owned: set[TopicPartition] = set()
        self.previously_owned: set[TopicPartition] = set()
        self.processed: dict[TopicPartition, int] = {}  # next offset to commit, per owned partition
        self.committed: dict[TopicPartition, int] = {}
        self.total = 0
        self.generation = 0  # bumped on every revocation: a batch fetched before it is stale
        self.restore_until = 0.0
        self.restoring: set[TopicPartition] = set()  # newly owned partitions, paused while restoring
        self.busy_until = 0.0

    # --- rebalance callbacks (run in the consumer's coordinator task) -------------------------------

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.lock:  # waits for the batch in progress (at most one work chunk)
            self.generation += 1
            await self._commit(only=set(revoked))
            self.previously_owned = set(self.owned)
            self.owned = set()
            self.processed.clear()
            self.committed.clear()
        _emit("revoked", partitions=_pairs(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self.lock:
            self.owned = set(assigned)
            new = self.owned - self.previously_owned
            restore = len(new) * self.settings.restore_seconds_per_partition
            self.restore_until = time.monotonic() + restore
            # Partitions kept from before still have their state and go on; moved ones wait for theirs.
            self.restoring = new if restore > 0 else set()
            if self.restoring:
                self.consumer.pause(*self.restoring)
        _emit("assigned", partitions=_pairs(assigned), new=len(new), restore_seconds=restore)

    # --- processing -----------------------------------------------------------------------------------

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        """Commit what is processed but not committed (of ``only`` these partitions); hold the lock."""
        offsets = {
            tp: offset
            for tp, offset in self.processed.items()
            if self.committed.get(tp) != offset and (only is None or tp in only)
        }
        if not offsets:
            return
        try:
            await self.consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
        except KafkaError as exc:  # a rebalance overtook us: the next owner reprocesses (at least once)
            _log.warning("%s: commit failed: %s", self.settings.name, exc)
            return
        self.committed.update(offsets)
        _emit("committed", processed=self.total, committed=len(offsets))

    async def _work(self, records: int) -> None:
        """Simulated work: ``records / capacity`` seconds, paced so the long-run rate never exceeds it."""
        now = time.monotonic()
        self.busy_until = max(self.busy_until, now) + records / self.settings.capacity
        await asyncio.sleep(self.busy_until - now)

    async def _finish_restore(self) -> None:
        async with self.lock:
            if self.restoring and self.restore_until <= time.monotonic():
                self.consumer.resume(*(self.restoring & self.owned))
                _emit("restored", partitions=len(self.restoring))
                self.restoring = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch, work, commit until ``stop``; getmany keeps being called while restoring (as Kafka
        Streams keeps polling), so a long restore never exceeds ``max.poll.interval.ms``."""
        last_commit = time.monotonic()
        while not stop.is_set():
            await self._finish_restore()
            generation = self.generation
            batches = await self.consumer.getmany(timeout_ms=200, max_records=self.settings.chunk_records)
            async with self.lock:
                if generation != self.generation:
                    # Fetched before a rebalance: the positions were reset to the committed offsets, so
                    # these records come again to whoever owns their partitions now.
                    batches = {}
                for tp in [tp for tp in batches if tp in self.restoring]:
                    # Defensive: a paused partition's records are not returned, but if some were, they
                    # are not processed before the restore; they are fetched again after it.
                    self.consumer.seek(tp, batches.pop(tp)[0].offset)
                count = sum(len(records) for records in batches.values())
                if count:
                    await self._work(count)
                    for tp, records in batches.items():
                        self.processed[tp] = records[-1].offset + 1
                    self.total += count
                if time.monotonic() - last_commit >= self.settings.commit_interval_seconds:
                    await self._commit()
                    last_commit = time.monotonic()

    async def shutdown(self) -> None:
        async with self.lock:
            await self._commit()


async def _watch_parent(stop: asyncio.Event) -> None:
    """Set ``stop`` when stdin reaches end of file: the pool that started us has gone away."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except (OSError, ValueError):  # stdin is not a pipe (run by hand): nothing to watch
        return
    while await reader.read(4096):
        pass
    stop.set()


async def run_worker(settings: WorkerSettings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    watcher = asyncio.create_task(_watch_parent(stop))
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        client_id=settings.name,
        group_id=settings.group,
        enable_auto_commit=False,
        auto_offset_reset=settings.auto_offset_reset,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
    )
    replica = _Replica(settings, consumer)
    consumer.subscribe(list(settings.topics), listener=replica)
    try:
        await consumer.start()
        _emit("started", pid=os.getpid())
        try:
            await replica.run(stop)
            await replica.shutdown()
        finally:
            await consumer.stop()  # sends LeaveGroup: the group rebalances now, not after the session timeout
        _emit("stopped", processed=replica.total)
        return 0
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=os.environ.get("LAGSCALER_WORKER_LOG_LEVEL", "WARNING"),
        stream=sys.stderr,
        format=f"%(asctime)s {settings.name} %(levelname)s %(name)s: %(message)s",
    )
    try:
        return asyncio.run(run_worker(settings))
    except KafkaError as exc:
        print(f"{settings.name}: kafka error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
