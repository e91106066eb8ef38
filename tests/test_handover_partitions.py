"""Partitions added to a workload's topic while a generation serves, on the real broker.

A partition nobody consumes is a frozen partition, and a cut without it would let the next generation
process again what the serving one already did (or skip it). Under continuous sequenced load on every
partition, old and new, the serving generation must pick the new partitions up by itself (its group
leader's metadata refresh, ``WorkerConfig.metadata_max_age_ms``), and the next handover must cut over
on them at exactly what it processed: the checker proves no gap and no duplicate, stateless and
stateful (warm-up and catch-up restore the new partitions' state from the changelog too).

The controller's cached partition list is made as stale as it gets here (``partitions_ttl`` of an
hour: it never sees the new partitions while idle). That is the race a real controller runs for up to
``partitions_ttl`` after partitions are added; the cut must not depend on winning it.
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
        "partitions": 4,
        "rate": 400.0,
        "initial_replicas": 2,
        "commit_interval": 0.5,
        "handover": HandoverSettings(
            control_topic=f"{unique}-control",
            warmup_timeout=60,
            fence_timeout=5,
            kill_grace=10,
            tick=0.2,
            partitions_ttl=3600,
        ),
    }
    return PlaygroundSettings(**{**base, **overrides})  # type: ignore[arg-type]


@pytest.mark.parametrize("stateful", [False, True], ids=["stateless", "stateful"])
async def test_partitions_added_while_a_generation_serves_are_consumed_and_cut_over_exactly(
    kafka: KafkaEndpoint, unique: str, tmp_path: Path, stateful: bool
) -> None:
    settings = playground(kafka, unique, tmp_path, stateful=stateful)
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
