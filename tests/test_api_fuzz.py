"""Schemathesis against the shipped OpenAPI document on a live loopback server: no 5xx, no hang.

Positive and negative cases for every operation go through TLS with the front-proxy certificate,
authentication and a (cached) SubjectAccessReview, and each answer is checked against the document
(status codes, content types, body schemas). The server runs on its own event loop in a thread
because schemathesis' test functions are synchronous.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, example, given, settings
from lagscaler_demo.harness import HPA_USER, LocalCluster, aggregator_headers
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from lagscaler.core.hpa.served import DESIRED_REPLICAS, GROUP_LABEL, LAG_MESSAGES, TOPIC_LABEL, WORKLOAD_LABEL
from lagscaler.edges.api import (
    CheckResult,
    HealthChecks,
    MetricsCache,
    MetricValue,
    WorkloadMetrics,
    load_openapi,
    running_api,
)
from lagscaler.edges.observability import ServiceMetrics

schema = schemathesis.openapi.from_dict(load_openapi())


@dataclass
class LiveApi:
    url: str
    session: requests.Session
    metrics: ServiceMetrics


def _cache() -> MetricsCache:
    cache = MetricsCache()
    now = time.time()
    labels = {WORKLOAD_LABEL: "orders", GROUP_LABEL: "orders-group"}
    cache.publish(
        [
            WorkloadMetrics(
                "default",
                "orders",
                now,
                (
                    MetricValue(DESIRED_REPLICAS, 3.5, labels),
                    MetricValue(LAG_MESSAGES, 1e6, {**labels, TOPIC_LABEL: "orders"}, window_seconds=30),
                ),
                max_age_seconds=86400,
            )
        ]
    )
    return cache


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    directory: Path = tmp_path_factory.mktemp("fuzz")
    started = threading.Event()
    stop: asyncio.Event | None = None
    loop = asyncio.new_event_loop()
    found: dict[str, object] = {}
    metrics = ServiceMetrics()

    async def serve() -> None:
        nonlocal stop
        stop = asyncio.Event()
        readiness = HealthChecks()
        readiness.add("policies", lambda: CheckResult(True, "1 loaded"))
        async with LocalCluster(directory) as cluster:
            cluster.standin.allow(HPA_USER)
            async with running_api(cluster.settings(), _cache(), readiness=readiness, metrics=metrics) as api:
                found["url"], found["cluster"] = api.url, cluster
                started.set()
                await stop.wait()

    def run() -> None:
        try:
            loop.run_until_complete(serve())
        finally:
            started.set()

    thread = threading.Thread(target=run, name="fuzz-api", daemon=True)
    thread.start()
    assert started.wait(30)
    assert "url" in found, "the API did not start"
    cluster = found["cluster"]
    assert isinstance(cluster, LocalCluster)
    session = requests.Session()
    session.verify = str(cluster.cluster_ca_file)
    session.cert = (str(cluster.front_proxy.cert_file), str(cluster.front_proxy.key_file))
    try:
        yield LiveApi(str(found["url"]), session, metrics)
    finally:
        session.close()
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_no_server_errors_and_answers_match_the_document(case: schemathesis.Case, live_api: LiveApi) -> None:
    _call_and_validate(case, live_api)


def _call_and_validate(case: schemathesis.Case, live_api: LiveApi) -> None:
    headers = dict(aggregator_headers())
    response = case.call(
        base_url=live_api.url,
        session=live_api.session,
        headers=headers,
        timeout=10,
        verify=live_api.session.verify,
        cert=live_api.session.cert,
    )
    case.validate_response(
        response,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
        headers=headers,
    )


ROUTE = "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}"


def test_fuzzing_reached_the_handlers_and_hit_no_internal_error(live_api: LiveApi) -> None:
    """Fuzz cases get past TLS and auth to the handlers, and never need a 500.

    It fuzzes the metric values route itself (positive and negative cases) rather than relying on
    the test above having run first, so it holds when run alone or in any order.
    """

    operation = schema[ROUTE]["GET"]
    cases = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(GenerationMode.NEGATIVE)

    served = operation.Case(
        path_parameters={"namespace": "default", "metric": DESIRED_REPLICAS},
        query={"labelSelector": f"{WORKLOAD_LABEL}=orders"},
    )

    @given(case=cases)
    @example(case=served)  # the document's own example: a 200 whatever the draw
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    def fuzz(case: schemathesis.Case) -> None:
        _call_and_validate(case, live_api)

    fuzz()
    assert not live_api.metrics.registry.get_sample_value("lagscaler_api_internal_errors_total")
    route = ROUTE
    for code in ("200", "400", "404"):
        sample = live_api.metrics.registry.get_sample_value(
            "lagscaler_api_request_duration_seconds_count", {"route": route, "method": "GET", "code": code}
        )
        assert sample, f"the fuzzer never got a {code} from the metric values route"


def test_the_document_lists_exactly_the_served_metrics() -> None:
    from lagscaler.core.hpa.served import SERVED_METRICS

    operation = load_openapi()["paths"][
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}"
    ]
    (metric,) = (p for p in operation["get"]["parameters"] if p["name"] == "metric")
    assert metric["schema"]["enum"] == list(SERVED_METRICS)
