"""``lagscaler serve`` end to end on the real broker: sample → decide → serve, reloads, outages.

The API is called exactly as the aggregator calls it (front-proxy client certificate plus
``X-Remote-*`` headers), so these tests see what the HPA would see.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from lagscaler_demo.harness import LocalCluster, aggregator_headers
from lagscaler_demo.localkafka import KafkaEndpoint, LocalBroker
from lagscaler_demo.seed import commit, create_topics, produce
from structlog.typing import EventDict
from support import eventually

from lagscaler.edges.api import parse_quantity
from lagscaler.edges.kafka import KafkaSettings
from lagscaler.service.run import RunningService, ServeSettings, running_service

pytestmark = pytest.mark.kafka

GV = "/apis/external.metrics.k8s.io/v1beta1"


def policy_yaml(name: str, group: str, topic: str, **spec: Any) -> str:
    fallback = spec.pop("fallback", {"maxAgeSeconds": 3, "action": "error"})
    body = {
        "scaleTargetRef": {"name": name},
        "kafka": {"group": group, "topics": [topic]},
        "maxLagSeconds": 30,
        "minReplicas": 1,
        "maxReplicas": 8,
        "capacity": {"perReplica": 100, "learn": False},
        "fallback": fallback,
        **spec,
    }
    doc = {
        "apiVersion": "lagscaler.io/v1",
        "kind": "ScalingPolicy",
        "metadata": {"name": name, "namespace": "shop"},
    }
    doc["spec"] = body
    return json.dumps(doc)  # JSON is YAML


async def seed_lagging_group(bootstrap: str, topic: str, group: str) -> None:
    """4 partitions × 250 messages, the group committed 100 on each: lag 600."""
    await create_topics(bootstrap, {topic: 4})
    await produce(bootstrap, {(topic, p): 250 for p in range(4)})
    await commit(bootstrap, group, {(topic, p): 100 for p in range(4)})


async def lagging_workload(
    bootstrap: str, tmp_path: Path, name: str, topic: str, group: str, **spec: Any
) -> Path:
    """A lagging group (see :func:`seed_lagging_group`) and a policy directory holding ``name.yaml``."""
    await seed_lagging_group(bootstrap, topic, group)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / f"{name}.yaml").write_text(policy_yaml(name, group, topic, **spec))
    return policies


class Client:
    """The aggregator's view of the API: front-proxy certificate and user headers."""

    def __init__(self, cluster: LocalCluster, service: RunningService) -> None:
        self.url = service.api.url
        self.metrics_url = service.api.metrics_url
        self.ssl = cluster.client_context(cluster.front_proxy)
        self.session = aiohttp.ClientSession()

    async def get(self, path: str) -> tuple[int, dict[str, Any]]:
        async with self.session.get(self.url + path, ssl=self.ssl, headers=aggregator_headers()) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, {"text": await response.text()}

    async def metric(self, metric: str, workload: str, namespace: str = "shop") -> tuple[int, dict[str, Any]]:
        return await self.get(
            f"{GV}/namespaces/{namespace}/{metric}?labelSelector=lagscaler.io/workload%3D{workload}"
        )

    async def value(self, metric: str, workload: str) -> float:
        status, body = await self.metric(metric, workload)
        assert status == 200, body
        return sum(float(parse_quantity(item["value"])) for item in body["items"])

    async def prometheus(self) -> str:
        assert self.metrics_url is not None
        async with self.session.get(self.metrics_url) as response:
            return await response.text()

    async def close(self) -> None:
        await self.session.close()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    async with LocalCluster(tmp_path / "pki") as local:
        yield local


def serve_settings(
    cluster: LocalCluster, bootstrap: str, policy_dir: Path, interval: float = 0.5
) -> ServeSettings:
    return ServeSettings(
        kafka=KafkaSettings(bootstrap=(bootstrap,), request_timeout=2.0),
        policy_dir=policy_dir,
        api=cluster.settings(authorization_always_allow=True),
        interval=interval,
        cycle_timeout=3.0,
    )


async def test_serves_lag_and_a_decision_for_a_real_group(
    kafka: KafkaEndpoint, cluster: LocalCluster, tmp_path: Path, unique: str
) -> None:
    topic, group = f"{unique}-orders", f"{unique}-workers"
    policies = await lagging_workload(kafka.bootstrap, tmp_path, "orders", topic, group)

    async with running_service(serve_settings(cluster, kafka.bootstrap, policies)) as service:
        client = Client(cluster, service)
        try:

            async def ready() -> None:
                status, _ = await client.get("/readyz")
                assert status == 200

            await eventually(ready)
            assert await client.value("lagscaler_lag_messages", "orders") == 600
            status, body = await client.metric("lagscaler_lag_messages", "orders")
            assert status == 200
            item = body["items"][0]
            assert item["metricLabels"] == {
                "lagscaler.io/workload": "orders",
                "lagscaler.io/group": group,
                "lagscaler.io/topic": topic,
            }
            desired = await client.value("lagscaler_desired_replicas", "orders")
            assert 1 <= desired <= 4  # within [min, partitions]: a fifth consumer would idle
            exposition = await client.prometheus()
            assert (
                'lagscaler_workload_lag_messages{workload="orders",workload_namespace="shop"} 600.0'
                in exposition
            )
            assert "lagscaler_kafka_requests_total" in exposition
            # The group is not consuming, so the produce rate is 0 and lag does not move: no scale-down
            # below what the backlog needs, and the decision is explained in the loop's record.
            decision = service.loop.decisions["shop/orders"]
            assert decision.desired_replicas == round(desired)
        finally:
            await client.close()


