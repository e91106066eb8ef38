"""A pure model of the Kubernetes HPA controller for External metrics, and the metric lagscaler serves.

* :func:`step` runs one sync of one ``HorizontalPodAutoscaler`` (:class:`HpaSpec`) from the
  controller's memory of it (:class:`HpaState`), as kube-controller-manager does every 15 s.
* :mod:`lagscaler.core.hpa.metric` decides the value lagscaler serves for ``lagscaler_desired_replicas``
  so that this HPA lands on the engine's replica count, and says when it cannot.
"""

from lagscaler.core.hpa.controller import (
    average_value_proposal,
    legacy_scale_up_limit,
    scale_down_limit,
    scale_up_limit,
    step,
    value_proposal,
)
from lagscaler.core.hpa.metric import (
    TARGET_PER_REPLICA,
    MetricPlan,
    landing,
    plan_served_metric,
    reachable,
    served_value,
)
from lagscaler.core.hpa.model import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    Behavior,
    ExternalMetric,
    HpaScalingPolicy,
    HpaSpec,
    HpaState,
    MetricError,
    MetricReading,
    PolicyType,
    Recommendation,
    ResolvedRules,
    ScaleEvent,
    ScalingRules,
    SelectPolicy,
    StepResult,
    TargetType,
    Tolerances,
)
from lagscaler.core.hpa.served import (
    DESIRED_REPLICAS,
    GROUP_LABEL,
    LAG_MESSAGES,
    LAG_SECONDS,
    PRODUCE_RATE,
    SERVED_METRICS,
    TOPIC_LABEL,
    WORKLOAD_LABEL,
)
from lagscaler.core.quantity import milli_value

__all__ = [
    "DEFAULT_SCALE_DOWN",
    "DEFAULT_SCALE_UP",
    "DESIRED_REPLICAS",
    "GROUP_LABEL",
    "LAG_MESSAGES",
    "LAG_SECONDS",
    "PRODUCE_RATE",
    "SERVED_METRICS",
    "TARGET_PER_REPLICA",
    "TOPIC_LABEL",
    "WORKLOAD_LABEL",
    "Behavior",
    "ExternalMetric",
    "HpaScalingPolicy",
    "HpaSpec",
    "HpaState",
    "MetricError",
    "MetricPlan",
    "MetricReading",
    "PolicyType",
    "Recommendation",
    "ResolvedRules",
    "ScaleEvent",
    "ScalingRules",
    "SelectPolicy",
    "StepResult",
    "TargetType",
    "Tolerances",
    "average_value_proposal",
    "landing",
    "legacy_scale_up_limit",
    "milli_value",
    "plan_served_metric",
    "reachable",
    "scale_down_limit",
    "scale_up_limit",
    "served_value",
    "step",
    "value_proposal",
]
