"""``kube-system/extension-apiserver-authentication`` parsed, and CA files reloaded into live TLS.

Watching the ConfigMap and a CA rotation through it run against the real kube-apiserver in
tests/controlplane (test_configmap_watch.py, test_authn.py); the stand-in is used here only for the
410 Gone the real one cannot be made to answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path

import aiohttp
import pytest
from lagscaler_demo.harness import ClientCert, LocalCluster, aggregator_headers
from lagscaler_demo.standin import KubeApiStandIn
from support import eventually

from lagscaler.edges.api import (
    MetricsCache,
    running_api,
)
from lagscaler.edges.kube import (
    CertificateAuthority,
    ExtensionAuthentication,
    ExtensionAuthenticationWatcher,
    kube_api_client,
    parse_extension_authentication,
)

GV = "/apis/external.metrics.k8s.io/v1beta1"


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


async def test_a_watch_answered_410_gone_lists_again(tmp_path: Path) -> None:
    async with KubeApiStandIn(tmp_path) as standin:
        standin.set_configmap({"requestheader-allowed-names": '["a"]'})
        client = await kube_api_client(standin.write_kubeconfig())
        assert client is not None
        seen: list[ExtensionAuthentication | None] = []
        watcher = ExtensionAuthenticationWatcher(client, seen.append, retry_seconds=0.1)
        task = asyncio.create_task(watcher.run())
        try:
            await eventually(lambda: standin._watchers, within=10, what="the watch to start")
            standin.set_configmap({"requestheader-allowed-names": '["b"]'})
            await eventually(lambda: len(seen) == 2, within=10, what="the MODIFIED event")
            standin.compact()  # the watch ends; resuming from its last version gets 410 Gone
            standin.set_configmap({"requestheader-allowed-names": '["c"]'})
            await eventually(lambda: watcher.lists == 2, within=10, what="a new list after 410 Gone")
            await eventually(
                lambda: seen[-1] is not None and seen[-1].requestheader_allowed_names == ("c",),
                within=10,
                what="the version after the new list",
            )
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await client.close()
