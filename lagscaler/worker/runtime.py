"""The worker runtime: one aiokafka consumer, the user's handler, and obedience to the control channel.

A :class:`Worker` consumes its generation's group and, in handover mode, does what its generation's role
in the newest controller record says (:func:`lagscaler.core.handover.protocol.role`):

* **serve** — process records with the user's handler and commit exactly what was processed: every
  ``commit_interval``, right after the first records of a partition it took (the controller verifies a
  handover by exactly that commit, docs/handover.md §4.3, and must not wait a commit interval for it),
  when partitions are revoked, when told to stop, and on SIGTERM. On entering it
  (and for every partition assigned later) the position of each partition is its group's commit, or the
  cut in the controller record (``serving.start``) where the group has none, or the log start, and never
  behind ``serving.start`` (a reverted handover raises it) — and a stateful worker's warm-up hook is
  called for it first.
* **warm** — hold the assignment with every partition paused, call the warm-up hook up to the
  handover's ``warm_to``, and report ``warm``. Nothing is processed.
* **stop** — finish the record in hand (or the batch in hand with a batch handler), commit exactly what
  was processed, pause everything, report ``fenced`` with those offsets; stay in the group, idle.

Outside handover mode the worker always serves: an ordinary consumer group member, used to compare a
rebalance with a handover on the same application.

At-least-once when a worker dies (what it processed since its last commit is processed again by the
next owner); exactly-once across a planned handover (``docs/handover.md`` §5). A handler that raises
stops the worker with a ``failed`` status (and a non-zero exit from :meth:`Worker.run`), so the
backend replaces it and nothing after the failing record is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata, TopicPartition

from lagscaler.core.handover.protocol import ControllerRecord, Role, Status, WorkerStatus, role
from lagscaler.edges.handover.channel import ControlChannel
from lagscaler.edges.kafka.admin import capture_client_errors
from lagscaler.edges.kafka.errors import refusal
from lagscaler.errors import UserError
from lagscaler.worker.config import WorkerConfig

__all__ = ["Batch", "BatchHandler", "RecordHandler", "Release", "WarmUp", "Worker", "WorkerStats"]

_log = logging.getLogger("lagscaler.worker")

_T = TypeVar("_T")
_RECONNECT_FIRST, _RECONNECT_MAX = 0.5, 5.0  # s between attempts to reach a Kafka that is away

# How long a worker whose watched path disappeared may take to stop gracefully before it exits anyway
# (as long as the local backend's default stop_grace): a handler or hook that hangs must not keep it
# running with nothing left that would ever kill it.
GONE_GRACE = 10.0
GONE_EXIT_CODE = 70  # EX_SOFTWARE: it did not stop when told to


@dataclass(frozen=True, slots=True)
class Batch:
    """Consecutive records of one partition, in offset order."""

    partition: TopicPartition
    records: list[ConsumerRecord]


RecordHandler = Callable[[ConsumerRecord], Awaitable[None]]
BatchHandler = Callable[[Batch], Awaitable[None]]
# Restore the state of these partitions to what it was after processing every record before the offset.
WarmUp = Callable[[Mapping[TopicPartition, int]], Awaitable[None]]
# Forget the state of these partitions: this worker no longer owns them.
Release = Callable[[frozenset[TopicPartition]], Awaitable[None]]


@dataclass
class WorkerStats:
    """Counters a test or a dashboard reads."""

    processed: int = 0  # records handed to the handler and completed
    commits: int = 0
    commit_failures: int = 0  # commits refused (the group rebalanced under us): reprocessed elsewhere
    warm_ups: int = 0  # warm-up hook calls
    fences: int = 0  # times this worker stopped on command
    polls: int = 0  # rounds that waited for records (or, idle, kept the membership alive)
    # Rounds a control record or a stop ended before the fetch returned. The fetch is left in flight
    # and the next round waits for it (see Worker._poll).
    polls_interrupted: int = 0


class _Stop(Exception):
    """The user's hook raised: the worker reports ``failed`` and exits."""


