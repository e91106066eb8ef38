"""The whole loop on the real control plane: producer → broker → consumers ← Deployment ← stock HPA ← lagscaler.

The HPA is the one ``lagscaler policy hpa`` prints, applied unchanged; the Deployment is a real one
(its pods stay Pending: there are no nodes), and the test stands in for the kubelet by running one
local consumer process (the playground pool) per replica of the Deployment's ``spec.replicas``.
What a user relies on: replicas rise with the load and fall after it, every decision of the real
HPA controller is what lagscaler's model of it predicts, and the HPA's status shows the value
lagscaler served.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from lagscaler_demo.cli.scaling import ScalingDemoSettings
from lagscaler_demo.cli.scaling import _policy as demo_policy
from lagscaler_demo.localkafka import KafkaEndpoint
from lagscaler_demo.playground import LoadProducer, PoolSettings, ProducerSettings, RateProfile, WorkerPool
from lagscaler_demo.seed import create_topics
from support import eventually

from lagscaler.core.policy import hpa_spec_for, load_policy_file
from lagscaler.edges.api import parse_quantity

from .adapter import ChartInstall, Serve
from .cluster import ControlPlane, deployment
from .kubeclient import KubeClient
from .syncs import SyncLog, Timeline, repeatedly, replay

pytestmark = [pytest.mark.controlplane, pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 6
CAPACITY = 100.0  # msg/s one consumer process handles


def _policy(namespace: str, topic: str, group: str, sync_seconds: int) -> dict[str, Any]:
    """The demo's policy (``lagscaler demo``), in the test's namespace and at this HPA's sync period."""
    demo = ScalingDemoSettings(
        topic=topic,
        group=group,
        partitions=PARTITIONS,
        capacity=CAPACITY,
        slo_seconds=20,
        sync_seconds=sync_seconds,
    )
    policy = demo_policy(demo)
    policy["metadata"] = {"name": "clicks", "namespace": namespace}
    return policy


@contextlib.asynccontextmanager
async def _kubelet(
    kube: KubeClient, namespace: str, pool: WorkerPool
) -> AsyncIterator[list[tuple[float, int]]]:
    """Run ``spec.replicas`` consumer processes, following the Deployment; yield the replica timeline."""
    timeline: list[tuple[float, int]] = []

    async def follow() -> None:
        while True:
            replicas = await kube.deployment_replicas(namespace, "clicks-consumer")
            if not timeline or timeline[-1][1] != replicas:
                timeline.append((time.time(), replicas))
                await pool.scale_to(replicas)
            await asyncio.sleep(0.5)

    task = asyncio.create_task(follow(), name="kubelet stand-in")
    try:
        yield timeline
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_stock_hpa_follows_lagscaler_up_and_back_down(  # noqa: PLR0917 - fixtures
    control_plane: ControlPlane,
    chart: ChartInstall,
    serve: Serve,
    kafka: KafkaEndpoint,
    unique: str,
    tmp_path: Path,
) -> None:
    namespace = control_plane.namespace(f"loop-{unique[-6:]}")
    topic, group = f"{unique}-clicks", f"{unique}-workers"
    await create_topics(kafka.bootstrap, {topic: PARTITIONS})
    policy_file = tmp_path / "clicks.yaml"
    policy_file.write_text(json.dumps(_policy(namespace, topic, group, control_plane.hpa_sync_seconds)))
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lagscaler", "policy", "hpa", str(policy_file), stdout=asyncio.subprocess.PIPE
    )
    printed = (await cli.communicate())[0].decode()
    assert cli.returncode == 0
    control_plane.apply([deployment(namespace, "clicks-consumer")])
    control_plane.kubectl("apply", "-f", "-", input=printed)  # unchanged, as a user would
    (serve.policy_dir / f"{namespace}-clicks.yaml").write_text(policy_file.read_text())
    syncs = SyncLog(
        lambda: control_plane.log("kube-controller-manager"), namespace, "clicks", "clicks-consumer"
    )

    pool_settings = PoolSettings(
        bootstrap=kafka.bootstrap,
        group=group,
        topics=(topic,),
        capacity_per_replica=CAPACITY,
        heartbeat_interval_ms=500,
        session_timeout_ms=6000,
    )
    profile = RateProfile.from_schedule([(15, 40.0), (40, 380.0), (50, 30.0)])
    async with (
        KubeClient(control_plane.admin_kubeconfig) as kube,
        WorkerPool(pool_settings) as pool,
        _kubelet(kube, namespace, pool) as replicas,
        LoadProducer(ProducerSettings(kafka.bootstrap, topic), profile),
    ):
        served = Timeline()
        status_seen: list[tuple[float, int]] = []

        async def poll_served() -> None:
            value = await kube.external_metric(
                namespace, "lagscaler_desired_replicas", "lagscaler.io/workload=clicks"
            )
            if value is not None:
                served.add(time.time(), value)

        async def poll_status() -> None:
            hpa = await kube.hpa(namespace, "clicks")
            current = ((hpa.get("status", {}).get("currentMetrics") or [{}])[0].get("external") or {}).get(
                "current", {}
            )
            if "averageValue" in current:
                status_seen.append(
                    (float(parse_quantity(current["averageValue"])), hpa["status"]["currentReplicas"])
                )

        def up_and_back_down() -> bool:
            counts = [r for _, r in replicas]
            return bool(counts) and max(counts) >= 3 and counts[-1] == 1

        tasks = [
            asyncio.create_task(repeatedly(0.25, poll_served)),
            asyncio.create_task(repeatedly(1.0, poll_status)),
        ]
        try:
            await eventually(
                up_and_back_down, within=150, every=1.0, what="replicas to rise to 3+ and fall back to 1"
            )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    counts = [r for _, r in replicas]
    assert max(counts) >= 3, (counts, serve.log_text()[-2000:])  # 380 msg/s needs ceil(380 / 70) = 6
    assert counts[-1] <= 2, counts  # and the quiet tail lets it fall back
    assert counts[-1] < max(counts)
    # The HPA's status shows what lagscaler served (through the aggregator): usage / currentReplicas.
    served_values = [float(v) for _, v in served.points]  # type: ignore[arg-type]
    assert served_values
    assert status_seen
    assert any(avg * n == pytest.approx(v, abs=0.001 * n) for avg, n in status_seen for v in served_values)
    # Every sync of the real controller, replayed through lagscaler's model of it.
    # the served value is known only by polling it every 0.25 s: a value first seen at t was in
    # effect from up to a poll (plus the request) before t
    report = replay(
        syncs.read(), hpa_spec_for(load_policy_file(policy_file)), served=served, before=1.5, after=1.0
    )
    print(f"replicas over time: {replicas}\n{report.describe()}")
    assert report.syncs >= 10, report.describe()
    assert report.mismatches == [], report.describe()
    assert serve.forbidden_lines() == []
