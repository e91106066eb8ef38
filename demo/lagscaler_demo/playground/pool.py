"""A local stand-in for a consumer Deployment: N worker processes in one consumer group on a real broker.

:class:`WorkerPool` does for ``python -m lagscaler_demo.playground.worker`` processes what a ReplicaSet
does for pods, as far as an autoscaler can tell:

* ``scale_to(n)`` is a write of ``spec.replicas``: it starts processes, or sends SIGTERM to the
  newest ones, and returns without waiting for either (pods take time to start and to stop);
* :attr:`~WorkerPool.status_replicas` counts the processes that run and are not terminating
  (``status.replicas``), :attr:`~WorkerPool.ready` those that have joined the group and received
  their first assignment (the pods a readiness probe would pass) — exactly the two numbers the HPA
  reads;
* a process that exits on its own is reported in :attr:`~WorkerPool.failures` and replaced after a
  back-off, as a ReplicaSet replaces a crashed pod.

Status comes from the workers' stdout, one JSON event per line (see
:data:`lagscaler_demo.playground.worker.EVENTS`): a pipe tells the pool about a join the moment it
happens, keeps events in order, needs no polling or files to clean up, and its end of file says the
process is gone. The pool reads every pipe continuously, so a worker never blocks on a full pipe.

No orphans: every worker runs in its own session (``start_new_session``) and is stopped with
``killpg`` (SIGTERM, then SIGKILL after ``stop_grace_seconds``) when it is scaled away and when the
pool's context exits; an ``atexit`` hook kills whatever an interrupted event loop left behind; and a
worker whose stdin reaches end of file (the pool's process died, even by SIGKILL) stops by itself.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import enum
import itertools
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from lagscaler.errors import UserError
from lagscaler.logs import get_logger
from lagscaler_demo.playground.worker import WorkerSettings

__all__ = ["PoolEvent", "PoolSettings", "WorkerInfo", "WorkerPool", "WorkerState"]

log = get_logger(__name__)

_WORKER_MODULE = "lagscaler_demo.playground.worker"


class WorkerState(enum.StrEnum):
    STARTING = "starting"  # process started, not yet assigned (a pod that is not Ready yet)
    READY = "ready"  # joined the group and received an assignment at least once
    STOPPING = "stopping"  # SIGTERM sent (a terminating pod: no longer counted in status.replicas)
    EXITED = "exited"  # stopped after being asked to
    FAILED = "failed"  # exited without being asked to


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """The consumer "Deployment": group, topics, per-replica capacity, and how processes are run.

    ``restore_seconds_per_partition > 0`` makes the workers stateful (see the worker module).
    ``heartbeat_interval_ms`` bounds how fast existing members notice a join (the classic protocol
    tells them in a heartbeat answer), so it sets the pace of every scale-up rebalance.
    """

    bootstrap: str
    group: str
    topics: tuple[str, ...]
    capacity_per_replica: float
    restore_seconds_per_partition: float = 0.0
    commit_interval_seconds: float = 1.0
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 1_000
    max_processes: int = 16
    stop_grace_seconds: float = 10.0
    restart_backoff_seconds: float = 1.0
    name_prefix: str | None = None  # worker names are <prefix>-<n>; default: the group
    python: str = sys.executable
    worker_log_level: str = "WARNING"

    def __post_init__(self) -> None:
        if isinstance(self.topics, str):
            raise UserError("pool topics must be a tuple of topic names, not one string")
        if self.max_processes < 1:
            raise UserError(f"max processes must be >= 1, got {self.max_processes}")
        if not (math.isfinite(self.stop_grace_seconds) and self.stop_grace_seconds > 0):
            raise UserError(f"stop grace must be > 0 seconds, got {self.stop_grace_seconds}")
        if not (math.isfinite(self.restart_backoff_seconds) and self.restart_backoff_seconds > 0):
            raise UserError(f"restart back-off must be > 0 seconds, got {self.restart_backoff_seconds}")
        try:
            self.worker("check")
        except ValueError as exc:
            raise UserError(f"pool settings: {exc}") from exc

    def worker(self, name: str) -> WorkerSettings:
        return WorkerSettings(
            bootstrap=self.bootstrap,
            group=self.group,
            topics=self.topics,
            capacity=self.capacity_per_replica,
            name=name,
            restore_seconds_per_partition=self.restore_seconds_per_partition,
            commit_interval_seconds=self.commit_interval_seconds,
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
        )


@dataclass(frozen=True, slots=True)
class PoolEvent:
    """One status line from a worker, with when the pool read it (``time.monotonic()``)."""

    at: float
    worker: str
    event: str
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A snapshot of one worker process."""

    name: str
    pid: int
    state: WorkerState
    partitions: tuple[tuple[str, int], ...]
    restoring: bool
    processed: int  # messages processed, as of its last commit
    assignments: int  # rebalances it has been through
    restore_seconds: float  # total simulated restore time so far
    returncode: int | None
    stderr_tail: tuple[str, ...]


