"""The few reads and writes the HPA tests make often, through kubernetes_asyncio (cheaper than kubectl)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import TracebackType
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from lagscaler.edges.api import parse_quantity
from lagscaler.edges.kube import kube_api_client

__all__ = ["KubeClient"]


class KubeClient:
    def __init__(self, kubeconfig: Path) -> None:
        self._kubeconfig = kubeconfig
        self._client: k8s.ApiClient | None = None

    async def __aenter__(self) -> KubeClient:
        self._client = await kube_api_client(self._kubeconfig)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client is not None:
            await self._client.close()

    @property
    def client(self) -> k8s.ApiClient:
        assert self._client is not None
        return self._client

    async def deployment_replicas(self, namespace: str, name: str) -> int:
        scale = await k8s.AppsV1Api(self.client).read_namespaced_deployment_scale(name, namespace)
        return int(scale.spec.replicas or 0)

    async def deployments(self, *, label_selector: str) -> dict[str, tuple[int, int, int]]:
        """``(spec.replicas, status.replicas, status.readyReplicas)`` of matching Deployments, by namespace."""
        listing = await k8s.AppsV1Api(self.client).list_deployment_for_all_namespaces(
            label_selector=label_selector
        )
        return {
            d.metadata.namespace: (
                int(d.spec.replicas or 0),
                int(d.status.replicas or 0),
                int(d.status.ready_replicas or 0),
            )
            for d in listing.items
        }

    async def hpa(self, namespace: str, name: str) -> dict[str, Any]:
        hpa = await k8s.AutoscalingV2Api(self.client).read_namespaced_horizontal_pod_autoscaler(
            name, namespace
        )
        result: dict[str, Any] = self.client.sanitize_for_serialization(hpa)
        return result

    async def external_metric(self, namespace: str, metric: str, selector: str) -> float | None:
        """The sum of the items kube-apiserver's aggregator returns (what the HPA sums), or ``None``."""
        try:
            listing = await k8s.CustomObjectsApi(self.client).list_namespaced_custom_object(
                "external.metrics.k8s.io", "v1beta1", namespace, metric, label_selector=selector
            )
        except ApiException:
            return None
        return sum(float(parse_quantity(item["value"])) for item in listing["items"])

    async def mark_pods_ready(self, namespace: str, selector: str) -> int:
        """Stand in for the kubelet: Pending pods become Running and Ready. Returns how many are Ready."""
        core = k8s.CoreV1Api(self.client)
        pods = await core.list_namespaced_pod(namespace, label_selector=selector)
        ready = 0
        for pod in pods.items:
            if pod.metadata.deletion_timestamp is not None:
                continue
            if pod.status.phase == "Running" or await self.mark_ready(namespace, pod.metadata.name):
                ready += 1
        return ready

    async def mark_ready(self, namespace: str, name: str) -> bool:
        """Report pod ``name`` Running and Ready, as its kubelet would; False if it is gone."""
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "status": {
                "phase": "Running",
                "startTime": now,
                "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                ],
            }
        }
        try:
            await k8s.CoreV1Api(self.client).patch_namespaced_pod_status(name, namespace, body)
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile
                raise
            return False
        return True
