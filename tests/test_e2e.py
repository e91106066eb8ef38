"""End to end, as in a cluster but on one machine: traffic → real broker → worker pool ← HPA ← lagscaler.

This is the scaling part of ``lagscaler demo``, run as a test: a producer follows a load curve into a
real topic; a pool of real consumer processes (bounded per-replica capacity) consumes it;
``lagscaler serve`` samples the group, decides and serves the external metrics API over HTTPS; a local
HPA loop reads that API exactly as the aggregator forwards the controller's requests and scales the
pool. What a user relies on: replicas rise with the load, fall after it, and lag stays within the SLO.
"""

from __future__ import annotations

import pytest
from lagscaler_demo.cli.scaling import ScalingDemoSettings, run_scaling_demo
from lagscaler_demo.localkafka import KafkaEndpoint

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


async def test_replicas_follow_the_load_and_lag_stays_within_the_slo(
    kafka: KafkaEndpoint, unique: str
) -> None:
    demo = ScalingDemoSettings(topic=f"{unique}-clicks", group=f"{unique}-workers", duration=100.0)
    lines: list[str] = []
    result = await run_scaling_demo(kafka.bootstrap, demo, say=lines.append)
    summary = "\n".join(lines)
    # The peak (600 msg/s) needs ceil(600 / (150 × 0.7)) = 6 replicas; at least 4 is a rise whatever the noise.
    assert result.peak >= 4, summary
    # 40 s of low load (one replica's worth) brings it back down.
    assert result.final <= 2, summary
    assert result.final < result.peak, summary
    # Lag within the SLO throughout, including the step up and every rebalance.
    assert result.within_slo, summary
    assert result.lag_seconds, summary
    # Every decision went through the HPA: no metric errors while the service was healthy.
    assert result.metric_errors == 0, summary
    assert result.scale_events <= 6, summary  # up in a step or two, down in a step or two: no flapping
