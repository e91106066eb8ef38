"""The HorizontalPodAutoscaler a ``mode: hpa`` policy needs, as a model and as a manifest.

:func:`hpa_spec_for` and :func:`render_hpa_manifest` describe the same object, so the simulator's
HPA is the one the user applies. Choices, each made for the metric design in
:mod:`lagscaler.core.hpa.metric`:

* one External metric ``lagscaler_desired_replicas`` selected by ``lagscaler.io/workload: <name>``,
  target ``AverageValue: 1``: the HPA proposes ``ceil(value)`` replicas;
* ``behavior`` with no stabilization and rate limits that never bind (all the way to
  ``maxReplicas`` up, 100 % down, per 15 s): lagscaler already stabilizes, paces and prices each
  change; an HPA that split a step in two would cost a second rebalance;
* per-HPA ``tolerance: 0`` both ways where the cluster keeps the field (``HPAConfigurableTolerance``),
  which makes every replica count reachable; elsewhere the lines are commented out, because an API
  server without the field rejects the manifest under strict field validation.
"""

from __future__ import annotations

from lagscaler.core.hpa.metric import TARGET_PER_REPLICA
from lagscaler.core.hpa.model import (
    Behavior,
    ExternalMetric,
    HpaScalingPolicy,
    HpaSpec,
    PolicyType,
    ScalingRules,
    SelectPolicy,
    TargetType,
)
from lagscaler.core.hpa.served import DESIRED_REPLICAS, WORKLOAD_LABEL
from lagscaler.core.policy.model import Mode, ScalingPolicy

RATE_PERIOD_SECONDS = 15


def hpa_spec_for(policy: ScalingPolicy) -> HpaSpec:
    """The HPA lagscaler's manifest creates for ``policy``, as the controller sees it."""
    tolerance = 0.0 if policy.hpa.configurable_tolerance else None
    scale_up = ScalingRules(
        stabilization_window_seconds=0,
        select_policy=SelectPolicy.MAX,
        policies=(HpaScalingPolicy(PolicyType.PODS, policy.max_replicas, RATE_PERIOD_SECONDS),),
        tolerance=tolerance,
    )
    scale_down = ScalingRules(
        stabilization_window_seconds=0,
        select_policy=SelectPolicy.MAX,
        policies=(HpaScalingPolicy(PolicyType.PERCENT, 100, RATE_PERIOD_SECONDS),),
        tolerance=tolerance,
    )
    return HpaSpec(
        metrics=(ExternalMetric(TargetType.AVERAGE_VALUE, TARGET_PER_REPLICA, DESIRED_REPLICAS),),
        max_replicas=policy.max_replicas,
        min_replicas=policy.min_replicas,
        behavior=Behavior(scale_up, scale_down),
        cluster_tolerance=policy.hpa.tolerance,
    )


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_hpa_manifest(policy: ScalingPolicy) -> str:
    """The ``autoscaling/v2`` manifest for ``policy`` as commented YAML, ready for ``kubectl apply``."""
    if policy.mode is not Mode.HPA:
        raise ValueError(f"policy {policy.key} is mode {policy.mode}: no HPA is used")
    spec = hpa_spec_for(policy)
    up, down = spec.scale_up_rules, spec.scale_down_rules
    band = f"{policy.hpa.tolerance:g}"
    if policy.hpa.configurable_tolerance:
        tolerance_note = [
            "# tolerance: 0 makes every replica count reachable (HPAConfigurableTolerance is on here:",
            "# policy spec.hpa.configurableTolerance). The served value is the decision itself, not a",
            "# noisy measurement, so a zero band cannot flap.",
        ]
        up_tolerance = '    tolerance: "0"'
        down_tolerance = '    tolerance: "0"'
    else:
        tolerance_note = [
            f"# Without per-HPA tolerance the cluster's {band} band applies: a step of 10 % or less above",
            "# the current count cannot happen in one sync (20 -> 21 or 22 cannot; 20 -> 23 can), so",
            "# lagscaler overshoots to the nearest reachable count rather than stay short of capacity,",
            "# and holds (never undershoots) when a scale-down is inside the band. To make every count",
            "# reachable, uncomment both tolerance lines on a cluster with HPAConfigurableTolerance",
            "# (alpha in 1.33, beta and on by default in 1.35) and set spec.hpa.configurableTolerance:",
            "# true in the policy; older API servers reject the field.",
        ]
        up_tolerance = '    # tolerance: "0"'
        down_tolerance = '    # tolerance: "0"'
    ref = policy.target
    lines = [
        f"# HorizontalPodAutoscaler for lagscaler policy {policy.key}"
        + (f" ({policy.source})" if policy.source else ""),
        f"# lagscaler serves {DESIRED_REPLICAS}{{{WORKLOAD_LABEL}={policy.name}}} through the external"
        " metrics",
        "# API. With an AverageValue target of 1 the HPA asks for ceil(value) replicas, so the value is",
        "# the replica count lagscaler decided (inside (n-1, n] it picks the end that leaves the HPA's",
        "# tolerance band).",
        *tolerance_note,
        "apiVersion: autoscaling/v2",
        "kind: HorizontalPodAutoscaler",
        "metadata:",
        f"  name: {_quote(policy.name)}",
        f"  namespace: {_quote(policy.namespace)}",
        "  labels:",
        f"    {WORKLOAD_LABEL}: {_quote(policy.name)}",
        "spec:",
        "  scaleTargetRef:",
        f"    apiVersion: {_quote(ref.api_version)}",
        f"    kind: {_quote(ref.kind)}",
        f"    name: {_quote(ref.name)}",
        f"  minReplicas: {spec.min_replicas}",
        "  # lagscaler already caps at the partition count; keep maxReplicas at the policy's maximum so",
        "  # the HPA's clamp lands exactly there (no P-1 stall).",
        f"  maxReplicas: {spec.max_replicas}",
        "  metrics:",
        "    - type: External",
        "      external:",
        "        metric:",
        f"          name: {DESIRED_REPLICAS}",
        "          selector:",
        "            matchLabels:",
        f"              {WORKLOAD_LABEL}: {_quote(policy.name)}",
        "        target:",
        "          type: AverageValue",
        f'          averageValue: "{TARGET_PER_REPLICA}"',
        "  # lagscaler stabilizes, paces and prices every change itself: the HPA must not hold a",
        "  # decision back or split it into two steps (each step is a consumer-group rebalance).",
        "  behavior:",
        "    scaleUp:",
        f"      stabilizationWindowSeconds: {up.stabilization_window_seconds:g}",
        f"      selectPolicy: {up.select_policy}",
        "      policies:",
        *(
            f"        - {{type: {p.type}, value: {p.value}, periodSeconds: {p.period_seconds}}}"
            for p in up.policies
        ),
        "  " + up_tolerance,
        "    scaleDown:",
        f"      stabilizationWindowSeconds: {down.stabilization_window_seconds:g}",
        f"      selectPolicy: {down.select_policy}",
        "      policies:",
        *(
            f"        - {{type: {p.type}, value: {p.value}, periodSeconds: {p.period_seconds}}}"
            for p in down.policies
        ),
        "  " + down_tolerance,
    ]
    return "\n".join(lines) + "\n"
