"""Handovers with something dying: each run ends consistent, nothing lost, duplicates only from a crash.

The accounting is exact, not "small": a worker that is killed during the fence has processed records it
never committed; the new generation starts at the cut (the old group's committed offsets), so precisely
the crashed worker's records at or beyond the cut are processed twice — and nothing else is.

Faults: kill -9 an old worker during the fence (and a hung one the controller kills itself); the new
generation failing to start, or failing to warm up; kill -9 the controller mid-handover with a second
controller waiting (the file lock), and again with a fresh one started; the broker restarting
mid-handover (its own broker: the session broker is shared).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import pytest
from lagscaler_demo.localkafka import KafkaEndpoint, LocalBroker
from lagscaler_demo.localkafka.broker import free_port
from lagscaler_demo.playground.handover_app import HANGS, SinkBatch
from lagscaler_demo.playground.handover_run import HandoverPlayground, PlaygroundSettings, crash_attributed
from lagscaler_demo.seed import create_topics
from structlog.typing import EventDict
from support import eventually, open_api_settings

from lagscaler.edges.handover import HandoverSettings, Phase, Status
from lagscaler.edges.handover.channel import ControlTopicUnusable
from lagscaler.edges.handover.local import processes_under
from lagscaler.edges.kafka import KafkaSettings
from lagscaler.service.handover import LocalHandover, local_runner
from lagscaler.service.run import ServeSettings, serve_forever

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def playground(
    bootstrap: str,
    unique: str,
    tmp_path: Path,
    *,
    handover: dict[str, float] | None = None,
    **overrides: object,
) -> PlaygroundSettings:
    timeouts = {
        "warmup_timeout": 60.0,
        "fence_timeout": 30.0,
        "kill_grace": 10.0,
        "tick": 0.2,
        **(handover or {}),
    }
    base: dict[str, object] = {
        "bootstrap": bootstrap,
        "name": unique,
        "state_dir": tmp_path,
        "partitions": 4,
        "rate": 400.0,
        "initial_replicas": 2,
        # Long enough that a worker stopped between commits surely holds processed, uncommitted records.
        "commit_interval": 30.0,
        "handover": HandoverSettings(control_topic=f"{unique}-control", **timeouts),
    }
    return PlaygroundSettings(**{**base, **overrides})  # type: ignore[arg-type]


def beyond_cut(
    batches: Sequence[SinkBatch], worker: str, topic: str, cut: Mapping[tuple[str, int], int]
) -> int:
    """Records ``worker`` processed at or beyond the cut: exactly what the next generation processes again.

    On a fresh topic written by an idempotent producer a record's sequence number is its offset.
    """
    return sum(int((b.seqs >= cut.get((topic, b.partition), 0)).sum()) for b in batches if b.worker == worker)


async def wait_phase(play: HandoverPlayground, phase: Phase, *, within: float = 60.0) -> None:
    def there() -> bool:
        record = play.record()
        return record is not None and record.handover is not None and record.handover.phase is phase

    await play.wait(there, within=within, what=f"phase {phase}")


async def freeze_one_worker(play: HandoverPlayground, generation: int) -> tuple[str, int]:
    """SIGSTOP one worker of ``generation`` (it keeps its partitions and cannot answer a fence)."""
    pids = play.worker_pids(generation)
    assert pids, f"no workers of generation {generation}"
    worker, pid = sorted(pids.items())[0]
    os.kill(pid, signal.SIGSTOP)
    return worker, pid


async def wait_others_fenced(play: HandoverPlayground, frozen: str) -> None:
    """Every old worker but the frozen one has fenced, and the controller still waits for it."""

    def fenced() -> bool:
        record = play.record()
        if record is None or record.handover is None or record.serving is None:
            return False
        statuses = play.observer.workers(play.settings.workload)
        others = [s for w, s in statuses.items() if s.generation == record.serving.generation and w != frozen]
        return bool(others) and all(
            s.status is Status.FENCED and s.epoch == record.handover.epoch for s in others
        )

    await play.wait(fenced, within=30, what="the other old workers to fence")
    record = play.record()
    assert record is not None
    assert record.handover is not None
    assert record.handover.phase is Phase.FENCING  # no cut while a worker might still process


@pytest.mark.parametrize("killer", ["test", "controller"])
async def test_an_old_worker_killed_during_the_fence_costs_only_its_uncommitted_records(
    kafka: KafkaEndpoint, unique: str, tmp_path: Path, killer: str
) -> None:
    # killer=controller: the frozen worker never answers; the controller kills it after fence_timeout.
    fence = 30.0 if killer == "test" else 2.0
    settings = playground(kafka.bootstrap, unique, tmp_path, handover={"fence_timeout": fence})
    async with HandoverPlayground(settings) as play:
        first = await play.scale_to(2)
        assert first.serving is not None
        await play.wait(
            lambda: _serving_statuses(play, first.serving.generation) == 2, within=30, what="serving"
        )
        frozen, pid = await freeze_one_worker(play, first.serving.generation)
        assert play.runner is not None
        play.runner.set_desired(settings.workload, 3)
        await wait_phase(play, Phase.FENCING)
        if killer == "test":
            await wait_others_fenced(play, frozen)
            os.kill(pid, signal.SIGKILL)
        record = await play.scale_to(3)
        report = await play.verdict()
    assert record.serving is not None
    assert report.consistent, report.summary()
    assert crash_attributed(report, [frozen]), report.summary()
    assert report.duplicates == beyond_cut(play.sink_batches, frozen, settings.topic, record.serving.start)


def _serving_statuses(play: HandoverPlayground, generation: int) -> int:
    statuses = play.observer.workers(play.settings.workload).values()
    return sum(1 for s in statuses if s.generation == generation and s.status is Status.SERVING)


@pytest.mark.parametrize(
    ("stateful", "fault"),
    [(False, "--exit-in-generations"), (True, "--fail-warm-up-in-generations")],
    ids=["cannot-start", "cannot-warm-up"],
)
async def test_a_generation_that_never_gets_ready_is_removed_and_the_old_one_keeps_serving(
    kafka: KafkaEndpoint, unique: str, tmp_path: Path, stateful: bool, fault: str
) -> None:
    settings = playground(
        kafka.bootstrap,
        unique,
        tmp_path,
        stateful=stateful,
        commit_interval=0.5,
        app_args=(fault, "2"),  # generation 2 fails; the attempt after it (generation 3) works
        # Long enough for four healthy workers to start and warm up on a loaded 2-core machine (at 6 s a
        # CI run under extra load once gave generation 3 up too), short enough for generation 2's abort.
        handover={"warmup_timeout": 20.0},
    )
    async with HandoverPlayground(settings) as play:
        await play.scale_to(2)
        assert play.runner is not None
        play.runner.set_desired(settings.workload, 4)
        # The decision stands: after the abort, a fresh attempt with a new generation.
        record = await play.scale_to(4)
        assert not play.worker_pids(2)
        history = play.history()
        report = await play.verdict()
    aborted = [r for r in history if r.handover is not None and r.handover.phase is Phase.ABORTING]
    assert aborted, history
    assert {r.handover.target for r in aborted if r.handover is not None} == {2}
    # Generation 1 served all along: never fenced during the failed attempt, never replaced by 2.
    attempt = [r for r in history if r.handover is not None and r.handover.target == 2]
    assert {r.handover.phase for r in attempt if r.handover is not None} == {Phase.WARMING, Phase.ABORTING}
    assert all(r.serving is not None and r.serving.generation == 1 for r in attempt)
    assert record.serving is not None
    assert record.serving.generation == 3
    assert report.consistent, report.summary()
    assert report.duplicates == 0, report.summary()
    assert 2 not in report.generations  # the failed generation processed nothing


async def test_a_generation_whose_workers_exit_as_they_start_is_given_up_after_its_grace(
    kafka: KafkaEndpoint, unique: str, tmp_path: Path, logs: list[EventDict]
) -> None:
    """Generation 2's workers exit as they start (what an import error does): the local backend reports
    it once two in a row have, and the attempt is aborted ``failing_grace`` later, with the exit code
    and the last line of the worker's log in the warning — not after the warm-up timeout (ten minutes
    here, longer than this test may take). Generation 1 serves throughout; the next attempt works."""
    settings = playground(
        kafka.bootstrap,
        unique,
        tmp_path,
        commit_interval=0.5,
        app_args=("--exit-in-generations", "2"),
        handover={"warmup_timeout": 600.0, "failing_grace": 2.0, "revert_backoff": 2.0},
    )
    async with HandoverPlayground(settings) as play:
        await play.scale_to(2)
        record = await play.scale_to(4, within=120)
        history = play.history()
        report = await play.verdict()
    (aborted,) = [e for e in logs if e["event"] == "handover aborted"]
    assert (aborted["target"], aborted["cause"], aborted["log_level"]) == (2, "ExitedOnStart", "warning")
    assert aborted["worker"].startswith(f"{settings.name}-g2-")
    assert "exited with code 3" in aborted["message"]
    assert aborted["message"].endswith("exit injected for generation 2"), aborted["message"]
    assert aborted["reason"].startswith("generation 2 cannot run:")
    attempt = [r for r in history if r.handover is not None and r.handover.target == 2]
    assert all(r.serving is not None and r.serving.generation == 1 for r in attempt)
    # The abort held the next attempt back (revert_backoff), as a revert does; its success forgot it.
    assert any(
        r.handover is not None and r.handover.phase is Phase.ABORTING and r.reverts == 1 for r in attempt
    )
    assert record.serving is not None
    assert record.serving.generation == 3
    assert record.reverts == 0
    assert report.consistent, report.summary()
    assert report.duplicates == 0, report.summary()


@pytest.mark.parametrize(
    ("fault", "restart"),
    [("--block-handler-in-generations", False), ("--block-handler-in-generations", True),
     ("--crash-on-first-batch-in-generations", False)],
    ids=["hangs", "hangs-controller-restarted-while-reverting", "crashes-on-its-first-batch"],
)  # fmt: skip
async def test_a_generation_that_makes_no_progress_after_the_cut_hands_back_to_the_old_one(
    kafka: KafkaEndpoint, unique: str, tmp_path: Path, fault: str, restart: bool
) -> None:
    """Generation 2 warms up, takes over at the cut, and hangs in its handler on its first batch (or
    crashes there, again and again as the backend replaces it): it commits the cut and nothing more.
    After ``verify_timeout`` the controller reverts: generation 2 is fenced (hung workers cannot answer
    and are killed), generation 1 — fenced and idle, never
    removed — serves again from where 2 stopped, and the decision, which still stands, gets a fresh
    attempt (generation 3). Nothing frozen for good, nothing lost, nothing processed twice. Restarted:
    the controller is stopped while it reverts and a new one (a higher term) finishes the revert from
    the persisted record."""
    settings = playground(
        kafka.bootstrap,
        unique,
        tmp_path,
        commit_interval=0.5,
        app_args=(fault, "2"),
        handover={"fence_timeout": 2.0, "verify_timeout": 5.0, "revert_backoff": 1.0},
    )
    async with HandoverPlayground(settings) as play:
        await play.scale_to(2)
        assert play.runner is not None
        play.runner.set_desired(settings.workload, 3)
        if restart:
            # The hung workers hold the revert open until fence_timeout has passed and they are killed.
            await wait_phase(play, Phase.REVERTING, within=90)
            await play.stop_runner()
            await play.start_runner()
        record = await play.scale_to(3, within=120)
        history = play.history()
        report = await play.verdict()
    attempt = [r for r in history if r.handover is not None and r.handover.target == 2]
    if restart:
        terms = [r.term for r in attempt]
        assert terms[-1] > terms[0]  # finished by the next leader
    phases = [r.handover.phase for r in attempt if r.handover is not None]
    assert phases.index(Phase.STARTING) < phases.index(Phase.REVERTING) < phases.index(Phase.ABORTING)
    starting = next(r for r in attempt if r.handover is not None and r.handover.phase is Phase.STARTING)
    back = next(r for r in attempt if r.handover is not None and r.handover.phase is Phase.ABORTING)
    assert starting.serving is not None
    assert back.serving is not None
    assert (back.serving.generation, back.serving.replicas) == (1, 2)
    assert back.reverts == 1  # the next attempt waited revert_backoff
    assert back.serving.start == starting.serving.start  # 2 processed nothing past the cut
    assert record.serving is not None
    assert record.serving.generation == 3
    assert record.reverts == 0  # a handover verified and done forgets the reverts
    assert report.consistent, report.summary()
    assert report.duplicates == 0, report.summary()
    assert 2 not in report.generations  # it hung before processing anything
    # Generation 1 served again after the revert: it processed records past generation 2's cut.
    cut = starting.serving.start
    assert any(
        b.generation == 1 and bool((b.seqs >= cut.get((settings.topic, b.partition), 0)).any())
        for b in play.sink_batches
    )


async def test_workers_left_behind_stop_when_the_state_directory_is_removed_even_hung_ones(
    kafka: KafkaEndpoint, unique: str, tmp_path: Path
) -> None:
    """What a run that was cut short leaves — the controller gone, its workers running on — stops when
    the local backend's state directory is removed, as the backend promises: also a worker whose
    handler hangs, which a graceful stop waits for forever. Before, such a worker ran on as a child of
    init with nothing left that would ever kill it."""
    settings = playground(kafka.bootstrap, unique, tmp_path, app_args=("--block-handler-in-generations", "1"))
    async with HandoverPlayground(settings) as play:

        def hanging() -> bool:
            workers = play.janitor.workers()
            return len(workers) == settings.initial_replicas and all(
                w.log.exists() and HANGS in w.log.read_text(errors="replace") for w in workers
            )

        await play.wait(hanging, within=90, what="every worker of generation 1 to hang in its handler")
        await play.stop_runner()  # the controller is gone; nothing watches the workers any more
        root = play.janitor.root
        assert len(processes_under(root)) == settings.initial_replicas
        shutil.rmtree(root)
        await eventually(lambda: not processes_under(root), within=60, what="every worker to exit")


async def test_a_warming_scale_down_a_spike_supersedes_is_abandoned_and_the_spike_gets_its_own(
    kafka: KafkaEndpoint, unique: str, tmp_path: Path
) -> None:
    """3 → 1 is warming (generation 2 cannot finish its warm-up: it would wait out its whole deadline)
    when the decision rises to 2. The controller abandons it at once rather than cut over to 1: the
    3 workers of generation 1 keep serving, and generation 3 warms up at 2 and takes over."""
    settings = playground(
        kafka.bootstrap,
        unique,
        tmp_path,
        stateful=True,
        commit_interval=0.5,
        initial_replicas=3,
        app_args=("--fail-warm-up-in-generations", "2"),
        # Far longer than the test waits for anything: only the decision can end generation 2's attempt.
        handover={"warmup_timeout": 600.0},
    )
    async with HandoverPlayground(settings) as play:
        await play.scale_to(3)
        assert play.runner is not None
        play.runner.set_desired(settings.workload, 1)

        def warming_two() -> bool:
            record = play.record()
            h = record.handover if record is not None else None
            return h is not None and h.target == 2 and h.phase is Phase.WARMING

        await play.wait(warming_two, within=60, what="generation 2 warming")
        record = await play.scale_to(2, within=120)
        assert not play.worker_pids(2)
        history = play.history()
        report = await play.verdict()
    attempt = [r for r in history if r.handover is not None and r.handover.target == 2]
    assert {r.handover.phase for r in attempt if r.handover is not None} == {Phase.WARMING, Phase.ABORTING}
    assert all(
        r.serving is not None and (r.serving.generation, r.serving.replicas) == (1, 3) for r in attempt
    )
    assert record.serving is not None
    assert (record.serving.generation, record.serving.replicas) == (3, 2)
    assert report.consistent, report.summary()
    assert report.duplicates == 0, report.summary()
    assert 2 not in report.generations  # the abandoned generation processed nothing


# --- controllers as processes of their own -------------------------------------------------------------


class ControllerProcess:
    """``python -m lagscaler_demo.playground.handover_run`` for a playground workload; kill -9 it at will."""

    def __init__(self, settings: PlaygroundSettings, desired: Path, name: str) -> None:
        self.settings = settings
        self.desired = desired
        self.log = settings.state_dir / f"controller-{name}.log"
        self.process: asyncio.subprocess.Process | None = None
        self.term: int | None = None

    async def start(self) -> ControllerProcess:
        s = self.settings
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "lagscaler_demo.playground.handover_run",
                "--bootstrap", s.bootstrap, "--name", s.name, "--state-dir", str(s.state_dir),
                "--control-topic", s.handover.control_topic, "--desired-file", str(self.desired),
                "--initial-replicas", str(s.initial_replicas),
                "--fence-timeout", repr(s.handover.fence_timeout),
                "--warmup-timeout", repr(s.handover.warmup_timeout),
                stdout=asyncio.subprocess.PIPE, stderr=log, start_new_session=True,
            )  # fmt: skip
        return self

    async def leading(self, within: float = 60.0) -> int:
        assert self.process is not None
        assert self.process.stdout is not None
        async with asyncio.timeout(within):
            while line := (await self.process.stdout.readline()).decode():
                if line.startswith("leading term="):  # the controller logs to stderr (self.log)
                    self.term = int(line.split("=", 1)[1])
                    return self.term
        raise AssertionError(f"controller exited without leading; log: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            os.killpg(self.process.pid, signal.SIGKILL)

    async def reap(self) -> None:
        if self.process is not None:
            self.kill()
            await self.process.wait()


@contextlib.asynccontextmanager
async def controllers(settings: PlaygroundSettings, desired: Path) -> AsyncIterator[list[ControllerProcess]]:
    started: list[ControllerProcess] = []
    try:
        yield started
    finally:
        for process in started:
            await process.reap()


async def test_killing_the_controller_mid_handover_lets_the_next_one_finish_it(
    kafka: KafkaEndpoint, unique: str, tmp_path: Path
) -> None:
    settings = playground(
        kafka.bootstrap, unique, tmp_path, run_controller=False, handover={"fence_timeout": 4.0}
    )
    desired = tmp_path / "desired"
    desired.write_text("2")
    async with HandoverPlayground(settings) as play, controllers(settings, desired) as running:
        # Two controllers at once: exactly one leads (the file lock); the other waits.
        a = await ControllerProcess(settings, desired, "a").start()
        b = await ControllerProcess(settings, desired, "b").start()
        running += [a, b]
        leader_task = {asyncio.ensure_future(p.leading()): p for p in (a, b)}
        done, pending = await asyncio.wait(leader_task, return_when=asyncio.FIRST_COMPLETED)
        leader = leader_task[done.pop()]
        follower = b if leader is a else a
        await play.wait(lambda: play.settled(2), within=60, what="generation 1 serving")
        assert not any(t.done() for t in pending)  # the follower still waits for the lock

        # kill -9 the leader while it fences (a frozen old worker holds the fence open), and the
        # follower takes over in a higher term and finishes from the persisted record.
        record = play.record()
        assert record is not None
        assert record.serving is not None
        frozen, _ = await freeze_one_worker(play, record.serving.generation)
        desired.write_text("4")
        await wait_phase(play, Phase.FENCING)
        leader.kill()
        term = await pending.pop()
        assert leader.term is not None
        assert term > leader.term
        await play.wait(lambda: play.settled(4), within=90, what="4 replicas after the takeover")
        after_fence = play.record()
        assert after_fence is not None
        assert after_fence.term == term

        # kill -9 again while the next generation warms up, with nobody waiting; a new controller finishes.
        desired.write_text("1")
        await wait_phase(play, Phase.WARMING)
        follower.kill()
        third = await ControllerProcess(settings, desired, "c").start()
        running.append(third)
        assert await third.leading() > term
        final = await play.wait_settled(1, within=90)
        report = await play.verdict()
    assert after_fence.serving is not None
    assert final.serving is not None
    assert final.serving.generation == after_fence.serving.generation + 1  # no generation lost or doubled
    assert report.consistent, report.summary()
    assert crash_attributed(report, [frozen]), report.summary()
    assert report.duplicates == beyond_cut(
        play.sink_batches, frozen, settings.topic, after_fence.serving.start
    )


async def test_a_broker_restart_mid_handover_delays_it_and_loses_nothing(unique: str, tmp_path: Path) -> None:
    broker = LocalBroker()
    await asyncio.to_thread(broker.start)
    try:
        settings = playground(broker.bootstrap, unique, tmp_path, commit_interval=0.5, rate=200.0)
        async with HandoverPlayground(settings) as play:
            await play.scale_to(2)
            assert play.runner is not None
            play.runner.set_desired(settings.workload, 3)
            await wait_phase(play, Phase.WARMING)
            # Stopped cleanly and started again on the same ports and log: a restart, not a new cluster.
            await asyncio.to_thread(broker.stop)
            await asyncio.to_thread(broker.start)
            record = await play.scale_to(3, within=120)
            report = await play.verdict(within=120)
    finally:
        await asyncio.to_thread(broker.close)
    assert record.serving is not None
    assert record.serving.generation == 2
    assert report.consistent, report.summary()
    assert report.duplicates == 0, report.summary()


async def test_a_controller_started_while_kafka_is_down_waits_for_it_and_then_leads(
    unique: str, tmp_path: Path, logs: list[EventDict]
) -> None:
    """``serve --handover-*`` with the broker down at start-up: warnings naming the control topic, no exit.

    Once the broker is back (same ports, as a restarted broker), the runner reads the control topic and
    leads; nothing is given up on in between.
    """
    broker = LocalBroker()
    await asyncio.to_thread(broker.start)
    await asyncio.to_thread(broker.stop)  # its ports are known now, and nobody answers on them
    kafka = KafkaSettings(bootstrap=(broker.bootstrap,), request_timeout=2.0)
    handover = HandoverSettings(control_topic=f"{unique}-control", tick=0.2)
    runner = local_runner(kafka, LocalHandover(tmp_path, settings=handover))
    entering = asyncio.ensure_future(runner.__aenter__())
    try:

        def warned() -> None:
            assert not entering.done(), entering
            retries = [e for e in logs if e["event"] == "handover control topic unreachable; retrying"]
            assert len(retries) >= 2, logs
            assert all(e["topic"] == handover.control_topic and e["problem"] for e in retries)

        await eventually(warned, within=60, what="retries while the broker is down")
        await asyncio.to_thread(broker.start)
        await eventually(entering.done, within=120, what="the runner reaching the restarted broker")
        entering.result()  # entered, not failed
        try:
            await eventually(lambda: runner.leading, within=60, what="the runner leading")
        finally:
            await runner.__aexit__(None, None, None)
    finally:
        if not entering.done():
            entering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await entering
        await asyncio.to_thread(broker.close)


async def test_serve_stopped_while_it_waits_for_kafka_stops_at_once(
    unique: str, tmp_path: Path, logs: list[EventDict]
) -> None:
    """SIGTERM while the handover runner still waits for Kafka at start-up was never heard: serve went
    on retrying until the kubelet's SIGKILL (found by hand: ``timeout 60 lagscaler serve`` against a
    closed port still ran 10 minutes later). Nothing listens on the port here."""
    policies = tmp_path / "policies"
    policies.mkdir()
    handover = LocalHandover(
        tmp_path / "handover", settings=HandoverSettings(control_topic=f"{unique}-c", tick=0.1)
    )
    settings = ServeSettings(
        kafka=KafkaSettings(bootstrap=(f"127.0.0.1:{free_port()}",), request_timeout=1.0),
        policy_dir=policies,
        api=open_api_settings(),
        handover=handover,
    )
    stop = asyncio.Event()
    serving = asyncio.create_task(serve_forever(settings, stop))
    try:

        def waiting() -> None:
            assert not serving.done(), serving
            assert any(e["event"] == "handover control topic unreachable; retrying" for e in logs), logs

        await eventually(waiting, within=60, what="serve waiting for the control topic")
        stop.set()
        await eventually(serving.done, within=30, what="serve stopping while it waits for Kafka")
        serving.result()  # a clean stop, not an error
        assert any(e["event"] == "stopping before the service started" for e in logs)
    finally:
        if not serving.done():
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving


async def test_a_control_topic_with_several_partitions_is_an_error_not_an_outage(
    kafka: KafkaEndpoint, unique: str, tmp_path: Path, logs: list[EventDict]
) -> None:
    """A control topic created by hand with 3 partitions was retried for ever as "unreachable"; no
    wait fixes it: one error naming the topic and what to do."""
    topic = f"{unique}-control"
    await create_topics(kafka.bootstrap, {topic: 3})
    settings = KafkaSettings(bootstrap=(kafka.bootstrap,), request_timeout=5.0)
    runner = local_runner(
        settings, LocalHandover(tmp_path, settings=HandoverSettings(control_topic=topic, tick=0.1))
    )
    entering = asyncio.ensure_future(runner.__aenter__())
    try:
        await eventually(entering.done, within=60, what="the runner giving up on the control topic")
    finally:
        if not entering.done():
            entering.cancel()
    with pytest.raises(
        ControlTopicUnusable, match=f"control topic {topic} has 3 partitions; it needs exactly 1"
    ):
        entering.result()
    assert not [e for e in logs if e["event"] == "handover control topic unreachable; retrying"]
