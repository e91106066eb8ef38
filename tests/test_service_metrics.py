"""What the scaling loop reports to Prometheus, cycle by cycle, against the real broker (or a closed port).

Each test drives :class:`ScalingLoop` one cycle at a time with an injected clock, so it can say exactly
what a counter must read after which event. tests/test_prometheus.py checks the same series end to end
through a real Prometheus.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from lagscaler_demo.localkafka import KafkaEndpoint, free_port
from prometheus_client.parser import text_string_to_metric_families
from test_service import lagging_workload, policy_yaml

from lagscaler.edges.api import MetricsCache
from lagscaler.edges.kafka import KafkaSettings
from lagscaler.edges.observability import REASON_CODES, SAMPLE_ERROR_REASONS, ServiceMetrics
from lagscaler.edges.sampler import Sampler, SamplerSettings
from lagscaler.service.loop import ScalingLoop
from lagscaler.service.policies import PolicyWatcher

WORKLOAD = {"workload_namespace": "shop", "workload": "orders"}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def exported(metrics: ServiceMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The exposition as Prometheus parses it: (sample name, labels) → value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
    }


def value(metrics: ServiceMetrics, name: str, **labels: str) -> float | None:
    return exported(metrics).get((name, frozenset(labels.items())))


@contextlib.asynccontextmanager
async def scaling_loop(bootstrap: str, policies: Path, clock: Clock) -> AsyncIterator[ScalingLoop]:
    """A loop whose metrics and engine share ``clock``; the test runs its cycles."""
    kafka = KafkaSettings(bootstrap=(bootstrap,), request_timeout=1.0)
    async with Sampler(kafka, SamplerSettings(all_groups=True, cycle_timeout=3.0)) as sampler:
        metrics = ServiceMetrics(clock=clock)
        yield ScalingLoop(sampler, PolicyWatcher(policies), MetricsCache(), metrics, clock=clock)


@pytest.fixture
async def orders(kafka: KafkaEndpoint, tmp_path: Path, unique: str) -> tuple[Path, str, str]:
    """A lagging group and its policy directory: (policies, topic, group)."""
    topic, group = f"{unique}-orders", f"{unique}-workers"
    return await lagging_workload(kafka.bootstrap, tmp_path, "orders", topic, group), topic, group


@pytest.mark.kafka
async def test_a_decision_change_counts_once_not_every_cycle_until_pods_join(
    kafka: KafkaEndpoint, orders: tuple[Path, str, str]
) -> None:
    """The group has no member: the decision is above the current count every cycle, yet it changed once."""
    policies, topic, group = orders
    async with scaling_loop(kafka.bootstrap, policies, clock := Clock(1_000.0)) as loop:
        metrics = loop.metrics
        for direction in ("up", "down"):  # the workload loads in the first cycle
            assert value(metrics, "lagscaler_decision_changes_total", **WORKLOAD, direction=direction) is None
        await loop.cycle()
        first = loop.decisions["shop/orders"].desired_replicas
        for direction in ("up", "down"):  # created at zero: the first decision is no change
            assert value(metrics, "lagscaler_decision_changes_total", **WORKLOAD, direction=direction) == 0
        (policies / "orders.yaml").write_text(policy_yaml("orders", group, topic, minReplicas=first + 2))
        for _ in range(4):
            clock.now += 1
            await loop.cycle()
            decision = loop.decisions["shop/orders"]
            assert decision.desired_replicas == first + 2
            assert decision.current_replicas == 0  # no pod has joined
            assert value(metrics, "lagscaler_decision_changes_total", **WORKLOAD, direction="up") == 1
            assert value(metrics, "lagscaler_decision_changes_total", **WORKLOAD, direction="down") == 0
        assert value(metrics, "lagscaler_decision_replicas", **WORKLOAD) == first + 2
        reasons = set(decision.reasons)
        for code in REASON_CODES:
            expected = 1.0 if code in reasons else 0.0
            assert value(metrics, "lagscaler_decision_reason", **WORKLOAD, reason=code) == expected, code


@pytest.mark.kafka
async def test_data_age_is_measured_when_scraped_and_a_removed_workload_leaves_no_series(
    kafka: KafkaEndpoint, orders: tuple[Path, str, str]
) -> None:
    policies, _, _ = orders
    async with scaling_loop(kafka.bootstrap, policies, clock := Clock(0.0)) as loop:
        metrics = loop.metrics
        await loop.cycle()
        assert loop.sampler.latest is not None
        sampled_at = loop.sampler.latest.sampled_at
        for later in (1.5, 40.0):  # no cycle in between: a stalled loop's data keeps ageing
            clock.now = sampled_at + later
            assert value(metrics, "lagscaler_cache_age_seconds", **WORKLOAD) == pytest.approx(later)
        assert value(metrics, "lagscaler_workload_stale_after_seconds", **WORKLOAD) == 3.0
        (policies / "orders.yaml").unlink()
        await loop.cycle()
        left = [key for key in exported(metrics) if ("workload", "orders") in key[1]]
        assert left == []


async def test_unreachable_kafka_counts_each_request_once_and_a_never_sampled_age_is_finite(
    tmp_path: Path,
) -> None:
    """Against a closed loopback port: every bootstrap Metadata request fails, and is counted once, as failed."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "orders.yaml").write_text(policy_yaml("orders", "workers", "orders"))
    async with scaling_loop(f"127.0.0.1:{free_port()}", policies, clock := Clock(5_000.0)) as loop:
        metrics = loop.metrics
        for reason in SAMPLE_ERROR_REASONS:  # present before anything failed: a healthy panel shows 0
            assert value(metrics, "lagscaler_sample_cycle_errors_total", reason=reason) == 0
        for _ in range(3):
            await loop.cycle()
            clock.now += 10
        stats = loop.sampler.stats
        assert stats.requests["Metadata"] == 3
        assert value(metrics, "lagscaler_kafka_requests_total", api="Metadata", outcome="failed") == 3
        assert value(metrics, "lagscaler_kafka_requests_total", api="Metadata", outcome="ok") == 0
        assert value(metrics, "lagscaler_sample_cycle_errors_total", reason="unreachable") == 3
        # Never sampled: the age counts from when the policy loaded (first cycle), never +Inf.
        assert value(metrics, "lagscaler_cache_age_seconds", **WORKLOAD) == 30.0


async def test_a_reload_that_only_adds_an_invalid_file_is_counted(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "orders.yaml").write_text(policy_yaml("orders", "workers", "orders"))
    async with scaling_loop(f"127.0.0.1:{free_port()}", policies, Clock(0.0)) as loop:
        metrics = loop.metrics
        assert value(metrics, "lagscaler_policy_reloads_total", outcome="partial") == 0
        await loop.cycle()
        assert value(metrics, "lagscaler_policy_reloads_total", outcome="ok") == 1
        await loop.cycle()  # nothing changed: no reload
        assert value(metrics, "lagscaler_policy_reloads_total", outcome="ok") == 1
        (policies / "broken.yaml").write_text(
            "apiVersion: lagscaler.io/v1\nkind: ScalingPolicy\nspec: [broken\n"
        )
        await loop.cycle()
        await loop.cycle()
        assert value(metrics, "lagscaler_policy_reloads_total", outcome="partial") == 1
        assert value(metrics, "lagscaler_policy_errors") == 1
        assert [p.name for p in loop.watcher.current.policies] == ["orders"]  # nothing else changed
