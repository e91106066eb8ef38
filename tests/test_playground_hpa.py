"""The local HPA loop against the real API over HTTPS, scaling a real worker pool on the real broker.

The API is the service's own app (front-proxy authentication, SubjectAccessReview through the
kube-apiserver stand-in, canonical quantities) with a cache we publish into by hand; the loop reads it
exactly as the aggregator forwards the controller's requests.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lagscaler_demo.harness import FRONT_PROXY_NAME, HPA_USER, LocalCluster
from lagscaler_demo.localkafka import KafkaEndpoint
from lagscaler_demo.playground import ClientIdentity, HpaLoopSettings, LocalHpa, PoolSettings, WorkerPool
from lagscaler_demo.playground.probe import wait_for_members
from lagscaler_demo.seed import create_topics

from lagscaler.core.hpa import (
    Behavior,
    ExternalMetric,
    HpaScalingPolicy,
    HpaSpec,
    PolicyType,
    ScalingRules,
    TargetType,
)
from lagscaler.core.hpa.served import DESIRED_REPLICAS, WORKLOAD_LABEL
from lagscaler.core.policy import Capacity, KafkaSource, ScaleTargetRef, ScalingPolicy
from lagscaler.edges.api import MetricsCache, MetricValue, WorkloadMetrics, running_api
from lagscaler.edges.kube import CertificateAuthority

pytestmark = pytest.mark.kafka

NAMESPACE = "shop"
WORKLOAD = "orders"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Setup:
    url: str
    cluster: LocalCluster
    cache: MetricsCache
    pool: WorkerPool
    kafka: KafkaEndpoint
    group: str

    def serve(self, desired: float | None, *, stale: bool = False) -> None:
        """Publish ``desired`` for the workload; ``stale`` makes it old with no fallback (the API answers 503)."""
        labels = {WORKLOAD_LABEL: WORKLOAD}
        sampled = time.time() - (3600 if stale else 0)
        values = () if desired is None else (MetricValue(DESIRED_REPLICAS, desired, labels),)
        self.cache.publish([WorkloadMetrics(NAMESPACE, WORKLOAD, sampled, values, max_age_seconds=60)])

    async def members(self, count: int) -> tuple[str, ...]:
        """The client ids once the group is Stable with ``count`` members."""
        return (await wait_for_members(self.kafka.bootstrap, self.group, count)).client_ids


@pytest.fixture
async def setup(tmp_path: Path, kafka: KafkaEndpoint, unique: str) -> AsyncIterator[Setup]:
    await create_topics(kafka.bootstrap, {unique: 4})
    group = f"{unique}-g"
    pool_settings = PoolSettings(
        kafka.bootstrap,
        group,
        (unique,),
        capacity_per_replica=100.0,
        heartbeat_interval_ms=500,
        session_timeout_ms=6000,
        max_processes=6,
        stop_grace_seconds=5.0,
    )
    cache = MetricsCache()
    async with LocalCluster(tmp_path) as cluster:
        cluster.standin.allow(HPA_USER, verbs=["list"], resources=["*"])
        async with running_api(cluster.settings(), cache) as api, WorkerPool(pool_settings) as pool:
            yield Setup(api.url, cluster, cache, pool, kafka, group)


def policy(group: str) -> ScalingPolicy:
    return ScalingPolicy(
        name=WORKLOAD,
        namespace=NAMESPACE,
        target=ScaleTargetRef(WORKLOAD),
        kafka=KafkaSource(group),
        max_lag_seconds=30,
        capacity=Capacity(100),
        min_replicas=1,
        max_replicas=4,
    )


async def test_the_loop_scales_the_pool_to_the_served_count_and_freezes_on_503(setup: Setup) -> None:
    pool = setup.pool
    await pool.scale_to(1)
    setup.serve(2.5)  # served as the canonical quantity "2500m": an AverageValue target of 1 asks for 3
    identity = ClientIdentity.from_cluster(setup.cluster)
    hpa = LocalHpa.for_policy(
        policy(setup.group), pool, url=setup.url, identity=identity, sync_period_seconds=0.3
    )
    async with hpa:
        await hpa.wait_until(lambda t: any(s.rescaled for s in t), within=20, what="the first scale-up")
        up = next(s for s in hpa.timeline if s.rescaled)
        assert (up.value, up.proposal, up.replicas_before, up.replicas) == (2.5, 3, 1, 3)
        assert up.reason == "DesiredWithinRange"
        assert pool.replicas == 3
        await pool.wait_ready(within=30)
        assert len(await setup.members(3)) == 3

        setup.serve(1, stale=True)
        frozen_from = len(hpa.timeline)
        await hpa.wait_until(lambda t: len(t) >= frozen_from + 3, within=20, what="three syncs on stale data")
        frozen = [s for s in hpa.timeline[frozen_from:] if s.reason == "FailedGetExternalMetric"]
        assert len(frozen) >= 2
        assert all(s.value is None and s.replicas == 3 and not s.rescaled for s in frozen)
        assert "HTTP 503" in frozen[-1].errors[0]
        assert pool.replicas == 3

        setup.serve(1)
        await hpa.wait_until(lambda t: t[-1].replicas == 1, within=20, what="the scale-down")
        assert pool.replicas == 1
    assert hpa.failures == []
    await pool.wait_ready(within=30)
    assert await setup.members(1) == (f"{setup.group}-0",)
    syncs = [s.at for s in hpa.timeline]
    assert syncs == sorted(syncs)
    assert len(syncs) >= 5


async def test_the_loop_follows_the_hpa_behavior_and_refuses_to_trust_a_rogue_aggregator(
    setup: Setup,
) -> None:
    pool = setup.pool
    await pool.scale_to(1)
    spec = HpaSpec(
        metrics=(ExternalMetric(TargetType.AVERAGE_VALUE, 1, DESIRED_REPLICAS),),
        min_replicas=1,
        max_replicas=5,
        behavior=Behavior(
            scale_up=ScalingRules(policies=(HpaScalingPolicy(PolicyType.PODS, 1, 60),)),
            scale_down=ScalingRules(stabilization_window_seconds=30),
        ),
    )
    selector = f"{WORKLOAD_LABEL}={WORKLOAD}"
    identity = ClientIdentity.from_cluster(setup.cluster)
    settings = HpaLoopSettings(setup.url, NAMESPACE, selector, identity)
    setup.serve(4)

    rogue_ca = CertificateAuthority("rogue CA")
    rogue = setup.cluster.write_client(rogue_ca.issue_client(FRONT_PROXY_NAME), "rogue")
    rogue_identity = ClientIdentity(setup.cluster.cluster_ca_file, rogue.cert_file, rogue.key_file)
    rogue_settings = HpaLoopSettings(setup.url, NAMESPACE, selector, rogue_identity)
    async with LocalHpa(spec, pool, rogue_settings, periodic=False) as untrusted:
        refused = await untrusted.sync_once()
    assert refused.reason == "FailedGetExternalMetric"
    assert "request failed" in refused.errors[0]  # the TLS handshake refuses a client cert of another CA
    assert (refused.replicas, pool.replicas) == (1, 1)

    clock = Clock()
    async with LocalHpa(spec, pool, settings, clock=clock, periodic=False) as hpa:
        steps = []
        for at, served in ((0, 4), (15, 4), (61, 4), (62, 1), (90, 1), (92, 1)):
            clock.now = 1000 + at
            setup.serve(served)
            record = await hpa.sync_once()
            steps.append((at, record.replicas, record.reason))
    assert steps == [
        (0, 2, "ScaleUpLimit"),  # one pod per 60 s
        (15, 2, "ScaleUpLimit"),
        (61, 3, "ScaleUpLimit"),
        (62, 3, "ScaleDownStabilized"),  # the 4s of the last 30 s hold it
        (90, 3, "ScaleDownStabilized"),
        (92, 1, "DesiredWithinRange"),
    ]
    assert pool.replicas == 1
    assert [s.at for s in hpa.timeline] == [0, 15, 61, 62, 90, 92]
