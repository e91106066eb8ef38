"""The scaling half of ``lagscaler demo``: lagscaler driving a real consumer pool through a local HPA.

Everything a cluster would run, on one machine and the real broker: a producer following a load
curve, a pool of consumer processes with a fixed per-replica capacity (the "Deployment"),
``lagscaler serve`` (sampler, engine, HTTPS external metrics API with front-proxy authentication) and
a local HPA loop that reads the API as the aggregator forwards the controller's requests and scales
the pool. A line per HPA sync shows load, lag against the SLO, and replicas as they follow.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lagscaler.core.hpa.served import LAG_SECONDS
from lagscaler.errors import UserError

if TYPE_CHECKING:
    from lagscaler.core.engine import Decision
    from lagscaler.core.policy import ScalingPolicy
    from lagscaler.service.run import RunningService
    from lagscaler_demo.playground import PoolEvent, RateProfile


@dataclass(frozen=True)
class ScalingDemoSettings:
    """The load curve and the workload. The peak needs ``ceil(peak / (capacity × 0.7))`` replicas.

    ``load``, when given, replaces the default shape: ``(seconds from the start, msg/s)`` points
    with the rate linear in between (as the simulator reads a trace), the first at 0 and the last
    at ``duration``. ``low`` and ``peak`` then only describe it.
    """

    topic: str = "lagscaler-demo-clicks"
    group: str = "lagscaler-demo-clicks-consumer"
    partitions: int = 6
    capacity: float = 150.0  # msg/s one worker processes
    slo_seconds: float = 15.0
    low: float = 60.0
    peak: float = 600.0
    duration: float = 120.0  # seconds of load: a quiet start, a ramp to the peak, a plateau, a fall
    sync_seconds: float = 3.0
    load: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        if self.duration < 40:
            raise UserError(
                f"--duration must be at least 40 seconds to show a rise and a fall, got {self.duration:g}"
            )
        if self.load and (self.load[0][0] != 0 or self.load[-1][0] != self.duration):
            raise UserError(f"a demo load runs from 0 to the duration ({self.duration:g} s): {self.load}")

    def schedule(self) -> list[tuple[float, float]]:
        """(seconds, msg/s) steps: 15 % quiet, 10 % ramp in three steps, 35 % peak, 40 % quiet again."""
        d = self.duration
        ramp = [(0.1 * d / 3, self.low + (self.peak - self.low) * k / 3) for k in (1, 2, 3)]
        return [(0.15 * d, self.low), *ramp, (0.35 * d, self.peak), (0.4 * d, self.low)]

    def profile(self) -> RateProfile:
        """What the producer sends: ``load`` interpolated, or the default :meth:`schedule`."""
        import numpy as np  # noqa: PLC0415 - the demo's heavy imports wait until it runs

        from lagscaler_demo.playground import RateProfile  # noqa: PLC0415

        if not self.load:
            return RateProfile.from_schedule(self.schedule())
        times, rates = zip(*self.load, strict=True)
        return RateProfile(
            "load", np.asarray(times, dtype=float), np.asarray(rates, dtype=float), steps=False
        )


@dataclass(frozen=True)
class ScalingDemoResult:
    """What happened, on one clock (seconds since the load started; negative before it).

    ``replicas``: the Deployment's count after each HPA sync; ``lag_seconds``: the lag in seconds
    lagscaler served, at every cycle of the service; ``events``: what the workers reported (joins,
    assignments, commits); ``policy``: the policy lagscaler ran.
    """

    replicas: list[tuple[float, int]] = field(default_factory=list)
    lag_seconds: list[tuple[float, float]] = field(default_factory=list)
    metric_errors: int = 0
    slo_seconds: float = 0.0
    events: list[tuple[float, PoolEvent]] = field(default_factory=list)
    policy: ScalingPolicy | None = None

    @property
    def worst_lag(self) -> float:
        return max((v for _, v in self.lag_seconds if math.isfinite(v)), default=0.0)

    @property
    def peak(self) -> int:
        return max((r for _, r in self.replicas), default=0)

    @property
    def final(self) -> int:
        return self.replicas[-1][1] if self.replicas else 0

    @property
    def scale_events(self) -> int:
        return sum(1 for (_, a), (_, b) in zip(self.replicas, self.replicas[1:], strict=False) if a != b)

    @property
    def within_slo(self) -> bool:
        return self.worst_lag <= self.slo_seconds


def _policy(demo: ScalingDemoSettings) -> dict[str, object]:
    return {
        "apiVersion": "lagscaler.io/v1",
        "kind": "ScalingPolicy",
        "metadata": {"name": "clicks", "namespace": "demo"},
        "spec": {
            "scaleTargetRef": {"name": "clicks-consumer"},
            "kafka": {"group": demo.group, "topics": [demo.topic]},
            "maxLagSeconds": demo.slo_seconds,
            "minReplicas": 1,
            "maxReplicas": demo.partitions,
            "capacity": {"perReplica": demo.capacity, "learn": True, "priorWeightSeconds": 60},
            "targetUtilization": 0.7,
            "smoothing": {"halfLifeSeconds": 3, "forecastHorizonSeconds": 6},
            "scaleDown": {"stabilizationSeconds": 10, "paybackHorizonSeconds": 60},
            "startupSeconds": 3,
            "rebalanceStallSeconds": 2,
            "fallback": {"maxAgeSeconds": 15, "action": "error"},
            "hpa": {"syncPeriodSeconds": demo.sync_seconds},
        },
    }


async def run_scaling_demo(
    bootstrap: str, demo: ScalingDemoSettings, say: Callable[[str], None] = print
) -> ScalingDemoResult:
    """Run the scenario on the cluster at ``bootstrap`` and say what happens, a line per HPA sync."""

    from lagscaler.core.policy import load_policy_file  # noqa: PLC0415
    from lagscaler.edges.kafka import KafkaSettings  # noqa: PLC0415
    from lagscaler.service.run import ServeSettings, running_service  # noqa: PLC0415
    from lagscaler_demo.harness import LocalCluster  # noqa: PLC0415
    from lagscaler_demo.playground import (  # noqa: PLC0415
        ClientIdentity,
        LoadProducer,
        LocalHpa,
        PoolSettings,
        ProducerSettings,
        WorkerPool,
    )
    from lagscaler_demo.seed import create_topics  # noqa: PLC0415

    out = say
    await create_topics(bootstrap, {demo.topic: demo.partitions})
    with tempfile.TemporaryDirectory(prefix="lagscaler-demo-") as work:
        root = Path(work)
        (root / "policies").mkdir()
        policy_path = root / "policies" / "clicks.yaml"
        policy_path.write_text(json.dumps(_policy(demo), indent=2))
        policy = load_policy_file(policy_path)
        async with LocalCluster(root / "pki") as cluster:
            settings = ServeSettings(
                kafka=KafkaSettings(bootstrap=(bootstrap,), request_timeout=3.0),
                policy_dir=root / "policies",
                api=cluster.settings(authorization_always_allow=True),
                interval=1.0,
            )
            pool_settings = PoolSettings(
                bootstrap=bootstrap,
                group=demo.group,
                topics=(demo.topic,),
                capacity_per_replica=demo.capacity,
                heartbeat_interval_ms=500,
                session_timeout_ms=6000,
            )
            async with running_service(settings) as service, WorkerPool(pool_settings) as pool:
                out(f"lagscaler serve: external metrics API on {service.api.url}")
                out(f"                 Prometheus metrics on {service.api.metrics_url}")
                out(
                    f"Workload demo/clicks: {demo.partitions} partitions, "
                    f"one worker does {demo.capacity:g} msg/s, "
                    f"SLO {demo.slo_seconds:g} s lag; load {demo.low:g} → {demo.peak:g} → {demo.low:g} msg/s "
                    f"over {demo.duration:g} s; the HPA syncs every {demo.sync_seconds:g} s.\n"
                )
                await pool.scale_to(1)
                await pool.wait_ready(within=60)
                # The HPA starts once lagscaler serves the workload: until the first cycle sees the
                # group, the API answers 404, which a real HPA reports as FailedGetExternalMetric.
                await _served(lambda: ("demo", "clicks") in service.cache.snapshot.workloads, within=30)
                hpa_origin = time.monotonic()  # the HPA loop's clock starts at its creation
                hpa = LocalHpa.for_policy(
                    policy, pool, url=service.api.url, identity=ClientIdentity.from_cluster(cluster)
                )
                profile = demo.profile()
                out(f"{'time':>6} {'load msg/s':>10} {'lag s':>6} {'decided':>7} {'replicas':>8}  why")
                async with hpa, LoadProducer(ProducerSettings(bootstrap, demo.topic), profile):
                    started = time.monotonic()
                    async with _lag_every_cycle(service, started) as lags:
                        shown = 0
                        while (elapsed := time.monotonic() - started) < demo.duration:
                            await _sleep_until(started + (shown + 1) * demo.sync_seconds)
                            shown += 1
                            decision = service.loop.decisions.get("demo/clicks")
                            lag_s = served_lag_seconds(service, "demo", "clicks")
                            out(
                                _status_line(
                                    elapsed, profile.rate_at(elapsed), lag_s, decision, pool.replicas
                                )
                            )
                offset = started - hpa_origin
                result = ScalingDemoResult(
                    replicas=[(sync.at - offset, sync.replicas) for sync in hpa.timeline],
                    lag_seconds=lags,
                    metric_errors=sum(1 for sync in hpa.timeline if sync.errors),
                    slo_seconds=demo.slo_seconds,
                    events=[(event.at - started, event) for event in pool.events],
                    policy=policy,
                )
                out(
                    f"\nPeak {result.peak} replicas, back to {result.final}; {result.scale_events} scale "
                    f"events; worst lag {result.worst_lag:.1f} s against an SLO of {demo.slo_seconds:g} s."
                )
                for sync in hpa.timeline:  # what froze the HPA, as `kubectl describe hpa` would show it
                    for error in sync.errors:
                        out(f"HPA metric error at {sync.at:.0f} s: {error}")
                return result


def _status_line(elapsed: float, rate: float, lag_s: float, decision: Decision | None, replicas: int) -> str:
    """One line of the demo's table: time, load, lag, lagscaler's decision and why, replicas."""
    why = ", ".join(r for r in decision.reasons if r != "HOLD") if decision else "starting"
    decided = decision.desired_replicas if decision else "-"
    return f"{elapsed:6.0f} {rate:10.0f} {lag_s:6.1f} {decided:>7} {replicas:>8}  {why}"


@contextlib.asynccontextmanager
async def _lag_every_cycle(
    service: RunningService, started: float
) -> AsyncIterator[list[tuple[float, float]]]:
    """The lag in seconds ``serve`` publishes, with the seconds since ``started``, recorded after each
    of its cycles (each publication of its cache) while the block runs."""
    import asyncio  # noqa: PLC0415

    lags: list[tuple[float, float]] = []

    async def record() -> None:
        last = None
        while True:
            snapshot = service.cache.snapshot
            if snapshot is not last:
                last = snapshot
                lags.append((time.monotonic() - started, served_lag_seconds(service, "demo", "clicks")))
            await asyncio.sleep(0.05)

    task = asyncio.create_task(record(), name="demo-lag-recorder")
    try:
        yield lags
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def served_lag_seconds(service: RunningService, namespace: str, name: str) -> float:
    """The lag in seconds ``serve`` publishes for a workload now (NaN before its first cycle)."""
    workload = service.cache.snapshot.workloads.get((namespace, name))
    if workload is None:
        return math.nan
    return next((v.value for v in workload.values if v.metric == LAG_SECONDS), math.nan)


async def _served(ready: Callable[[], bool], *, within: float) -> None:
    import asyncio  # noqa: PLC0415

    deadline = time.monotonic() + within
    while not ready():
        if time.monotonic() > deadline:
            raise UserError(f"lagscaler served no metric for the demo workload within {within:g} s")
        await asyncio.sleep(0.1)


async def _sleep_until(deadline: float) -> None:
    import asyncio  # noqa: PLC0415

    await asyncio.sleep(max(0.0, deadline - time.monotonic()))
