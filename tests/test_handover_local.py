"""The local pieces of handover: the file lock, the local-process backend, and the worker's configuration.

Real processes and a real ``flock``; nothing here talks to Kafka.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from structlog.typing import EventDict
from support import eventually

from lagscaler.cli.serve import build_parser, serve_options
from lagscaler.cli.serve import handover_from_options as serve_handover
from lagscaler.core.handover.machine import Trouble, WorkerProblem
from lagscaler.edges.handover import FileLeadership, GenerationSpec, LocalProcessBackend
from lagscaler.edges.handover.local import processes_under
from lagscaler.errors import UserError
from lagscaler.worker import ENV, WorkerConfig

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def spec(generation: int) -> GenerationSpec:
    return GenerationSpec("ns/app", generation, f"app-gen-{generation}", ("t",), ("127.0.0.1:9",), "control")


# --- leadership -----------------------------------------------------------------------------------


async def test_one_leader_at_a_time_and_terms_only_grow(tmp_path: Path) -> None:
    lock = tmp_path / "leader.lock"
    first, second = FileLeadership(lock, poll=0.05), FileLeadership(lock, poll=0.05)
    term = await first.acquire()
    waiting = asyncio.create_task(second.acquire())
    await asyncio.sleep(0.3)
    assert not waiting.done()  # held: the second one waits, however long we look
    assert first.is_leader()
    assert not second.is_leader()
    await first.release()
    assert await waiting > term
    assert second.is_leader()
    await second.release()


async def test_a_killed_leader_releases_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "leader.lock"
    script = (
        "import asyncio, sys, time\n"
        "from pathlib import Path\n"
        "from lagscaler.edges.handover import FileLeadership\n"
        f"term = asyncio.run(FileLeadership(Path({str(lock)!r})).acquire())\n"
        "print(term, flush=True)\n"
        "time.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)  # noqa: ASYNC220
    try:
        assert holder.stdout is not None
        held = int(await asyncio.to_thread(holder.stdout.readline))
        contender = FileLeadership(lock, poll=0.05)
        waiting = asyncio.create_task(contender.acquire())
        await asyncio.sleep(0.3)
        assert not waiting.done()
        holder.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(waiting, 30) == held + 1
        await contender.release()
    finally:
        holder.kill()
        holder.wait()


async def test_an_acquire_cancelled_while_its_attempt_runs_leaves_the_lock_free(tmp_path: Path) -> None:
    """``serve`` stopping while it waits to lead: the attempt, already in its thread, takes the lock
    after the cancellation. Nobody leads in this process then, so it must let the lock go."""
    lock = tmp_path / "leader.lock"
    stopping = FileLeadership(lock, poll=0.05)
    entered, gate = threading.Event(), threading.Event()
    attempt = stopping._try

    def held_up() -> tuple[int, int] | None:
        entered.set()
        gate.wait(30)
        return attempt()

    stopping._try = held_up  # type: ignore[method-assign]
    task = asyncio.create_task(stopping.acquire())
    assert await asyncio.to_thread(entered.wait, 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.set()
    successor = FileLeadership(lock, poll=0.05)
    assert await asyncio.wait_for(successor.acquire(), 30) >= 1
    assert not stopping.is_leader()
    await successor.release()


# --- the local backend ------------------------------------------------------------------------------


async def test_the_backend_runs_adopts_replaces_and_removes_workers(
    tmp_path: Path, logs: list[EventDict]
) -> None:
    backend = LocalProcessBackend(tmp_path, "ns/app", SLEEPER, restart_backoff=0.05, stop_grace=5)
    try:
        await backend.ensure(spec(1), 3)
        running = await backend.observe()
        assert len(running[1]) == 3
        await backend.ensure(spec(1), 3)  # idempotent
        assert await backend.observe() == running
        # Each worker gets its identity in the environment.
        worker = backend.workers()[0]
        environ = Path(f"/proc/{worker.pid}/environ").read_bytes().split(b"\0")  # noqa: ASYNC240
        assert f"{ENV['generation']}=1".encode() in environ
        assert f"{ENV['group']}=app-gen-1".encode() in environ

        # A controller that restarts adopts the processes it finds in the state directory.
        adopted = LocalProcessBackend(tmp_path, "ns/app", SLEEPER, restart_backoff=0.05, stop_grace=5)
        assert await adopted.observe() == running

        # A worker that dies on its own is replaced (after a back-off); a killed one is just gone.
        victim = backend.workers()[0]
        os.kill(victim.pid, signal.SIGKILL)
        await eventually(lambda: _gone(backend, {victim.worker}))

        async def replaced() -> bool:
            await backend.ensure(spec(1), 3)
            now = await backend.observe()
            return len(now.get(1, ())) == 3 and victim.worker not in now[1]

        await eventually(replaced)
        exits = [e for e in logs if e["event"] == "worker exited on its own"]
        assert {(e["workload"], e["worker"], e["generation"], e["log_level"]) for e in exits} == {
            ("ns/app", victim.worker, 1, "warning")  # bound to the backend's workload
        }
        started = [e for e in logs if e["event"] == "worker started"]
        assert len(started) == 4  # three, then the dead one's replacement
        assert {(e["workload"], e["generation"]) for e in started} == {("ns/app", 1)}
        doomed = sorted((await backend.observe())[1])[:1]
        await adopted.kill(frozenset(doomed))
        await eventually(lambda: _gone(backend, set(doomed)))

        await backend.ensure(spec(2), 1)
        await adopted.remove(1)  # whoever started them

        async def only_generation_2() -> None:
            await adopted.observe()  # the remover watches its stop through (SIGKILL after the grace)
            await _generations(backend, {2})

        await eventually(only_generation_2, what="generation 1 stopped")
        assert set((await backend.observe()).keys()) == {2}
    finally:
        backend.destroy()
    assert not backend.root.exists()


async def test_workers_that_exit_as_they_start_are_reported_with_their_last_words(tmp_path: Path) -> None:
    """What Kubernetes calls a crash loop, locally: a worker command that fails at import. Reported once
    two workers in a row exited within ``crash_uptime`` of starting, with the exit code and the last
    line the worker wrote (the exception); a generation whose worker runs is not."""
    broken = [sys.executable, "-c", "import no_such_module_for_lagscaler"]
    backend = LocalProcessBackend(tmp_path, "ns/app", broken, restart_backoff=0.05, max_backoff=0.2)
    runs = LocalProcessBackend(tmp_path, "ns/ok", SLEEPER)
    try:

        async def reported() -> WorkerProblem:
            await backend.ensure(spec(1), 1)
            found = backend.problems().get(1, ())
            assert len(found) == 1, found
            return found[0]

        problem = await eventually(reported, within=60, every=0.1, what="the crash loop reported")
        assert (problem.trouble, problem.reason) == (Trouble.FAILING, "ExitedOnStart")
        assert problem.worker.startswith("app-g1-")
        assert "workers in a row exited with code 1" in problem.message
        assert problem.message.endswith(
            "ModuleNotFoundError: No module named 'no_such_module_for_lagscaler'"
        ), problem.message
        assert problem.since <= time.time()
        await runs.ensure(spec(1), 1)
        await runs.observe()
        assert runs.problems() == {}
        await backend.remove(1)
        assert backend.problems() == {}  # a removed generation is not reported
    finally:
        backend.destroy()
        runs.destroy()


async def test_a_reused_pid_is_never_taken_for_a_worker(tmp_path: Path) -> None:
    backend = LocalProcessBackend(tmp_path, "ns/app", SLEEPER)
    stranger = subprocess.Popen(SLEEPER)  # noqa: ASYNC220 - returns at once
    try:
        directory = backend.root / "g1"
        directory.mkdir(parents=True)
        (directory / "app-g1-x.json").write_text(
            json.dumps({"worker": "app-g1-x", "generation": 1, "pid": stranger.pid})
        )
        assert await backend.observe() == {}  # not ours: its environment does not name the worker
        await backend.kill(frozenset({"app-g1-x"}))
        backend.destroy()
        assert stranger.poll() is None  # and it was never signalled
    finally:
        stranger.kill()
        stranger.wait()


async def test_a_stop_begun_by_one_controller_is_finished_by_the_next(
    tmp_path: Path, logs: list[EventDict]
) -> None:
    """A worker asked to stop that does not (it ignores SIGTERM here; a handler that hangs does in
    effect) is killed once ``stop_grace`` has passed by whichever controller looks next: ``serve``
    restarted in the middle of a stop must not leave it running, even where nothing asks it to stop
    the worker again. Its exit is the stop, not a crash."""
    stubborn = [
        sys.executable,
        "-c",
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ignoring SIGTERM', flush=True)\n"
        "time.sleep(120)\n",
    ]
    now = [1_000_000.0]  # the wall clock both controllers read
    first = LocalProcessBackend(tmp_path, "ns/app", stubborn, stop_grace=30, wall_clock=lambda: now[0])
    try:
        await first.ensure(spec(1), 1)
        (worker,) = first.workers()
        await eventually(lambda: "ignoring SIGTERM" in worker.log.read_text(), what="the handler installed")
        await first.remove(1)
        await first.close()  # serve stops (or restarts) before the grace is over
        second = LocalProcessBackend(tmp_path, "ns/app", stubborn, stop_grace=30, wall_clock=lambda: now[0])
        assert (await second.observe()) == {1: frozenset({worker.worker})}  # within its grace: alive
        await second.ensure(spec(1), 0)  # asked for nothing, it starts nothing (the worker is stopping)
        assert len(second.workers()) == 1
        now[0] += 31
        await eventually(lambda: _gone(second, {worker.worker}), what="the worker killed")
        assert not processes_under(second.root)
        assert not [e for e in logs if e["event"] == "worker exited on its own"]
    finally:
        first.destroy()


async def _gone(backend: LocalProcessBackend, workers: set[str]) -> bool:
    running = await backend.observe()
    return not (workers & {w for ws in running.values() for w in ws})


async def _generations(backend: LocalProcessBackend, expected: set[int]) -> None:
    running = await backend.observe()
    assert set(running) == expected, running


# --- the worker's configuration -----------------------------------------------------------------------


def test_the_worker_reads_its_identity_from_the_environment() -> None:
    env = {
        ENV["bootstrap"]: "127.0.0.1:9092, 127.0.0.1:9093",
        ENV["workload"]: "ns/app",
        ENV["generation"]: "7",
        ENV["group"]: "app-gen-7",
        ENV["topics"]: "a,b",
        ENV["worker"]: "app-g7-1",
    }
    config = WorkerConfig.from_env(env, commit_interval=2.0)
    assert config.bootstrap == ("127.0.0.1:9092", "127.0.0.1:9093")
    assert config.handover is not None
    assert (config.handover.workload, config.handover.generation) == ("ns/app", 7)
    assert (config.group, config.topics, config.worker, config.commit_interval) == (
        "app-gen-7",
        ("a", "b"),
        "app-g7-1",
        2.0,
    )
    plain = WorkerConfig.from_env(
        {ENV["bootstrap"]: "k:9092", "LAGSCALER_GROUP": "g", "LAGSCALER_TOPICS": "t"}
    )
    assert plain.handover is None


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, ENV["bootstrap"]),
        ({ENV["bootstrap"]: "k:1", ENV["workload"]: "ns/a"}, ENV["generation"]),
        ({ENV["bootstrap"]: "k:1", ENV["workload"]: "ns/a", ENV["generation"]: "x"}, ENV["generation"]),
        ({ENV["bootstrap"]: "k:1"}, "LAGSCALER_GROUP"),
    ],
)
def test_a_missing_or_bad_variable_is_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(UserError, match=named.replace("$", r"\$")):
        WorkerConfig.from_env(env)


# --- serve's handover settings -------------------------------------------------------------------------


def serve_args(*extra: str) -> argparse.Namespace:
    return build_parser(argparse.ArgumentParser()).parse_args(
        ["--policy-dir", "policies", "--bootstrap-server", "k:9092", *extra]
    )


def test_serve_takes_one_worker_command_per_workload(tmp_path: Path) -> None:
    args = serve_args(
        "--handover-state-dir", str(tmp_path), "--handover-command", "ns/a=python -m app --x '1 2'; ns/b=run"
    )
    options, _ = serve_options(args, {})
    local = serve_handover(options)
    assert local is not None
    assert local.commands == {"ns/a": ("python", "-m", "app", "--x", "1 2"), "ns/b": ("run",)}
    assert local.state_dir == tmp_path
    assert serve_handover(serve_options(serve_args(), {})[0]) is None  # no state dir: no handover


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (("--handover-command", "ns/a=run"), "--handover-state-dir"),
        (("--handover-state-dir", "d", "--handover-command", "no-equals-sign"), "namespace/name=COMMAND"),
        (("--handover-state-dir", "d", "--handover-command", "a=run"), "namespace/name=COMMAND"),
    ],
)
def test_a_bad_handover_setting_is_named(extra: tuple[str, ...], named: str) -> None:
    options, _ = serve_options(serve_args(*extra), {})
    with pytest.raises(UserError, match=named):
        serve_handover(options)
