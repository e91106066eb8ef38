"""Per-workload policy files: the typed model, and the JSON Schema, loader and reference generated from it."""

from lagscaler.core.policy.hpa import hpa_spec_for, render_hpa_manifest
from lagscaler.core.policy.loader import (
    PolicyError,
    PolicyIssue,
    check_policy_file,
    check_policy_text,
    load_policy_dir,
    load_policy_file,
    parse_policy,
)
from lagscaler.core.policy.model import (
    Capacity,
    Fallback,
    Hpa,
    KafkaSource,
    Metadata,
    Mode,
    PolicyFile,
    PolicySpec,
    ScaleDown,
    ScaleTargetRef,
    ScaleUp,
    ScalingPolicy,
    Smoothing,
    StaleAction,
    Stateful,
)
from lagscaler.core.policy.schema import policy_reference, policy_schema

__all__ = [
    "Capacity",
    "Fallback",
    "Hpa",
    "KafkaSource",
    "Metadata",
    "Mode",
    "PolicyError",
    "PolicyFile",
    "PolicyIssue",
    "PolicySpec",
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
    "policy_reference",
    "policy_schema",
    "render_hpa_manifest",
]