@dataclass(eq=False)
class _Worker:
    name: str
    index: int
    process: asyncio.subprocess.Process
    state: WorkerState = WorkerState.STARTING
    partitions: tuple[tuple[str, int], ...] = ()
    restoring: bool = False
    processed: int = 0
    assignments: int = 0
    restore_seconds: float = 0.0
    stderr: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=30))
    watcher: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self.state in (WorkerState.STARTING, WorkerState.READY)

    def info(self) -> WorkerInfo:
        return WorkerInfo(
            name=self.name,
            pid=self.process.pid,
            state=self.state,
            partitions=self.partitions,
            restoring=self.restoring,
            processed=self.processed,
            assignments=self.assignments,
            restore_seconds=self.restore_seconds,
            returncode=self.process.returncode,
            stderr_tail=tuple(self.stderr),
        )


def _killpg(process: asyncio.subprocess.Process, signum: int) -> None:
    if process.returncode is not None:
        return  # reaped: its pid (and group id) may belong to someone else by now
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


class WorkerPool:
    """Worker processes in one consumer group; use as ``async with WorkerPool(settings) as pool``."""

    def __init__(self, settings: PoolSettings) -> None:
        self.settings = settings
        self._spec = 0
        self._workers: list[_Worker] = []  # every worker ever started, in start order
        self._names = itertools.count()
        self._changed = asyncio.Condition()
        self._scale_lock = asyncio.Lock()
        self._stops: set[asyncio.Task[None]] = set()
        self._restart: asyncio.Task[None] | None = None
        self._consecutive_failures = 0
        self._open = False
        self._closing = False
        self.events: collections.deque[PoolEvent] = collections.deque(maxlen=10_000)

    # --- lifetime ---------------------------------------------------------------------------------

    async def __aenter__(self) -> WorkerPool:
        self._open = True
        atexit.register(self._kill_all_now)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop every worker (SIGTERM, SIGKILL after the grace period) and wait until all have exited."""
        self._closing = True
        if self._restart is not None:
            self._restart.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restart
        try:
            for worker in self._workers:
                if worker.alive:
                    self._begin_stop(worker)
            if self._stops:
                await asyncio.gather(*self._stops, return_exceptions=True)
            watchers = [w.watcher for w in self._workers if w.watcher is not None]
            await asyncio.gather(*watchers, return_exceptions=True)
        finally:
            self._kill_all_now()  # only reached with live processes if the waits above were cancelled
            atexit.unregister(self._kill_all_now)
            self._open = False

    def _kill_all_now(self) -> None:
        for worker in self._workers:
            _killpg(worker.process, signal.SIGKILL)

    # --- what the HPA reads ------------------------------------------------------------------------

    @property
    def replicas(self) -> int:
        """``spec.replicas``: the count last asked for with :meth:`scale_to`."""
        return self._spec

    @property
    def status_replicas(self) -> int:
        """``status.replicas``: processes running and not terminating (ready or not)."""
        return sum(1 for w in self._workers if w.alive)

    @property
    def ready(self) -> int:
        """Processes that have joined the group and received an assignment (and are not terminating)."""
        return sum(1 for w in self._workers if w.state is WorkerState.READY)

    # --- scaling ----------------------------------------------------------------------------------

    async def scale_to(self, replicas: int) -> None:
        """Set the desired process count: start new processes, or stop the newest ones (not awaited)."""
        if not self._open or self._closing:
            raise RuntimeError("the pool is not open (use it as an async context manager)")
        if not 0 <= replicas <= self.settings.max_processes:
            raise UserError(f"replicas must be in [0, {self.settings.max_processes}], got {replicas}")
        async with self._scale_lock:
            self._spec = replicas
            await self._reconcile()

    async def _reconcile(self) -> None:
        alive = [w for w in self._workers if w.alive]
        surplus = len(alive) - self._spec
        for worker in sorted(alive, key=lambda w: w.index, reverse=True)[: max(0, surplus)]:
            self._begin_stop(worker)
        for _ in range(max(0, -surplus)):
            await self._spawn()
        async with self._changed:
            self._changed.notify_all()

    async def _spawn(self) -> None:
        index = next(self._names)
        name = f"{self.settings.name_prefix or self.settings.group}-{index}"
        argv = self.settings.worker(name).argv()
        env = {**os.environ, "LAGSCALER_WORKER_LOG_LEVEL": self.settings.worker_log_level}
        process = await asyncio.create_subprocess_exec(
            self.settings.python,
            "-m",
            _WORKER_MODULE,
            *argv,
            stdin=asyncio.subprocess.PIPE,  # never written: its end of file tells the worker we are gone
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            env=env,
        )
        worker = _Worker(name, index, process)
        self._workers.append(worker)
        worker.watcher = asyncio.create_task(self._watch(worker), name=f"pool-watch-{name}")
        log.info("worker started", worker=name, pid=process.pid)

    def _begin_stop(self, worker: _Worker) -> None:
        worker.state = WorkerState.STOPPING
        task = asyncio.create_task(self._stop(worker), name=f"pool-stop-{worker.name}")
        self._stops.add(task)

    async def _stop(self, worker: _Worker) -> None:
        _killpg(worker.process, signal.SIGTERM)
        assert worker.watcher is not None
        try:
            await asyncio.wait_for(asyncio.shield(worker.watcher), self.settings.stop_grace_seconds)
        except TimeoutError:
            grace = self.settings.stop_grace_seconds
            log.warning("worker did not stop in time, killing it", worker=worker.name, grace_seconds=grace)
            _killpg(worker.process, signal.SIGKILL)
            await worker.watcher
        finally:
            self._stops.discard(asyncio.current_task())
            async with self._changed:
                self._changed.notify_all()

    # --- status from the workers -------------------------------------------------------------------

    async def _read_stderr(self, worker: _Worker) -> None:
        stream = worker.process.stderr
        assert stream is not None
        while line := await stream.readline():
            worker.stderr.append(line.decode(errors="replace").rstrip())

    async def _read_events(self, worker: _Worker) -> None:
        stream = worker.process.stdout
        assert stream is not None
        while line := await stream.readline():
            try:
                fields = json.loads(line)
                event = str(fields.pop("event"))
            except (ValueError, KeyError, TypeError, AttributeError):
                worker.stderr.append(line.decode(errors="replace").rstrip())
                continue
            self._apply(worker, event, fields)
            self.events.append(PoolEvent(time.monotonic(), worker.name, event, fields))
            async with self._changed:
                self._changed.notify_all()

    def _apply(self, worker: _Worker, event: str, fields: dict[str, Any]) -> None:
        if event == "assigned":
            worker.partitions = tuple((str(t), int(p)) for t, p in fields.get("partitions", ()))
            worker.assignments += 1
            restore = float(fields.get("restore_seconds", 0.0))
            worker.restore_seconds += restore
            worker.restoring = restore > 0
            if worker.state is WorkerState.STARTING:
                worker.state = WorkerState.READY
                self._consecutive_failures = 0
        elif event == "revoked":
            worker.partitions = ()
        elif event == "restored":
            worker.restoring = False
        elif event in ("committed", "stopped"):
            worker.processed = int(fields.get("processed", worker.processed))

    async def _watch(self, worker: _Worker) -> None:
        await asyncio.gather(self._read_events(worker), self._read_stderr(worker))
        returncode = await worker.process.wait()
        if worker.process.stdin is not None:
            worker.process.stdin.close()  # only now: its end of file would tell a live worker to stop
        if worker.state is WorkerState.STOPPING:
            worker.state = WorkerState.EXITED
        else:
            worker.state = WorkerState.FAILED
            tail = list(worker.stderr)[-3:]
            log.warning("worker exited on its own", worker=worker.name, code=returncode, stderr_tail=tail)
            self._consecutive_failures += 1
            if not self._closing and (self._restart is None or self._restart.done()):
                self._restart = asyncio.create_task(self._replace_later(), name="pool-restart")
        worker.partitions = ()
        async with self._changed:
            self._changed.notify_all()

    async def _replace_later(self) -> None:
        """Bring the count back to ``spec`` after a back-off that doubles with consecutive failures."""
        exponent = min(self._consecutive_failures - 1, 5)
        await asyncio.sleep(self.settings.restart_backoff_seconds * 2**exponent)
        async with self._scale_lock:
            if not self._closing:
                await self._reconcile()

    # --- observation ------------------------------------------------------------------------------

    @property
    def workers(self) -> tuple[WorkerInfo, ...]:
        """The workers that have not exited yet (starting, ready or stopping), oldest first."""
        return tuple(
            w.info() for w in self._workers if w.state not in (WorkerState.EXITED, WorkerState.FAILED)
        )

    @property
    def failures(self) -> tuple[WorkerInfo, ...]:
        """Workers that exited without being asked to, with their stderr tails."""
        return tuple(w.info() for w in self._workers if w.state is WorkerState.FAILED)

    @property
    def processed(self) -> int:
        """Messages processed by every worker this pool ever ran (as of their last commits)."""
        return sum(w.processed for w in self._workers)

    def pids(self) -> tuple[int, ...]:
        """Process ids of every worker ever started (to check that none outlives the pool)."""
        return tuple(w.process.pid for w in self._workers)

    async def wait_until(
        self, predicate: Callable[[WorkerPool], bool], *, within: float, what: str = "the pool to settle"
    ) -> None:
        """Wait until ``predicate(pool)`` holds, re-checked on every worker event."""
        try:
            async with asyncio.timeout(within):
                async with self._changed:
                    await self._changed.wait_for(lambda: predicate(self))
        except TimeoutError:
            states = ", ".join(f"{w.name}={w.state}" for w in self.workers) or "no workers"
            tails = "; ".join(f"{w.name}: {' | '.join(w.stderr_tail[-2:])}" for w in self.failures)
            raise TimeoutError(
                f"waited {within:g}s for {what}: {states}" + (f"; failures: {tails}" if tails else "")
            ) from None

    async def wait_ready(self, *, within: float = 60.0) -> None:
        """Wait until every desired process is running and ready, and stopped ones have exited."""
        await self.wait_until(
            lambda p: p.ready == p.replicas == p.status_replicas and not p._stops,
            within=within,
            what=f"{self._spec} ready workers",
        )

    async def settle(self, *, within: float = 30.0) -> None:
        """Wait until every process that is being stopped has exited."""
        await self.wait_until(lambda p: not p._stops, within=within, what="stopping workers to exit")
