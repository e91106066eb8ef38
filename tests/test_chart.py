"""The Helm chart: rendered offline with Helm's own SDK, checked against Kubernetes' schemas.

What a cluster operator relies on: the APIService trusts exactly the CA that signed the serving
certificate, the pod is locked down, bad values are refused with a message naming the key, and
every rendered object is valid for the Kubernetes version we claim.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from helm_python.chart import Chart

CHART = Path(__file__).resolve().parents[1] / "charts" / "lagscaler"
MINIMAL: dict[str, Any] = {"kafka": {"bootstrapServers": "kafka.kafka.svc:9092"}}
NAMESPACE = "autoscaling"
# Kinds kubernetes-validate has no schema for (CRDs of cert-manager and prometheus-operator).
CUSTOM_KINDS = {"Certificate", "ServiceMonitor", "PrometheusRule"}


def render(
    values: dict[str, Any] | None = None, *, name: str = "ls", namespace: str = NAMESPACE
) -> list[dict[str, Any]]:
    chart = Chart.load(str(CHART))
    try:
        files = chart.render(
            values if values is not None else MINIMAL, name=name, namespace=namespace, is_install=True
        )
    finally:
        chart.close()
    docs: list[dict[str, Any]] = []
    for filename, text in files.items():
        if filename.endswith(".txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def one(docs: list[dict[str, Any]], kind: str, name_part: str = "") -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name_part in d["metadata"]["name"]]
    assert len(found) == 1, (
        f"expected one {kind} named *{name_part}*, got {[d['metadata']['name'] for d in found]}"
    )
    return found[0]


def with_values(**overrides: Any) -> dict[str, Any]:
    values = copy.deepcopy(MINIMAL)
    values.update(overrides)
    return values


def test_lint_is_clean_in_strict_mode() -> None:
    report = helm.lint(str(CHART), MINIMAL, strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == []
    assert problems == []


@pytest.mark.parametrize(
    "values",
    [
        MINIMAL,
        with_values(
            networkPolicy={"enabled": True, "metricsFrom": [{"matchLabels": {"name": "monitoring"}}]},
            metrics={"port": 9090, "serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
            grafanaDashboard={"enabled": True},
            kafka={
                "bootstrapServers": "k:9093",
                "securityProtocol": "SASL_SSL",
                "sasl": {"mechanism": "SCRAM-SHA-512", "existingSecret": "kafka-user"},
                "tls": {"existingSecret": "kafka-ca", "caKey": "ca.crt"},
            },
            engineState={"enabled": True, "existingClaim": "lagscaler-state"},
        ),
        with_values(engineState={"enabled": True}),
        with_values(handover={"enabled": True, "namespaces": ["shop", "ledger"]}),
        with_values(
            certificates={
                "mode": "certManager",
                "certManager": {"issuerRef": {"name": "ca", "kind": "Issuer"}},
            }
        ),
    ],
    ids=["minimal", "everything-on", "state-in-emptydir", "handover", "cert-manager"],
)
def test_every_object_is_valid_kubernetes(values: dict[str, Any]) -> None:
    for doc in render(values):
        if doc["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, "1.32", strict=True)


def test_apiservice_trusts_the_ca_that_signed_the_serving_certificate() -> None:
    docs = render()
    secret = one(docs, "Secret", "serving-cert")
    api = one(docs, "APIService")
    assert api["metadata"]["name"] == "v1beta1.external.metrics.k8s.io"
    assert api["spec"]["service"]["name"] == "ls-lagscaler"
    assert "insecureSkipTLSVerify" not in api["spec"]
    assert api["spec"]["caBundle"] == secret["data"]["ca.crt"]

    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    public_key = ca.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert cert.signature_hash_algorithm is not None
    public_key.verify(
        cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm
    )
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    assert f"ls-lagscaler.{NAMESPACE}.svc" in names  # what the aggregator verifies


def test_pod_is_locked_down_and_probed_over_https() -> None:
    deployment = one(render(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "memory" in container["resources"]["limits"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["https"] != ports["metrics"]  # metrics stay off the aggregated API port
    assert deployment["spec"]["replicas"] == 2


def test_args_carry_kafka_security_from_secrets_not_values() -> None:
    values = with_values(
        kafka={
            "bootstrapServers": "k:9093",
            "securityProtocol": "SASL_SSL",
            "sasl": {"mechanism": "SCRAM-SHA-256", "existingSecret": "kafka-user"},
            "tls": {"existingSecret": "kafka-ca", "caKey": "ca.crt"},
        }
    )
    container = one(render(values), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert "--security-protocol=SASL_SSL" in args
    assert "--sasl-mechanism=SCRAM-SHA-256" in args
    assert "--sasl-password-file=/var/run/kafka-sasl/password" in args
    assert "--ssl-cafile=/var/run/kafka-tls/ca.crt" in args
    username = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}[
        "LAGSCALER_SASL_USERNAME"
    ]
    assert username == {"name": "kafka-user", "key": "username"}
    assert not any("password=" in a for a in args)


def test_policy_change_rolls_the_pods() -> None:
    policy = {"apiVersion": "lagscaler.io/v1", "kind": "ScalingPolicy", "metadata": {"name": "a"}, "spec": {}}
    first = one(render(with_values(policies={"a": policy})), "Deployment")
    changed = copy.deepcopy(policy)
    changed["spec"] = {"minReplicas": 2}
    second = one(render(with_values(policies={"a": changed})), "Deployment")
    key = "checksum/policies"
    assert (
        first["spec"]["template"]["metadata"]["annotations"][key]
        != second["spec"]["template"]["metadata"]["annotations"][key]
    )
    cm = one(render(with_values(policies={"a": policy})), "ConfigMap", "policies")
    assert yaml.safe_load(cm["data"]["a.yaml"]) == policy


def test_rbac_of_a_delegating_api_server_and_the_optional_hpa_grant() -> None:
    docs = render()
    delegator = one(docs, "ClusterRoleBinding", "auth-delegator")
    assert delegator["roleRef"]["name"] == "system:auth-delegator"
    reader = one(docs, "RoleBinding", "auth-reader")
    assert reader["metadata"]["namespace"] == "kube-system"
    # Kubernetes' bootstrap role already lets the HPA controller read external metrics (proven on
    # the real controller in tests/controlplane): the extra grant is opt-in.
    assert not [d for d in docs if "hpa-controller" in d["metadata"]["name"]]
    binding = one(render(with_values(hpaControllerRbac=True)), "ClusterRoleBinding", "hpa-controller")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "horizontal-pod-autoscaler", "namespace": "kube-system"}
    ]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "kafka"),
        (with_values(replicaCount=0), "replicaCount"),
        (with_values(sampler={"intervalSeconds": 1e300}), "intervalSeconds"),
        (with_values(unknownKey=1), "unknownKey"),
        (with_values(certificates={"mode": "certManager"}), "issuerRef"),
        (with_values(certificates={"mode": "secret", "secretName": "mine"}), "caBundle"),
        (with_values(certificates={"mode": "secret"}), "secretName"),
        (with_values(handover={"enabled": True}), "handover.namespaces"),
        (with_values(handover={"enabled": True, "namespaces": ["Not_A_Namespace"]}), "namespaces"),
    ],
    ids=[
        "no-kafka",
        "zero-replicas",
        "absurd-interval",
        "unknown-key",
        "cert-manager-no-issuer",
        "secret-no-ca",
        "secret-no-name",
        "handover-no-namespaces",
        "handover-bad-namespace",
    ],
)
def test_bad_values_are_refused_naming_the_key(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=message):
        render(values)


INJECTED = "x\n            - --authorization-always-allow\n            - --y"


@pytest.mark.parametrize(
    "values",
    [
        {"kafka": {"bootstrapServers": INJECTED}},
        {"kafka": {"bootstrapServers": "k:9092", "tls": {"existingSecret": "t", "caKey": INJECTED}}},
        {"kafka": {"bootstrapServers": "k:9092", "tls": {"existingSecret": "t", "certKey": INJECTED}}},
        {
            "kafka": {
                "bootstrapServers": "k:9092",
                "securityProtocol": "SASL_SSL",
                "sasl": {"mechanism": "PLAIN", "existingSecret": "s", "passwordKey": INJECTED},
            }
        },
        {"handover": {"enabled": True, "namespaces": ["shop"], "leaseName": INJECTED}},
    ],
    ids=["bootstrap", "ca-key", "cert-key", "sasl-password-key", "lease-name"],
)
def test_a_value_cannot_add_arguments_to_serve(values: dict[str, Any]) -> None:
    """An unquoted value rendered into the args list could add any flag: a handover.controlTopic with
    a newline and '- --authorization-always-allow' in it turned authorization of the metrics API off.
    Every string that reaches an argument is quoted: it stays one argument, whatever it holds."""
    args = one(render(with_values(**values)), "Deployment")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    assert "--authorization-always-allow" not in args
    assert sum("authorization-always-allow" in a for a in args) == 1  # inside the one quoted value


@pytest.mark.parametrize(
    ("handover", "message"),
    [
        ({"controlTopic": INJECTED}, "controlTopic"),
        ({"controlTopic": "ops handover"}, "controlTopic"),
        ({"controlTopic": ".."}, "controlTopic"),
        ({"controlTopic": "t" * 250}, "controlTopic"),
        ({"verifyTimeoutSeconds": 1e300}, "verifyTimeoutSeconds"),
        ({"revertBackoffSeconds": 1e300}, "revertBackoffSeconds"),
        ({"warmupTimeoutSeconds": 1e300}, "warmupTimeoutSeconds"),
        ({"fenceTimeoutSeconds": 31622401}, "fenceTimeoutSeconds"),
        ({"unschedulableGraceSeconds": 1e300}, "unschedulableGraceSeconds"),
        ({"failingGraceSeconds": 1e300}, "failingGraceSeconds"),
    ],
)
def test_handover_values_serve_would_refuse_are_refused_at_install(
    handover: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmError, match=message):
        render(with_values(handover={"enabled": True, "namespaces": ["shop"], **handover}))


def test_secret_mode_uses_the_given_ca_bundle() -> None:
    bundle = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n...").decode()
    docs = render(with_values(certificates={"mode": "secret", "secretName": "mine", "caBundle": bundle}))
    assert one(docs, "APIService")["spec"]["caBundle"] == bundle
    assert not [d for d in docs if d["kind"] == "Secret"]  # the user's Secret is not overwritten
    volumes = one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "serving-cert", "secret": {"secretName": "mine"}} in volumes


def test_container_args_are_accepted_by_lagscaler_serve() -> None:
    """The chart and the CLI must not drift apart: parse the rendered args with the real parser."""
    from lagscaler.cli import _Parser
    from lagscaler.cli.serve import build_parser

    values = with_values(
        kafka={
            "bootstrapServers": "k:9093",
            "securityProtocol": "SASL_SSL",
            "sasl": {"mechanism": "SCRAM-SHA-512", "existingSecret": "kafka-user"},
            "tls": {
                "existingSecret": "kafka-ca",
                "caKey": "ca.crt",
                "certKey": "tls.crt",
                "keyKey": "tls.key",
            },
        },
        engineState={"enabled": True},
    )
    pod = one(render(values), "Deployment")["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert args[0] == "serve"
    parsed = build_parser(_Parser(prog="lagscaler serve")).parse_args(args[1:])
    assert parsed.bootstrap_server == "k:9093"
    assert parsed.sasl_password_file == Path("/var/run/kafka-sasl/password")
    assert parsed.ssl_certfile == Path("/var/run/kafka-tls/tls.crt")
    assert parsed.policy_dir == Path("/etc/lagscaler/policies")
    assert parsed.secure_port == 6443
    assert parsed.metrics_port == 9090
    # One state file per pod, on the mounted volume; Kubernetes expands $(POD_NAME) from the env.
    assert parsed.state_file == Path("/var/lib/lagscaler/$(POD_NAME).npz")
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert {"name": "engine-state", "mountPath": "/var/lib/lagscaler"} in pod["containers"][0]["volumeMounts"]


def test_dashboard_plots_only_metrics_lagscaler_exports() -> None:
    """Every series the Grafana dashboard queries is one the service registers (no silent empty panels)."""
    import json
    import re

    from lagscaler.edges.observability import ServiceMetrics

    dashboard = json.loads((CHART / "dashboards" / "lagscaler.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    exported = {
        family.name + suffix
        for family in ServiceMetrics().registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    }
    for expr in exprs:
        names = set(re.findall(r"\b(lagscaler_[a-z_]+)", expr))
        assert names, expr
        for name in names:
            assert name in exported, f"{name} in {expr!r} is not exported"
    cm = one(render(with_values(grafanaDashboard={"enabled": True})), "ConfigMap", "dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["lagscaler.json"]) == dashboard


def test_policies_from_files_pass_through_and_load() -> None:
    """``helm --set-file policies.NAME=FILE`` gives the text; it reaches the pod as written and loads."""
    from lagscaler.core.policy import parse_policy

    text = (CHART.parents[1] / "policies" / "clickstream.yaml").read_text()
    cm = one(render(with_values(policies={"clickstream": text})), "ConfigMap", "policies")
    assert cm["data"]["clickstream.yaml"].strip() == text.strip()
    assert parse_policy(cm["data"]["clickstream.yaml"], "clickstream.yaml").name == "clickstream"


def test_handover_is_granted_nothing_unless_enabled_and_only_in_the_listed_namespaces() -> None:
    off = render()
    assert not [d for d in off if "handover" in d["metadata"]["name"]]
    assert not [
        a
        for a in one(off, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
        if "handover" in a
    ]

    docs = render(with_values(handover={"enabled": True, "namespaces": ["shop", "ledger"]}))
    roles = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in docs if d["kind"] == "Role"}
    bindings = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): d for d in docs if d["kind"] == "RoleBinding"
    }
    workload_rules = [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments"],
            "verbs": ["get", "list", "create", "patch", "delete"],
        },
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "patch", "delete"]},
    ]
    for namespace in ("shop", "ledger"):
        assert roles[(namespace, "ls-lagscaler-handover")]["rules"] == workload_rules
        binding = bindings[(namespace, "ls-lagscaler-handover")]
        assert binding["roleRef"]["name"] == "ls-lagscaler-handover"
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "ls-lagscaler", "namespace": NAMESPACE}
        ]
    lease = roles[(NAMESPACE, "ls-lagscaler-handover-lease")]
    assert lease["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["ls-lagscaler-handover"],
            "verbs": ["get", "update"],
        },
    ]
    # Nothing cluster-wide, and nothing in any other namespace.
    handover_objects = [d for d in docs if "handover" in d["metadata"]["name"]]
    assert {d["kind"] for d in handover_objects} == {"Role", "RoleBinding"}
    assert {d["metadata"]["namespace"] for d in handover_objects} == {"shop", "ledger", NAMESPACE}


def test_handover_args_are_accepted_by_lagscaler_serve() -> None:
    from lagscaler.cli import _Parser
    from lagscaler.cli.serve import build_parser, handover_from_options, serve_options
    from lagscaler.service.handover import KubernetesHandover

    values = with_values(
        handover={
            "enabled": True,
            "namespaces": ["shop"],
            "controlTopic": "ops.handover",
            "warmupTimeoutSeconds": 300,
            "fenceTimeoutSeconds": 8,
            "verifyTimeoutSeconds": 45,
            "revertBackoffSeconds": 90,
            "unschedulableGraceSeconds": 600,
            "failingGraceSeconds": 20,
        }
    )
    args = one(render(values), "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    parsed = build_parser(_Parser(prog="lagscaler serve")).parse_args(args[1:])
    handover = handover_from_options(serve_options(parsed, {})[0])
    assert isinstance(handover, KubernetesHandover)
    assert handover.lease_namespace == NAMESPACE
    assert handover.lease_name == "ls-lagscaler-handover"  # the name the lease Role allows
    assert handover.kubeconfig is None  # the pod's service account
    assert handover.settings.control_topic == "ops.handover"
    assert handover.settings.warmup_timeout == 300
    assert handover.settings.fence_timeout == 8
    assert (handover.settings.verify_timeout, handover.settings.revert_backoff) == (45, 90)
    assert (handover.settings.unschedulable_grace, handover.settings.failing_grace) == (600, 20)


# A string that breaks out of an unquoted scalar every way YAML allows: a newline and a less indented
# key, a colon, a flow mapping, both quotes, a backslash, a comment marker.
HOSTILE = "x\"'\\\n  injected: {a: b} # c\n- d"


def _pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def _subjects(docs: list[dict[str, Any]]) -> list[str]:
    return [
        s["name"] for d in docs if "subjects" in d for s in d["subjects"] if s["kind"] == "ServiceAccount"
    ]


@pytest.mark.parametrize(
    ("values", "found"),
    [
        ({"priorityClassName": HOSTILE}, lambda docs: [_pod(docs)["priorityClassName"]]),
        (
            {"image": {"repository": HOSTILE}},
            lambda docs: [
                _pod(docs)["containers"][0]["image"].removesuffix(":0.1.0"),
                one(docs, "Pod", "test-readyz")["spec"]["containers"][0]["image"].removesuffix(":0.1.0"),
            ],
        ),
        (
            {"image": {"repository": "r", "tag": HOSTILE}},
            lambda docs: [_pod(docs)["containers"][0]["image"].removeprefix("r:")],
        ),
        (
            {"serviceAccount": {"create": True, "name": HOSTILE}},
            lambda docs: [
                _pod(docs)["serviceAccountName"],
                one(docs, "ServiceAccount")["metadata"]["name"],
                *_subjects(docs),
            ],
        ),
        (
            {"serviceAccount": {"create": True, "annotations": {"iam": HOSTILE}}},
            lambda docs: [one(docs, "ServiceAccount")["metadata"]["annotations"]["iam"]],
        ),
        (
            {"podLabels": {"team": HOSTILE}, "podAnnotations": {"note": HOSTILE}},
            lambda docs: [
                one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]["team"],
                one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]["note"],
            ],
        ),
        (
            {"certificates": {"mode": "secret", "secretName": HOSTILE, "caBundle": HOSTILE}},
            lambda docs: [
                one(docs, "APIService")["spec"]["caBundle"],
                *[v["secret"]["secretName"] for v in _pod(docs)["volumes"] if v["name"] == "serving-cert"],
            ],
        ),
        (
            {"existingPolicyConfigMap": HOSTILE},
            lambda docs: [v["configMap"]["name"] for v in _pod(docs)["volumes"] if v["name"] == "policies"],
        ),
        (
            {
                "certificates": {
                    "mode": "certManager",
                    "certManager": {"issuerRef": {"name": HOSTILE}, "duration": HOSTILE},
                }
            },
            lambda docs: [
                one(docs, "Certificate")["spec"]["duration"],
                one(docs, "Certificate")["spec"]["issuerRef"]["name"],
            ],
        ),
        (
            {
                "grafanaDashboard": {
                    "enabled": True,
                    "namespace": HOSTILE,
                    "label": HOSTILE,
                    "labelValue": HOSTILE,
                }
            },
            lambda docs: [
                one(docs, "ConfigMap", "dashboard")["metadata"]["namespace"],
                *[k for k in one(docs, "ConfigMap", "dashboard")["metadata"]["labels"] if "injected" in k],
                one(docs, "ConfigMap", "dashboard")["metadata"]["labels"][HOSTILE],
            ],
        ),
        (
            {"networkPolicy": {"enabled": True, "kafkaEgress": {"cidrs": [HOSTILE], "ports": [9092]}}},
            lambda docs: [one(docs, "NetworkPolicy")["spec"]["egress"][2]["to"][0]["ipBlock"]["cidr"]],
        ),
        (
            {"podDisruptionBudget": {"enabled": True, "minAvailable": HOSTILE}},
            lambda docs: [one(docs, "PodDisruptionBudget")["spec"]["minAvailable"]],
        ),
        (
            {"handover": {"enabled": True, "namespaces": ["shop"], "leaseName": HOSTILE}},
            lambda docs: [
                r["resourceNames"][0]
                for r in one(docs, "Role", "handover-lease")["rules"]
                if "resourceNames" in r
            ],
        ),
        (
            {
                "metrics": {
                    "port": 9090,
                    "serviceMonitor": {"enabled": True, "interval": HOSTILE, "labels": {"l": HOSTILE}},
                    "prometheusRule": {"enabled": True, "labels": {"l": HOSTILE}},
                }
            },
            lambda docs: [
                one(docs, "ServiceMonitor")["spec"]["endpoints"][0]["interval"],
                one(docs, "ServiceMonitor")["metadata"]["labels"]["l"],
                one(docs, "PrometheusRule")["metadata"]["labels"]["l"],
            ],
        ),
        (
            {
                "kafka": {
                    "bootstrapServers": "k:9092",
                    "securityProtocol": "SASL_SSL",
                    "sasl": {"mechanism": "PLAIN", "existingSecret": HOSTILE, "usernameKey": HOSTILE},
                },
                "engineState": {"enabled": True, "existingClaim": HOSTILE},
            },
            lambda docs: [
                _pod(docs)["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"],
                _pod(docs)["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["key"],
                *[v["secret"]["secretName"] for v in _pod(docs)["volumes"] if v["name"] == "kafka-sasl"],
                *[
                    v["persistentVolumeClaim"]["claimName"]
                    for v in _pod(docs)["volumes"]
                    if v["name"] == "engine-state"
                ],
            ],
        ),
        ({"nodeSelector": {"pool": HOSTILE}}, lambda docs: [_pod(docs)["nodeSelector"]["pool"]]),
    ],
    ids=[
        "priority-class",
        "image-repository",
        "image-tag",
        "service-account-name",
        "service-account-annotations",
        "pod-labels-and-annotations",
        "secret-name-and-ca-bundle",
        "policy-configmap",
        "cert-manager",
        "grafana-dashboard",
        "network-policy-cidr",
        "pdb-min-available",
        "handover-lease-name",
        "service-monitor-and-rule",
        "kafka-secrets-and-state-claim",
        "node-selector",
    ],
)
def test_a_string_value_renders_as_exactly_that_string(
    values: dict[str, Any], found: Callable[[list[dict[str, Any]]], list[Any]]
) -> None:
    """Every string a user gives reaches its object as one scalar holding exactly that string: an
    unquoted one could add keys or list items (priorityClassName with a newline set arbitrary pod
    fields) or fail the render with a YAML error nobody can trace back to a value."""
    docs = render(with_values(**values))
    seen = found(docs)
    assert seen
    assert seen == [HOSTILE] * len(seen)
    assert not any("injected" in d for d in docs)  # no key escaped to the top of an object


def test_a_policy_string_renders_as_exactly_that_string() -> None:
    """A policy given as text (``--set-file``) whose first line is indented set the block scalar's
    indentation, so a less indented line after it ended the block: a key of its own in the ConfigMap."""
    text = "  first: indented\nsecond: 1\nthird.yaml: injected\n"
    cm = one(render(with_values(policies={"orders": text})), "ConfigMap", "policies")
    assert cm["data"] == {"orders.yaml": text}


def test_pdb_min_available_keeps_its_type() -> None:
    assert one(render(), "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    pdb = one(
        render(with_values(podDisruptionBudget={"enabled": True, "minAvailable": "50%"})),
        "PodDisruptionBudget",
    )
    assert pdb["spec"]["minAvailable"] == "50%"
