"""``kube-system/extension-apiserver-authentication``: parsed, watched, and applied to live TLS.

The watcher is the real list+watch client (kubernetes_asyncio, HTTPS) against the stand-in, which
streams watch events like kube-apiserver.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from pathlib import Path

import aiohttp
import pytest
from support import eventually

from lagscaler.api import (
    DESIRED_REPLICAS,
    WORKLOAD_LABEL,
    MetricsCache,
    MetricValue,
    WorkloadMetrics,
    running_api,
)
from lagscaler.api.harness import FRONT_PROXY_NAME, HPA_USER, ClientCert, LocalCluster, aggregator_headers
from lagscaler.kube import (
    CertificateAuthority,
    ExtensionAuthentication,
    ExtensionAuthenticationWatcher,
    KubeApiStandIn,
    kube_api_client,
    parse_extension_authentication,
)

GV = "/apis/external.metrics.k8s.io/v1beta1"


def _configmap(front_proxy_ca: CertificateAuthority, client_ca: CertificateAuthority) -> dict[str, str]:
    """What kube-apiserver writes into the ConfigMap (list values are JSON arrays)."""
    return {
        "client-ca-file": client_ca.cert_pem.decode(),
        "requestheader-client-ca-file": front_proxy_ca.cert_pem.decode(),
        "requestheader-allowed-names": json.dumps([FRONT_PROXY_NAME]),
        "requestheader-username-headers": json.dumps(["X-Remote-User"]),
        "requestheader-group-headers": json.dumps(["X-Remote-Group"]),
        "requestheader-extra-headers-prefix": json.dumps(["X-Remote-Extra-"]),
    }


def test_parse_configmap_data() -> None:
    parsed = parse_extension_authentication(
        {
            "client-ca-file": "PEM",
            "requestheader-allowed-names": '["front-proxy-client","aggregator"]',
            "requestheader-username-headers": '["X-Remote-User"]',
        }
    )
    assert parsed.client_ca_pem == "PEM"
    assert parsed.requestheader_client_ca_pem is None
    assert parsed.requestheader_allowed_names == ("front-proxy-client", "aggregator")
    assert parsed.requestheader_group_headers is None
    with pytest.raises(ValueError, match="requestheader-allowed-names is not a JSON array"):
        parse_extension_authentication({"requestheader-allowed-names": "front-proxy-client"})
    with pytest.raises(ValueError, match="not a JSON array of strings"):
        parse_extension_authentication({"requestheader-group-headers": "[1]"})


async def test_watcher_reports_each_version_and_deletion(tmp_path: Path) -> None:
    async with KubeApiStandIn(tmp_path) as standin:
        kubeconfig = standin.write_kubeconfig()
        standin.set_configmap({"requestheader-allowed-names": '["a"]'})
        seen: list[ExtensionAuthentication | None] = []
        client = await kube_api_client(kubeconfig)
        assert client is not None
        watcher = ExtensionAuthenticationWatcher(client, seen.append, retry_seconds=0.1)
        task = asyncio.create_task(watcher.run())
        try:
            await eventually(lambda: len(seen) == 1, within=10, what="the initial list")
            assert seen[0] is not None
            assert seen[0].requestheader_allowed_names == ("a",)
            await eventually(lambda: standin._watchers, within=10, what="the watch to start")
            standin.set_configmap({"requestheader-allowed-names": '["b"]'})
            await eventually(lambda: len(seen) == 2, within=10, what="the MODIFIED event")
            assert seen[1] is not None
            assert seen[1].requestheader_allowed_names == ("b",)
            standin.set_configmap({"requestheader-allowed-names": "not json"})  # logged and skipped
            standin.set_configmap(None)
            await eventually(lambda: len(seen) == 3, within=10, what="the DELETED event")
            assert seen[2] is None
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await client.close()


async def _status(url: str, context: ssl.SSLContext, headers: list[tuple[str, str]]) -> int:
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
        session.get(url + GV, headers=headers) as response,
    ):
        return response.status


async def _refused(url: str, context: ssl.SSLContext) -> bool:
    try:
        await _status(url, context, aggregator_headers())
    except (aiohttp.ClientError, ssl.SSLError):
        return True
    return False


async def test_front_proxy_ca_rotation_in_the_configmap_applies_to_new_handshakes(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path) as cluster:
        cluster.standin.allow(HPA_USER, verbs=["get"], resources=["*"])
        cluster.standin.set_configmap(_configmap(cluster.front_proxy_ca, cluster.cluster_ca))
        settings = cluster.settings(
            client_ca_file=None,
            requestheader_client_ca_file=None,
            requestheader_allowed_names=None,
            authentication_skip_lookup=False,
        )
        cache = MetricsCache()
        cache.publish(
            [WorkloadMetrics("ns", "w", 0.0, (MetricValue(DESIRED_REPLICAS, 1, {WORKLOAD_LABEL: "w"}),), 1)]
        )
        async with running_api(settings, cache) as api:
            old = cluster.client_context(cluster.front_proxy)
            assert await _status(api.url, old, aggregator_headers()) == 200  # trust came from the ConfigMap

            new_ca = CertificateAuthority("rotated front-proxy CA")
            rotated = cluster.write_client(new_ca.issue_client(FRONT_PROXY_NAME), "rotated")
            new = cluster.client_context(rotated)
            assert await _refused(api.url, new)
            await eventually(lambda: cluster.standin._watchers, within=10, what="the ConfigMap watch")
            cluster.standin.set_configmap(_configmap(new_ca, cluster.cluster_ca))
            await eventually(
                lambda: api.auth.source.generation >= 3, within=10, what="the new ConfigMap version"
            )
            assert await _status(api.url, new, aggregator_headers()) == 200
            assert await _refused(api.url, old)


async def test_client_ca_file_change_is_reloaded(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path) as cluster:
        cluster.standin.allow("zoe", verbs=["get"], resources=["*"])
        other_ca = CertificateAuthority("second client CA")
        zoe = ClientCert(*other_ca.issue_client("zoe").write(tmp_path, "zoe"))
        async with running_api(cluster.settings(), MetricsCache()) as api:
            assert await _refused(api.url, cluster.client_context(zoe))
            bundle = cluster.cluster_ca.cert_pem + other_ca.cert_pem
            cluster.cluster_ca_file.write_bytes(bundle)
            await eventually(lambda: api.auth.source.generation >= 2, within=10, what="the CA file reload")
            assert await _status(api.url, cluster.client_context(zoe), []) == 200
