"""``serve`` runs a ``mode: handover`` policy: the engine's decision starts a new generation, no HPA involved.

The engine samples the serving generation's group (its lag, its members), and when the policy's floor
rises the decision changes and ``serve`` hands the workload over to a generation of the new size; when
the policy is switched back to ``mode: hpa``, ``serve`` hands the workload back to its own group.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from lagscaler_demo.harness import LocalCluster
from lagscaler_demo.localkafka import KafkaEndpoint
from lagscaler_demo.playground import LoadProducer, ProducerSettings, RateProfile
from lagscaler_demo.playground.handover_app import SinkBatch, check, read_sink
from lagscaler_demo.playground.probe import committed_offsets
from lagscaler_demo.seed import create_topics
from test_service import eventually, policy_yaml, serve_settings

from lagscaler.edges.handover import HandoverSettings, LocalProcessBackend
from lagscaler.service.handover import LocalHandover
from lagscaler.service.run import running_service

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    async with LocalCluster(tmp_path / "pki") as local:
        yield local


async def test_serve_hands_a_workload_over_when_the_decision_changes_and_back_when_its_mode_does(
    kafka: KafkaEndpoint, cluster: LocalCluster, tmp_path: Path, unique: str
) -> None:
    topic, sink, group = f"{unique}-in", f"{unique}-sink", f"{unique}-ledger"
    await create_topics(kafka.bootstrap, {topic: 4, sink: 4})
    load = ProducerSettings(kafka.bootstrap, topic, sequenced=True, payload_bytes=16)
    async with LoadProducer(load, RateProfile.from_schedule([(1.0, 400.0)])) as producer:
        produced = (await producer.finished()).per_partition
    policies = tmp_path / "policies"
    policies.mkdir()
    policy = policies / "ledger.yaml"
    policy.write_text(policy_yaml("ledger", group, topic, mode="handover", minReplicas=2, maxReplicas=2))
    command = (
        sys.executable,
        "-m",
        "lagscaler_demo.playground.handover_app",
        "--sink",
        sink,
        "--commit-interval",
        "0.2",
    )
    local = LocalHandover(
        tmp_path / "handover",
        {"shop/ledger": command},
        HandoverSettings(control_topic=f"{unique}-control", tick=0.2, warmup_timeout=60),
    )
    settings = replace(serve_settings(cluster, kafka.bootstrap, policies), handover=local)
    try:
        async with running_service(settings) as service:
            runner = service.loop.handover
            assert runner is not None

            async def serving(replicas: int) -> int:
                record = runner.record("shop/ledger")
                assert record is not None
                assert record.handover is None
                assert record.serving is not None
                assert record.serving.replicas == replicas
                decision = service.loop.decisions.get("shop/ledger")
                assert decision is not None
                assert decision.current_replicas == replicas  # the members of the serving generation
                return record.serving.generation

            first = await eventually(lambda: serving(2), within=60)
            policy.write_text(
                policy_yaml("ledger", group, topic, mode="handover", minReplicas=3, maxReplicas=3)
            )
            second = await eventually(lambda: serving(3), within=60)
            assert second > first

            # Back to mode: hpa (a hot reload): the workload is handed back to its own group, at exactly
            # what generation 2 processed, and nothing of lagscaler's runs it any more.
            policy.write_text(policy_yaml("ledger", group, topic, mode="hpa", minReplicas=3, maxReplicas=3))

            async def handed_back() -> None:
                record = runner.record("shop/ledger")
                assert record is not None
                assert (record.serving, record.handover) == (None, None)
                assert "shop/ledger" not in runner.controllers

            await eventually(handed_back, within=60)
            assert (
                LocalProcessBackend(tmp_path / "handover" / "workers", "shop/ledger", command).workers() == []
            )
            committed = await committed_offsets(kafka.bootstrap, group)
    finally:
        LocalProcessBackend(tmp_path / "handover" / "workers", "shop/ledger", command).destroy()
    batches = await read_sink(kafka.bootstrap, sink)
    report = check(batches, produced)
    assert report.consistent, report.summary()
    assert report.duplicates == 0, report.summary()
    # Nothing has run since the hand-back: the workload's own group holds exactly what was processed
    # (on a fresh topic a record's sequence number is its offset), so its consumers go on from there.
    highest = processed_up_to(batches, topic)
    assert highest
    assert {tp: committed.get(tp) for tp in highest} == highest


def processed_up_to(batches: list[SinkBatch], topic: str) -> dict[tuple[str, int], int]:
    """Per partition, the offset after the last record processed."""
    highest: dict[tuple[str, int], int] = {}
    for batch in batches:
        if len(batch.seqs):
            tp = (topic, batch.partition)
            highest[tp] = max(highest.get(tp, 0), int(batch.seqs.max()) + 1)
    return highest
