"""lagscaler behind the real aggregator: registered by the chart's objects, discovered, documented.

What a cluster operator relies on: after installing the chart, ``kubectl api-resources`` lists the
metrics, ``/openapi/v3`` carries the group, the aggregator's own fetches are not refused, and the
ServiceAccount the chart creates may do exactly what lagscaler needs and nothing more.
"""

from __future__ import annotations

import json

import pytest
from support import eventually

from .adapter import GV, ChartInstall, Serve, granted_rules
from .cluster import ControlPlane

pytestmark = [pytest.mark.controlplane, pytest.mark.kafka, pytest.mark.slow]

METRICS = {
    "lagscaler_desired_replicas",
    "lagscaler_lag_messages",
    "lagscaler_lag_seconds",
    "lagscaler_produce_rate",
}


async def test_discovery_through_the_aggregator(control_plane: ControlPlane, serve: Serve) -> None:
    listing = control_plane.raw(GV)
    assert listing["kind"] == "APIResourceList"
    assert {r["name"] for r in listing["resources"]} == METRICS

    def listed() -> bool:
        out = control_plane.kubectl("api-resources", "--api-group=external.metrics.k8s.io", "-o", "name")
        return {line.split(".", 1)[0] for line in out.split()} >= METRICS

    # kubectl reads the aggregated discovery document, which the aggregator refreshes on its own
    await eventually(listed, within=90, what="kubectl api-resources to list lagscaler's metrics")


async def test_openapi_v3_carries_the_group_and_v2_is_not_refused(
    control_plane: ControlPlane, serve: Serve
) -> None:
    key = "apis/external.metrics.k8s.io/v1beta1"

    def indexed() -> bool:
        return key in control_plane.raw("/openapi/v3")["paths"]

    await eventually(indexed, within=90, what=f"/openapi/v3 to list {key}")
    document = control_plane.raw("/openapi/v3/" + key)
    assert any(path.startswith("/" + key) for path in document["paths"])
    # The aggregator merges /openapi/v2 on demand: asking for it makes it fetch ours as
    # system:aggregator (no groups). It must be neither refused nor missing (a 404 is tolerated
    # but warned about on every merge).
    merged = control_plane.raw("/openapi/v2")
    assert f"{GV}/namespaces/{{namespace}}/{{metric}}" in merged["paths"]
    log = control_plane.log("kube-apiserver").splitlines()
    assert [line for line in log if "system:aggregator" in line and "cannot" in line] == []
    assert [
        line
        for line in log
        if "failed to download v1beta1.external.metrics.k8s.io" in line and "not found" in line
    ] == []


def _rules(control_plane: ControlPlane, subject: str) -> set[str]:
    return granted_rules(control_plane, subject, "kube-system")


async def test_the_chart_grants_exactly_what_lagscaler_needs(
    control_plane: ControlPlane, chart: ChartInstall, serve: Serve
) -> None:
    # Enough: lagscaler (ConfigMap watch, TokenReview, SubjectAccessReview) never met a 403 so far.
    await eventually(
        lambda: any(
            (e["event"], e.get("why")) == ("authentication settings reloaded", "ConfigMap changed")
            for e in serve.events()
        ),
        within=60,
        what="the ConfigMap",
    )
    assert serve.forbidden_lines() == []
    # Nothing more: compared with a ServiceAccount that has no bindings, the chart's may create
    # TokenReviews and SubjectAccessReviews and read one ConfigMap in kube-system, and that is all.
    control_plane.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "bare", "namespace": "lagscaler"},
            }
        ]
    )
    granted = _rules(control_plane, f"system:serviceaccount:lagscaler:{chart.service_account}")
    baseline = _rules(control_plane, "system:serviceaccount:lagscaler:bare")
    extra = sorted(granted - baseline)
    assert [line.split(" ")[0] for line in extra] == [
        "configmaps",
        "subjectaccessreviews.authorization.k8s.io",
        "tokenreviews.authentication.k8s.io",
    ], extra
    configmap = next(line for line in extra if line.startswith("configmaps"))
    assert "[extension-apiserver-authentication]" in configmap
    assert "[get list watch]" in configmap
    # And no object grants the HPA controller anything: Kubernetes' own bootstrap role for it
    # already covers external.metrics.k8s.io, and the loop test below scales without more.
    names = {
        o["metadata"]["name"] for o in chart.objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")
    }
    assert not any("hpa" in name or "external-metrics" in name for name in names), names


def test_the_hpa_controller_may_read_external_metrics_by_bootstrap_rbac(control_plane: ControlPlane) -> None:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
            "groups": [
                "system:serviceaccounts",
                "system:serviceaccounts:kube-system",
                "system:authenticated",
            ],
            "resourceAttributes": {
                "namespace": "any",
                "verb": "list",
                "group": "external.metrics.k8s.io",
                "resource": "lagscaler_desired_replicas",
            },
        },
    }
    answer = json.loads(control_plane.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(review)))
    assert answer["status"]["allowed"] is True
