"""Handing a workload back in Kubernetes, on the real control plane and the real broker.

The workload's own Deployment runs the SDK worker outside handover mode (two consumers in the policy's
group); lagscaler takes it over (its Deployment to 0, generation 1 at three replicas in a Deployment of
its own) and then its policy is switched back (the runner is given it as a hand-back, as ``serve``'s
policy reload does for ``mode: hpa``). What a user relies on: the workload's Deployment runs again at
generation 1's size, generation 1's Deployment is deleted, the control record is cleared, and across
takeover and hand-back every record is processed exactly once. Pods run under the kubelet stand-in
(``kubelet.py``); the backend acts with the chart's ServiceAccount (handover enabled for the test's
namespace only).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lagscaler_demo.localkafka import KafkaEndpoint
from structlog.testing import capture_logs
from support import eventually

from .adapter import HandoverInstall
from .cluster import ControlPlane
from .kubeclient import KubeClient
from .test_handover_kubernetes import (
    TARGET,
    Generations,
    _own_consumers_commit,
    controlled,
    explained,
    identity,
    kube,
    namespace,
    playground,
    workload_deployment,
)

pytestmark = [pytest.mark.controlplane, pytest.mark.kafka, pytest.mark.slow]

__all__ = ["identity", "kube", "namespace"]  # fixtures, shared with test_handover_kubernetes


async def test_a_workload_switched_out_of_handover_mode_gets_its_deployment_back_and_loses_nothing(  # noqa: PLR0917 - one story
    control_plane: ControlPlane,
    kafka: KafkaEndpoint,
    unique: str,
    tmp_path: Path,
    namespace: str,
    identity: HandoverInstall,
    kube: KubeClient,
) -> None:
    settings = playground(kafka, unique, tmp_path, namespace)
    seen = Generations(kube, namespace)
    with capture_logs() as logs:
        async with controlled(settings, identity, kube, namespace, tmp_path) as (kubelet, play):
            with explained(control_plane, kubelet, logs, namespace):
                control_plane.apply([workload_deployment(namespace, settings, replicas=2)])
                await _own_consumers_commit(settings)
                await play.start_runner()
                taken = await play.scale_to(3, within=240)
                assert taken.serving is not None
                generation = f"{TARGET}-g{taken.serving.generation}"
                deployments = await seen.deployments()
                assert deployments[TARGET]["spec"]["replicas"] == 0
                assert deployments[generation]["spec"]["replicas"] == 3

                play.hand_back()

                def cleared() -> bool:
                    record = play.record()
                    return record is not None and record.serving is None and record.handover is None

                await play.wait(cleared, within=120, what="the hand-back to finish")

                async def handed_back() -> None:
                    now = await seen.deployments()
                    assert set(now) == {TARGET}, sorted(now)
                    assert now[TARGET]["spec"]["replicas"] == 3

                await eventually(handed_back, within=120, every=0.5, what="the workload's Deployment back")
                await eventually(
                    lambda: len(kubelet.running()) == 3, within=120, what="three own pods running"
                )
                assert all(pod.startswith(f"{TARGET}-") for pod in await seen.pods())
                assert not any(pod.startswith(f"{generation}-") for pod in await seen.pods())
                report = await play.verdict(within=120)

    assert report.consistent, report.summary()
    assert report.lost == 0
    assert report.duplicates == 0, report.summary()
    assert report.processed == report.produced > 0
    assert report.generations == {0, taken.serving.generation}
    events = [e["event"] for e in logs]
    assert "workload deployment scaled back" in events
    assert "handover released" in events
    assert [e for e in logs if "403" in json.dumps(e, default=str)] == []
