"""What the scaling loop logs: fixed event phrases, with the cycle and the workload bound as context.

An operator greps one replica's JSON lines for ``cycle`` or ``workload``; these tests read the same
events as dicts (the ``logs`` fixture), never the rendered text.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import structlog
from lagscaler_demo.localkafka import KafkaEndpoint, free_port
from structlog.typing import EventDict
from support import eventually
from test_service import lagging_workload, policy_yaml
from test_service_metrics import Clock, scaling_loop

from lagscaler.edges.api import MetricsCache
from lagscaler.edges.kafka import KafkaSettings
from lagscaler.edges.observability import ServiceMetrics
from lagscaler.edges.sampler import Sampler, SamplerSettings
from lagscaler.service.loop import LoopSettings, ScalingLoop
from lagscaler.service.policies import PolicySet, PolicyWatcher


def events(logs: list[EventDict], phrase: str) -> list[EventDict]:
    return [e for e in logs if e["event"] == phrase]


@pytest.mark.kafka
async def test_a_decision_change_is_one_event_naming_its_workload_group_and_cycle(
    kafka: KafkaEndpoint, tmp_path: Path, unique: str, logs: list[EventDict]
) -> None:
    topic, group = f"{unique}-orders", f"{unique}-workers"
    policies = await lagging_workload(kafka.bootstrap, tmp_path, "orders", topic, group)
    async with scaling_loop(kafka.bootstrap, policies, clock := Clock(1_000.0)) as loop:
        await loop.cycle()
        first = loop.decisions["shop/orders"].desired_replicas
        (policies / "orders.yaml").write_text(policy_yaml("orders", group, topic, minReplicas=first + 2))
        for _ in range(3):  # the decision changes in cycle 2 and then holds: one event, not one a cycle
            clock.now += 1
            await loop.cycle()
        reasons = list(loop.decisions["shop/orders"].reasons)
    assert events(logs, "desired replicas changed") == [
        {
            "event": "desired replicas changed",
            "log_level": "info",
            "cycle": 2,
            "workload": "shop/orders",
            "group": group,
            "previous": first,
            "desired": first + 2,
            "current": 0,  # no consumer has joined the group
            "reasons": reasons,
        }
    ]


async def test_every_event_of_a_cycle_carries_its_number_and_none_outside_it(
    tmp_path: Path, logs: list[EventDict]
) -> None:
    """Against a closed loopback port: the sampler and the policy watcher log inside the cycle."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "orders.yaml").write_text(policy_yaml("orders", "workers", "orders"))
    async with scaling_loop(f"127.0.0.1:{free_port()}", policies, Clock(0.0)) as loop:
        await loop.cycle()
        (policies / "broken.yaml").write_text("apiVersion: lagscaler.io/v1\nkind: ScalingPolicy\nspec: [\n")
        await loop.cycle()
        await loop.cycle()
    assert [e["cycle"] for e in events(logs, "sample cycle failed")] == [1, 2, 3]
    [invalid] = events(logs, "invalid policy file")
    assert (invalid["cycle"], invalid["file"]) == (2, str(policies / "broken.yaml"))
    assert structlog.contextvars.get_contextvars() == {}  # restored when each cycle ended


class _BrokenWatcher(PolicyWatcher):
    """A policy watcher with a bug: a fault no real directory produces, to see how a failed cycle is logged."""

    async def reload(self) -> PolicySet:
        raise RuntimeError("a bug")


async def test_a_cycle_that_raises_is_logged_with_its_number_and_traceback_and_the_loop_goes_on(
    tmp_path: Path, logs: list[EventDict]
) -> None:
    kafka = KafkaSettings(bootstrap=(f"127.0.0.1:{free_port()}",))
    async with Sampler(kafka, SamplerSettings(all_groups=True)) as sampler:
        loop = ScalingLoop(
            sampler,
            _BrokenWatcher(tmp_path),
            MetricsCache(),
            ServiceMetrics(),
            settings=LoopSettings(interval=0.0),
        )
        task = asyncio.create_task(loop.run())
        try:
            failed = await eventually(lambda: events(logs, "scaling cycle failed")[1:])
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert [(e["cycle"], e["log_level"], e["exc_info"]) for e in failed[:1]] == [(2, "error", True)]
    assert loop.last_error == "RuntimeError: a bug"
