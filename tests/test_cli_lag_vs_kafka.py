"""``lagscaler lag --output json`` agrees, partition by partition, with ``kafka-consumer-groups --describe``.

Same broker, same state (nothing produced, committed or rebalanced between the two runs): an empty
group with partial commits, a group spread over two topics, and a group with a live member that
holds partitions it never committed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from typing import Any

import pytest
from lagscaler_demo.localkafka import KafkaEndpoint, KafkaTools, parse_describe
from lagscaler_demo.seed import commit, create_topics, join_group, produce

from lagscaler.cli import main

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def run_json(argv: list[str]) -> Any:
    """``lagscaler ...`` in this process (it runs its own event loop, so call it from a thread)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(argv) == 0
    return json.loads(buffer.getvalue())


async def test_lag_json_matches_kafka_consumer_groups(
    kafka: KafkaEndpoint, kafka_tools: KafkaTools, unique: str
) -> None:
    a, b, live_topic = f"{unique}-a", f"{unique}-b", f"{unique}-live"
    empty, spread, live = f"{unique}-empty", f"{unique}-spread", f"{unique}-live"
    await create_topics(kafka.bootstrap, {a: 4, b: 2, live_topic: 3})
    await produce(
        kafka.bootstrap,
        {
            (a, 0): 50,
            (a, 1): 7,
            (a, 2): 0,
            (a, 3): 13,
            (b, 0): 21,
            (b, 1): 3,
            (live_topic, 0): 5,
            (live_topic, 1): 6,
        },
    )
    await commit(kafka.bootstrap, empty, {(a, 0): 20, (a, 1): 7})
    await commit(kafka.bootstrap, spread, {(a, 3): 1, (b, 0): 21, (b, 1): 0})
    await commit(kafka.bootstrap, live, {(live_topic, 0): 2})
    member = await join_group(kafka.bootstrap, live, [live_topic], client_id="agreeing-member")
    try:
        groups = [empty, spread, live]
        describe = kafka_tools.consumer_groups(
            kafka.bootstrap, "--describe", *(arg for g in groups for arg in ("--group", g)), timeout=120
        )
        assert describe.returncode == 0, describe.stderr
        theirs = parse_describe(describe.stdout)

        args = ["lag", "--bootstrap-server", kafka.bootstrap, "--output", "json"]
        document = await asyncio.to_thread(
            run_json, [*args, *(arg for g in groups for arg in ("--group", g))]
        )
    finally:
        await member.stop()

    ours = {
        (g["group"], p["topic"], p["partition"]): (p["committed"], p["end"], p["lag"])
        for g in document["groups"]
        for p in g["partitions"]
    }
    assert theirs, describe.stdout
    # Every row Kafka prints, we print with the same committed offset, end offset and lag.
    assert {key: ours.get(key) for key in theirs} == theirs
    # We also list the other partitions of those topics, which no one committed on or holds;
    # Kafka's tool leaves them out for a group without members. They carry no lag.
    for key in set(ours) - set(theirs):
        assert ours[key][0] is None
        assert ours[key][2] is None
    # The live member's uncommitted partitions appear in both, as "-" there and null here.
    assert theirs[(live, live_topic, 1)] == (None, 6, None)
