"""The local-process backend: each worker is a detached process, tracked in a state directory.

What a cluster does for pods, on one Linux machine, for the demo and the tests:

* A worker outlives the controller that started it (its own session, stdin from /dev/null), as a pod
  outlives its operator: killing ``serve`` mid-handover must leave the serving generation consuming.
* ``<state_dir>/<workload>/g<generation>/<worker>.json`` records each worker's pid; a restarted controller
  adopts what it finds there. A pid is only believed while ``/proc/<pid>/environ`` still names that
  worker, so a reused pid is never taken for a worker (or killed).
* A worker is listed by :meth:`observe` until its process is gone (exited and reaped, or a zombie
  nobody will run again): only then can the controller take a cut without it.
* Workers watch ``<state_dir>/<workload>`` (``LAGSCALER_HANDOVER_WATCH_PATH``) and stop within a second
  when it disappears, so removing the state directory stops everything an interrupted run left behind
  (a worker whose handler hangs, and so cannot finish a graceful stop, exits on its own after
  :data:`lagscaler.worker.runtime.GONE_GRACE`).
* A worker asked to stop is killed (SIGKILL) once ``stop_grace`` has passed, by whichever controller
  next looks: the deadline is written into its pid file, so a restarted ``serve`` finishes a stop its
  predecessor began, whether or not it is asked to stop the worker again.
* A generation whose workers keep dying on their own is restarted with a back-off that doubles up to
  ``max_backoff`` (a crash loop must not become a fork storm).
* A generation whose workers exit on their own within ``crash_uptime`` of starting, twice or more in a
  row (an import error, a missing setting: what Kubernetes calls a crash loop), is reported by
  :meth:`problems` with the exit code and the last line of the worker's log, so the controller gives a
  target that cannot start up after its grace rather than after its whole warm-up timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lagscaler.core.handover.machine import Trouble, WorkerProblem
from lagscaler.edges.handover.backend import WORKER_ENV as ENV
from lagscaler.edges.handover.backend import GenerationSpec
from lagscaler.errors import UserError
from lagscaler.logs import get_logger

__all__ = ["LocalProcessBackend", "LocalWorker", "processes_under"]

_log = get_logger("lagscaler.edges.handover.local")


CRASH_REASON = "ExitedOnStart"
_TAIL_BYTES = 4096


@dataclass(frozen=True, slots=True)
class LocalWorker:
    worker: str
    generation: int
    pid: int
    log: Path
    started: float = 0.0  # Unix time (0: unknown)
    stop_by: float = 0.0  # Unix time after which it is killed (0: not asked to stop)


@dataclass(frozen=True, slots=True)
class _Crashes:
    """Workers of one generation that exited on their own soon after starting, in a row."""

    since: float  # Unix time of the first
    count: int
    code: int | None
    worker: str
    log: Path


def _last_line(log: Path) -> str:
    """The last line a worker wrote (a traceback ends with the exception), at most 300 characters."""
    try:
        with log.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - _TAIL_BYTES))
            tail = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _slug(workload: str) -> str:
    return workload.replace("/", "__")


def _environ(pid: int) -> list[bytes] | None:
    """The environment ``pid`` was started with; None unless it is a live (not zombie) process we
    may read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
        return None
    return environ.split(b"\0")


def _process_is(pid: int, worker: str) -> bool:
    """True while ``pid`` is a live (not zombie) process whose environment names ``worker``."""
    environ = _environ(pid)
    return environ is not None and f"{ENV['worker']}={worker}".encode() in environ


def processes_under(root: Path) -> dict[int, str]:
    """Every live process that watches ``root`` or a path under it (pid → command line): the workers
    a local backend with that state directory started, found by their environment rather than their
    pid files, so one whose pid file is lost is found too. Processes of other users are not seen."""
    prefix = f"{ENV['watch_path']}={root}".encode()
    found: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        environ = _environ(int(entry.name))
        if environ is None or not any(v == prefix or v.startswith(prefix + b"/") for v in environ):
            continue
        with contextlib.suppress(OSError):
            command = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found[int(entry.name)] = command.strip()
    return found


