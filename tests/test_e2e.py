"""End to end, as in a cluster but on one machine: traffic → real broker → worker pool ← HPA ← lagscaler.

A producer follows a step schedule into a real topic; a pool of real consumer processes (bounded
per-replica capacity) consumes it; ``lagscaler serve`` samples the group, decides and serves the
external metrics API over HTTPS; a local HPA loop reads that API exactly as the aggregator forwards
the controller's requests and scales the pool. What a user relies on: replicas rise with the load,
fall after it, and lag stays within the SLO.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from lagscaler.api import LAG_SECONDS
from lagscaler.api.harness import LocalCluster
from lagscaler.kafka import KafkaSettings
from lagscaler.kafka.seed import create_topics
from lagscaler.localkafka import KafkaEndpoint
from lagscaler.playground import (
    ClientIdentity,
    LoadProducer,
    LocalHpa,
    PoolSettings,
    ProducerSettings,
    RateProfile,
    WorkerPool,
)
from lagscaler.policy import load_policy_file
from lagscaler.service.run import ServeSettings, running_service

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

CAPACITY = 150.0  # msg/s one worker processes
SLO_SECONDS = 20.0
LOW, HIGH = 60.0, 600.0  # the high phase needs ceil(600 / (150 * 0.7)) = 6 replicas
SCHEDULE = [(15.0, LOW), (35.0, HIGH), (45.0, LOW)]


def write_policy(directory: Path, group: str, topic: str) -> Path:
    policy = {
        "apiVersion": "lagscaler.io/v1",
        "kind": "ScalingPolicy",
        "metadata": {"name": "orders", "namespace": "shop"},
        "spec": {
            "scaleTargetRef": {"name": "orders"},
            "kafka": {"group": group, "topics": [topic]},
            "maxLagSeconds": SLO_SECONDS,
            "minReplicas": 1,
            "maxReplicas": 6,
            "capacity": {"perReplica": CAPACITY, "learn": True, "priorWeightSeconds": 60},
            "targetUtilization": 0.7,
            "smoothing": {"halfLifeSeconds": 3, "forecastHorizonSeconds": 5},
            "scaleDown": {"stabilizationSeconds": 10, "paybackHorizonSeconds": 60},
            "startupSeconds": 3,
            "rebalanceStallSeconds": 2,
            "fallback": {"maxAgeSeconds": 10, "action": "error"},
            "hpa": {"syncPeriodSeconds": 2},
        },
    }
    path = directory / "orders.yaml"
    path.write_text(json.dumps(policy))
    return path


async def test_replicas_follow_the_load_and_lag_stays_within_the_slo(
    kafka: KafkaEndpoint, tmp_path: Path, unique: str
) -> None:
    topic, group = f"{unique}-orders", f"{unique}-workers"
    await create_topics(kafka.bootstrap, {topic: 6})
    policies = tmp_path / "policies"
    policies.mkdir()
    policy = load_policy_file(write_policy(policies, group, topic))

    async with LocalCluster(tmp_path / "pki") as cluster:
        settings = ServeSettings(
            kafka=KafkaSettings(bootstrap=(kafka.bootstrap,), request_timeout=3.0),
            policy_dir=policies,
            api=cluster.settings(authorization_always_allow=True),
            interval=1.0,
        )
        pool_settings = PoolSettings(
            bootstrap=kafka.bootstrap,
            group=group,
            topics=(topic,),
            capacity_per_replica=CAPACITY,
            heartbeat_interval_ms=500,
            session_timeout_ms=6000,
        )
        async with running_service(settings) as service, WorkerPool(pool_settings) as pool:
            await pool.scale_to(1)
            await pool.wait_ready(within=60)
            hpa = LocalHpa.for_policy(
                policy, pool, url=service.api.url, identity=ClientIdentity.from_cluster(cluster)
            )
            profile = RateProfile.from_schedule(SCHEDULE)
            lag_seconds: list[tuple[float, float]] = []
            async with hpa, LoadProducer(ProducerSettings(kafka.bootstrap, topic), profile) as producer:
                started = time.monotonic()
                while time.monotonic() - started < sum(s for s, _ in SCHEDULE):
                    for item in service.cache.snapshot.workloads[("shop", "orders")].values:
                        if item.metric == LAG_SECONDS:
                            lag_seconds.append((time.monotonic() - started, item.value))
                    await asyncio.sleep(1.0)
                stats = await producer.finished()

            timeline = [(s.at, s.replicas) for s in hpa.timeline]
            high_start, high_end = SCHEDULE[0][0], SCHEDULE[0][0] + SCHEDULE[1][0]
            peak = max(r for at, r in timeline if high_start <= at <= high_end + 5)
            final = timeline[-1][1]
            worst = max(v for _, v in lag_seconds)
            summary = f"timeline={timeline} lag_seconds={lag_seconds} produced={stats.produced}"
            # Rise: the high phase needs 6 replicas at 70 % utilisation; at least 4 is a rise whatever the noise.
            assert peak >= 4, summary
            # Fall: 45 s of low load (1 replica's worth) brings it back down.
            assert final <= 2, summary
            assert final < peak, summary
            # Lag within the SLO throughout, including the step up and every rebalance.
            assert worst <= SLO_SECONDS, summary
            # Every decision went through the HPA: no metric errors while the service was healthy.
            assert not [s for s in hpa.timeline if s.errors], summary
