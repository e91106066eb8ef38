"""What the API publishes for a workload: raw signals over every partition, labels, stale fallbacks."""

from __future__ import annotations

import math

from lagscaler.core.engine import Decision, observe
from lagscaler.core.hpa.served import DESIRED_REPLICAS, LAG_MESSAGES, LAG_SECONDS, PRODUCE_RATE, TOPIC_LABEL
from lagscaler.core.policy import Capacity, Fallback, KafkaSource, ScaleTargetRef, ScalingPolicy, StaleAction
from lagscaler.core.signals import GroupSample, PartitionSample, PartitionStatus
from lagscaler.service.publish import raw_signals, workload_metrics


def policy(*topics: str, fallback: Fallback | None = None) -> ScalingPolicy:
    return ScalingPolicy(
        name="orders",
        namespace="shop",
        target=ScaleTargetRef("orders"),
        kafka=KafkaSource("workers", topics),
        max_lag_seconds=30.0,
        capacity=Capacity(per_replica=100.0),
        fallback=fallback or Fallback(),
    )


def sample(*partitions: PartitionSample) -> GroupSample:
    return GroupSample("workers", "Stable", 2, 1000.0, partitions)


def part(
    topic: str, n: int, lag: int | None, seconds: float | None, rate: float | None, *, status: str = "OK"
) -> PartitionSample:
    return PartitionSample(
        topic, n, None if lag is None else 100, 100 + (lag or 0), lag, seconds, False, rate, rate,
        PartitionStatus(status), "m1",
    )  # fmt: skip


def test_raw_signals_count_stuck_partitions_and_only_reported_lag_seconds() -> None:
    group = sample(
        part("orders", 0, 100, 4.0, 10.0),
        part("orders", 1, 900, 60.0, 5.0, status="STALL"),  # stuck: still real lag
        part("orders", 2, None, None, None),  # never committed, no rates yet
        part("audit", 0, 5000, 500.0, 50.0),  # not the policy's topic
    )
    p = policy("orders")
    signals = raw_signals(observe(group, p, replicas=2), p)
    assert signals.lag_messages == 1000
    assert signals.lag_seconds == 60.0
    assert signals.produce_rate == 15.0
    assert signals.topics == ("orders",)


def test_unknown_lag_seconds_is_served_as_zero_not_infinity() -> None:
    p = policy()
    signals = raw_signals(observe(sample(part("orders", 0, 50, None, None)), p, replicas=1), p)
    assert signals.lag_seconds == 0.0
    assert math.isfinite(signals.lag_seconds)


def test_a_topic_label_only_when_the_workload_reads_one_topic() -> None:
    p = policy()
    two = sample(part("a", 0, 1, 1.0, 1.0), part("b", 0, 1, 1.0, 1.0))
    obs = observe(two, p, replicas=1)
    decision_metrics = workload_metrics(
        p, _decision(), raw_signals(obs, p), sampled_at=1000.0, current_replicas=1
    )
    assert all(TOPIC_LABEL not in v.labels for v in decision_metrics.values)
    one = observe(sample(part("a", 0, 1, 1.0, 1.0)), p, replicas=1)
    labelled = workload_metrics(p, _decision(), raw_signals(one, p), sampled_at=1000.0, current_replicas=1)
    assert {v.labels[TOPIC_LABEL] for v in labelled.values} == {"a"}
    assert {v.metric for v in labelled.values} == {DESIRED_REPLICAS, LAG_MESSAGES, LAG_SECONDS, PRODUCE_RATE}


def test_stale_values_follow_the_policys_fallback() -> None:
    obs = observe(sample(part("a", 0, 1, 1.0, 1.0)), policy(), replicas=3)
    for action, expected in ((StaleAction.ERROR, None), (StaleAction.REPLICAS, 5.0)):
        p = policy(fallback=Fallback(action=action, replicas=5))
        published = workload_metrics(
            p, _decision(), raw_signals(obs, p), sampled_at=0.0, current_replicas=None
        )
        if expected is None:
            assert published.stale_values is None
        else:
            assert published.stale_values is not None
            assert [v.value for v in published.stale_values] == [expected]
    held = policy(fallback=Fallback(action=StaleAction.HOLD))
    published = workload_metrics(
        held, _decision(), raw_signals(obs, held), sampled_at=0.0, current_replicas=3
    )
    assert published.stale_values == published.values


def _decision() -> Decision:
    return Decision("shop/orders", 3, 3, 0.0, 100.0, 0.0, 0.0, 0.0, 0.0, 0, 0.0, ("HOLD",))
