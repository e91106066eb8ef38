"""Presentation of a snapshot: the JSON contract's types and the table's markers."""

from __future__ import annotations

import json

from lagscaler.core.signals.model import GroupSample, PartitionSample, PartitionStatus, Snapshot
from lagscaler.core.signals.report import render_table, rfc3339, snapshot_json


def sample(**partition: object) -> Snapshot:
    p = PartitionSample(**{"topic": "t", "partition": 0, "committed": 5, "end": 9, "lag": 4, **partition})  # type: ignore[arg-type]
    return Snapshot(sampled_at=0.25, groups=(GroupSample("g", "Stable", 1, 0.25, (p,)),))


def test_rfc3339_is_utc_with_milliseconds() -> None:
    assert rfc3339(0.25) == "1970-01-01T00:00:00.250Z"


def test_floats_are_rounded_and_nulls_stay_null() -> None:
    document = snapshot_json(sample(lag_seconds=1.23456, produce_rate=2.0, status=PartitionStatus.WARN))
    p = document["groups"][0]["partitions"][0]
    assert (p["lag_seconds"], p["produce_rate"], p["consume_rate"], p["status"]) == (1.235, 2.0, None, "WARN")
    assert json.loads(json.dumps(document)) == document


def test_a_lower_bound_is_marked_in_the_table() -> None:
    table = render_table(sample(lag_seconds=12.0, lag_seconds_lower_bound=True))
    assert table.splitlines()[1].split()[6] == ">=12.0"


def test_stale_and_missing_groups_are_said_in_words() -> None:
    stale = Snapshot(
        sampled_at=0.0,
        groups=(GroupSample("gone", "Dead", 0, 0.0, found=False),),
        stale=True,
        error="cannot reach Kafka",
    )
    text = render_table(stale)
    assert "Consumer group 'gone' does not exist." in text
    assert "(stale: the last sample failed: cannot reach Kafka)" in text
