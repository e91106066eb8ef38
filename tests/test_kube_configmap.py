"""``kube-system/extension-apiserver-authentication`` parsed, and CA files reloaded into live TLS.

Watching the ConfigMap and a CA rotation through it run against the real kube-apiserver in
tests/controlplane (test_configmap_watch.py, test_authn.py).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from lagscaler.api import (
    MetricsCache,
    running_api,
)
from lagscaler.api.harness import ClientCert, LocalCluster, aggregator_headers
from lagscaler.kube import (
    CertificateAuthority,
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


async def _eventually(condition: Callable[[], object], what: str, limit_seconds: float = 10.0) -> None:
    """Wait for a watch or a reload to take effect (bounded: fails with ``what`` after the limit)."""
    deadline = asyncio.get_running_loop().time() + limit_seconds
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


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
            await _eventually(lambda: api.auth.source.generation >= 2, "the CA file reload")
            assert await _status(api.url, cluster.client_context(zoe), []) == 200
