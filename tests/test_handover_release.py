"""Handing a workload back on the real broker: out of handover mode, into its own group, nothing lost or doubled.

A workload in handover mode serves in a generation of lagscaler's under continuous sequenced load; its
policy is switched back (``mode: hpa``: the runner is given the workload as a hand-back, as ``serve``'s
policy reload does). The serving generation fences, its cut is committed into the workload's own group,
every generation is removed and the control record cleared; then the workload's own consumers — plain
members of its group, the same application outside handover mode — are started, and the sink checker
proves every record was processed exactly once across the hand-back. Again with the controller
stopped in the middle of the hand-back (an old worker frozen so that it cannot fence) and a new one,
in a higher term, finishing it from the persisted record.

Nothing here depends on timing beyond generous upper bounds on waits.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from lagscaler_demo.localkafka import KafkaEndpoint
from lagscaler_demo.playground.handover_app import SinkReport
from lagscaler_demo.playground.handover_run import GroupWorkers, HandoverPlayground, PlaygroundSettings
from lagscaler_demo.playground.probe import committed_offsets
from lagscaler_demo.seed import create_topics, produce
from structlog.typing import EventDict
from support import eventually

from lagscaler.core.handover.protocol import ControllerRecord, Handover, Serving
from lagscaler.edges.handover import HandoverSettings, Phase, Status, WorkloadSpec
from lagscaler.edges.handover.channel import ControlChannel, ensure_control_topic
from lagscaler.edges.kafka import KafkaSettings
from lagscaler.service.handover import LocalHandover, local_runner

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def playground(kafka: KafkaEndpoint, unique: str, tmp_path: Path) -> PlaygroundSettings:
    return PlaygroundSettings(
        bootstrap=kafka.bootstrap,
        name=unique,
        state_dir=tmp_path,
        partitions=4,
        rate=400.0,
        initial_replicas=2,
        commit_interval=0.5,
        handover=HandoverSettings(
            control_topic=f"{unique}-control", warmup_timeout=60, fence_timeout=30, kill_grace=10, tick=0.2
        ),
    )


def cleared(play: HandoverPlayground) -> bool:
    record = play.record()
    return record is not None and record.serving is None and record.handover is None


async def hand_back_restarting_the_controller(play: HandoverPlayground, generation: int) -> int:
    """Switch to mode: hpa with one worker of ``generation`` frozen so that it cannot fence; once the
    others have, stop the controller, let the frozen one go (it fences with nobody leading), and start
    a new controller, as a restarted ``serve`` whose policy is still in mode: hpa. Returns the term the
    hand-back began in."""
    workload = play.settings.workload
    frozen, pid = sorted(play.worker_pids(generation).items())[0]
    os.kill(pid, signal.SIGSTOP)
    play.hand_back()

    def others_fenced() -> bool:
        record = play.record()
        statuses = play.observer.workers(workload)
        others = [s for w, s in statuses.items() if s.generation == generation and w != frozen]
        return (
            record is not None
            and record.handover is not None
            and record.handover.phase is Phase.RELEASING
            and len(others) == 2
            and all(s.status is Status.FENCED and s.epoch == 0 for s in others)
        )

    await play.wait(others_fenced, within=60, what="the other workers fenced for the hand-back")
    record = play.record()
    assert record is not None
    assert record.handover is not None
    assert record.handover.cut is None  # no cut while a worker might still process
    await play.stop_runner()
    os.kill(pid, signal.SIGCONT)
    await play.start_runner()
    return record.term


@pytest.mark.parametrize("restart", [False, True], ids=["straight", "controller-restarted-mid-hand-back"])
async def test_a_workload_switched_out_of_handover_mode_goes_back_to_its_own_group_exactly(
    kafka: KafkaEndpoint, unique: str, tmp_path: Path, restart: bool
) -> None:
    settings = playground(kafka, unique, tmp_path)
    async with HandoverPlayground(settings) as play:
        own = GroupWorkers(play)
        try:
            first = await play.scale_to(2)
            serving = await play.scale_to(3)  # a handover, so the hand-back is from a later generation
            assert first.serving is not None
            assert serving.serving is not None
            generation = serving.serving.generation
            assert generation > first.serving.generation
            term = await hand_back_restarting_the_controller(play, generation) if restart else None
            if not restart:
                play.hand_back()
            await play.wait(lambda: cleared(play), within=90, what="the hand-back to finish")
            history = play.history()
            # Every generation of lagscaler's is gone; the workload's own group holds the cut.
            await play.wait(lambda: not play.janitor.workers(), within=30, what="every worker gone")
            released = next(
                r for r in history if r.handover is not None and r.handover.phase is Phase.RELEASED
            )
            assert released.handover is not None
            cut = released.handover.cut
            assert cut is not None
            assert set(cut) == {(settings.topic, p) for p in range(settings.partitions)}
            committed = await committed_offsets(settings.bootstrap, settings.group)
            assert all(committed.get(tp, -1) >= offset for tp, offset in cut.items()), (committed, cut)
            if term is not None:
                assert released.term > term  # finished by the next leader
            phases = [r.handover.phase for r in history if r.handover is not None and r.handover.target == 0]
            assert phases.index(Phase.RELEASING) < phases.index(Phase.RELEASED)
            final = play.record()
            assert final is not None
            assert final.next_generation == serving.next_generation  # generations are never reused

            # Now the workload's own consumers, in its own group, continue from the cut.
            own.start(2)

            async def own_group_consumes() -> None:
                now = await committed_offsets(settings.bootstrap, settings.group)
                assert any(now.get(tp, 0) > offset for tp, offset in cut.items()), (now, cut)

            await eventually(own_group_consumes, within=60, what="the workload's own consumers consuming")
            report = await play.verdict()
        finally:
            own.kill_all()
    # Lagscaler's generations served up to the cut, the workload's own consumers (generation 0) after it.
    assert_exactly_once(report, served_by={generation, 0})


async def test_a_workload_whose_policy_is_removed_keeps_running_and_is_handed_back_once_it_returns(
    kafka: KafkaEndpoint, unique: str, tmp_path: Path, logs: list[EventDict]
) -> None:
    """Removing a handover policy's file is not a request to hand the workload back (it may be a
    mistake, or a rename): nothing is stopped, and a warning names the generation still running and how
    to hand it back. Putting the policy back with mode: hpa does."""
    settings = playground(kafka, unique, tmp_path)
    async with HandoverPlayground(settings) as play:
        serving = await play.scale_to(2)
        assert serving.serving is not None
        assert play.runner is not None
        play.runner.sync([])
        (warning,) = [e for e in logs if e["event"] == "handover workload not run"]
        assert warning["workload"] == settings.workload
        assert f"generation {serving.serving.generation}" in warning["serving"]
        assert "mode: hpa" in warning["problem"]
        assert settings.workload not in play.runner.controllers
        # Still consuming, uncontrolled: its group keeps committing.
        before = await committed_offsets(settings.bootstrap, serving.serving.group)

        async def consuming() -> None:
            now = await committed_offsets(settings.bootstrap, serving.serving.group)
            assert sum(now.values()) > sum(before.values())

        await eventually(consuming, within=30, what="the generation to keep consuming")
        assert play.record() == serving

        play.hand_back()
        await play.wait(lambda: cleared(play), within=90, what="the hand-back to finish")
        own = GroupWorkers(play)
        try:
            own.start(1)
            report = await play.verdict()
        finally:
            own.kill_all()
    assert_exactly_once(report, served_by={serving.serving.generation, 0})


async def hand_back_from_a_persisted_cut(
    kafka: KafkaEndpoint, unique: str, tmp_path: Path, cut: dict[int, int]
) -> tuple[str, str, dict[tuple[str, int], int]]:
    """A two-partition topic holding 5 and 3 records, a control record already RELEASING with the cut
    ``{partition: offset}`` persisted (as if written earlier, or forged), and a runner that finishes the
    hand-back. Returns the topic, the workload, and what the policy's group has committed after."""
    topic, base, workload = f"{unique}-orders", f"{unique}-orders", f"shop/{unique}"
    await create_topics(kafka.bootstrap, {topic: 2})
    await produce(kafka.bootstrap, {(topic, 0): 5, (topic, 1): 3})
    settings = KafkaSettings(bootstrap=(kafka.bootstrap,))
    handover = HandoverSettings(control_topic=f"{unique}-control", tick=0.2)
    await ensure_control_topic(settings.client_options(), handover.control_topic)
    persisted = {(topic, p): offset for p, offset in cut.items()}
    releasing = Handover(
        3, 0, base, 1, Phase.RELEASING, {}, deadline=0.0, started_at=0.0, cut=persisted, source_replicas=1
    )
    forged = ControllerRecord(
        workload, term=1, seq=7, serving=Serving(3, f"{base}-gen-3", 1, {}), handover=releasing, next_generation=4
    )  # fmt: skip
    async with ControlChannel(settings.client_options(), handover.control_topic) as channel:
        await channel.publish(forged)

    local = LocalHandover(tmp_path, commands={workload: ("true",)}, settings=handover)
    async with local_runner(settings, local) as runner:
        runner.sync([WorkloadSpec(workload=workload, base_group=base, topics=(topic,), hand_back=True)])

        def handed_back() -> None:
            record = runner.record(workload)
            assert record is not None
            assert (record.serving, record.handover) == (None, None)

        await eventually(handed_back, within=60, what="the hand-back to finish")
    return topic, workload, await committed_offsets(kafka.bootstrap, base)