async def test_a_group_or_topic_name_that_is_no_label_value_is_served_without_that_label(
    kafka: KafkaEndpoint, cluster: LocalCluster, tmp_path: Path, unique: str
) -> None:
    """Kafka names may be longer than a label value's 63 characters, and a group name may hold any
    character: such a workload is served without the label, and never stops the others being served
    (it did: one cycle's metrics are published together, and the bad label refused them all)."""
    plain_topic, plain_group = f"{unique}-orders", f"{unique}-workers"
    long_topic, odd_group = f"{unique}-" + "t" * 70, f"{unique}:billing consumers"
    policies = await lagging_workload(kafka.bootstrap, tmp_path, "orders", plain_topic, plain_group)
    await seed_lagging_group(kafka.bootstrap, long_topic, odd_group)
    (policies / "billing.yaml").write_text(policy_yaml("billing", odd_group, long_topic))

    async with running_service(serve_settings(cluster, kafka.bootstrap, policies)) as service:
        client = Client(cluster, service)
        try:
            for workload in ("orders", "billing"):
                await eventually(lambda: _has_value(client, workload))  # noqa: B023 - awaited at once
            _, body = await client.metric("lagscaler_lag_messages", "billing")
            assert body["items"][0]["metricLabels"] == {"lagscaler.io/workload": "billing"}
            _, body = await client.metric("lagscaler_lag_messages", "orders")
            assert body["items"][0]["metricLabels"]["lagscaler.io/group"] == plain_group
        finally:
            await client.close()


async def test_policy_reload_keeps_the_last_good_version(
    kafka: KafkaEndpoint, cluster: LocalCluster, tmp_path: Path, unique: str
) -> None:
    topic, group = f"{unique}-pay", f"{unique}-payers"
    policies = await lagging_workload(kafka.bootstrap, tmp_path, "pay", topic, group, minReplicas=2)
    path = policies / "pay.yaml"

    async with running_service(serve_settings(cluster, kafka.bootstrap, policies)) as service:
        client = Client(cluster, service)
        try:

            async def desired_is(n: int) -> None:
                assert await client.value("lagscaler_desired_replicas", "pay") == n

            await eventually(lambda: desired_is(2))
            path.write_text("apiVersion: lagscaler.io/v1\nkind: ScalingPolicy\nspec: [broken\n")

            async def reports_error() -> str:
                status, _ = await client.get("/readyz")
                assert status == 200  # still serving the last good version
                async with client.session.get(client.url + "/readyz?verbose", ssl=client.ssl) as response:
                    text = await response.text()
                assert "pay.yaml" in text
                assert "keeping the last valid version of shop/pay" in text
                return text

            await eventually(reports_error)
            assert "lagscaler_policy_errors 1.0" in await client.prometheus()
            await eventually(lambda: desired_is(2))

            path.write_text(policy_yaml("pay", group, topic, minReplicas=3))
            await eventually(lambda: desired_is(3))
            assert "lagscaler_policy_errors 0.0" in await client.prometheus()

            path.unlink()

            async def gone() -> None:
                status, _ = await client.metric("lagscaler_desired_replicas", "pay")
                assert status == 404

            await eventually(gone)
        finally:
            await client.close()


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@pytest.mark.slow
async def test_broker_outage_of_a_minute_freezes_or_falls_back_per_policy_then_recovers(
    cluster: LocalCluster, tmp_path: Path, unique: str
) -> None:
    """Issue 4's outage: 60 s without the broker, no crash, stale per policy, back within two cycles."""
    interval = 1.0
    broker = LocalBroker()
    await asyncio.to_thread(broker.start)
    try:
        topic = f"{unique}-t"
        await seed_lagging_group(broker.bootstrap, topic, "freezer")
        await commit(broker.bootstrap, "holder", {(topic, p): 100 for p in range(4)})
        policies = tmp_path / "policies"
        policies.mkdir()
        (policies / "freeze.yaml").write_text(policy_yaml("freeze", "freezer", topic))
        (policies / "hold.yaml").write_text(
            policy_yaml(
                "hold", "holder", topic, fallback={"maxAgeSeconds": 3, "action": "replicas", "replicas": 5}
            )
        )
        settings = serve_settings(cluster, broker.bootstrap, policies, interval=interval)
        async with running_service(settings) as service:
            client = Client(cluster, service)
            try:

                async def fresh() -> None:
                    assert await client.value("lagscaler_lag_messages", "freeze") == 600
                    assert await client.value("lagscaler_lag_messages", "hold") == 600

                await eventually(fresh)
                rss_before = _rss_kib()
                await asyncio.to_thread(broker.kill)
                outage_started = time.monotonic()

                async def stale() -> None:
                    status, body = await client.metric("lagscaler_desired_replicas", "freeze")
                    assert status == 503, body  # the HPA freezes
                    assert body["reason"] == "ServiceUnavailable"
                    assert await client.value("lagscaler_desired_replicas", "hold") == 5  # the fallback

                await eventually(stale, within=20)
                while time.monotonic() - outage_started < 60:
                    await stale()  # stays that way for the whole minute, nothing crashes
                    await asyncio.sleep(2)
                assert service.loop.sampler_ready().ok  # served before: stays ready, says why in detail
                assert "failed" in service.loop.sampler_ready().detail

                await asyncio.to_thread(broker.start)
                returned = service.loop.cycles
                await eventually(fresh, within=30)
                # Back within two cycles once the broker answers again (its own start-up is already over
                # here), besides the one under way when it did: counted in cycles, not seconds, so a
                # slow machine cannot fail it and a loop that needs more cycles to reconnect still does.
                assert service.loop.cycles - returned <= 3, service.loop.cycles - returned
                assert _rss_kib() - rss_before < 50 * 1024  # no growth worth the name over the outage
            finally:
                await client.close()
    finally:
        await asyncio.to_thread(broker.close)


