"""A broker that goes away: the cycle fails visibly, the last snapshot is kept (stale), nothing crashes.

This test stops and restarts a broker, so it runs its own (the session broker is shared). The
phases share one sampler (its last good snapshot and rate history are what is under test), so they
are one test, each phase a helper that says what it checks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from lagscaler_demo.localkafka import LocalBroker
from lagscaler_demo.seed import commit, create_topics, produce
from support import eventually

from lagscaler.core.signals import Snapshot
from lagscaler.edges.kafka import KafkaSettings
from lagscaler.edges.sampler import SampleFailed, Sampler, SamplerSettings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture
async def own_broker() -> AsyncIterator[LocalBroker]:
    """A broker of this test's own, because the test stops and restarts it."""
    broker = LocalBroker()
    await asyncio.to_thread(broker.start)
    try:
        yield broker
    finally:
        broker.kill()
        broker.close()


async def test_outage_keeps_a_stale_snapshot_and_recovers_after_restart(
    own_broker: LocalBroker, unique: str
) -> None:
    settings = KafkaSettings(bootstrap=(own_broker.bootstrap,), request_timeout=3.0)
    topic, group = f"{unique}-t", f"{unique}-g"
    await create_topics(settings, {topic: 2})
    await produce(settings, {(topic, 0): 8, (topic, 1): 4})
    await commit(settings, group, {(topic, 0): 3, (topic, 1): 4})

    async with Sampler(settings, SamplerSettings(groups=(group,), cycle_timeout=10)) as sampler:
        good = await sampler.sample()
        assert good.groups[0].total_lag == 5

        # Stopped, not killed: to the sampler it is gone either way, and a cleanly stopped
        # broker restarts in half the time (no log recovery), which keeps the suite fast.
        await asyncio.to_thread(own_broker.stop)
        await _assert_cycle_fails_and_keeps_last_good(sampler, good)
        await _assert_service_loop_survives_outage(sampler)

        await asyncio.to_thread(own_broker.start)  # same ports, same data
        await _assert_recovers_with_history(sampler)


async def _assert_cycle_fails_and_keeps_last_good(sampler: Sampler, good: Snapshot) -> None:
    """With the broker gone, a cycle fails within its deadline, in one line, and keeps the last good numbers.

    They stay available, marked stale, so the API keeps answering instead of going blank.
    """
    started = time.monotonic()
    with pytest.raises(SampleFailed) as caught:
        await sampler.sample()
    assert time.monotonic() - started < 10
    assert "\n" not in str(caught.value)
    stale = sampler.latest
    assert stale is not None
    assert (stale.stale, stale.error) == (True, str(caught.value))
    assert stale.groups[0].partitions == good.groups[0].partitions  # the last good numbers
    assert stale.groups[0].stale
    assert sampler.failures == 1


async def _assert_service_loop_survives_outage(sampler: Sampler) -> None:
    """The service loop lives through the outage, handing out the stale snapshot every cycle."""
    seen: list[Snapshot] = []
    three = asyncio.Event()

    def collect(snapshot: Snapshot) -> None:
        seen.append(snapshot)
        if len(seen) >= 3:
            three.set()

    task = asyncio.create_task(sampler.run(interval=0.1, on_snapshot=collect))
    try:
        await asyncio.wait_for(three.wait(), 30)
        assert not task.done()
        assert all(s.stale for s in seen)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _assert_recovers_with_history(sampler: Sampler) -> None:
    """Once the broker is back, sampling recovers by itself with the rate history from before."""

    async def sample_again() -> Snapshot:
        try:
            return await sampler.sample()
        except SampleFailed as exc:  # the restarted broker loads the group before it serves it
            raise AssertionError(str(exc)) from exc

    recovered = await eventually(sample_again, within=30, every=0.5, what="a sample after the restart")
    assert not recovered.stale
    assert recovered.groups[0].total_lag == 5
    assert recovered.groups[0].partitions[0].produce_rate == 0.0  # history survived the outage
