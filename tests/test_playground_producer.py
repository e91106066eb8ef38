"""The load producer on the real broker: exactly the profile's messages, spread evenly over partitions."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest
from lagscaler_demo.localkafka import KafkaEndpoint
from lagscaler_demo.playground import LoadProducer, PoolSettings, ProducerSettings, RateProfile, WorkerPool
from lagscaler_demo.playground.probe import committed_offsets, end_offsets
from lagscaler_demo.seed import create_topics

from lagscaler.errors import UserError

pytestmark = pytest.mark.kafka


async def test_a_schedule_is_produced_exactly_and_evenly(kafka: KafkaEndpoint, unique: str) -> None:
    await create_topics(kafka.bootstrap, {unique: 3})
    profile = RateProfile.from_schedule([(1.0, 600), (0.5, 0), (1.0, 301)])
    async with LoadProducer(ProducerSettings(kafka.bootstrap, unique), profile) as producer:
        stats = await producer.finished()
    assert stats.produced == 901
    ends = await end_offsets(kafka.bootstrap, unique)
    assert sum(ends.values()) == 901  # what the broker holds, not only what we counted
    assert stats.per_partition == ends
    assert max(ends.values()) - min(ends.values()) <= 1  # round-robin over partitions
    # Every tick had produced (and seen acknowledged) exactly what the schedule owed by then.
    assert all(p.produced == math.floor(profile.messages_by(p.at) + 1e-9) for p in stats.timeline)
    assert stats.timeline[-1].produced == 901


async def test_a_trace_file_is_replayed_time_compressed(
    kafka: KafkaEndpoint, unique: str, tmp_path: Path
) -> None:
    await create_topics(kafka.bootstrap, {unique: 2})
    csv = tmp_path / "trace.csv"
    csv.write_text("timestamp,value\n0,10\n300,40\n600,20\n900,0\n")
    profile = RateProfile.from_trace_file(csv, peak_rate=400, seconds_per_row=0.5)
    assert profile.duration == 1.5
    async with LoadProducer(
        ProducerSettings(kafka.bootstrap, unique, tick_seconds=0.05), profile
    ) as producer:
        stats = await producer.finished()
    # 0.5 s rows of trapezoids: (100+400)/2, (400+200)/2, (200+0)/2, times 0.5 s.
    assert stats.produced == 325
    assert sum((await end_offsets(kafka.bootstrap, unique)).values()) == 325


async def test_leaving_early_stops_producing(kafka: KafkaEndpoint, unique: str) -> None:
    await create_topics(kafka.bootstrap, {unique: 1})
    profile = RateProfile.from_schedule([(60, 100)])
    async with LoadProducer(ProducerSettings(kafka.bootstrap, unique), profile) as producer:
        await asyncio.sleep(0.3)
        assert not producer.done
    produced = producer.stats.produced
    assert produced < 6000
    # Leaving flushed what was in flight, and counted it: the topic holds exactly what was counted.
    assert sum((await end_offsets(kafka.bootstrap, unique)).values()) == produced


async def test_a_missing_topic_is_a_clear_error(kafka: KafkaEndpoint, unique: str) -> None:
    profile = RateProfile.from_schedule([(1, 10)])
    with pytest.raises(UserError, match=f"topic '{unique}' has no partitions"):
        async with LoadProducer(ProducerSettings(kafka.bootstrap, unique), profile):
            pass


async def test_a_pool_with_enough_capacity_keeps_up_with_the_producer(
    kafka: KafkaEndpoint, unique: str
) -> None:
    """The shape of the end-to-end setup: producer and pool running side by side on one topic."""
    await create_topics(kafka.bootstrap, {unique: 4})
    group = f"{unique}-g"
    pool_settings = PoolSettings(
        kafka.bootstrap, group, (unique,), 400.0, commit_interval_seconds=0.5, heartbeat_interval_ms=500
    )
    profile = RateProfile.from_schedule([(2.0, 300)])
    async with WorkerPool(pool_settings) as pool:
        await pool.scale_to(2)
        await pool.wait_ready(within=30)
        async with LoadProducer(ProducerSettings(kafka.bootstrap, unique), profile) as producer:
            stats = await producer.finished()
        await pool.wait_until(lambda p: p.processed >= stats.produced, within=20, what="the pool to catch up")
    assert stats.produced == 600
    assert pool.processed == 600
    assert sum((await committed_offsets(kafka.bootstrap, group)).values()) == 600  # committed on the way out
