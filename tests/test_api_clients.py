"""The real clients read us: the HPA's Go client (k8s.io/metrics external_metrics) and kubectl.

The Go program (tests/goclient) is built once from the Go module proxy and cached under
``~/.cache/lagscaler/goclient`` (``make setup`` builds it). It is configured like
kube-controller-manager's client (protobuf preferred) and presents the front-proxy certificate with
the aggregator's headers. kubectl uses a kubeconfig with an x509 client certificate.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import support
import yaml
from lagscaler_demo.harness import HPA_USER, LocalCluster

from lagscaler.core.hpa.served import (
    DESIRED_REPLICAS,
    GROUP_LABEL,
    LAG_MESSAGES,
    PRODUCE_RATE,
    SERVED_METRICS,
    TOPIC_LABEL,
    WORKLOAD_LABEL,
)
from lagscaler.edges.api import MetricsCache, MetricValue, WorkloadMetrics, parse_quantity, running_api

SAMPLED_AT = 1_760_000_000.0


@pytest.fixture(scope="module")
def goclient() -> Path:
    return support.goclient()


def _cache() -> MetricsCache:
    cache = MetricsCache(clock=lambda: SAMPLED_AT + 5)
    labels = {WORKLOAD_LABEL: "orders", GROUP_LABEL: "orders-consumers"}
    cache.publish(
        [
            WorkloadMetrics(
                "shop",
                "orders",
                SAMPLED_AT,
                (
                    MetricValue(DESIRED_REPLICAS, 2.5, labels),
                    MetricValue(PRODUCE_RATE, 1234.5, labels, window_seconds=60),
                    MetricValue(LAG_MESSAGES, 23000, {**labels, TOPIC_LABEL: "orders"}),
                    MetricValue(LAG_MESSAGES, 0.001, {**labels, TOPIC_LABEL: "orders-retry"}),
                ),
                max_age_seconds=60,
            )
        ]
    )
    return cache


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, LocalCluster]]:
    async with LocalCluster(tmp_path) as cluster:
        cluster.standin.allow(HPA_USER, verbs=["list"], resources=list(SERVED_METRICS))
        cluster.standin.allow("group:system:authenticated", verbs=["get"], resources=["*"])
        cluster.standin.allow("kubectl-user", verbs=["get", "list"], resources=["*"])
        async with running_api(cluster.settings(), _cache()) as api:
            yield api.url, cluster


async def _run(*command: str | Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *map(str, command), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def _go(goclient: Path, url: str, cluster: LocalCluster, *args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = await _run(
        goclient,
        "--server",
        url,
        "--ca",
        cluster.cluster_ca_file,
        "--cert",
        cluster.front_proxy.cert_file,
        "--key",
        cluster.front_proxy.key_file,
        "--user",
        HPA_USER,
        "--group",
        "system:authenticated",
        *args,
    )
    assert out, err
    return code, json.loads(out)


async def test_hpa_client_lists_metric_values(goclient: Path, served: tuple[str, LocalCluster]) -> None:
    url, cluster = served
    code, out = await _go(
        goclient,
        url,
        cluster,
        "--discovery",
        "--namespace",
        "shop",
        "--metric",
        LAG_MESSAGES,
        "--selector",
        f"{WORKLOAD_LABEL}=orders",
    )
    assert code == 0, out
    assert sorted(out["resources"]) == sorted(SERVED_METRICS)
    by_topic = {item["metricLabels"][TOPIC_LABEL]: item for item in out["items"]}
    assert by_topic["orders"]["value"] == "23k"
    assert by_topic["orders"]["milliValue"] == 23_000_000
    assert by_topic["orders-retry"]["milliValue"] == 1  # 0.001 survives as "1m"
    assert by_topic["orders"]["timestamp"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(SAMPLED_AT))
    # what the HPA sums, in milli-units, equals what we published
    assert sum(item["milliValue"] for item in out["items"]) == 23_000_001
    # client-go asked for protobuf like the HPA does, and decoded our JSON answer
    assert all("application/vnd.kubernetes.protobuf" in accept for accept in out["accept"])


async def test_hpa_client_reads_fractions_and_windows(
    goclient: Path, served: tuple[str, LocalCluster]
) -> None:
    url, cluster = served
    code, out = await _go(goclient, url, cluster, "--namespace", "shop", "--metric", DESIRED_REPLICAS)
    assert code == 0, out
    (item,) = out["items"]
    assert (item["value"], item["milliValue"]) == ("2500m", 2500)
    code, out = await _go(goclient, url, cluster, "--namespace", "shop", "--metric", PRODUCE_RATE)
    assert out["items"][0]["window"] == 60
    assert out["items"][0]["milliValue"] == 1_234_500


async def test_hpa_client_sees_kubernetes_errors(goclient: Path, served: tuple[str, LocalCluster]) -> None:
    url, cluster = served
    code, out = await _go(
        goclient,
        url,
        cluster,
        "--namespace",
        "shop",
        "--metric",
        DESIRED_REPLICAS,
        "--selector",
        f"{WORKLOAD_LABEL}=none",
    )
    assert code == 3
    assert (out["reason"], out["code"]) == ("NotFound", 404)
    assert "matches labelSelector" in out["error"]
    code, out = await _go(goclient, url, cluster, "--namespace", "shop", "--metric", "cpu")
    assert (out["reason"], out["code"]) == ("Forbidden", 403)  # the HPA's grant covers our metrics only


def _kubeconfig(url: str, cluster: LocalCluster, tmp_path: Path) -> Path:
    user = cluster.write_client(cluster.cluster_ca.issue_client("kubectl-user", ("devs",)), "kubectl-user")
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "l", "cluster": {"server": url, "certificate-authority": str(cluster.cluster_ca_file)}}
        ],
        "users": [
            {
                "name": "u",
                "user": {"client-certificate": str(user.cert_file), "client-key": str(user.key_file)},
            }
        ],
        "contexts": [{"name": "c", "context": {"cluster": "l", "user": "u"}}],
        "current-context": "c",
    }
    path = tmp_path / "kubectl.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


async def test_kubectl_get_raw(served: tuple[str, LocalCluster], tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    support.need_tool(
        kubectl is not None,
        "kubectl is not installed (Debian: apt-get install kubernetes-client; make test-deps does it)",
    )
    assert kubectl is not None
    url, cluster = served
    kubeconfig = _kubeconfig(url, cluster, tmp_path)
    base = (kubectl, "--kubeconfig", kubeconfig, "get", "--raw")
    code, out, err = await _run(*base, "/apis/external.metrics.k8s.io/v1beta1")
    assert code == 0, err
    assert json.loads(out)["kind"] == "APIResourceList"
    code, out, err = await _run(*base, "/apis")
    assert code == 0, err
    assert json.loads(out)["groups"][0]["name"] == "external.metrics.k8s.io"
    path = f"/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/{DESIRED_REPLICAS}?labelSelector=lagscaler.io%2Fworkload%3Dorders"
    code, out, err = await _run(*base, path)
    assert code == 0, err
    (item,) = json.loads(out)["items"]
    assert parse_quantity(item["value"]) == Decimal("2.5")
    code, out, err = await _run(*base, path.replace("%3Dorders", "%3Dmissing"))
    assert code != 0
    assert "NotFound" in err
    code, out, err = await _run(*base, path.replace("%3Dorders", "%3D%3D%3D"))
    assert code != 0
    assert "BadRequest" in err
