"""How faithful is ``lagscaler.core.hpa`` to the real HPA controller? Every sync, compared.

Several HPAs run at once against the real kube-controller-manager, each over its own Deployment,
each reading a metric whose value the test sets over time (an in-process external metrics API,
registered through the chart's APIService exactly like ``lagscaler serve``). Together they cover
both target types, the default and per-HPA tolerance, no ``behavior`` (legacy limits and the
downscale stabilization flag), custom and default behaviors, the ``maxReplicas`` clamp at the
partition count and the P-1 stall, and metric errors. Each controller sync, read from its log, is
replayed through :func:`lagscaler.core.hpa.step` with the same inputs; every replica count must agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml
from lagscaler_demo.localkafka.broker import free_port
from support import eventually

from lagscaler.core.hpa import (
    Behavior,
    ExternalMetric,
    HpaScalingPolicy,
    HpaSpec,
    MetricError,
    PolicyType,
    ScalingRules,
    SelectPolicy,
    TargetType,
)
from lagscaler.core.hpa.served import DESIRED_REPLICAS, WORKLOAD_LABEL
from lagscaler.core.policy import hpa_spec_for, parse_policy, render_hpa_manifest
from lagscaler.edges.api import (
    ApiSettings,
    MetricsCache,
    MetricValue,
    WorkloadMetrics,
    parse_quantity,
    running_api,
)

from .adapter import ChartInstall
from .cluster import ControlPlane, deployment
from .kubeclient import KubeClient
from .syncs import Replay, SyncLog, Timeline, repeatedly, replay

pytestmark = [pytest.mark.controlplane, pytest.mark.slow]

STALE = "stale"  # a schedule value: serve nothing fresh (503), as lagscaler does when Kafka is unreachable
_FAILED = MetricError("stale: 503")
DURATION = 80.0


# ---------------------------------------------------------------------------------- manifests


def spec_from_manifest(manifest: dict[str, Any], downscale_stabilization_seconds: float) -> HpaSpec:
    """The model's view of an ``autoscaling/v2`` HPA manifest, given the controller's downscale flag."""

    def rules(raw: dict[str, Any] | None) -> ScalingRules | None:
        if raw is None:
            return None
        policies = raw.get("policies")
        tolerance = raw.get("tolerance")
        return ScalingRules(
            stabilization_window_seconds=raw.get("stabilizationWindowSeconds"),
            select_policy=SelectPolicy(raw["selectPolicy"]) if "selectPolicy" in raw else None,
            policies=None
            if policies is None
            else tuple(
                HpaScalingPolicy(PolicyType(p["type"]), p["value"], p["periodSeconds"]) for p in policies
            ),
            tolerance=None if tolerance is None else float(parse_quantity(str(tolerance))),
        )

    spec = manifest["spec"]
    metrics = []
    for metric in spec["metrics"]:
        target = metric["external"]["target"]
        kind = TargetType(target["type"])
        quantity = target["averageValue" if kind is TargetType.AVERAGE_VALUE else "value"]
        metrics.append(
            ExternalMetric(kind, float(parse_quantity(str(quantity))), metric["external"]["metric"]["name"])
        )
    behavior = spec.get("behavior")
    return HpaSpec(
        metrics=tuple(metrics),
        max_replicas=spec["maxReplicas"],
        min_replicas=spec.get("minReplicas", 1),
        behavior=None
        if behavior is None
        else Behavior(rules(behavior.get("scaleUp")), rules(behavior.get("scaleDown"))),
        cluster_tolerance=0.1,
        downscale_stabilization_seconds=downscale_stabilization_seconds,
    )


def _hpa(
    name: str, target: dict[str, Any], *, max_replicas: int, behavior: dict[str, Any] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "minReplicas": 1,
        "maxReplicas": max_replicas,
        "metrics": [
            {
                "type": "External",
                "external": {
                    "metric": {"name": DESIRED_REPLICAS, "selector": {"matchLabels": {WORKLOAD_LABEL: name}}},
                    "target": target,
                },
            }
        ],
    }
    if behavior is not None:
        spec["behavior"] = behavior
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name},
        "spec": spec,
    }


def _lagscaler_hpa(
    name: str, namespace: str, *, configurable_tolerance: bool, max_replicas: int
) -> dict[str, Any]:
    """What ``lagscaler policy hpa`` prints for a policy (both tolerance variants)."""
    policy = parse_policy(
        json.dumps(
            {
                "apiVersion": "lagscaler.io/v1",
                "kind": "ScalingPolicy",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "scaleTargetRef": {"name": name},
                    "kafka": {"group": "g", "topics": ["t"]},
                    "maxLagSeconds": 30,
                    "minReplicas": 1,
                    "maxReplicas": max_replicas,
                    "capacity": {"perReplica": 100},
                    "hpa": {"configurableTolerance": configurable_tolerance},
                },
            }
        )
    )
    manifest: dict[str, Any] = yaml.safe_load(render_hpa_manifest(policy))
    model = hpa_spec_for(policy)
    assert (
        spec_from_manifest(manifest, model.downscale_stabilization_seconds) == model
    )  # one and the same HPA
    return manifest


# ---------------------------------------------------------------------------------- scenarios


@dataclass
class Scenario:
    name: str
    manifest: dict[str, Any]
    schedule: list[tuple[float, float | str]]  # (seconds from start, value served from then on)
    ready_pods: bool = False  # stand in for the kubelet: pods become Running and Ready
    served: Timeline = field(default_factory=Timeline)
    ready: Timeline = field(default_factory=Timeline)
    status: Timeline = field(default_factory=Timeline)

    @property
    def namespace(self) -> str:
        return f"fidelity-{self.name}"


def scenarios() -> list[Scenario]:
    value = {"type": "Value", "value": "10"}
    average = {"type": "AverageValue", "averageValue": "1"}
    return [
        # lagscaler's own HPA, as printed: exact counts up, the max clamp (partition count), holds in the band
        Scenario(
            "lagscaler",
            _lagscaler_hpa("lagscaler", "fidelity-lagscaler", configurable_tolerance=False, max_replicas=12),
            [(0, 3), (10, 10), (22, 10.5), (34, 12.9), (46, 11.6), (56, 4.001), (68, 2)],
        ),
        Scenario(
            "tolerance0",
            _lagscaler_hpa("tolerance0", "fidelity-tolerance0", configurable_tolerance=True, max_replicas=12),
            [(0, 3), (10, 10), (22, 10.5), (36, 11), (50, 4), (64, 1)],
        ),
        # no behavior: at most max(2x, 4) up per sync; down only after the downscale window (flag)
        Scenario(
            "legacy",
            _hpa("legacy", {"type": "AverageValue", "averageValue": "2"}, max_replicas=20),
            [(0, 2), (4, 30), (26, 10), (60, 9.2)],
        ),
        # Value: proposal = ceil(ratio * ready pods)
        Scenario(
            "value",
            _hpa("value", value, max_replicas=10),
            [(0, 10), (6, 35), (22, 10.5), (34, 5), (64, 30)],
            ready_pods=True,
        ),
        # Value with no pod ever ready (no kubelet): outside the band the proposal is ceil(ratio * 0)
        Scenario(
            "unready", _hpa("unready", value, max_replicas=10), [(0, 10), (6, 10.5), (18, 35), (40, 10)]
        ),
        # custom behaviors: Min of two up policies, one pod down per period, windows, per-HPA tolerance
        Scenario(
            "behavior",
            _hpa(
                "behavior",
                average,
                max_replicas=15,
                behavior={
                    "scaleUp": {
                        "stabilizationWindowSeconds": 6,
                        "selectPolicy": "Min",
                        "policies": [
                            {"type": "Pods", "value": 2, "periodSeconds": 10},
                            {"type": "Percent", "value": 50, "periodSeconds": 10},
                        ],
                        "tolerance": "0.05",
                    },
                    "scaleDown": {
                        "stabilizationWindowSeconds": 10,
                        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 10}],
                        "tolerance": "0.2",
                    },
                },
            ),
            [(0, 2), (4, 9), (32, 9.4), (40, 3), (70, 2.5)],
        ),
        # behavior present but empty: the API server's defaults (4 pods or 100 % per 15 s up, window 300 s down)
        Scenario(
            "defaults", _hpa("defaults", average, max_replicas=20, behavior={}), [(0, 1), (4, 18), (48, 2)]
        ),
        # KEDA's P-1 stall: a metric capped at P per-replica units cannot move 11 -> 12 in a 10 % band
        Scenario("stall", _hpa("stall", average, max_replicas=12), [(0, 11), (24, 12)]),
        # errors freeze scaling, in both directions
        Scenario(
            "errors",
            _hpa(
                "errors", average, max_replicas=10, behavior={"scaleDown": {"stabilizationWindowSeconds": 0}}
            ),
            [(0, 5), (14, STALE), (32, 1), (46, STALE), (62, 8)],
        ),
    ]


def _ready_timeline(scenario: Scenario) -> Timeline | None:
    """Ready pods as the controller counts them: marked by the kubelet stand-in, else none ever."""
    if scenario.ready_pods:
        return scenario.ready
    value_target = scenario.manifest["spec"]["metrics"][0]["external"]["target"]["type"] == "Value"
    return Timeline([(0.0, 0)]) if value_target else None


def _workload(scenario: Scenario, value: float | str, now: float) -> WorkloadMetrics:
    labels = {WORKLOAD_LABEL: scenario.name}
    if value == STALE:  # sampled long ago, the policy says fallback.action: error -> 503
        return WorkloadMetrics(
            scenario.namespace, scenario.name, now - 3600, (MetricValue(DESIRED_REPLICAS, 1, labels),), 60
        )
    return WorkloadMetrics(
        scenario.namespace, scenario.name, now, (MetricValue(DESIRED_REPLICAS, float(value), labels),), 3600
    )


# ---------------------------------------------------------------------------------- the run


@contextlib.asynccontextmanager
async def _fixed_values_api(chart: ChartInstall, cache: MetricsCache) -> AsyncIterator[int]:
    port = free_port()
    settings = ApiSettings(
        bind_address="127.0.0.1",
        secure_port=port,
        tls_cert_file=chart.tls_cert_file,
        tls_private_key_file=chart.tls_key_file,
        authentication_kubeconfig=chart.kubeconfig,
        authorization_kubeconfig=chart.kubeconfig,
        metrics_port=-1,
    )
    async with running_api(settings, cache):
        yield port


@dataclass
class Run:
    """What the run saw: its wall-clock span and the reasons the errors HPA gave for not scaling."""

    started: float
    ended: float
    failures: set[str]


async def _run(control_plane: ControlPlane, chart: ChartInstall, runs: list[Scenario]) -> Run:
    """Serve every scenario's schedule for DURATION seconds while the real controller syncs its HPA."""
    errors = next(r for r in runs if r.name == "errors")
    cache = MetricsCache()
    started = time.time()

    def publish() -> None:
        now = time.time()
        workloads = []
        for scenario in runs:
            value = [v for at, v in scenario.schedule if at <= now - started][-1]
            scenario.served.add(now, _FAILED if value == STALE else float(value))
            workloads.append(_workload(scenario, value, now))
        cache.publish(workloads)

    publish()
    for scenario in runs:
        control_plane.namespace(scenario.namespace)
    async with _fixed_values_api(chart, cache) as port, KubeClient(control_plane.admin_kubeconfig) as kube:
        chart.point_at(port)

        async def routed() -> bool:
            selector = f"{WORKLOAD_LABEL}={runs[0].name}"
            return await kube.external_metric(runs[0].namespace, DESIRED_REPLICAS, selector) is not None

        await eventually(routed, within=60, what="the APIService to reach the fixed-values API")
        for scenario in runs:
            metadata = {**scenario.manifest["metadata"], "namespace": scenario.namespace}
            control_plane.apply(
                [
                    deployment(scenario.namespace, scenario.name, labels={"fidelity": "yes"}),
                    dict(scenario.manifest, metadata=metadata),
                ]
            )
        started = time.time()
        publish()

        async def tick() -> None:
            publish()

        async def observe() -> None:
            listing = await kube.deployments(label_selector="fidelity=yes")
            now = time.time()
            for scenario in runs:
                scenario.status.add(now, listing[scenario.namespace][1])
            for scenario in (s for s in runs if s.ready_pods):
                ready = await kube.mark_pods_ready(scenario.namespace, f"app={scenario.name}")
                scenario.ready.add(time.time(), ready)

        failures: set[str] = set()

        async def conditions() -> None:
            hpa = await kube.hpa(errors.namespace, errors.name)
            for condition in hpa.get("status", {}).get("conditions") or []:
                if condition["type"] == "ScalingActive" and condition["status"] == "False":
                    failures.add(condition["reason"])

        tasks = [
            asyncio.create_task(repeatedly(0.5, tick)),
            asyncio.create_task(repeatedly(0.2, observe)),
            asyncio.create_task(repeatedly(1.0, conditions)),
        ]
        try:
            await asyncio.sleep(DURATION)
            return Run(started, time.time(), failures)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def test_every_sync_of_the_real_controller_is_what_the_model_predicts(
    control_plane: ControlPlane, chart: ChartInstall
) -> None:
    runs = scenarios()
    run = await _run(control_plane, chart, runs)
    reports: dict[str, Replay] = {}
    log = lambda: control_plane.log("kube-controller-manager")  # noqa: E731
    for scenario in runs:
        syncs = SyncLog(log, scenario.namespace, scenario.name, scenario.name).read()
        reports[scenario.name] = replay(
            [s for s in syncs if run.started - 1 <= s.time <= run.ended],
            spec_from_manifest(scenario.manifest, control_plane.downscale_stabilization_seconds),
            served=scenario.served,
            status_replicas=scenario.status,
            ready_pods=_ready_timeline(scenario),
        )
    summary = "\n\n".join(f"== {name}: {report.describe()}" for name, report in reports.items())
    print(summary)
    for name, report in reports.items():
        assert report.syncs >= DURATION / control_plane.hpa_sync_seconds / 2, (
            f"{name}: too few syncs\n{summary}"
        )
    assert [m for r in reports.values() for m in r.mismatches] == [], summary
    # Syncs whose metric failed log no decision: the HPA's ScalingActive condition said why, and no
    # rescale happened in those stretches (the model freezes too: FailedGetExternalMetric).
    assert "FailedGetExternalMetric" in run.failures, run.failures
    errors = next(r for r in runs if r.name == "errors")
    stale = [
        (run.started + a, run.started + b)
        for (a, v), (b, _) in itertools.pairwise(errors.schedule)
        if v == STALE
    ]
    rescaled = [
        s for s in SyncLog(log, errors.namespace, "errors", "errors").read() if s.desired != s.current
    ]
    assert not [s for s in rescaled for a, b in stale if a + 1 < s.time < b], rescaled
