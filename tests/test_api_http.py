"""The external metrics API over real HTTPS on loopback, called as the aggregator calls it.

Every request here goes through TLS with the front-proxy client certificate and ``X-Remote-*``
headers, authentication, a SubjectAccessReview answered by the kube-apiserver stand-in, and the app.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from lagscaler_demo.harness import HPA_USER, LocalCluster, aggregator_headers

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
from lagscaler.edges.api import (
    CheckResult,
    HealthChecks,
    MetricsCache,
    MetricValue,
    WorkloadMetrics,
    parse_quantity,
    running_api,
)
from lagscaler.edges.observability import ServiceMetrics

GV = "/apis/external.metrics.k8s.io/v1beta1"
T0 = 1_750_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def workload(
    name: str,
    namespace: str = "shop",
    *,
    desired: float = 3,
    lag: float = 1200,
    group: str | None = None,
    topics: tuple[str, ...] = ("orders",),
    sampled_at: float = T0,
    max_age: float = 60,
    stale_values: tuple[MetricValue, ...] | None = None,
) -> WorkloadMetrics:
    labels = {WORKLOAD_LABEL: name, GROUP_LABEL: group or f"{name}-group"}
    values = [
        MetricValue(DESIRED_REPLICAS, desired, labels),
        MetricValue(LAG_SECONDS, 4.5, labels, window_seconds=30),
        MetricValue(PRODUCE_RATE, 250.25, labels, window_seconds=60),
    ]
    values += [MetricValue(LAG_MESSAGES, lag / len(topics), {**labels, TOPIC_LABEL: t}) for t in topics]
    return WorkloadMetrics(namespace, name, sampled_at, tuple(values), max_age, stale_values)


@dataclass
class Api:
    url: str
    session: aiohttp.ClientSession
    cache: MetricsCache
    clock: FakeClock
    cluster: LocalCluster
    readiness: HealthChecks
    metrics: ServiceMetrics

    async def get(
        self, path: str, *, headers: list[tuple[str, str]] | None = None, **params: str
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        sent = aggregator_headers() if headers is None else headers
        async with self.session.get(self.url + path, headers=sent, params=params) as response:
            if response.content_type == "application/json":
                body: Any = await response.json()
            else:
                body = await response.text()
            return response.status, body, response


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    clock = FakeClock()
    cache = MetricsCache(clock=clock)
    cache.publish([workload("orders"), workload("billing", topics=("invoices", "refunds"), lag=900)])
    readiness = HealthChecks()
    metrics = ServiceMetrics()
    async with LocalCluster(tmp_path) as cluster:
        cluster.standin.allow(HPA_USER, verbs=["list"], resources=["*"])
        cluster.standin.allow("group:system:authenticated", verbs=["get"], resources=["*"])
        settings = cluster.settings()
        async with running_api(settings, cache, readiness=readiness, metrics=metrics) as running:
            connector = aiohttp.TCPConnector(ssl=cluster.client_context(cluster.front_proxy))
            async with aiohttp.ClientSession(connector=connector) as session:
                yield Api(running.url, session, cache, clock, cluster, readiness, metrics)


def assert_status(body: Any, code: int, reason: str) -> None:
    assert body["kind"] == "Status"
    assert body["apiVersion"] == "v1"
    assert body["status"] == "Failure"
    assert body["code"] == code
    assert body["reason"] == reason
    assert body["message"]


async def test_discovery_documents(api: Api) -> None:
    status, body, response = await api.get("/apis")
    assert status == 200
    assert response.content_type == "application/json"
    assert body["kind"] == "APIGroupList"
    assert body["groups"][0]["name"] == "external.metrics.k8s.io"
    assert body["groups"][0]["preferredVersion"]["groupVersion"] == "external.metrics.k8s.io/v1beta1"

    status, body, _ = await api.get("/apis/external.metrics.k8s.io")
    assert status == 200
    assert body["kind"] == "APIGroup"
    assert body["versions"][0]["version"] == "v1beta1"

    status, body, _ = await api.get(GV)
    assert status == 200
    assert body["kind"] == "APIResourceList"
    assert body["groupVersion"] == "external.metrics.k8s.io/v1beta1"
    assert {r["name"] for r in body["resources"]} == set(SERVED_METRICS)
    for resource in body["resources"]:
        assert resource["namespaced"] is True
        assert resource["kind"] == "ExternalMetricValueList"
        assert resource["verbs"] == ["get"]


async def test_metric_value_selected_by_workload_label(api: Api) -> None:
    status, body, _ = await api.get(
        f"{GV}/namespaces/shop/{DESIRED_REPLICAS}", labelSelector=f"{WORKLOAD_LABEL}=orders"
    )
    assert status == 200
    assert body["kind"] == "ExternalMetricValueList"
    assert body["apiVersion"] == "external.metrics.k8s.io/v1beta1"
    (item,) = body["items"]
    assert item["metricName"] == DESIRED_REPLICAS
    assert item["metricLabels"] == {WORKLOAD_LABEL: "orders", GROUP_LABEL: "orders-group"}
    assert item["value"] == "3"
    assert (
        dt.datetime.strptime(item["timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp() == T0
    )
    assert "window" not in item


async def test_quantities_are_canonical_and_windows_served(api: Api) -> None:
    _, body, _ = await api.get(
        f"{GV}/namespaces/shop/{PRODUCE_RATE}", labelSelector=f"{WORKLOAD_LABEL}=orders"
    )
    (item,) = body["items"]
    assert item["value"] == "250250m"
    assert item["window"] == 60
    _, body, _ = await api.get(
        f"{GV}/namespaces/shop/{LAG_SECONDS}", labelSelector=f"{WORKLOAD_LABEL}=orders"
    )
    assert body["items"][0]["value"] == "4500m"


async def test_raw_lag_per_topic_sums_to_the_total_for_group_and_topic_selectors(api: Api) -> None:
    _, body, _ = await api.get(
        f"{GV}/namespaces/shop/{LAG_MESSAGES}", labelSelector=f"{GROUP_LABEL}=billing-group"
    )
    assert sorted(i["metricLabels"][TOPIC_LABEL] for i in body["items"]) == ["invoices", "refunds"]
    assert sum(parse_quantity(i["value"]) for i in body["items"]) == 900
    _, body, _ = await api.get(
        f"{GV}/namespaces/shop/{LAG_MESSAGES}", labelSelector=f"{TOPIC_LABEL} in (orders,refunds)"
    )
    assert sorted((i["metricLabels"][WORKLOAD_LABEL], i["value"]) for i in body["items"]) == [
        ("billing", "450"),
        ("orders", "1200"),
    ]


async def test_set_based_and_negative_selectors(api: Api) -> None:
    _, body, _ = await api.get(
        f"{GV}/namespaces/shop/{DESIRED_REPLICAS}", labelSelector=f"{WORKLOAD_LABEL} notin (orders)"
    )
    assert [i["metricLabels"][WORKLOAD_LABEL] for i in body["items"]] == ["billing"]
    _, body, _ = await api.get(
        f"{GV}/namespaces/shop/{DESIRED_REPLICAS}", labelSelector=f"{WORKLOAD_LABEL}!=billing"
    )
    assert [i["metricLabels"][WORKLOAD_LABEL] for i in body["items"]] == ["orders"]
    _, body, _ = await api.get(f"{GV}/namespaces/shop/{DESIRED_REPLICAS}")
    assert len(body["items"]) == 2


async def test_bad_selector_is_400_naming_the_problem(api: Api) -> None:
    status, body, _ = await api.get(
        f"{GV}/namespaces/shop/{DESIRED_REPLICAS}", labelSelector="lagscaler.io/workload in orders"
    )
    assert status == 400
    assert_status(body, 400, "BadRequest")
    assert "expected: '('" in body["message"]
    status, body, _ = await api.get(f"{GV}/namespaces/shop/{DESIRED_REPLICAS}", labelSelector="x=" + "a" * 64)
    assert status == 400
    assert "no more than 63 characters" in body["message"]


async def test_not_found_cases_are_status_404(api: Api) -> None:
    status, body, _ = await api.get(f"{GV}/namespaces/shop/cpu_usage")
    assert status == 404
    assert "not served" in body["message"]
    assert_status(body, 404, "NotFound")
    status, body, _ = await api.get(f"{GV}/namespaces/elsewhere/{DESIRED_REPLICAS}")
    assert status == 404
    assert 'namespace "elsewhere"' in body["message"]
    # nothing matches: a 404 that says what matched nothing, not an empty list (the HPA errors on both)
    status, body, _ = await api.get(
        f"{GV}/namespaces/shop/{DESIRED_REPLICAS}", labelSelector=f"{WORKLOAD_LABEL}=nope"
    )
    assert status == 404
    assert "matches labelSelector" in body["message"]
    assert "nope" in body["message"]
    status, body, _ = await api.get("/apis/other.group/v1")
    assert_status(body, 404, "NotFound")
    status, body, _ = await api.get(f"{GV}/namespaces/shop/{DESIRED_REPLICAS}/extra")
    assert_status(body, 404, "NotFound")


async def test_wrong_method_watch_and_accept_get_status(api: Api) -> None:
    async with api.session.post(api.url + GV, headers=aggregator_headers()) as response:
        body = await response.json()
    assert response.status in (403, 405)  # POST maps to verb "create", which the HPA's grant lacks
    assert body["kind"] == "Status"
    api.cluster.standin.allow(HPA_USER, verbs=["create"], resources=["*"])
    async with api.session.post(
        api.url + GV + "/namespaces/shop/x", headers=aggregator_headers()
    ) as response:
        body = await response.json()
    assert response.status == 405
    assert_status(body, 405, "MethodNotAllowed")
    status, body, _ = await api.get(f"{GV}/namespaces/shop/{DESIRED_REPLICAS}", watch="true")
    assert status in (403, 405)  # verb "watch": not granted, and not supported either
    status, body, _ = await api.get(GV, headers=[*aggregator_headers(), ("Accept", "text/html")])
    assert status == 406
    assert_status(body, 406, "NotAcceptable")
    status, body, _ = await api.get(
        GV, headers=[*aggregator_headers(), ("Accept", "application/vnd.kubernetes.protobuf, */*")]
    )
    assert status == 200
    assert body["kind"] == "APIResourceList"


async def test_stale_without_fallback_is_503_and_freezes(api: Api) -> None:
    api.clock.now = T0 + 61
    status, body, response = await api.get(
        f"{GV}/namespaces/shop/{DESIRED_REPLICAS}", labelSelector=f"{WORKLOAD_LABEL}=orders"
    )
    assert status == 503
    assert_status(body, 503, "ServiceUnavailable")
    assert "shop/orders" in body["message"]
    assert "is 61s old, over fallback.maxAgeSeconds=60" in body["message"]
    assert "fallback.action is error" in body["message"]
    assert "no fallback" not in body["message"]  # the policy has one: it says "error"
    # no Retry-After: client-go would retry it 10 times and hold the HPA's sync instead of failing it
    assert "Retry-After" not in response.headers
    assert "retryAfterSeconds" not in body["details"]
    api.clock.now = T0 + 60.04  # rounding must not make it read "60s old, over ... 60"
    status, body, _ = await api.get(
        f"{GV}/namespaces/shop/{DESIRED_REPLICAS}", labelSelector=f"{WORKLOAD_LABEL}=orders"
    )
    assert status == 503
    assert "is 60.04s old, over fallback.maxAgeSeconds=60" in body["message"]
    api.clock.now = T0 + 60
    status, _, _ = await api.get(
        f"{GV}/namespaces/shop/{DESIRED_REPLICAS}", labelSelector=f"{WORKLOAD_LABEL}=orders"
    )
    assert status == 200


async def test_stale_with_fallback_serves_the_fallback_value(api: Api) -> None:
    labels = {WORKLOAD_LABEL: "orders", GROUP_LABEL: "orders-group"}
    fallback = (MetricValue(DESIRED_REPLICAS, 5, labels),)
    api.cache.publish([workload("orders", stale_values=fallback), workload("billing", sampled_at=T0 + 100)])
    api.clock.now = T0 + 120
    status, body, _ = await api.get(
        f"{GV}/namespaces/shop/{DESIRED_REPLICAS}", labelSelector=f"{WORKLOAD_LABEL}=orders"
    )
    assert status == 200
    assert body["items"][0]["value"] == "5"
    # a metric the fallback does not cover is unavailable rather than silently missing
    status, body, _ = await api.get(
        f"{GV}/namespaces/shop/{LAG_SECONDS}", labelSelector=f"{WORKLOAD_LABEL}=orders"
    )
    assert status == 503
    assert f"the policy's fallback serves no {LAG_SECONDS}" in body["message"]
    # one stale workload in a multi-workload answer fails the whole answer: the HPA sums items
    api.cache.publish([workload("orders"), workload("billing", sampled_at=T0 + 100)])
    status, body, _ = await api.get(f"{GV}/namespaces/shop/{DESIRED_REPLICAS}")
    assert status == 503
    assert "shop/orders" in body["message"]
    assert "billing" not in body["message"]


async def test_publish_swaps_what_is_served(api: Api) -> None:
    api.cache.publish([workload("orders", desired=7.25)])
    _, body, _ = await api.get(f"{GV}/namespaces/shop/{DESIRED_REPLICAS}")
    assert [i["value"] for i in body["items"]] == ["7250m"]


async def test_health_paths_are_anonymous_and_report_checks(api: Api) -> None:
    connector = aiohttp.TCPConnector(ssl=api.cluster.client_context())
    async with aiohttp.ClientSession(connector=connector) as anonymous:
        for path in ("/healthz", "/livez", "/readyz"):
            async with anonymous.get(api.url + path) as response:
                assert response.status == 200
                assert await response.text() == "ok"
        async with anonymous.get(api.url + GV) as response:
            assert response.status == 401
            assert_status(await response.json(), 401, "Unauthorized")
        state = {"ok": False}
        api.readiness.add("first-sample", lambda: CheckResult(state["ok"], "no sample cycle finished yet"))
        api.readiness.add(
            "policies", lambda: CheckResult(True, "2 loaded; invalid: bad.yaml:3:1 unknown key")
        )
        async with anonymous.get(api.url + "/readyz") as response:
            text = await response.text()
        assert response.status == 503
        assert "[-]first-sample failed: no sample cycle finished yet" in text
        assert text.endswith("readyz check failed\n")
        async with anonymous.get(api.url + "/readyz", params={"exclude": "first-sample"}) as response:
            assert response.status == 200
        state["ok"] = True
        async with anonymous.get(api.url + "/readyz?verbose") as response:
            text = await response.text()
        assert response.status == 200
        assert "[+]policies ok: 2 loaded; invalid: bad.yaml:3:1 unknown key" in text
        assert "[+]ping ok" in text
        async with anonymous.get(api.url + "/readyz/policies") as response:
            assert response.status == 200
        async with anonymous.get(api.url + "/readyz/nope") as response:
            assert response.status == 404


async def test_openapi_v3_index_and_group_version_document(api: Api) -> None:
    status, index, _ = await api.get("/openapi/v3")
    assert status == 200
    (key,) = index["paths"]
    assert key == "apis/external.metrics.k8s.io/v1beta1"
    url = index["paths"][key]["serverRelativeURL"]
    async with api.session.get(api.url + url, headers=aggregator_headers()) as response:
        document = await response.json()
        assert response.headers["Cache-Control"] == "public, immutable"
    assert document["openapi"].startswith("3.")
    assert all(path.startswith(GV) for path in document["paths"])
    assert f"{GV}/namespaces/{{namespace}}/{{metric}}" in document["paths"]
    # Swagger 2.0 for the aggregator's /openapi/v2 merge (a 404 makes it warn on every merge)
    status, v2, response = await api.get("/openapi/v2")
    assert status == 200
    assert v2["swagger"] == "2.0"
    assert set(v2["paths"]) == set(document["paths"])
    assert (
        v2["paths"][f"{GV}/namespaces/{{namespace}}/{{metric}}"]["get"]["operationId"]
        == "listExternalMetricValues"
    )
    status, _, _ = await api.get(
        "/openapi/v2", headers=[*aggregator_headers(), ("If-None-Match", response.headers["Etag"])]
    )
    assert status == 304


async def test_prometheus_endpoint_reports_api_latency_and_auth_failures(api: Api) -> None:
    await api.get(GV)
    await api.get(GV, headers=[])  # front-proxy certificate but no user header, no other credentials
    text = api.metrics.exposition().decode()
    assert (
        'lagscaler_api_request_duration_seconds_count{code="200",method="GET",route="/apis/external.metrics.k8s.io/v1beta1"} 1.0'
        in text
    )
    assert 'lagscaler_api_auth_failures_total{reason="anonymous"} 1.0' in text


async def test_a_repeated_answer_turns_stale_on_time(api: Api) -> None:
    path, selector = f"{GV}/namespaces/shop/{DESIRED_REPLICAS}", f"{WORKLOAD_LABEL}=orders"
    for _ in range(2):  # the second answer may be the remembered one
        status, _, _ = await api.get(path, labelSelector=selector)
        assert status == 200
    api.clock.now = T0 + 60.5
    status, body, _ = await api.get(path, labelSelector=selector)
    assert status == 503
    assert "shop/orders" in body["message"]