class Worker:
    """A consumer process's runtime. Give exactly one of ``handler`` (per record) or ``batch_handler``."""

    def __init__(
        self,
        config: WorkerConfig,
        *,
        handler: RecordHandler | None = None,
        batch_handler: BatchHandler | None = None,
        warm_up: WarmUp | None = None,
        release: Release | None = None,
        resources: Callable[[], contextlib.AbstractAsyncContextManager[object]] | None = None,
        poll_timeout: float = 0.5,
    ) -> None:
        if (handler is None) == (batch_handler is None):
            raise UserError("give the worker exactly one of handler= (per record) or batch_handler=")
        self.config = config
        self.stats = WorkerStats()
        self._handler = handler
        self._batch_handler = batch_handler
        self._warm_up = warm_up
        self._release = release
        self._resources = resources
        self._poll_timeout = poll_timeout
        self._consumer: AIOKafkaConsumer | None = None
        # The getmany call in flight, if a round ended before it returned; with the assignment count
        # as its records were taken from aiokafka's buffer.
        self._fetch: asyncio.Future[tuple[int, dict[TopicPartition, list[ConsumerRecord]]]] | None = None
        self._channel: ControlChannel | None = None
        self._lock = asyncio.Lock()  # processing, commits and rebalance callbacks take turns
        self._owned: set[TopicPartition] = set()
        self._ready: set[TopicPartition] = set()  # positioned, warm and resumed: may be processed
        self._restored: dict[TopicPartition, int] = {}  # the offset each partition's state reflects
        self._processed: dict[TopicPartition, int] = {}  # next offset after the last processed record
        self._committed: dict[TopicPartition, int] = {}
        # Partitions set up at these positions with nothing processed since: their first processed
        # records are committed at once, not a commit interval later (the proof of progress a handover
        # waits for; docs/handover.md §4.3).
        self._unproven: dict[TopicPartition, int] = {}
        self._assignments = 0  # bumped by every rebalance callback: a fetch from before it is stale
        self._revoking = False
        self._assigned = False  # the group has assigned us at least once
        self._reported: WorkerStatus | None = None
        self._fenced_for: object = _NOT_FENCED  # the handover epoch we last fenced for
        self._stop = asyncio.Event()
        self._last_commit = time.monotonic()
        self.failure: str | None = None

    # --- entry points -------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; the process exit code (0: clean stop, 1: a hook failed)."""
        logging.basicConfig(
            level=os.environ.get("LAGSCALER_WORKER_LOG_LEVEL", "WARNING"),
            stream=sys.stderr,
            format=f"%(asctime)s {self.config.worker} %(levelname)s %(name)s: %(message)s",
        )
        path = self.config.watch_path
        done = threading.Event()
        if path is not None:
            threading.Thread(
                target=_exit_when_gone, args=(path, done, self.config.worker), name="watch-path", daemon=True
            ).start()
        try:
            return asyncio.run(self._run_with_signals())
        finally:
            done.set()

    async def _run_with_signals(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        await self.serve()
        return 0 if self.failure is None else 1

    def stop(self) -> None:
        """Ask the worker to stop after the record in hand (what SIGTERM does)."""
        self._stop.set()

    async def serve(self) -> None:
        """Consume until :meth:`stop` (or the watched path disappears); commit what was processed; leave."""
        config = self.config
        watcher = asyncio.create_task(self._watch_path(), name="worker-watch-path")
        try:
            if config.handover is not None:
                self._channel = await self._until_reachable("the control topic", self._open_channel)
                if self._channel is None:
                    return  # asked to stop before Kafka answered: nothing was consumed
                await self._report(Status.JOINING)
            async with self._resources() if self._resources is not None else contextlib.nullcontext():
                await self._consume()
            await self._report(Status.FAILED if self.failure else Status.STOPPED, error=self.failure or "")
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if self._channel is not None:
                await self._channel.close()

    async def _open_channel(self) -> ControlChannel:
        handover = self.config.handover
        assert handover is not None
        channel = ControlChannel(  # a fresh one per attempt: start() leaves a failed one closed
            self.config.client_kwargs(),
            handover.control_topic,
            workload=handover.workload,
            client_id=f"{self.config.worker}-control",
        )
        await channel.start()
        return channel

    async def _until_reachable(self, what: str, attempt: Callable[[], Awaitable[_T]]) -> _T | None:
        """``attempt()``, again while Kafka is away; None if asked to stop first.

        A worker started while its broker restarts (or before a new cluster's first broker answers)
        waits for it, as Kafka's own clients do, instead of exiting: an exit on start is what a
        broken image or a missing setting does, and the backend gives a generation whose workers keep
        exiting up after ``failing_grace`` (docs/handover.md §4.1), so a broker restart would cost the
        whole attempt. What retrying cannot fix (credentials, ACLs, an untrusted certificate) still
        ends the worker at once, naming what to change.
        """
        pause = _RECONNECT_FIRST
        while True:
            try:
                with capture_client_errors() as seen:  # aiokafka logs why it could not bootstrap
                    return await attempt()
            except (KafkaError, OSError) as exc:
                why = refusal(exc, seen)
                if why is not None:
                    raise UserError(f"{self.config.worker}: Kafka refused {what}: {exc}; {why}") from exc
                _log.warning(
                    "%s: %s unreachable (%s); retrying in %.1f s", self.config.worker, what, exc, pause
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._stop.wait()
            if self._stop.is_set():
                return None
            pause = min(2.0 * pause, _RECONNECT_MAX)

    async def _consume(self) -> None:
        config = self.config
        consumer = AIOKafkaConsumer(
            **config.client_kwargs(),
            client_id=config.worker,
            group_id=config.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # never used to decide a position: every one is sought
            session_timeout_ms=config.session_timeout_ms,
            heartbeat_interval_ms=config.heartbeat_interval_ms,
            max_poll_records=config.max_batch,
            fetch_max_wait_ms=100,
            # Only the group leader watches the metadata for added partitions and asks for a rebalance
            # (aiokafka 0.14, consumer/group_coordinator.py, _handle_metadata_update, which compares
            # partition counts after each refresh): its refresh period bounds how long one waits.
            metadata_max_age_ms=config.metadata_max_age_ms,
            max_poll_interval_ms=config.max_poll_interval_ms,
        )
        consumer.subscribe(list(config.topics), listener=_Listener(self))

        async def start() -> AIOKafkaConsumer:
            try:
                await consumer.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await consumer.stop()
                raise
            return consumer

        if await self._until_reachable("the source topics", start) is None:
            return  # asked to stop before Kafka answered: nothing was consumed
        self._consumer = consumer
        try:
            await self._loop()
        except _Stop:
            pass
        finally:
            fetch, self._fetch = self._fetch, None
            if fetch is not None:
                fetch.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await fetch
            with contextlib.suppress(Exception):
                async with self._lock:
                    await self._commit()  # what was processed, and only that, even after a failure
            await consumer.stop()  # LeaveGroup: the rest of the group rebalances now

    # --- the loop -----------------------------------------------------------------------------------

    def _record(self) -> ControllerRecord | None:
        handover = self.config.handover
        return self._channel.controller(handover.workload) if self._channel and handover else None

    def _role(self) -> Role:
        handover = self.config.handover
        if handover is None:
            return Role.SERVE
        assert self._channel is not None
        if self._channel.last_heard() > self.config.control_timeout:
            return Role.STOP  # cut off from the control channel: nobody could tell us to fence
        return role(self._record(), handover.generation)

    async def _loop(self) -> None:
        while not self._stop.is_set():
            current = self._role()
            if current is Role.SERVE:
                await self._serve_once()
            elif current is Role.WARM:
                await self._warm_once()
            else:
                await self._fence_once()

    def _must_pause(self) -> bool:
        """Checked between records: stop, a rebalance, or a role change ends the work in hand."""
        return self._stop.is_set() or self._revoking or self._role() is not Role.SERVE

    async def _getmany(self) -> tuple[int, dict[TopicPartition, list[ConsumerRecord]]]:
        consumer = self._consumer
        assert consumer is not None
        batches = await consumer.getmany(
            timeout_ms=int(self._poll_timeout * 1000), max_records=self.config.max_batch
        )
        # Read with nothing run in between: the rebalances there were when the records were taken.
        return self._assignments, dict(batches)

    async def _poll(self, *, fetch: bool) -> tuple[int, dict[TopicPartition, list[ConsumerRecord]]]:
        """Fetch (or, with ``fetch=False``, just keep the membership alive) until records, a control
        record or a stop arrive, whichever is first; with the assignment count the records go with.

        A fetch still waiting when a control record or a stop ends the round is not cancelled but
        awaited by the next round: aiokafka 0.14 counts a fetch in progress in
        ``SubscriptionState.fetch_context`` (consumer/subscription_state.py), which has no
        try/finally, so every cancelled ``getmany`` would stay counted for good, the consumer would
        never look idle, and ``max_poll_interval_ms`` (group_coordinator.py, ``_heartbeat_routine``)
        would never take a worker whose handler hangs out of its group. Records taken meanwhile are
        those of the positions and pauses at that moment (aiokafka checks both as it hands records
        out: fetcher.py, ``FetchResult.check_assignment``); only a rebalance since makes them stale.
        """
        consumer = self._consumer
        assert consumer is not None
        getter = self._fetch
        if getter is None:
            getter = self._fetch = asyncio.ensure_future(self._getmany())
        waiters: set[asyncio.Future[Any]] = {getter, asyncio.ensure_future(self._stop.wait())}
        if self._channel is not None:
            waiters.add(
                asyncio.ensure_future(self._channel.wait_changed(self._channel.version, self._poll_timeout))
            )
        self.stats.polls += 1
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters - {getter}:
                waiter.cancel()
        if not getter.done():
            self.stats.polls_interrupted += 1
            return self._assignments, {}
        self._fetch = None
        assignments, batches = getter.result()
        if not fetch and batches:  # fetched before a pause (a fetch left in flight): again when resumed
            if assignments == self._assignments:  # else set up again at its commit when served
                for tp, records in batches.items():
                    consumer.seek(tp, records[0].offset)
            return assignments, {}
        return assignments, batches

    async def _serve_once(self) -> None:
        if self._fenced_for is not _NOT_FENCED:  # unfenced (the handover was aborted): re-position all
            self._fenced_for = _NOT_FENCED
            self._ready.clear()
        pending = self._owned - self._ready
        if pending:
            async with self._lock:
                pending = self._owned - self._ready  # a rebalance may have run meanwhile
                if pending:
                    await self._setup(pending)
        if self._assigned and not self._revoking:
            await self._report(Status.SERVING)
        assignments, batches = await self._poll(fetch=True)
        async with self._lock:
            if assignments != self._assignments:
                batches = {}  # fetched before a rebalance: positions were reset, the records come again
            await self._process(batches)
            if time.monotonic() - self._last_commit >= self.config.commit_interval:
                await self._commit()
            await self._commit_first_progress()

    async def _commit_first_progress(self) -> None:
        """Commit the partitions that processed their first records since they were set up (holding the
        lock): a generation that took over at a cut shows the controller it moves past it now, whatever
        ``commit_interval`` is (a commit interval as long as ``verify_timeout`` would revert it)."""
        moved = {
            tp for tp, at in self._unproven.items() if tp in self._ready and self._processed.get(tp, at) > at
        }
        if moved:
            # Once, success or not: a refused commit (the coordinator away) is the periodic commit's to
            # retry, not every round's.
            await self._commit(only=moved)
            for tp in moved:
                del self._unproven[tp]

    async def _process(self, batches: Mapping[TopicPartition, list[ConsumerRecord]]) -> None:
        """Hand records to the user, partition by partition; what is not processed is fetched again."""
        consumer = self._consumer
        assert consumer is not None
        abandoned: list[TopicPartition] = []
        for tp, records in batches.items():
            if tp not in self._ready or not records:
                abandoned.append(tp)
                continue
            if self._must_pause():
                abandoned.append(tp)
                continue
            try:
                if self._batch_handler is not None:
                    await self._batch_handler(Batch(tp, records))
                    self._processed[tp] = records[-1].offset + 1
                    self.stats.processed += len(records)
                else:
                    assert self._handler is not None
                    for record in records:
                        if self._must_pause():
                            abandoned.append(tp)
                            break
                        await self._handler(record)
                        self._processed[tp] = record.offset + 1
                        self.stats.processed += 1
            except Exception as exc:
                self.failure = f"handler raised {type(exc).__name__}: {exc}"
                _log.exception("handler failed on %s", tp)
                raise _Stop from exc
        for tp in abandoned:
            if tp in self._ready and tp in self._processed:
                consumer.seek(tp, self._processed[tp])  # rewind what was fetched but not processed

    async def _setup(self, partitions: set[TopicPartition]) -> None:
        """Position, warm and resume newly served partitions (holding the lock)."""
        consumer = self._consumer
        assert consumer is not None
        record = self._record()
        start = record.serving.start if record is not None and record.serving is not None else {}
        tps = sorted(partitions)
        committed = await asyncio.gather(*(consumer.committed(tp) for tp in tps))
        positions: dict[TopicPartition, int] = {}
        unknown = [
            tp
            for tp, c in zip(tps, committed, strict=True)
            if c is None and tp not in self._processed and (tp.topic, tp.partition) not in start
        ]
        beginnings = await consumer.beginning_offsets(unknown) if unknown else {}
        to_commit: dict[TopicPartition, int] = {}
        for tp, c in zip(tps, committed, strict=True):
            if c is not None:
                self._committed[tp] = c
            if tp in self._processed:
                # Owned all along (a fence that was lifted, a self-fence after the control topic was
                # unreachable): go on from what this worker processed, even if its commit failed.
                positions[tp] = self._processed[tp]
            elif c is not None:
                positions[tp] = c
            else:
                positions[tp] = start.get((tp.topic, tp.partition), beginnings.get(tp, 0))
            # Never behind the serving record's start: after a revert it is where the generation that
            # stopped got to, past this generation's own position and commit (docs/handover.md §4.3).
            positions[tp] = max(positions[tp], start.get((tp.topic, tp.partition), 0))
            if positions[tp] != c:
                to_commit[tp] = positions[tp]
        await self._restore(positions)
        for tp, offset in positions.items():
            consumer.seek(tp, offset)
            self._processed[tp] = offset
            self._unproven[tp] = offset
        if to_commit:  # record the start in the group: whoever owns the partition next starts here too
            await self._commit(only=set(to_commit))
        consumer.resume(*tps)
        self._ready |= partitions

    async def _restore(self, upto: Mapping[TopicPartition, int]) -> None:
        """Call the warm-up hook for the partitions whose state is not already at these offsets."""
        if self._warm_up is None:
            return
        todo = {tp: o for tp, o in upto.items() if self._restored.get(tp) != o}
        if not todo:
            return
        try:
            await self._warm_up(todo)
        except Exception as exc:
            self.failure = f"warm-up hook raised {type(exc).__name__}: {exc}"
            _log.exception("warm-up failed for %s", sorted(todo))
            raise _Stop from exc
        self.stats.warm_ups += 1
        self._restored.update(todo)

    async def _warm_once(self) -> None:
        consumer = self._consumer
        record = self._record()
        assert consumer is not None
        assert record is not None
        assert record.handover is not None
        handover = record.handover
        warm_to: dict[TopicPartition, int] = {}
        async with self._lock:
            if self._owned:
                consumer.pause(*self._owned)
            self._ready.clear()
            owned = sorted(self._owned)
            missing = [tp for tp in owned if (tp.topic, tp.partition) not in handover.warm_to]
            beginnings = await consumer.beginning_offsets(missing) if missing and self._warm_up else {}
            targets = {
                tp: handover.warm_to.get((tp.topic, tp.partition), beginnings.get(tp, 0)) for tp in owned
            }
            await self._restore(targets)
            warm_to = {tp: targets[tp] for tp in owned if (tp.topic, tp.partition) in handover.warm_to}
            assigned = self._assigned and not self._revoking
        if assigned:
            await self._report(Status.WARM, warm_to=warm_to, epoch=handover.epoch)
        await self._poll(fetch=False)

    async def _fence_once(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        record = self._record()
        epoch = record.handover.epoch if record is not None and record.handover is not None else None
        if self._fenced_for != epoch:
            async with self._lock:
                if self._owned:
                    consumer.pause(*self._owned)
                self._ready.clear()
                # The cut is read from these commits: try again while the coordinator is away (a broker
                # restart). The status below carries the same offsets, which the controller also uses.
                for attempt in range(_FENCE_COMMIT_ATTEMPTS):
                    if await self._commit():
                        break
                    await asyncio.sleep(0.2 * (attempt + 1))
                offsets = {tp: self._processed[tp] for tp in sorted(self._owned) if tp in self._processed}
                self._fenced_for = epoch
                self.stats.fences += 1
            await self._report(Status.FENCED, offsets=offsets, epoch=epoch)
        await self._poll(fetch=False)

    # --- commits and status ---------------------------------------------------------------------------

    async def _commit(self, only: set[TopicPartition] | None = None) -> bool:
        """Commit processed offsets not committed yet (of ``only`` these partitions); hold the lock.

        False when the commit failed (it is tried again next time: the offsets stay pending)."""
        consumer = self._consumer
        assert consumer is not None
        if only is None:  # the interval bounds what every partition may leave uncommitted
            self._last_commit = time.monotonic()
        offsets = {
            tp: o
            for tp, o in self._processed.items()
            if self._committed.get(tp) != o and (only is None or tp in only)
        }
        if not offsets:
            return True
        try:
            await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
        except KafkaError as exc:  # coordinator away, or the group moved on without us
            self.stats.commit_failures += 1
            _log.warning("%s: commit failed: %s", self.config.worker, exc)
            return False
        self.stats.commits += 1
        self._committed.update(offsets)
        return True

    async def _report(
        self,
        status: Status,
        *,
        warm_to: Mapping[TopicPartition, int] | None = None,
        offsets: Mapping[TopicPartition, int] | None = None,
        epoch: int | None = None,
        error: str = "",
    ) -> None:
        """Publish this worker's status if it changed (a status is a fact, not an event: no repeats)."""
        handover = self.config.handover
        if handover is None or self._channel is None:
            return
        report = WorkerStatus(
            workload=handover.workload,
            worker=self.config.worker,
            generation=handover.generation,
            status=status,
            partitions=tuple(sorted((tp.topic, tp.partition) for tp in self._owned)),
            warm_to={(tp.topic, tp.partition): o for tp, o in (warm_to or {}).items()},
            offsets={(tp.topic, tp.partition): o for tp, o in (offsets or {}).items()},
            epoch=epoch,
            at=0.0,
            error=error,
        )
        if report == self._reported:
            return
        self._reported = report
        stamped = WorkerStatus(**{**_fields(report), "at": time.time()})
        try:
            await self._channel.publish(stamped)
        except KafkaError as exc:
            self._reported = None  # try again next time round
            _log.warning("%s: status not published: %s", self.config.worker, exc)

    async def _watch_path(self) -> None:
        path = self.config.watch_path
        if path is None:
            return
        while True:
            if not path.exists():
                _log.warning("%s: %s is gone: stopping", self.config.worker, path)
                self._stop.set()
                return
            await asyncio.sleep(1.0)

    # --- rebalance callbacks (run in aiokafka's coordinator task) -------------------------------------

    async def revoked(self, revoked: set[TopicPartition]) -> None:
        self._revoking = True
        try:
            async with self._lock:  # waits for the record (or batch) in hand
                self._assignments += 1
                # Whatever the role: committing what was processed is always right, and whoever owns
                # these partitions next (or the cut) must not see less.
                await self._commit(only=revoked)
                lost = frozenset(revoked)
                if self._release is not None and lost:
                    with contextlib.suppress(Exception):
                        await self._release(lost)
                self._owned -= revoked
                self._ready -= revoked
                for tp in revoked:
                    self._restored.pop(tp, None)
                    self._processed.pop(tp, None)
                    self._committed.pop(tp, None)
                    self._unproven.pop(tp, None)
        finally:
            self._revoking = False

    async def assigned(self, assigned: set[TopicPartition]) -> None:
        async with self._lock:
            self._assignments += 1
            self._owned = set(assigned)
            fresh = self._owned - self._ready
            if fresh and self._consumer is not None:
                self._consumer.pause(*fresh)  # nothing is fetched for processing before it is set up
            self._assigned = True


_NOT_FENCED = object()


def _exit_when_gone(path: Path, done: threading.Event, worker: str) -> None:
    """Exit the process once ``path`` has been gone for :data:`GONE_GRACE` and it has not stopped.

    The event loop's own watcher (:meth:`Worker._watch_path`) asks for a graceful stop, which waits for
    the record in hand: a handler that never returns would keep the process running for good, and its
    local backend (whose state directory ``path`` is) is gone, so nothing would ever kill it. A thread,
    because a handler that blocks the event loop would stall a coroutine as well.
    """
    while not done.wait(1.0):
        if path.exists():
            continue
        if done.wait(GONE_GRACE):
            return
        _log.error(
            "%s: %s is gone and the worker did not stop within %g s: exiting", worker, path, GONE_GRACE
        )
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(GONE_EXIT_CODE)


_FENCE_COMMIT_ATTEMPTS = 10  # about 11 s of retries before a fence is reported with its commit pending


def _fields(status: WorkerStatus) -> dict[str, Any]:
    return {name: getattr(status, name) for name in WorkerStatus.__dataclass_fields__}


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no type hints
    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._worker.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._worker.assigned(set(assigned))
