"""Which partitions ListOffsets asks which leader for, and which wait for fresh metadata.

``_route_by_leader`` is pure, so it is checked on layouts written out here: a partition without an
elected leader (leader -1) is a state a single local broker never reports, and it must be retried,
not reported missing, while a deleted topic or a partition past the topic's count is reported.
"""

from __future__ import annotations

from lagscaler.edges.kafka.admin import Broker, ClusterLayout, _route_by_leader


def test_partitions_go_to_their_leader_and_the_rest_wait_or_are_missing() -> None:
    layout = ClusterLayout(
        brokers={1: Broker(1, "127.0.0.1", 9092), 2: Broker(2, "127.0.0.1", 9093)},
        topics={"a": {0: 1, 1: 2, 2: 1}, "b": {0: -1}},
        missing=frozenset({"gone"}),
        unavailable={"loading": "LEADER_NOT_AVAILABLE"},
    )
    asked = [("a", 0), ("a", 1), ("a", 2), ("a", 3), ("b", 0), ("gone", 0), ("loading", 0), ("unknown", 0)]

    by_leader, waiting, missing = _route_by_leader(asked, layout)

    assert by_leader == {1: [("a", 0), ("a", 2)], 2: [("a", 1)]}
    assert waiting == {
        ("b", 0): "LEADER_NOT_AVAILABLE",
        ("loading", 0): "LEADER_NOT_AVAILABLE",
        ("unknown", 0): "no metadata",
    }
    assert list(waiting) == [
        ("b", 0),
        ("loading", 0),
        ("unknown", 0),
    ]  # asked order: the error names the first
    assert missing == {("a", 3), ("gone", 0)}
