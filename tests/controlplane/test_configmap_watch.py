"""The authentication ConfigMap watcher against a real kube-apiserver's list and watch.

A ConfigMap of the same shape in a namespace of the test's own (the real
``kube-system/extension-apiserver-authentication`` is kube-apiserver's, and test_authn changes it
only by adding a CA): created, changed, made invalid, deleted. A 410 Gone is not something this
kube-apiserver can be made to answer within a test (its watch cache replays from any old
resourceVersion), so that path runs against the stand-in (tests/test_kube_configmap.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from support import eventually

from lagscaler.edges.kube import ExtensionAuthentication, ExtensionAuthenticationWatcher, kube_api_client

from .cluster import ControlPlane

pytestmark = [pytest.mark.controlplane, pytest.mark.slow]


def _configmap(namespace: str, allowed: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "auth", "namespace": namespace},
            "data": {"requestheader-allowed-names": allowed},
        }
    )


async def test_watcher_reports_each_version_and_deletion(control_plane: ControlPlane) -> None:
    namespace = control_plane.namespace("watch-configmap")
    control_plane.kubectl("apply", "-f", "-", input=_configmap(namespace, '["a"]'))
    client = await kube_api_client(control_plane.admin_kubeconfig)
    assert client is not None
    seen: list[ExtensionAuthentication | None] = []
    watcher = ExtensionAuthenticationWatcher(
        client, seen.append, namespace=namespace, name="auth", retry_seconds=0.1
    )
    task = asyncio.create_task(watcher.run())
    try:
        await eventually(lambda: len(seen) == 1, within=30, what="the initial list")
        assert seen[0] is not None
        assert seen[0].requestheader_allowed_names == ("a",)
        control_plane.kubectl("apply", "-f", "-", input=_configmap(namespace, '["b"]'))
        await eventually(lambda: len(seen) == 2, within=30, what="the MODIFIED event")
        assert seen[1] is not None
        assert seen[1].requestheader_allowed_names == ("b",)
        control_plane.kubectl("apply", "-f", "-", input=_configmap(namespace, "not json"))  # logged, skipped
        control_plane.kubectl("delete", "configmap", "auth", "-n", namespace)
        await eventually(lambda: len(seen) == 3, within=30, what="the DELETED event")
        assert seen[2] is None
        assert watcher.lists == 1  # one list, then one watch throughout
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()
