"""``lagscaler demo --mode handover``: ``serve`` scaling a workload by handing it over, never rebalancing.

A sequenced load rises and falls; ``lagscaler serve`` runs the policy (``mode: handover``) with local
worker processes of :mod:`lagscaler_demo.playground.handover_app`; every size the engine decides is a new
generation in a group of its own, warmed up while the old one consumes, and cut over at the old one's
committed offsets. A line every couple of seconds shows load, lag, the decision, the serving
generation and the handover phase; at the end the sink is checked: every record processed exactly once.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lagscaler.errors import UserError


@dataclass(frozen=True)
class HandoverDemoSettings:
    """The load curve and the workload. The peak needs ``ceil(peak / (capacity × 0.7))`` replicas."""

    name: str = "lagscaler-demo-ledger"
    partitions: int = 6
    capacity: float = 150.0  # msg/s one worker is planned for (the engine sizes from it)
    slo_seconds: float = 15.0
    low: float = 60.0
    peak: float = 500.0
    duration: float = 120.0
    every: float = 2.0  # seconds between lines

    def __post_init__(self) -> None:
        if self.duration < 40:
            raise UserError(
                f"--duration must be at least 40 seconds to show a rise and a fall, got {self.duration:g}"
            )

    def schedule(self) -> tuple[tuple[float, float], ...]:
        """(seconds, msg/s): 20 % quiet, a step up, 35 % peak, then quiet again."""
        d = self.duration
        middle = (self.low + self.peak) / 2
        return ((0.2 * d, self.low), (0.1 * d, middle), (0.35 * d, self.peak), (0.35 * d, self.low))


def _policy(demo: HandoverDemoSettings, group: str, topic: str) -> dict[str, object]:
    return {
        "apiVersion": "lagscaler.io/v1",
        "kind": "ScalingPolicy",
        "metadata": {"name": "ledger", "namespace": "demo"},
        "spec": {
            "scaleTargetRef": {"name": "ledger-writer"},
            "kafka": {"group": group, "topics": [topic]},
            "mode": "handover",
            "maxLagSeconds": demo.slo_seconds,
            "minReplicas": 1,
            "maxReplicas": demo.partitions,
            "capacity": {"perReplica": demo.capacity, "learn": False},
            "targetUtilization": 0.7,
            "smoothing": {"halfLifeSeconds": 3, "forecastHorizonSeconds": 6},
            "scaleDown": {"stabilizationSeconds": 10, "paybackHorizonSeconds": 60},
            "startupSeconds": 3,
            "rebalanceStallSeconds": 0,
            "fallback": {"maxAgeSeconds": 15, "action": "error"},
        },
    }


async def run_handover_demo(
    bootstrap: str, demo: HandoverDemoSettings, say: Callable[[str], None] = print
) -> bool:
    """Run the scenario on the cluster at ``bootstrap``; True when nothing was lost or duplicated."""
    import asyncio  # noqa: PLC0415 - heavy imports only when the demo runs

    from lagscaler.edges.handover import HandoverSettings  # noqa: PLC0415
    from lagscaler.edges.kafka import KafkaSettings  # noqa: PLC0415
    from lagscaler.service.handover import LocalHandover  # noqa: PLC0415
    from lagscaler.service.run import ServeSettings, running_service  # noqa: PLC0415
    from lagscaler_demo.cli.scaling import served_lag_seconds  # noqa: PLC0415
    from lagscaler_demo.harness import LocalCluster  # noqa: PLC0415
    from lagscaler_demo.playground.handover_run import HandoverPlayground, PlaygroundSettings  # noqa: PLC0415
    from lagscaler_demo.playground.rates import RateProfile  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="lagscaler-demo-") as work:
        root = Path(work)
        handover = HandoverSettings(control_topic=f"{demo.name}-control", tick=0.2, warmup_timeout=60)
        play_settings = PlaygroundSettings(
            bootstrap=bootstrap,
            name=demo.name,
            state_dir=root / "handover",
            partitions=demo.partitions,
            schedule=demo.schedule(),
            run_controller=False,
            workload_key="demo/ledger",
            commit_interval=0.5,
            handover=handover,
        )
        (root / "policies").mkdir()
        policy = _policy(demo, play_settings.group, play_settings.topic)
        (root / "policies" / "ledger.yaml").write_text(json.dumps(policy, indent=2))
        profile = RateProfile.from_schedule(list(demo.schedule()))
        async with LocalCluster(root / "pki") as cluster, HandoverPlayground(play_settings) as play:
            settings = ServeSettings(
                kafka=KafkaSettings(bootstrap=(bootstrap,), request_timeout=3.0),
                policy_dir=root / "policies",
                api=cluster.settings(authorization_always_allow=True),
                interval=1.0,
                handover=LocalHandover(
                    play_settings.state_dir, {"demo/ledger": tuple(play_settings.command())}, handover
                ),
            )
            async with running_service(settings) as service:
                say(
                    f"Workload demo/ledger (mode: handover): {demo.partitions} partitions, planned at "
                    f"{demo.capacity:g} msg/s per worker; load {demo.low:g} → {demo.peak:g} → {demo.low:g} "
                    f"msg/s over {demo.duration:g} s. Every size is a new generation in its own group.\n"
                )
                say(f"{'time':>5} {'load':>6} {'lag s':>6} {'decided':>7} {'serving':>12}  handover")
                started = time.monotonic()
                lines = 0
                while (elapsed := time.monotonic() - started) < demo.duration:
                    await asyncio.sleep(max(0.0, started + (lines + 1) * demo.every - time.monotonic()))
                    lines += 1
                    elapsed = time.monotonic() - started
                    record = play.record()
                    lag = served_lag_seconds(service, "demo", "ledger")
                    decision = service.loop.decisions.get("demo/ledger")
                    serving = (
                        f"gen {record.serving.generation} × {record.serving.replicas}"
                        if record is not None and record.serving is not None
                        else "-"
                    )
                    phase = ""
                    if record is not None and record.handover is not None:
                        h = record.handover
                        phase = f"{h.phase} → gen {h.target} × {h.replicas}"
                    say(
                        f"{elapsed:5.0f} {profile.rate_at(elapsed):6.0f} {lag:6.1f} "
                        f"{decision.desired_replicas if decision else '-':>7} {serving:>12}  {phase}"
                    )
                history = play.history()
                say("\nStopping the load and draining the serving generation; checking every record…")
                report = await play.verdict(within=120)
        handovers = len({r.handover.target for r in history if r.handover is not None})
        generations = sorted(report.generations)
        say(
            f"{handovers} handovers; generations {', '.join(str(g) for g in generations)} processed records, "
            "each in a group of its own: no serving group changed its membership to scale."
        )
        say(
            f"Records produced {report.produced}, processed {report.processed}: lost {report.lost}, "
            f"duplicated {report.duplicates}."
        )
        return report.consistent and report.duplicates == 0
