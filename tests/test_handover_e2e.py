"""Handovers on the real broker, under continuous load: no gap and no duplicate, stateless and stateful.

Every produced record carries its per-partition sequence number; every worker writes what it processed
to a sink before its offsets are committed; the checker reads the sink back and proves that every
sequence number the producer had acknowledged was processed exactly once, across handovers
2 → 4 → 1 → 3, and across a handover after partitions were added to the topic. The stateful run also restores each partition's state from a changelog on every warm-up
and checks it against every record (a wrong restore shows up as a mismatch).

Nothing here depends on timing beyond generous upper bounds on waits: a slow machine makes a handover
slower, never wrong.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lagscaler_demo.localkafka import KafkaEndpoint
from lagscaler_demo.playground.handover_run import HandoverPlayground, PlaygroundSettings
from lagscaler_demo.playground.probe import committed_offsets
from support import eventually

from lagscaler.edges.handover import HandoverSettings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def playground(kafka: KafkaEndpoint, unique: str, tmp_path: Path, **overrides: object) -> PlaygroundSettings:
    base: dict[str, object] = {
        "bootstrap": kafka.bootstrap,
        "name": unique,
        "state_dir": tmp_path,
        "partitions": 6,
        "rate": 600.0,
        "initial_replicas": 2,
        "commit_interval": 0.5,
        "handover": HandoverSettings(
            control_topic=f"{unique}-control", warmup_timeout=60, fence_timeout=5, kill_grace=10, tick=0.2
        ),
    }
    return PlaygroundSettings(**{**base, **overrides})  # type: ignore[arg-type]


async def run_sequence(play: HandoverPlayground, sizes: list[int]) -> list[int]:
    """Scale through ``sizes`` one handover at a time; returns the generation that served each size."""
    await play.scale_to(sizes[0])
    generations = []
    for size in sizes[1:]:
        before = play.record()
        assert before is not None
        assert before.serving is not None
        record = await play.scale_to(size)
        assert record.serving is not None
        # A new size is always a new generation in a new group, started at the previous one's cut.
        assert record.serving.generation > before.serving.generation
        assert record.serving.group != before.serving.group
        generations.append(record.serving.generation)
    return generations


@pytest.mark.parametrize("stateful", [False, True], ids=["stateless", "stateful"])
async def test_handovers_2_4_1_3_lose_and_duplicate_nothing(
    kafka: KafkaEndpoint, unique: str, tmp_path: Path, stateful: bool
) -> None:
    settings = playground(kafka, unique, tmp_path, stateful=stateful)
    async with HandoverPlayground(settings) as play:
        generations = await run_sequence(play, [2, 4, 1, 3])
        report = await play.verdict()
    assert report.consistent, report.summary()
    assert report.duplicates == 0, report.summary()
    assert report.lost == 0
    assert report.processed == report.produced > 0
    # Each size was served by its own generation, and each one processed records.
    assert len(set(generations)) == 3
    assert set(generations) <= report.generations
    if stateful:
        assert report.mismatches == 0


async def test_deciding_the_serving_size_again_starts_no_handover(
    kafka: KafkaEndpoint, unique: str, tmp_path: Path
) -> None:
    settings = playground(kafka, unique, tmp_path, rate=200.0)
    async with HandoverPlayground(settings) as play:
        first = await play.scale_to(2)
        assert play.runner is not None
        controller = play.runner.controllers[settings.workload]
        steps = controller.steps
        play.runner.set_desired(settings.workload, 2)
        await play.wait(lambda: controller.steps >= steps + 5, within=30, what="five more controller steps")
        assert play.record() == first  # not even re-written
        report = await play.verdict()
    assert report.consistent, report.summary()
    assert report.duplicates == 0, report.summary()


# A partition nobody consumes is a frozen partition, and a cut without it would let the next generation
# process again what the serving one already did. Under sequenced load on every partition, old and new,
# the serving generation must pick partitions added to its topic up by itself (its group leader's
# metadata refresh, WorkerConfig.metadata_max_age_ms), and the next handover must cut over on them at
# exactly what it processed (docs/handover.md §4.7).


@pytest.mark.parametrize("stateful", [False, True], ids=["stateless", "stateful"])
async def test_partitions_added_while_a_generation_serves_are_consumed_and_cut_over_exactly(
    kafka: KafkaEndpoint, unique: str, tmp_path: Path, stateful: bool
) -> None:
    # The controller's cached partition list made as stale as it gets (an hour: it never sees the new
    # partitions while idle): the race a real controller runs for up to partitions_ttl after partitions
    # are added. The cut must not depend on winning it.
    handover = HandoverSettings(
        control_topic=f"{unique}-control", warmup_timeout=60, fence_timeout=5, kill_grace=10, tick=0.2,
        partitions_ttl=3600,
    )  # fmt: skip
    settings = playground(kafka, unique, tmp_path, stateful=stateful, partitions=4, handover=handover)
    async with HandoverPlayground(settings) as play:
        first = await play.scale_to(2)
        assert first.serving is not None
        serving = first.serving
        added = await play.add_partitions(6)
        assert added == (4, 5)
        new = {(settings.topic, p) for p in added}

        async def serving_consumes_the_new_partitions() -> None:
            committed = await committed_offsets(settings.bootstrap, serving.group)
            assert all(committed.get(tp, 0) > 0 for tp in new), committed

        # Bounded by the worker's metadata refresh (10 s by default), a rebalance and a commit interval.
        await eventually(
            serving_consumes_the_new_partitions, within=90, what="generation 1 on the new partitions"
        )
        record = await play.scale_to(3)
        assert record.serving is not None
        cut = record.serving.start
        # The cut covers the new partitions at what generation 1 processed there, not the log start.
        assert all(cut.get(tp, 0) > 0 for tp in new), cut
        report = await play.verdict()
    assert report.consistent, report.summary()
    assert report.duplicates == 0, report.summary()
    assert report.lost == 0
    assert report.processed == report.produced > 0
    assert {1, 2} <= report.generations
    if stateful:
        assert report.mismatches == 0
