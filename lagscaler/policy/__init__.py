"""Per-workload policy files: the typed model, the JSON Schema and the YAML loader."""

from lagscaler.policy.model import (
    Capacity,
    Fallback,
    Hpa,
    KafkaSource,
    Mode,
    ScaleDown,
    ScaleTargetRef,
    ScaleUp,
    ScalingPolicy,
    Smoothing,
    StaleAction,
    Stateful,
)

__all__ = [
    "Capacity",
    "Fallback",
    "Hpa",
    "KafkaSource",
    "Mode",
    "ScaleDown",
    "ScaleTargetRef",
    "ScaleUp",
    "ScalingPolicy",
    "Smoothing",
    "StaleAction",
    "Stateful",
]
