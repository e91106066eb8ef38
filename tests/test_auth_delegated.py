"""Each rule of delegated authentication and authorization, proven over real TLS on loopback.

What a caller can get wrong on its side (certificates from the wrong CA, expired, for the wrong
name or usage; forged headers) and what kube-apiserver cannot be made to do on demand (go down);
the kube-apiserver stand-in records each review so the tests can see who was asked about what.
Tokens, RBAC decisions, x509 users and discovery against the real kube-apiserver are in
tests/controlplane/test_authn.py and test_aggregation.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from lagscaler_demo.harness import FRONT_PROXY_NAME, HPA_USER, ClientCert, LocalCluster, aggregator_headers
from structlog.typing import EventDict
from support import eventually

from lagscaler.core.hpa.served import DESIRED_REPLICAS, WORKLOAD_LABEL
from lagscaler.edges.api import MetricsCache, MetricValue, WorkloadMetrics, running_api
from lagscaler.edges.kube import CertificateAuthority

GV = "/apis/external.metrics.k8s.io/v1beta1"
METRIC_PATH = f"{GV}/namespaces/shop/{DESIRED_REPLICAS}"


def _cache() -> MetricsCache:
    cache = MetricsCache()
    labels = {WORKLOAD_LABEL: "orders"}
    cache.publish(
        [
            WorkloadMetrics(
                "shop",
                "orders",
                dt.datetime.now(dt.UTC).timestamp(),
                (MetricValue(DESIRED_REPLICAS, 2, labels),),
                3600,
            )
        ]
    )
    return cache


@dataclass
class Setup:
    url: str
    cluster: LocalCluster

    async def get(
        self,
        path: str = METRIC_PATH,
        *,
        cert: ClientCert | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> tuple[int, Any]:
        connector = aiohttp.TCPConnector(ssl=self.cluster.client_context(cert))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(self.url + path, headers=headers or []) as response,
        ):
            return response.status, await response.json()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    async with LocalCluster(tmp_path) as local:
        local.standin.allow(HPA_USER, verbs=["list"], resources=[DESIRED_REPLICAS])
        yield local


@pytest.fixture
async def setup(cluster: LocalCluster) -> AsyncIterator[Setup]:
    async with running_api(cluster.settings(), _cache()) as api:
        yield Setup(api.url, cluster)


def _sar_users(cluster: LocalCluster) -> list[str]:
    return [review["spec"]["user"] for review in cluster.standin.access_reviews]


async def test_front_proxy_certificate_with_headers_is_the_hpa(setup: Setup) -> None:
    status, body = await setup.get(cert=setup.cluster.front_proxy, headers=aggregator_headers())
    assert status == 200
    assert body["items"][0]["value"] == "2"
    (review,) = setup.cluster.standin.access_reviews
    spec = review["spec"]
    assert spec["user"] == HPA_USER
    assert spec["groups"] == ["system:authenticated"]
    # the request-info rules: a GET on the metric collection is verb "list" on resource <metric>
    assert spec["resourceAttributes"] == {
        "namespace": "shop",
        "verb": "list",
        "group": "external.metrics.k8s.io",
        "version": "v1beta1",
        "resource": DESIRED_REPLICAS,
    }


async def test_forged_remote_user_without_front_proxy_certificate_is_401(setup: Setup) -> None:
    status, body = await setup.get(cert=None, headers=aggregator_headers(groups=("system:masters",)))
    assert status == 401
    assert body["reason"] == "Unauthorized"
    assert setup.cluster.standin.access_reviews == []


async def test_remote_user_header_is_ignored_with_an_ordinary_client_certificate(setup: Setup) -> None:
    alice = setup.cluster.write_client(setup.cluster.cluster_ca.issue_client("alice", ("devs",)), "alice")
    status, body = await setup.get(
        cert=alice, headers=aggregator_headers(user=HPA_USER, groups=("system:masters",))
    )
    assert status == 403  # alice is not the HPA, whatever the headers claim, and not in system:masters
    assert 'User "alice" cannot list resource' in body["message"]
    (review,) = setup.cluster.standin.access_reviews
    assert review["spec"]["user"] == "alice"
    assert review["spec"]["groups"] == ["devs", "system:authenticated"]


async def test_certificate_from_another_ca_is_refused_in_the_handshake(setup: Setup, tmp_path: Path) -> None:
    rogue_ca = CertificateAuthority("rogue CA")
    rogue = setup.cluster.write_client(rogue_ca.issue_client(FRONT_PROXY_NAME), "rogue")
    with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
        await setup.get(cert=rogue, headers=aggregator_headers())
    assert setup.cluster.standin.access_reviews == []


async def test_front_proxy_ca_but_cn_not_allowed_is_401(setup: Setup) -> None:
    impostor = setup.cluster.write_client(
        setup.cluster.front_proxy_ca.issue_client("not-the-aggregator"), "impostor"
    )
    status, body = await setup.get(cert=impostor, headers=aggregator_headers())
    assert status == 401
    assert body["code"] == 401
    assert setup.cluster.standin.access_reviews == []


async def test_front_proxy_certificate_without_client_auth_usage_is_401(setup: Setup) -> None:
    server_only = setup.cluster.write_client(
        setup.cluster.front_proxy_ca.issue_client(FRONT_PROXY_NAME, client_auth=False), "server-only"
    )
    try:
        status, _ = await setup.get(cert=server_only, headers=aggregator_headers())
    except (aiohttp.ClientError, ssl.SSLError):
        return  # OpenSSL refused it already: also correct
    assert status == 401


async def test_expired_front_proxy_certificate_is_refused(setup: Setup) -> None:
    expired = setup.cluster.write_client(
        setup.cluster.front_proxy_ca.issue_client(
            FRONT_PROXY_NAME, not_after=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        ),
        "expired",
    )
    with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
        await setup.get(cert=expired, headers=aggregator_headers())


async def test_system_masters_is_allowed_without_asking(setup: Setup) -> None:
    headers = aggregator_headers(user="system:kube-aggregator", groups=("system:masters",))
    status, body = await setup.get(GV, cert=setup.cluster.front_proxy, headers=headers)
    assert status == 200
    assert body["kind"] == "APIResourceList"
    assert setup.cluster.standin.access_reviews == []


async def test_extra_and_uid_headers_reach_the_access_review(setup: Setup) -> None:
    headers = [
        *aggregator_headers(groups=("a", "b")),
        ("X-Remote-Uid", "1234"),
        ("X-Remote-Extra-Scopes", "view"),
        ("X-Remote-Extra-Scopes", "edit"),
        ("X-Remote-Extra-Acme.com%2Fproject", "p1"),
    ]
    await setup.get(cert=setup.cluster.front_proxy, headers=headers)
    spec = setup.cluster.standin.access_reviews[0]["spec"]
    assert spec["groups"] == ["a", "b", "system:authenticated"]
    assert spec["uid"] == "1234"
    assert spec["extra"] == {"scopes": ["view", "edit"], "acme.com/project": ["p1"]}


async def test_unreachable_authorizer_is_503_not_an_allow(setup: Setup) -> None:
    setup.cluster.standin.down = True
    status, body = await setup.get(cert=setup.cluster.front_proxy, headers=aggregator_headers())
    assert status == 503
    assert body["reason"] == "ServiceUnavailable"


@pytest.mark.parametrize("fault", ["hang-up", "proxy-page"])
async def test_an_authorizer_that_hangs_up_or_answers_garbage_is_503_and_logged_once(
    setup: Setup, fault: str, logs: list[EventDict]
) -> None:
    """Not a 500 with a traceback per request: kube-apiserver restarting, or a proxy in front of it,
    is the same outage as it being down, and the aggregator retries a 503."""
    setup.cluster.standin.fault = fault
    for _ in range(3):
        status, body = await setup.get(cert=setup.cluster.front_proxy, headers=aggregator_headers())
        assert (status, body["reason"]) == (503, "ServiceUnavailable")
    assert not [e for e in logs if e["log_level"] in ("error", "critical")]
    setup.cluster.standin.fault = None
    status, _ = await setup.get(cert=setup.cluster.front_proxy, headers=aggregator_headers())
    assert status == 200  # nothing was cached from the outage


async def test_a_flood_of_unknown_tokens_cannot_starve_the_access_reviews(cluster: LocalCluster) -> None:
    """Anyone who reaches the port can make lagscaler ask kube-apiserver about a new bearer token per
    request. With those reviews slow, they must not take every connection of the client the
    aggregator's requests need for their SubjectAccessReview (kubernetes_asyncio pools 100)."""
    cluster.standin.hold_token_reviews = asyncio.Event()
    async with running_api(cluster.settings(), _cache()) as api:
        setup = Setup(api.url, cluster)
        connector = aiohttp.TCPConnector(ssl=cluster.client_context(), limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def unknown_token(i: int) -> int:
                headers = {"Authorization": f"Bearer flood-{i}"}
                async with session.get(api.url + METRIC_PATH, headers=headers) as response:
                    return response.status

            flood = [asyncio.create_task(unknown_token(i)) for i in range(150)]
            try:
                # 16 reviews held at kube-apiserver, every other new token refused without asking
                await eventually(
                    lambda: sum(task.done() for task in flood) == len(flood) - 16,
                    what="every token past the limit to be refused",
                )
                assert len(cluster.standin.token_reviews) == 16
                status, _ = await setup.get(cert=cluster.front_proxy, headers=aggregator_headers())
                assert status == 200
            finally:
                cluster.standin.hold_token_reviews.set()
                statuses = await asyncio.gather(*flood)
    assert set(statuses) == {401}


async def test_authorization_always_allow_skips_reviews_but_not_authentication(cluster: LocalCluster) -> None:
    async with running_api(cluster.settings(authorization_always_allow=True), _cache()) as api:
        setup = Setup(api.url, cluster)
        status, _ = await setup.get(cert=cluster.front_proxy, headers=aggregator_headers(user="anyone"))
        assert status == 200
        status, _ = await setup.get(headers=aggregator_headers(user="anyone"))
        assert status == 401
    assert cluster.standin.access_reviews == []


async def test_empty_allowed_names_accepts_any_front_proxy_ca_cn(cluster: LocalCluster) -> None:
    async with running_api(cluster.settings(requestheader_allowed_names=()), _cache()) as api:
        other = cluster.write_client(cluster.front_proxy_ca.issue_client("some-other-proxy"), "other")
        status, _ = await Setup(api.url, cluster).get(cert=other, headers=aggregator_headers())
        assert status == 200
