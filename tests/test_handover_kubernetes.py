"""The Kubernetes side of handover without a cluster: what a generation's Deployment is made of, and serve's flags.

The Deployment lagscaler clones is checked against Kubernetes' own schema; everything that talks to an
API server (the backend, the Lease, the chart's RBAC) is tested on the real control plane in
``tests/controlplane/test_handover_kubernetes.py``.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from lagscaler.cli.serve import build_parser, handover_from_options, serve_options
from lagscaler.core.policy import parse_policy
from lagscaler.edges.handover import GenerationSpec, HandoverSettings, LeaseSettings
from lagscaler.edges.handover.kubernetes import (
    LABEL_GENERATION,
    LABEL_WORKLOAD,
    clone_deployment,
    selector_string,
    workload_problem,
)
from lagscaler.errors import UserError
from lagscaler.service.handover import KubernetesHandover, LocalHandover, handover_workloads
from lagscaler.worker import ENV, WorkerConfig

ORIGINAL: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "ledger-consumer",
        "namespace": "shop",
        "uid": "0b6c1bd1-5a6c-4c53-9a43-5b0a9a6a4b11",
        "resourceVersion": "4711",
        "labels": {"app": "ledger", "team": "payments"},
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
        "creationTimestamp": "2026-01-01T00:00:00Z",
    },
    "spec": {
        "replicas": 3,
        "revisionHistoryLimit": 2,
        "selector": {
            "matchLabels": {"app": "ledger"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["backend"]}],
        },
        "template": {
            "metadata": {"labels": {"app": "ledger", "tier": "backend"}, "annotations": {"a": "b"}},
            "spec": {
                "serviceAccountName": "ledger",
                "containers": [
                    {
                        "name": "app",
                        "image": "registry.example/ledger:7",
                        "env": [
                            {"name": "LAGSCALER_GROUP", "value": "ledger"},
                            {"name": "LAGSCALER_HANDOVER_GENERATION", "value": "99"},  # stale: replaced
                            {"name": "DB_URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}},
                        ],
                    },
                    {"name": "sidecar", "image": "registry.example/proxy:1"},
                ],
            },
        },
    },
    "status": {"replicas": 3},
}
SPEC = GenerationSpec(
    workload="shop/ledger",
    generation=4,
    group="ledger-gen-4",
    topics=("payments", "refunds"),
    bootstrap=("kafka-0:9092", "kafka-1:9092"),
    control_topic="lagscaler.edges.handover",
)


def clone(original: dict[str, Any] = ORIGINAL) -> dict[str, Any]:
    return clone_deployment(original, SPEC, name="ledger-consumer-g4", workload_label="ledger", replicas=5)


def test_a_generation_is_the_workloads_pod_template_with_its_identity() -> None:
    body = clone()
    kubernetes_validate.validate(body, "1.32", strict=True)
    meta, spec = body["metadata"], body["spec"]
    assert meta["name"] == "ledger-consumer-g4"
    assert meta["namespace"] == "shop"
    assert meta["labels"] == {
        "app": "ledger",
        "team": "payments",
        LABEL_WORKLOAD: "ledger",
        LABEL_GENERATION: "4",
        "app.kubernetes.io/managed-by": "lagscaler",
    }
    # Owned by the workload's Deployment: the garbage collector deletes it with the workload.
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "ledger-consumer",
            "uid": ORIGINAL["metadata"]["uid"],
        }
    ]
    assert "kubectl.kubernetes.io/last-applied-configuration" not in meta["annotations"]
    assert spec["replicas"] == 5
    assert spec["revisionHistoryLimit"] == 2
    # Narrowed to this generation, so two generations never select each other's pods.
    assert spec["selector"]["matchLabels"] == {
        "app": "ledger",
        LABEL_WORKLOAD: "ledger",
        LABEL_GENERATION: "4",
    }
    assert spec["selector"]["matchExpressions"] == ORIGINAL["spec"]["selector"]["matchExpressions"]
    template = spec["template"]
    assert template["metadata"]["labels"] == {
        "app": "ledger",
        "tier": "backend",
        LABEL_WORKLOAD: "ledger",
        LABEL_GENERATION: "4",
    }
    assert template["metadata"]["annotations"] == {"a": "b"}
    assert template["spec"]["serviceAccountName"] == "ledger"
    assert [c["image"] for c in template["spec"]["containers"]] == [
        "registry.example/ledger:7",
        "registry.example/proxy:1",
    ]
    assert ORIGINAL["spec"]["template"]["spec"]["containers"][0]["env"][1]["value"] == "99"  # not mutated


def test_every_container_gets_what_the_worker_sdk_reads() -> None:
    for container in clone()["spec"]["template"]["spec"]["containers"]:
        env = container["env"]
        names = [e["name"] for e in env]
        assert len(names) == len(set(names)), names
        by_name = {e["name"]: e for e in env}
        assert by_name[ENV["worker"]] == {
            "name": ENV["worker"],
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
        }
        # What a kubelet would give the process, the pod name resolved from the downward API:
        resolved = {
            e["name"]: e.get("value", "ledger-consumer-g4-7d9f-x2x")
            for e in env
            if "secretKeyRef" not in str(e)
        }
        config = WorkerConfig.from_env(resolved)
        assert config.handover is not None
        assert config.handover.workload == "shop/ledger"
        assert config.handover.generation == 4
        assert config.handover.control_topic == "lagscaler.edges.handover"
        assert config.group == "ledger-gen-4"
        assert config.topics == ("payments", "refunds")
        assert config.bootstrap == ("kafka-0:9092", "kafka-1:9092")
        assert config.worker == "ledger-consumer-g4-7d9f-x2x"
    app = clone()["spec"]["template"]["spec"]["containers"][0]["env"]
    # The identity comes first (the application's own variables may refer to it); its own follow.
    assert [e["name"] for e in app][-2:] == ["LAGSCALER_GROUP", "DB_URL"]


def test_a_container_that_names_its_brokers_keeps_them() -> None:
    original = copy.deepcopy(ORIGINAL)
    original["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": ENV["bootstrap"], "value": "kafka-internal:9093"}
    )
    env = clone(original)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e for e in env if e["name"] == ENV["bootstrap"]] == [
        {"name": ENV["bootstrap"], "value": "kafka-internal:9093"}
    ]


@pytest.mark.parametrize(
    ("selector", "query"),
    [
        ({"matchLabels": {"b": "2", "a": "1"}}, "a=1,b=2"),
        (
            {
                "matchLabels": {"app": "x"},
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["a", "b"]},
                    {"key": "env", "operator": "NotIn", "values": ["dev"]},
                    {"key": "canary", "operator": "DoesNotExist"},
                    {"key": "team", "operator": "Exists"},
                ],
            },
            "app=x,tier in (a,b),env notin (dev),!canary,team",
        ),
    ],
)
def test_label_selectors_become_queries(selector: dict[str, Any], query: str) -> None:
    assert selector_string(selector) == query


@pytest.mark.parametrize(
    ("workload", "target", "problem"),
    [
        ("shop/ledger", "ledger-consumer", None),
        ("ledger", "ledger-consumer", "namespace/name"),
        ("shop/" + "x" * 64, "ledger-consumer", "label value"),
        ("shop/-ledger", "ledger-consumer", "label value"),
        ("shop/ledger", "", "scaleTargetRef"),
    ],
)
def test_a_workload_the_backend_cannot_label_is_named(
    workload: str, target: str, problem: str | None
) -> None:
    found = workload_problem(workload, target)
    assert found is None if problem is None else problem in (found or "")


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"lease_duration": 0}, "lease duration"),
        ({"lease_duration": 10, "renew_deadline": 10.0}, "renew deadline"),
        ({"renew_deadline": 5.0, "retry_period": 5.0}, "retry period"),
    ],
)
def test_lease_timings_that_could_overlap_two_leaders_are_refused(
    settings: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        LeaseSettings(**settings)


# --- serve -------------------------------------------------------------------------------------------


def serve_args(*extra: str) -> argparse.Namespace:
    return build_parser(argparse.ArgumentParser()).parse_args(
        ["--policy-dir", "policies", "--bootstrap-server", "k:9092", *extra]
    )


def test_serve_runs_handovers_in_kubernetes_with_a_lease(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    options, _ = serve_options(
        serve_args(
            "--handover-backend",
            "kubernetes",
            "--handover-kubeconfig",
            str(kubeconfig),
            "--handover-lease-namespace",
            "ops",
            "--handover-lease-name",
            "ledger-leader",
        ),
        {},
    )
    handover = handover_from_options(options)
    assert isinstance(handover, KubernetesHandover)
    assert (handover.lease_namespace, handover.lease_name) == ("ops", "ledger-leader")
    assert handover.kubeconfig == kubeconfig
    # The same from the environment, as a container would be configured without flags.
    env = {"LAGSCALER_HANDOVER_BACKEND": "kubernetes", "LAGSCALER_HANDOVER_LEASE_NAMESPACE": "ops"}
    from_env = handover_from_options(serve_options(serve_args(), env)[0])
    assert isinstance(from_env, KubernetesHandover)
    assert (from_env.lease_namespace, from_env.lease_name) == ("ops", "lagscaler-handover")
    # A state directory alone still means local processes, as before the backend flag existed.
    local = handover_from_options(serve_options(serve_args("--handover-state-dir", str(tmp_path)), {})[0])
    assert isinstance(local, LocalHandover)


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (("--handover-backend", "kubernetes", "--handover-state-dir", "d"), "--handover-state-dir"),
        (("--handover-backend", "kubernetes", "--handover-command", "ns/a=run"), "--handover-command"),
        (("--handover-kubeconfig", "k"), "--handover-kubeconfig belongs to --handover-backend kubernetes"),
        (("--handover-backend", "local"), "--handover-state-dir"),
        (("--handover-backend", "kubernetes"), "--handover-lease-namespace"),  # not in a pod
    ],
)
def test_a_handover_flag_for_the_other_backend_is_named(extra: tuple[str, ...], named: str) -> None:
    options, _ = serve_options(serve_args(*extra), {})
    with pytest.raises(UserError, match=named):
        handover_from_options(options)


def policy(name: str, *, kind: str = "Deployment", api_version: str = "apps/v1") -> Any:
    text = f"""