class LocalProcessBackend:
    """Runs one workload's generations as local processes of ``command``; implements ``Backend``."""

    def __init__(
        self,
        state_dir: Path,
        workload: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stop_grace: float = 10.0,
        restart_backoff: float = 0.5,
        max_backoff: float = 10.0,
        crash_uptime: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not command:
            raise UserError(f"the local backend of {workload} needs a worker command")
        self.workload = workload
        self.command = tuple(command)
        self.env = dict(env or {})
        self.root = state_dir / _slug(workload)
        self.stop_grace = stop_grace
        self.restart_backoff = restart_backoff
        self.max_backoff = max_backoff
        self.crash_uptime = crash_uptime
        self._clock = clock
        self._wall_clock = wall_clock
        self._crashes: dict[int, _Crashes] = {}  # generation → its workers' exits on start, in a row
        self._log = _log.bind(workload=workload)
        self._children: dict[str, subprocess.Popen[bytes]] = {}  # started by this process: reaped here
        self._stopping: dict[str, float] = {}  # worker → when to escalate to SIGKILL (Unix time)
        self._killed: set[str] = set()  # asked to stop: its exit is not a failure
        self._failures: dict[int, int] = {}  # generation → consecutive unrequested exits
        self._next_spawn: dict[int, float] = {}
        self.root.mkdir(parents=True, exist_ok=True)

    # --- what runs ---------------------------------------------------------------------------------

    def workers(self) -> list[LocalWorker]:
        """Every worker with a pid file (alive or not yet confirmed gone), oldest generation first."""
        found = []
        for path in sorted(self.root.glob("g*/*.json")):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                data = json.loads(path.read_text())
                found.append(
                    LocalWorker(
                        str(data["worker"]),
                        int(data["generation"]),
                        int(data["pid"]),
                        path.with_suffix(".log"),
                        float(data.get("started", 0.0)),
                        float(data.get("stop_by", 0.0)),
                    )
                )
        return found

    def _gone(self, worker: LocalWorker) -> bool:
        child = self._children.get(worker.worker)
        if child is not None:
            # Our own child: its exit status is the truth. (Its /proc environment is still ours until
            # it has exec'd, so the identity check below would call a just-started worker gone.)
            return child.poll() is not None
        return not _process_is(worker.pid, worker.worker)

    async def observe(self) -> dict[int, frozenset[str]]:
        now = self._wall_clock()
        running: dict[int, set[str]] = {}
        for worker in self.workers():
            if self._gone(worker):
                self._forget(worker)
                continue
            if worker.stop_by and worker.worker not in self._stopping:
                self._stopping[worker.worker] = worker.stop_by  # a stop begun by a predecessor
            deadline = self._stopping.get(worker.worker)
            if deadline is not None and now >= deadline:
                self._log.warning(
                    "worker did not stop in time, killing it",
                    worker=worker.worker,
                    grace_seconds=self.stop_grace,
                )
                self._signal(worker, signal.SIGKILL)
            if worker.started and self._wall_clock() - worker.started >= self.crash_uptime:
                self._crashes.pop(worker.generation, None)  # this one started up: no crash loop
            running.setdefault(worker.generation, set()).add(worker.worker)
        return {g: frozenset(ws) for g, ws in running.items()}

    def problems(self) -> dict[int, tuple[WorkerProblem, ...]]:
        """Generations whose workers exited on their own soon after starting, twice or more in a row."""
        found: dict[int, tuple[WorkerProblem, ...]] = {}
        for generation, crashes in self._crashes.items():
            if crashes.count < 2:
                continue
            code = "an unknown code" if crashes.code is None else f"code {crashes.code}"
            message = (
                f"{crashes.count} workers in a row exited with {code} within {self.crash_uptime:.0f} s of"
                f" starting; the last one's log ({crashes.log}) ends: {_last_line(crashes.log) or '(empty)'}"
            )
            problem = WorkerProblem(crashes.worker, Trouble.FAILING, CRASH_REASON, message, crashes.since)
            found[generation] = (problem,)
        return found

    def _forget(self, worker: LocalWorker) -> None:
        child = self._children.pop(worker.worker, None)
        code = child.returncode if child is not None else None
        asked = worker.worker in self._killed or worker.worker in self._stopping
        self._stopping.pop(worker.worker, None)
        self._killed.discard(worker.worker)
        pid_file = self.root / f"g{worker.generation}" / f"{worker.worker}.json"
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
        if not asked:
            now = self._wall_clock()
            if worker.started and now - worker.started < self.crash_uptime:
                before = self._crashes.get(worker.generation)
                self._crashes[worker.generation] = _Crashes(
                    before.since if before is not None else now,
                    (before.count if before is not None else 0) + 1,
                    code,
                    worker.worker,
                    worker.log,
                )
            else:
                self._crashes.pop(worker.generation, None)
            failures = self._failures.get(worker.generation, 0) + 1
            self._failures[worker.generation] = failures
            delay = min(self.restart_backoff * 2 ** (failures - 1), self.max_backoff)
            self._next_spawn[worker.generation] = self._clock() + delay
            self._log.warning(
                "worker exited on its own",
                worker=worker.worker,
                code=code,
                generation=worker.generation,
                restart_in_seconds=delay,
                log_file=str(worker.log),
            )

    # --- reconciliations --------------------------------------------------------------------------

    async def ensure(self, spec: GenerationSpec, replicas: int) -> None:
        running = await self.observe()
        alive = [
            w
            for w in self.workers()
            if w.generation == spec.generation
            and w.worker in running.get(spec.generation, frozenset())
            and w.worker not in self._stopping
        ]
        surplus = len(alive) - replicas
        for worker in sorted(alive, key=lambda w: w.pid, reverse=True)[: max(0, surplus)]:
            self._begin_stop(worker)
        missing = -surplus
        if missing <= 0:
            if alive:
                self._failures.pop(spec.generation, None)
            return
        if self._clock() < self._next_spawn.get(spec.generation, 0.0):
            return
        for _ in range(missing):
            self._spawn(spec)

    def _spawn(self, spec: GenerationSpec) -> None:
        name = self.workload.rsplit("/", 1)[-1]
        worker = f"{name}-g{spec.generation}-{secrets.token_hex(3)}"
        directory = self.root / f"g{spec.generation}"
        directory.mkdir(parents=True, exist_ok=True)
        log = directory / f"{worker}.log"
        env = {
            **os.environ,
            **self.env,
            ENV["bootstrap"]: ",".join(spec.bootstrap),
            ENV["topics"]: ",".join(spec.topics),
            ENV["workload"]: spec.workload,
            ENV["generation"]: str(spec.generation),
            ENV["group"]: spec.group,
            ENV["worker"]: worker,
            ENV["control_topic"]: spec.control_topic,
            ENV["watch_path"]: str(self.root),
        }
        with log.open("ab") as out:
            child = subprocess.Popen(  # returns at once: the child runs detached
                self.command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives us; stopped as a process group
            )
        self._children[worker] = child
        self._write_record(LocalWorker(worker, spec.generation, child.pid, log, self._wall_clock()))
        self._log.info("worker started", worker=worker, generation=spec.generation, pid=child.pid)

    def _write_record(self, worker: LocalWorker, *, stop_by: float = 0.0) -> None:
        """Write ``worker``'s pid file (atomically: a reader sees the old record or the new one)."""
        directory = self.root / f"g{worker.generation}"
        record = {
            "worker": worker.worker,
            "generation": worker.generation,
            "pid": worker.pid,
            "started": worker.started,
            **({"stop_by": stop_by} if stop_by else {}),
        }
        tmp = directory / f".{worker.worker}.tmp"
        with contextlib.suppress(FileNotFoundError):  # the state directory was removed: nothing to keep
            tmp.write_text(json.dumps(record))
            tmp.replace(directory / f"{worker.worker}.json")

    def _signal(self, worker: LocalWorker, signum: int) -> None:
        child = self._children.get(worker.worker)
        if (child.poll() is not None) if child is not None else not _process_is(worker.pid, worker.worker):
            return  # gone, or a pid that is no longer this worker's: never signal a stranger
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(worker.pid, signum)

    def _begin_stop(self, worker: LocalWorker) -> None:
        if worker.worker in self._stopping:
            return
        deadline = worker.stop_by or self._wall_clock() + self.stop_grace
        self._stopping[worker.worker] = deadline
        if not worker.stop_by:
            # Before the signal: should this controller stop now, the next one still kills the worker
            # at the deadline, even if nothing asks it to stop the worker again.
            self._write_record(worker, stop_by=deadline)
        self._signal(worker, signal.SIGTERM)

    async def remove(self, generation: int) -> None:
        await self.observe()
        for worker in self.workers():
            if worker.generation == generation:
                self._begin_stop(worker)
        self._failures.pop(generation, None)
        self._next_spawn.pop(generation, None)
        self._crashes.pop(generation, None)

    async def kill(self, workers: frozenset[str]) -> None:
        for worker in self.workers():
            if worker.worker in workers:
                self._killed.add(worker.worker)
                self._signal(worker, signal.SIGKILL)

    async def hand_back(self, replicas: int) -> None:
        """Nothing to start: lagscaler does not run a workload's own consumers locally. The controller
        logs that they may be started (``handover released``)."""

    async def close(self) -> None:
        """Forget the child handles; the workers keep running (use :meth:`destroy` to stop them)."""
        self._children.clear()

    def destroy(self) -> None:
        """Kill every worker of this workload and delete its state (tests, the demo's exit).

        Also a worker whose pid file is lost: every process that watches the state directory."""
        for worker in self.workers():
            self._signal(worker, signal.SIGKILL)
        for pid in processes_under(self.root):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for child in self._children.values():
            with contextlib.suppress(Exception):
                child.wait(timeout=5)
        self._children.clear()
        shutil.rmtree(self.root, ignore_errors=True)
