"""The batched admin requests, against the real session broker: results, request counts, error paths."""

from __future__ import annotations

import time

import pytest
from lagscaler_demo.localkafka import KafkaEndpoint, free_port
from lagscaler_demo.seed import commit, create_topics, delete_topics, join_group, produce

from lagscaler.edges.kafka import KafkaAdmin, KafkaSettings, KafkaUnavailable

pytestmark = pytest.mark.kafka


@pytest.fixture
def settings(kafka: KafkaEndpoint) -> KafkaSettings:
    return KafkaSettings(bootstrap=(kafka.bootstrap,), request_timeout=5.0)


async def seed_groups(bootstrap: str, unique: str, groups: int = 4) -> dict[str, dict[tuple[str, int], int]]:
    topics = {f"{unique}-a": 3, f"{unique}-b": 2}
    await create_topics(bootstrap, topics)
    await produce(bootstrap, {(t, p): 20 for t, n in topics.items() for p in range(n)})
    expected = {
        f"{unique}-g{i}": {(f"{unique}-a", 0): i, (f"{unique}-a", 2): 10 + i, (f"{unique}-b", 1): 19 - i}
        for i in range(groups)
    }
    for group, offsets in expected.items():
        await commit(bootstrap, group, offsets)
    return expected


async def test_one_request_per_coordinator_for_many_groups(settings: KafkaSettings, unique: str) -> None:
    expected = await seed_groups(settings.bootstrap[0], unique, groups=6)
    async with KafkaAdmin(settings) as admin:
        before = admin.stats.snapshot()
        committed = await admin.fetch_committed([*expected, f"{unique}-missing"])
        described = await admin.describe_groups([*expected, f"{unique}-missing"])
        sent = admin.stats.since(before)
    assert {g: dict(c.offsets) for g, c in committed.values.items() if g in expected} == expected
    assert committed.values[f"{unique}-missing"].offsets == {}
    assert described.values[f"{unique}-missing"].found is False
    assert {described.values[g].state for g in expected} == {"Empty"}
    # One broker is the coordinator of every group: one batched request each, whatever the group count.
    assert sent == {"FindCoordinator": 1, "OffsetFetch": 1, "DescribeGroups": 1}


async def test_brokers_without_kip709_get_one_request_per_group(settings: KafkaSettings, unique: str) -> None:
    expected = await seed_groups(settings.bootstrap[0], unique, groups=3)
    caps = {"OffsetFetch": 7, "FindCoordinator": 3}  # what a Kafka 2.x broker speaks
    async with KafkaAdmin(settings, version_caps=caps) as admin:
        before = admin.stats.snapshot()
        committed = await admin.fetch_committed(list(expected))
        sent = admin.stats.since(before)
    assert {g: dict(c.offsets) for g, c in committed.values.items()} == expected
    assert sent == {"FindCoordinator": 3, "OffsetFetch": 3}


async def test_stale_coordinator_is_forgotten_and_found_again(settings: KafkaSettings, unique: str) -> None:
    expected = await seed_groups(settings.bootstrap[0], unique, groups=2)
    group = next(iter(expected))
    async with KafkaAdmin(settings) as admin:
        admin.pin_coordinator(group, 4242)  # the coordinator "moved" to a node that is gone
        before = admin.stats.snapshot()
        committed = await admin.fetch_committed([group])
        sent = admin.stats.since(before)
        assert admin.cached_coordinator(group) == admin.broker_ids()[0]
    assert dict(committed.values[group].offsets) == expected[group]
    assert sent["FindCoordinator"] == 1  # re-resolved once, then served
    assert not committed.errors


async def test_members_and_their_assignments_are_decoded(settings: KafkaSettings, unique: str) -> None:
    topic, group = f"{unique}-live", f"{unique}-live-g"
    await create_topics(settings.bootstrap[0], {topic: 4})
    consumer = await join_group(settings, group, [topic], client_id="owner-1")
    try:
        async with KafkaAdmin(settings) as admin:
            description = (await admin.describe_groups([group])).values[group]
    finally:
        await consumer.stop()
    assert description.state == "Stable"
    (member,) = description.members
    assert member.client_id == "owner-1"
    assert set(description.owners()) == {(topic, p) for p in range(4)}


async def test_end_offsets_per_leader_and_deleted_topics(settings: KafkaSettings, unique: str) -> None:
    live, doomed = f"{unique}-live", f"{unique}-doomed"
    await create_topics(settings.bootstrap[0], {live: 2, doomed: 1})
    await produce(settings.bootstrap[0], {(live, 0): 3, (live, 1): 5, (doomed, 0): 1})
    async with KafkaAdmin(settings) as admin:
        layout = await admin.metadata([live, doomed])
        await delete_topics(settings.bootstrap[0], [doomed])
        before = admin.stats.snapshot()
        ends = await admin.list_end_offsets(list(layout.partitions()), layout)
        sent = admin.stats.since(before)
        after = await admin.metadata([live, doomed])
    assert ends.offsets == {(live, 0): 3, (live, 1): 5}
    assert ends.missing == {(doomed, 0)}
    assert sent["ListOffsets"] >= 1
    assert doomed in after.missing


async def test_all_groups_are_listed_from_every_broker(settings: KafkaSettings, unique: str) -> None:
    expected = await seed_groups(settings.bootstrap[0], unique, groups=2)
    async with KafkaAdmin(settings) as admin:
        listed = {g.group_id: g for g in await admin.list_groups()}
        sent = admin.stats.snapshot()
    assert set(expected) <= set(listed)
    assert all(listed[g].is_consumer_group for g in expected)
    assert sent["ListGroups"] == 1  # one broker


async def test_unreachable_cluster_is_a_one_line_error_within_the_timeout() -> None:
    settings = KafkaSettings(bootstrap=(f"127.0.0.1:{free_port()}",), request_timeout=2.0)
    started = time.monotonic()
    with pytest.raises(KafkaUnavailable, match=r"cannot reach Kafka at 127\.0\.0\.1:\d+") as caught:
        await KafkaAdmin(settings).start()
    assert "\n" not in str(caught.value)
    assert time.monotonic() - started < 10
