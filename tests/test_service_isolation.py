"""One workload's failure never freezes the others: the real loop against the real broker, one row poisoned.

The fault is injected through the loop's ``engine`` seam (a wrapper around the real engine that raises
for one workload's row): a real policy that makes the engine raise is exactly what validation is meant
to stop, so there is none to load. Everything else (sampler, broker, policies, cache, metrics) is real.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lagscaler_demo.localkafka import KafkaEndpoint
from lagscaler_demo.seed import produce
from structlog.typing import EventDict
from test_service import lagging_workload, policy_yaml, seed_lagging_group
from test_service_metrics import Clock, value

from lagscaler.core.engine import Decisions, EngineState, ObservationBatch, PolicyArrays, decide
from lagscaler.edges.api import MetricsCache
from lagscaler.edges.api.cache import Freshness, WorkloadMetrics
from lagscaler.edges.kafka import KafkaSettings
from lagscaler.edges.observability import ServiceMetrics
from lagscaler.edges.sampler import Sampler, SamplerSettings
from lagscaler.service.loop import ScalingLoop
from lagscaler.service.policies import PolicyWatcher

pytestmark = pytest.mark.kafka

FAILED = "workload failed this cycle, serving its last values or fallback"


class PoisonedEngine:
    """The real engine, except that it raises for ``key``'s row while ``poisoned`` (a batch holding it
    raises too, as a NaN in one row of a numpy call would)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.poisoned = True

    def __call__(
        self, params: PolicyArrays, state: EngineState, obs: ObservationBatch
    ) -> tuple[Decisions, EngineState]:
        if self.poisoned and self.key in params.keys:
            raise FloatingPointError("poisoned row")
        return decide(params, state, obs)


def lag_of(workload: WorkloadMetrics) -> float:
    return next(v.value for v in workload.values if v.metric == "lagscaler_lag_messages")


@dataclass
class TwoWorkloads:
    """``shop/orders`` healthy, ``shop/billing`` poisoned, both lagging 600 on real groups."""

    loop: ScalingLoop
    engine: PoisonedEngine
    clock: Clock
    orders_topic: str
    billing_topic: str

    def served(self, name: str) -> WorkloadMetrics:
        return self.loop.cache.snapshot.workloads[("shop", name)]

    def errors(self, stage: str) -> float | None:
        labels = {"workload_namespace": "shop", "workload": "billing", "stage": stage}
        return value(self.loop.metrics, "lagscaler_workload_errors_total", **labels)

    async def cycle(self) -> None:
        self.clock.now += 1.0
        await self.loop.cycle()


@pytest.fixture
async def two(kafka: KafkaEndpoint, tmp_path: Path, unique: str) -> AsyncIterator[TwoWorkloads]:
    orders_topic, orders_group = f"{unique}-orders", f"{unique}-workers"
    billing_topic, billing_group = f"{unique}-billing", f"{unique}-billers"
    policies = await lagging_workload(kafka.bootstrap, tmp_path, "orders", orders_topic, orders_group)
    await seed_lagging_group(kafka.bootstrap, billing_topic, billing_group)
    fallback = {"maxAgeSeconds": 3, "action": "replicas", "replicas": 2}
    (policies / "billing.yaml").write_text(
        policy_yaml("billing", billing_group, billing_topic, fallback=fallback)
    )
    engine = PoisonedEngine("shop/billing")
    clock = Clock(1_000.0)
    kafka_settings = KafkaSettings(bootstrap=(kafka.bootstrap,), request_timeout=1.0)
    async with Sampler(kafka_settings, SamplerSettings(all_groups=True, cycle_timeout=3.0)) as sampler:
        metrics = ServiceMetrics(clock=clock)
        watcher = PolicyWatcher(policies)
        loop = ScalingLoop(sampler, watcher, MetricsCache(clock), metrics, clock=clock, engine=engine)
        yield TwoWorkloads(loop, engine, clock, orders_topic, billing_topic)


async def test_a_workload_whose_decision_fails_serves_its_fallback_while_the_other_is_decided(
    kafka: KafkaEndpoint, two: TwoWorkloads, logs: list[EventDict]
) -> None:
    await two.cycle()  # poisoned from the first cycle: billing never decided serves its fallback at once
    assert "shop/orders" in two.loop.decisions
    assert "shop/billing" not in two.loop.decisions
    assert lag_of(two.served("orders")) == 600
    assert two.served("orders").freshness(time.time()) is Freshness.FRESH  # sample times are the broker's
    billing = two.served("billing")
    assert billing.freshness(time.time()) is Freshness.STALE_FALLBACK
    assert "poisoned row" in billing.detail
    assert two.errors("decide") == 1

    await produce(kafka.bootstrap, {(two.orders_topic, 0): 50})
    await two.cycle()  # orders' values follow the broker; billing is counted again, but logged once
    assert lag_of(two.served("orders")) == 650
    assert two.errors("decide") == 2
    assert two.errors("publish") == 0
    failures = [e for e in logs if e["event"] == FAILED]
    assert len(failures) == 1
    assert failures[0]["workload"] == "shop/billing"
    assert failures[0]["stage"] == "decide"
    assert "poisoned row" in failures[0]["problem"]

    two.engine.poisoned = False
    await two.cycle()
    assert two.served("billing").freshness(time.time()) is Freshness.FRESH
    assert lag_of(two.served("billing")) == 600
    recovered = [e["workload"] for e in logs if e["event"] == "workload decided and published again"]
    assert recovered == ["shop/billing"]


async def test_a_workload_that_fails_after_a_good_cycle_keeps_its_last_values_until_they_age_out(
    kafka: KafkaEndpoint, two: TwoWorkloads, logs: list[EventDict]
) -> None:
    two.engine.poisoned = False
    await two.cycle()
    decided_at = two.served("billing").sampled_at
    two.engine.poisoned = True
    await produce(kafka.bootstrap, {(two.orders_topic, 1): 50, (two.billing_topic, 1): 50})
    await two.cycle()
    assert lag_of(two.served("orders")) == 650
    assert two.served("orders").sampled_at > decided_at
    kept = two.served("billing")  # under its old sample time, so it turns stale by age
    assert kept.sampled_at == decided_at
    assert lag_of(kept) == 600
    assert "poisoned row" in kept.detail
    assert kept.freshness(decided_at + 3.5) is Freshness.STALE_FALLBACK  # maxAgeSeconds: 3
    await two.cycle()
    assert two.served("billing").sampled_at == decided_at
    assert two.errors("decide") == 2
    assert len([e for e in logs if e["event"] == FAILED]) == 1