async def test_two_replicas_serve_the_same_answer_whichever_samples_first(
    kafka: KafkaEndpoint, cluster: LocalCluster, tmp_path: Path, unique: str
) -> None:
    """Two service replicas, started apart, sample on their own and give the HPA the same values."""
    topic, group = f"{unique}-ha", f"{unique}-ha-workers"
    policies = await lagging_workload(kafka.bootstrap, tmp_path, "ha", topic, group, minReplicas=2)
    settings = serve_settings(cluster, kafka.bootstrap, policies)
    async with running_service(settings) as first:
        one = Client(cluster, first)
        try:
            await eventually(lambda: _has_value(one, "ha"))
            await asyncio.sleep(1.5)  # the second replica starts later and samples at other moments
            async with running_service(settings) as second:
                two = Client(cluster, second)
                try:
                    await eventually(lambda: _has_value(two, "ha"))
                    for metric in ("lagscaler_desired_replicas", "lagscaler_lag_messages"):
                        assert await one.value(metric, "ha") == await two.value(metric, "ha"), metric
                finally:
                    await two.close()
        finally:
            await one.close()


async def _has_value(client: Client, workload: str) -> None:
    assert await client.value("lagscaler_lag_messages", workload) == 600


def set_aside(directory: Path) -> list[Path]:
    """State files the service found unreadable and moved aside."""
    return sorted(directory.glob("engine.npz.unreadable-*"))


async def test_the_engine_state_survives_a_restart_and_a_damaged_file_is_kept_aside(
    kafka: KafkaEndpoint, cluster: LocalCluster, tmp_path: Path, unique: str
) -> None:
    topic, group = f"{unique}-orders", f"{unique}-workers"
    policies = await lagging_workload(kafka.bootstrap, tmp_path, "orders", topic, group)
    state_file = tmp_path / "engine.npz"
    settings = replace(serve_settings(cluster, kafka.bootstrap, policies), state_file=state_file)

    async with running_service(settings) as service:
        assert service.loop.restored == ()

        async def decided() -> None:
            assert "shop/orders" in service.loop.decisions

        await eventually(decided)
    # Written at least once while running, and again when the loop stopped.
    assert state_file.exists()

    async with running_service(settings) as service:
        assert service.loop.restored == ("shop/orders",)

    state_file.write_bytes(b"half a file")
    async with running_service(settings) as service:
        assert service.loop.restored == ()
        await eventually(decided)
    kept = set_aside(tmp_path)
    assert len(kept) == 1
    assert kept[0].read_bytes() == b"half a file"  # nothing is lost
    assert state_file.exists()  # a fresh state was written in its place


async def test_a_state_file_that_cannot_be_written_costs_a_warning_not_the_service(
    kafka: KafkaEndpoint, cluster: LocalCluster, tmp_path: Path, unique: str, logs: list[EventDict]
) -> None:
    """A full, read-only or missing volume (here: the state file's directory is a regular file, so
    every write fails as it would there) must not stop scaling, nor the shutdown."""
    topic, group = f"{unique}-orders", f"{unique}-workers"
    policies = await lagging_workload(kafka.bootstrap, tmp_path, "orders", topic, group)
    (tmp_path / "volume").write_text("not a directory")
    state_file = tmp_path / "volume" / "engine.npz"
    settings = replace(serve_settings(cluster, kafka.bootstrap, policies), state_file=state_file)
    async with running_service(settings) as service:
        client = Client(cluster, service)
        try:
            await eventually(lambda: _has_value(client, "orders"))
            exposition = await client.prometheus()
            assert 'lagscaler_sample_cycle_errors_total{reason="state-file"}' in exposition
        finally:
            await client.close()
    warnings = [e for e in logs if e["event"] == "engine state not saved"]
    assert len(warnings) >= 2  # the periodic save and the one at shutdown
    assert all(e["file"] == str(state_file) and e["log_level"] == "warning" for e in warnings)
