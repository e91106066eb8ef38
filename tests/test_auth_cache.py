"""Review caching: ~10 s per answer, rejections cached too, bounded, never keyed by the raw token.

The reviewers are the real kubernetes_asyncio-backed ones talking HTTPS to the stand-in; only the
caches' clocks are fakes, so expiry is tested without sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from lagscaler_demo.standin import KubeApiStandIn
from multidict import CIMultiDict, CIMultiDictProxy

from lagscaler.edges.api.authn import (
    AuthenticationFailed,
    AuthenticationFlags,
    AuthenticationSource,
    Authenticator,
)
from lagscaler.edges.api.authz import Authorizer, request_attributes
from lagscaler.edges.api.reviewcache import TTLCache
from lagscaler.edges.kube import (
    KubeAccessReviewer,
    KubeTokenReviewer,
    ReviewedUser,
    kube_api_client,
)
from lagscaler.edges.observability import ServiceMetrics
from lagscaler.errors import UserError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def standin(tmp_path: Path) -> AsyncIterator[KubeApiStandIn]:
    async with KubeApiStandIn(tmp_path) as server:
        server.write_kubeconfig()
        yield server


def _headers(token: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict({"Authorization": f"Bearer {token}"}))


async def test_token_reviews_are_cached_for_the_ttl_including_rejections(standin: KubeApiStandIn) -> None:
    standin.tokens["tok"] = ReviewedUser("carol", groups=("g",))
    client = await kube_api_client(standin.directory / "standin.kubeconfig")
    assert client is not None
    clock = Clock()
    metrics = ServiceMetrics()
    try:
        authn = Authenticator(
            AuthenticationSource(AuthenticationFlags()),
            KubeTokenReviewer(client),
            metrics=metrics,
            token_ttl_seconds=10,
            clock=clock,
        )
        for _ in range(3):
            identity = await authn.authenticate(None, _headers("tok"))
            assert identity.user.name == "carol"
            assert identity.method == "token"
        assert len(standin.token_reviews) == 1
        for _ in range(2):
            with pytest.raises(AuthenticationFailed):
                await authn.authenticate(None, _headers("nope"))
        assert len(standin.token_reviews) == 2  # the rejection is cached as well
        clock.now += 10.5
        await authn.authenticate(None, _headers("tok"))
        assert len(standin.token_reviews) == 3  # expired: asked again
        text = metrics.exposition().decode()
        assert 'lagscaler_api_review_cache_total{result="hit",review="token"} 3.0' in text
    finally:
        await client.close()


@pytest.mark.parametrize("fault", ["down", "hang-up", "proxy-page"])
async def test_token_review_outage_is_a_401_and_is_not_cached(standin: KubeApiStandIn, fault: str) -> None:
    """Down (503), hanging up before answering, or a proxy's HTML page in place of a review: all an
    outage, refused as such, and forgotten once it is over."""
    standin.tokens["tok"] = ReviewedUser("carol")
    client = await kube_api_client(standin.directory / "standin.kubeconfig")
    assert client is not None
    try:
        authn = Authenticator(AuthenticationSource(AuthenticationFlags()), KubeTokenReviewer(client))
        standin.down, standin.fault = fault == "down", None if fault == "down" else fault
        with pytest.raises(AuthenticationFailed) as failure:
            await authn.authenticate(None, _headers("tok"))
        assert failure.value.reason == "token-review-error"
        standin.down, standin.fault = False, None
        identity = await authn.authenticate(None, _headers("tok"))
        assert identity.user.name == "carol"
    finally:
        await client.close()


async def test_access_reviews_are_cached_per_user_and_attributes(standin: KubeApiStandIn) -> None:
    standin.allow("dave", verbs=["list"], resources=["lagscaler_lag_messages"])
    client = await kube_api_client(standin.directory / "standin.kubeconfig")
    assert client is not None
    clock = Clock()
    try:
        authz = Authorizer(
            KubeAccessReviewer(client), allowed_ttl_seconds=10, denied_ttl_seconds=5, clock=clock
        )
        dave, erin = ReviewedUser("dave"), ReviewedUser("erin")
        path = "/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/lagscaler_lag_messages"
        for _ in range(3):
            assert (await authz.authorize(request_attributes("GET", path, {}, dave))).allowed
        assert len(standin.access_reviews) == 1
        denied = await authz.authorize(request_attributes("GET", path, {}, erin))
        assert not denied.allowed
        assert denied.reason == "no grant matches"
        other_namespace = path.replace("/ns/", "/other/")
        assert (await authz.authorize(request_attributes("GET", other_namespace, {}, dave))).allowed
        assert len(standin.access_reviews) == 3
        clock.now += 6  # the denial expired, the allows did not
        await authz.authorize(request_attributes("GET", path, {}, erin))
        await authz.authorize(request_attributes("GET", path, {}, dave))
        assert len(standin.access_reviews) == 4
    finally:
        await client.close()


def test_ttl_cache_is_bounded_and_least_recently_used_goes_first() -> None:
    clock = Clock()
    cache: TTLCache[str, int] = TTLCache(2, clock)
    cache.put("a", 1, 10)
    cache.put("b", 2, 10)
    assert cache.get("a") == 1  # a is now the most recently used
    cache.put("c", 3, 10)
    assert cache.get("b") is None
    assert cache.get("a") == 1
    assert cache.get("c") == 3
    assert len(cache) == 2
    clock.now += 10
    assert cache.get("a") is None


def test_request_attributes_follow_the_apiserver_request_info_rules() -> None:
    user = ReviewedUser("u")
    gv = "/apis/external.metrics.k8s.io/v1beta1"
    for path in ("/apis", "/apis/external.metrics.k8s.io", gv, "/openapi/v3", "/healthz"):
        attributes = request_attributes("GET", path, {}, user)
        assert not attributes.is_resource
        assert attributes.path == path
        assert attributes.verb == "get"
    listing = request_attributes("GET", f"{gv}/namespaces/ns/m", {}, user)
    assert (listing.verb, listing.namespace, listing.resource, listing.name) == ("list", "ns", "m", "")
    assert (listing.group, listing.version) == ("external.metrics.k8s.io", "v1beta1")
    assert request_attributes("GET", f"{gv}/namespaces/ns/m", {"watch": "true"}, user).verb == "watch"
    named = request_attributes("GET", f"{gv}/namespaces/ns/m/item", {}, user)
    assert (named.verb, named.name) == ("get", "item")
    assert request_attributes("POST", f"{gv}/namespaces/ns/m", {}, user).verb == "create"
    assert request_attributes("DELETE", f"{gv}/namespaces/ns/m", {}, user).verb == "deletecollection"
    namespace_itself = request_attributes("GET", f"{gv}/namespaces/ns", {}, user)
    assert (namespace_itself.resource, namespace_itself.name, namespace_itself.verb) == (
        "namespaces",
        "ns",
        "get",
    )
    core = request_attributes("GET", "/api/v1/namespaces/kube-system/configmaps", {}, user)
    assert (core.group, core.version, core.resource, core.verb) == ("", "v1", "configmaps", "list")


async def test_a_burst_of_identical_misses_costs_one_review(standin: KubeApiStandIn) -> None:
    standin.allow("fay")
    standin.tokens["tok"] = ReviewedUser("fay")
    client = await kube_api_client(standin.directory / "standin.kubeconfig")
    assert client is not None
    try:
        authz = Authorizer(KubeAccessReviewer(client))
        authn = Authenticator(AuthenticationSource(AuthenticationFlags()), KubeTokenReviewer(client))
        path = "/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/m"
        decisions = await asyncio.gather(
            *(authz.authorize(request_attributes("GET", path, {}, ReviewedUser("fay"))) for _ in range(20))
        )
        assert all(d.allowed for d in decisions)
        assert len(standin.access_reviews) == 1
        identities = await asyncio.gather(*(authn.authenticate(None, _headers("tok")) for _ in range(20)))
        assert {i.user.name for i in identities} == {"fay"}
        assert len(standin.token_reviews) == 1
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"a: [unclosed\n", ":2:1: not valid YAML: expected ',' or ']'"),
        (b"- 1\n- 2\n", "not a kubeconfig (TypeError"),
        (b"", "not a kubeconfig (TypeError"),
        (b"\xff\xfe\x00", "not a kubeconfig (UnicodeDecodeError"),
        (b"apiVersion: v1\nkind: Config\nclusters: 5\n", "not a kubeconfig (TypeError"),
    ],
    ids=["not-yaml", "a-list", "empty", "not-utf-8", "clusters-not-a-list"],
)
async def test_a_broken_kubeconfig_is_one_line_naming_the_file(
    tmp_path: Path, content: bytes, message: str
) -> None:
    """kubernetes_asyncio's loader raises whatever indexing a malformed document raises: each was a
    traceback at start-up instead of an error naming the file."""
    path = tmp_path / "broken.kubeconfig"
    path.write_bytes(content)
    with pytest.raises(UserError) as caught:
        await kube_api_client(path)
    assert str(caught.value).startswith(f"kubeconfig {path}")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


async def test_a_kubeconfig_server_that_is_not_a_url_is_refused(standin: KubeApiStandIn) -> None:
    path = standin.write_kubeconfig()
    path.write_text(path.read_text().replace(standin.url, "not a url"))
    with pytest.raises(UserError, match="server 'not a url' is not an http"):
        await kube_api_client(path)
