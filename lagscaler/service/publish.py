"""From one cycle's decision to what the API serves for a workload (pure).

For each workload the API serves one item per metric, labelled ``lagscaler.io/workload`` and
``lagscaler.io/group`` (and ``lagscaler.io/topic`` when the workload reads exactly one topic, so a
topic selector cannot silently sum a multi-topic workload's lag-in-seconds). A group or topic name
that cannot be a label value (Kafka allows 249 characters, and any character in a group name; a
label value has at most 63 of ``[A-Za-z0-9._-]``) is left out rather than refused: the workload
label, a DNS label, always fits, and is what an HPA selects on:

* ``lagscaler_desired_replicas``: the engine's count encoded for a stock HPA (see
  :mod:`lagscaler.core.hpa.metric`); this is the metric the recommended HPA acts on;
* ``lagscaler_lag_messages``, ``lagscaler_lag_seconds``, ``lagscaler_produce_rate``: the raw
  signals, over the policy's topics, stuck partitions included (they are real lag).

What a stale workload serves is the policy's choice (``spec.fallback``): nothing (503, the HPA
freezes), the count that drives the HPA to ``fallback.replicas``, or the last values.
"""

from __future__ import annotations

from dataclasses import dataclass

from lagscaler.core.engine import Decision, Observation
from lagscaler.core.hpa import plan_served_metric
from lagscaler.core.hpa.served import (
    DESIRED_REPLICAS,
    GROUP_LABEL,
    LAG_MESSAGES,
    LAG_SECONDS,
    PRODUCE_RATE,
    TOPIC_LABEL,
    WORKLOAD_LABEL,
)
from lagscaler.core.policy import ScalingPolicy, StaleAction
from lagscaler.core.policy.hpa import hpa_spec_for
from lagscaler.edges.api.cache import MetricValue, WorkloadMetrics
from lagscaler.edges.api.selector import validate_label_value


@dataclass(frozen=True, slots=True)
class RawSignals:
    """The raw per-workload signals over the policy's topics."""

    lag_messages: float = 0.0
    lag_seconds: float = 0.0
    produce_rate: float = 0.0
    topics: tuple[str, ...] = ()


def raw_signals(observation: Observation, policy: ScalingPolicy) -> RawSignals:
    """Total lag, worst lag in seconds and total produce rate of the workload's partitions.

    Read from the engine's :class:`Observation`, which gathers them in its one pass over the sample.
    """
    return RawSignals(
        lag_messages=observation.total_lag,
        lag_seconds=observation.reported_lag_seconds,
        produce_rate=observation.produce_rate_all,
        topics=observation.topics or policy.kafka.topics,
    )


def labels_for(policy: ScalingPolicy, topics: tuple[str, ...]) -> dict[str, str]:
    labels = {WORKLOAD_LABEL: policy.name, GROUP_LABEL: policy.kafka.group}
    if len(topics) == 1:
        labels[TOPIC_LABEL] = topics[0]
    return {key: value for key, value in labels.items() if validate_label_value(value) is None}


def workload_metrics(
    policy: ScalingPolicy,
    decision: Decision,
    signals: RawSignals,
    *,
    sampled_at: float,
    current_replicas: int | None,
    detail: str = "",
) -> WorkloadMetrics:
    """The :class:`WorkloadMetrics` the API serves for ``policy`` after this cycle."""
    spec = hpa_spec_for(policy)
    labels = labels_for(policy, signals.topics)
    desired = plan_served_metric(decision.desired_replicas, current_replicas, spec)
    values = (
        MetricValue(DESIRED_REPLICAS, desired.value, labels),
        MetricValue(LAG_MESSAGES, signals.lag_messages, labels),
        MetricValue(LAG_SECONDS, signals.lag_seconds, labels),
        MetricValue(PRODUCE_RATE, signals.produce_rate, labels),
    )
    return WorkloadMetrics(
        namespace=policy.namespace,
        name=policy.name,
        sampled_at=sampled_at,
        values=values,
        max_age_seconds=policy.fallback.max_age_seconds,
        stale_values=_stale_values(policy, values, labels, current_replicas),
        detail=detail,
    )


def never_decided_metrics(policy: ScalingPolicy, *, detail: str) -> WorkloadMetrics:
    """What the API serves for a workload that has no decision to publish and never had one.

    Stale from the start (sample time 0), so the API serves what the policy chose for stale data at
    once: the fallback count, or a 503 naming ``detail`` (``hold`` has nothing to hold yet). Keeps a
    workload whose cycle failed answering per its fallback rather than 404 (the HPA's "not found").
    """
    labels = labels_for(policy, policy.kafka.topics)
    return WorkloadMetrics(
        namespace=policy.namespace,
        name=policy.name,
        sampled_at=0.0,
        values=(),
        max_age_seconds=policy.fallback.max_age_seconds,
        stale_values=_stale_values(policy, None, labels, None),
        detail=detail,
    )


def _stale_values(
    policy: ScalingPolicy,
    values: tuple[MetricValue, ...] | None,
    labels: dict[str, str],
    current_replicas: int | None,
) -> tuple[MetricValue, ...] | None:
    """The values served once stale, per ``spec.fallback`` (None: a 503); ``values`` are what hold keeps."""
    fallback = policy.fallback
    if fallback.action is StaleAction.ERROR:
        return None
    if fallback.action is StaleAction.HOLD:
        return values
    replicas = fallback.replicas if fallback.replicas is not None else policy.min_replicas
    plan = plan_served_metric(replicas, current_replicas, hpa_spec_for(policy))
    return (MetricValue(DESIRED_REPLICAS, plan.value, labels),)