apiVersion: lagscaler.io/v1
kind: ScalingPolicy
metadata: {{name: {name}, namespace: shop}}
spec:
  mode: handover
  scaleTargetRef: {{name: {name}-consumer, kind: {kind}, apiVersion: {api_version}}}
  kafka: {{group: {name}, topics: [payments]}}
  maxLagSeconds: 30
  minReplicas: 2
  capacity: {{perReplica: 100}}
"""
    return parse_policy(text, f"{name}.yaml")


def test_serve_runs_in_kubernetes_only_the_policies_whose_deployment_it_can_clone() -> None:
    handover = KubernetesHandover(lease_namespace="ops")
    policies = [policy("ledger"), policy("orders", kind="StatefulSet")]
    specs = handover_workloads(policies, handover)
    assert [(s.workload, s.target, s.base_group, s.topics, s.initial_replicas) for s in specs] == [
        ("shop/ledger", "ledger-consumer", "ledger", ("payments",), 2)
    ]


def test_the_warm_up_deadline_covers_what_the_policy_says_a_warm_up_takes() -> None:
    """A stateful workload whose restore outlasts --handover-warmup-timeout would abort every handover."""
    stateful_text = """
apiVersion: lagscaler.io/v1
kind: ScalingPolicy
metadata: {name: sessions, namespace: shop}
spec:
  mode: handover
  scaleTargetRef: {name: sessions-consumer, kind: Deployment, apiVersion: apps/v1}
  kafka: {group: sessions, topics: [clicks]}
  maxLagSeconds: 120
  maxReplicas: 32
  startupSeconds: 40
  rebalanceStallSeconds: 15
  capacity: {perReplica: 2000}
  stateful: {stateBytes: 200Gi, restoreBytesPerSecond: 40Mi}
"""
    sessions = parse_policy(stateful_text, "sessions.yaml")
    handover = KubernetesHandover(lease_namespace="ops")
    (spec,) = handover_workloads([sessions], handover)
    # 200 GiB over at most 32 workers at 40 MiB/s: 160 s of restore, after 40 s start-up and 15 s join.
    assert spec.expected_warmup == pytest.approx(40 + 15 + 200 * 1024 / 32 / 40)
    settings = HandoverSettings(warmup_timeout=120.0)
    assert spec.machine(settings).warmup_timeout == pytest.approx(2 * spec.expected_warmup)
    # A stateless workload that warms up well within the flag's deadline keeps it.
    (plain,) = handover_workloads([policy("ledger")], handover)
    assert plain.machine(settings).warmup_timeout == 120.0
