"""The external metrics lagscaler serves and the labels on their items: defined here, once.

These names are a public contract. An HPA's ``spec.metrics[].external.metric`` names one of them
and selects a workload's item by its labels, the API's discovery document lists them, and
``lagscaler policy hpa`` writes them into the manifests it prints; renaming one breaks every HPA
that uses it. The service publishes the values (``lagscaler.service.publish``) and the API serves
them (``lagscaler.edges.api.cache``); both read the names from here.
"""

from __future__ import annotations

__all__ = [
    "DESIRED_REPLICAS",
    "GROUP_LABEL",
    "LAG_MESSAGES",
    "LAG_SECONDS",
    "PRODUCE_RATE",
    "SERVED_METRICS",
    "TOPIC_LABEL",
    "WORKLOAD_LABEL",
]

DESIRED_REPLICAS = "lagscaler_desired_replicas"  # the engine's count, encoded for a stock HPA (hpa.metric)
LAG_MESSAGES = "lagscaler_lag_messages"  # total lag of the workload's group on its topics
LAG_SECONDS = "lagscaler_lag_seconds"  # how far behind the group is, in seconds
PRODUCE_RATE = "lagscaler_produce_rate"  # messages per second produced to the workload's topics
SERVED_METRICS: tuple[str, ...] = (DESIRED_REPLICAS, LAG_MESSAGES, LAG_SECONDS, PRODUCE_RATE)

WORKLOAD_LABEL = "lagscaler.io/workload"  # the policy's metadata.name: what an HPA selects on
GROUP_LABEL = "lagscaler.io/group"  # the workload's consumer group
TOPIC_LABEL = "lagscaler.io/topic"  # only when the workload reads exactly one topic