async def test_a_hand_back_cut_beyond_the_log_end_is_committed_at_the_log_end(
    kafka: KafkaEndpoint, unique: str, tmp_path: Path, logs: list[EventDict]
) -> None:
    """A control record whose persisted hand-back cut lies past a partition's end (forged, or the topic
    re-created smaller since it was written) was committed into the workload's own group as it was:
    its consumers then found their position out of range (and reset), or, once the log grew past it,
    silently skipped every record produced in between. It is committed at the log end, with a
    warning naming the partition and both offsets; a partition within range keeps its cut."""
    topic, workload, committed = await hand_back_from_a_persisted_cut(
        kafka, unique, tmp_path, {0: 1000, 1: 2}
    )
    assert committed == {(topic, 0): 5, (topic, 1): 2}
    warnings = [e for e in logs if e["event"] == "handover cut beyond the log end"]
    assert len(warnings) == 1, logs
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["workload"] == workload
    assert warnings[0]["beyond"] == [{"partition": f"{topic}/0", "cut": 1000, "log_end": 5}]


async def test_a_hand_back_cut_on_partitions_the_topic_no_longer_has_finishes_without_them(
    kafka: KafkaEndpoint, unique: str, tmp_path: Path, logs: list[EventDict]
) -> None:
    """A hand-back cut persisted while the topic had three partitions, the topic since re-created with
    two: Kafka refuses a commit for the third, so the hand-back retried it on every step and never
    finished. Nobody can consume a partition that does not exist: it is dropped from the cut with a
    warning naming it, and the others are committed as cut."""
    topic, _, committed = await hand_back_from_a_persisted_cut(kafka, unique, tmp_path, {0: 4, 1: 2, 2: 7})
    assert committed == {(topic, 0): 4, (topic, 1): 2}
    warnings = [e for e in logs if e["event"] == "handover cut on partitions that are gone"]
    assert len(warnings) == 1, logs
    assert (warnings[0]["log_level"], warnings[0]["partitions"]) == ("warning", [f"{topic}/2"])


def assert_exactly_once(report: SinkReport, *, served_by: set[int]) -> None:
    """Every record produced was processed exactly once, by (at least) these generations."""
    assert report.consistent, report.summary()
    assert report.duplicates == 0, report.summary()
    assert report.lost == 0
    assert report.processed == report.produced > 0
    assert served_by <= report.generations
