"""Per-workload policy files: the typed model, the JSON Schema and the YAML loader."""

from lagscaler.policy.hpa import hpa_spec_for, render_hpa_manifest
from lagscaler.policy.loader import (
    PolicyError,
    PolicyIssue,
    check_policy_file,
    check_policy_text,
    load_policy_dir,
    load_policy_file,
    parse_policy,
    policy_schema,
)
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
    "PolicyError",
    "PolicyIssue",
    "ScaleDown",
    "ScaleTargetRef",
    "ScaleUp",
    "ScalingPolicy",
    "Smoothing",
    "StaleAction",
    "Stateful",
    "check_policy_file",
    "check_policy_text",
    "hpa_spec_for",
    "load_policy_dir",
    "load_policy_file",
    "parse_policy",
    "policy_schema",
    "render_hpa_manifest",
]
