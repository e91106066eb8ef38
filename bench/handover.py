"""Scaling 2 → 4 → 2 under load: an in-group rebalance against a handover, in the same run.

    nice -n 10 .venv/bin/python bench/handover.py [--rate 20000] [--partitions 8] [--hold 12] [--stateful]

A sequenced producer (``--rate`` msg/s, every record numbered per partition) feeds a topic; the same
application (:mod:`lagscaler_demo.playground.handover_app`, built on the worker SDK) consumes it and writes
everything it processes to a sink. Two scenarios, one after the other on the same broker, each on its
own topic:

(a) **rebalance** — the workers are ordinary members of one consumer group (the SDK outside handover
    mode); scaling starts two more processes, then stops two (SIGTERM, LeaveGroup): aiokafka's eager
    rebalance each time;
(b) **handover** — the controller hands the workload to a new generation of 4, then of 2.

For each transition, from the sink: the **longest consumption gap** (the longest time with no record
processed at all, and the longest any single partition waited), **p99 end-to-end latency** (processing
time minus the record's creation time) of the records created during the transition, and over the whole
scenario the records **lost** and **duplicated**. The steady-state p99 before the first transition is
the baseline. Ratios compare (a) with (b); the machine is shared, so absolute numbers move with load.

``--stateful`` runs both scenarios with the application's changelog-backed state: every partition a
worker takes is restored by its warm-up hook first — after a rebalance on the consuming path; in a
handover during the warm-up, plus the catch-up at the cut (what the old generation processed after
``warm_to``), which is on the consuming path and so inside the handover's gap.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lagscaler_demo.localkafka import kafka_endpoint
from lagscaler_demo.playground.handover_app import SinkBatch, SinkReport, check, read_sink
from lagscaler_demo.playground.handover_run import GroupWorkers, HandoverPlayground, PlaygroundSettings
from lagscaler_demo.playground.probe import committed_offsets, end_offsets, wait_for_members

from lagscaler.edges.handover import HandoverSettings


@dataclass
class Transition:
    name: str
    started: float  # unix seconds: the scale action
    finished: float  # unix seconds: the new size serves


@dataclass
class Timing:
    gap_ms: float  # longest time with no record processed by anyone
    partition_gap_ms: float  # longest time one partition had nothing processed
    p99_ms: float  # end-to-end latency of the records created in the window


def timings(batches: list[SinkBatch], start: float, end: float) -> Timing:
    """Gaps and latency over [start, end] (unix seconds), from the sink."""
    lo, hi = start * 1000, end * 1000
    processed = np.array([b.processed_ms for b in batches if lo <= b.processed_ms <= hi], dtype=float)
    processed.sort()
    gap = float(np.diff(processed).max()) if len(processed) > 1 else float("nan")
    partition_gap = 0.0
    for p in {b.partition for b in batches}:
        times = np.sort([b.processed_ms for b in batches if b.partition == p and lo <= b.processed_ms <= hi])
        if len(times) > 1:
            partition_gap = max(partition_gap, float(np.diff(times).max()))
    latencies = [b.processed_ms - b.created_ms[(b.created_ms >= lo) & (b.created_ms <= hi)] for b in batches]
    joined = (
        np.concatenate([x for x in latencies if len(x)]) if any(len(x) for x in latencies) else np.array([])
    )
    p99 = float(np.percentile(joined, 99)) if len(joined) else float("nan")
    return Timing(gap, partition_gap, p99)


def settings(bootstrap: str, name: str, state: Path, args: argparse.Namespace) -> PlaygroundSettings:
    return PlaygroundSettings(
        bootstrap=bootstrap,
        name=name,
        state_dir=state,
        partitions=args.partitions,
        rate=args.rate,
        initial_replicas=2,
        commit_interval=1.0,
        stateful=args.stateful,
        handover=HandoverSettings(control_topic=f"{name}-control", tick=0.2, warmup_timeout=60),
    )


# --- (a) in-group scaling -----------------------------------------------------------------------------


async def rebalance_scenario(
    bootstrap: str, state: Path, args: argparse.Namespace
) -> tuple[SinkReport, list[SinkBatch], list[Transition]]:
    s = settings(bootstrap, f"bench-rebalance-{int(time.time())}", state / "a", args)
    s = PlaygroundSettings(**{**s.__dict__, "run_controller": False})
    transitions = []
    async with HandoverPlayground(s) as play:
        workers = GroupWorkers(play)
        try:
            workers.start(2)
            await members(bootstrap, s.group, 2)
            await asyncio.sleep(args.hold)
            started = time.time()
            workers.start(2)
            await members(bootstrap, s.group, 4)
            transitions.append(Transition("2 → 4", started, time.time()))
            await asyncio.sleep(args.hold)
            started = time.time()
            workers.stop_newest(2)
            await members(bootstrap, s.group, 2)
            transitions.append(Transition("4 → 2", started, time.time()))
            await asyncio.sleep(args.hold)
            await play.stop_producer()
            await _drained(play, s.group)
            produced = await end_offsets(bootstrap, s.topic)
            batches = await read_sink(bootstrap, s.sink)
        finally:
            workers.kill_all()
    return check(batches, produced), batches, transitions


async def members(bootstrap: str, group: str, count: int, within: float = 90.0) -> None:
    """Wait until the group is Stable with ``count`` members (the coordinator may still be loading)."""
    deadline = time.monotonic() + within
    while True:
        try:
            await wait_for_members(bootstrap, group, count, within=max(1.0, deadline - time.monotonic()))
            return
        except TimeoutError:
            raise
        except Exception:  # COORDINATOR_NOT_AVAILABLE right after the broker starts: ask again
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _drained(play: HandoverPlayground, group: str, within: float = 120.0) -> None:
    ends = await end_offsets(play.settings.bootstrap, play.settings.topic)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        committed = await committed_offsets(play.settings.bootstrap, group)
        if all(committed.get((play.settings.topic, p), 0) >= e for p, e in ends.items()):
            return
        await asyncio.sleep(0.5)
    raise TimeoutError("the group did not drain")


# --- (b) handover ------------------------------------------------------------------------------------


async def handover_scenario(
    bootstrap: str, state: Path, args: argparse.Namespace
) -> tuple[SinkReport, list[SinkBatch], list[Transition]]:
    s = settings(bootstrap, f"bench-handover-{int(time.time())}", state / "b", args)
    transitions = []
    async with HandoverPlayground(s) as play:
        await play.scale_to(2)
        await asyncio.sleep(args.hold)
        for label, size in (("2 → 4", 4), ("4 → 2", 2)):
            started = time.time()
            await play.scale_to(size)
            transitions.append(Transition(label, started, time.time()))
            await asyncio.sleep(args.hold)
        report = await play.verdict(within=120, drain="commits")
        batches = play.sink_batches
    return report, batches, transitions


# --- report -------------------------------------------------------------------------------------------


def summarize(
    name: str, report: SinkReport, batches: list[SinkBatch], transitions: list[Transition]
) -> list[Timing]:
    first = transitions[0].started
    start = min(b.processed_ms for b in batches) / 1000
    steady = timings(batches, start + 3, first - 0.5)
    print(f"\n{name}: {report.summary()}")
    print(
        f"  steady state before scaling: longest gap {steady.gap_ms:6.0f} ms "
        f"(one partition: {steady.partition_gap_ms:6.0f} ms); p99 end-to-end {steady.p99_ms:7.0f} ms"
    )
    out = []
    for t in transitions:
        # The window: from the scale action until 2 s after the new size served (catch-up included).
        timing = timings(batches, t.started, t.finished + 2.0)
        out.append(timing)
        print(
            f"  {t.name}: took {t.finished - t.started:5.1f} s; longest gap {timing.gap_ms:6.0f} ms "
            f"(one partition: {timing.partition_gap_ms:6.0f} ms); p99 end-to-end {timing.p99_ms:7.0f} ms"
        )
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=20_000.0, help="msg/s produced (default 20000)")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--hold", type=float, default=12.0, help="seconds between transitions (default 12)")
    parser.add_argument(
        "--stateful", action="store_true", help="partition state restored from a changelog (warm-up hook)"
    )
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"load average before: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs; "
          f"rate {args.rate:g} msg/s on {args.partitions} partitions"
          f"{', stateful (changelog warm-up)' if args.stateful else ''}")  # fmt: skip
    with kafka_endpoint() as endpoint, tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        a_report, a_batches, a_transitions = await rebalance_scenario(endpoint.bootstrap, state, args)
        a = summarize(
            "(a) rebalance (one group, aiokafka eager rebalance)", a_report, a_batches, a_transitions
        )
        b_report, b_batches, b_transitions = await handover_scenario(endpoint.bootstrap, state, args)
        b = summarize("(b) handover (a new generation per size)", b_report, b_batches, b_transitions)
    print("\nratios, rebalance / handover (higher: handover better)")
    for ta, tb, tr in zip(a, b, a_transitions, strict=True):
        print(
            f"  {tr.name}: longest gap ×{ta.gap_ms / tb.gap_ms:5.1f}, one partition's gap "
            f"×{ta.partition_gap_ms / tb.partition_gap_ms:5.1f}, p99 end-to-end ×{ta.p99_ms / tb.p99_ms:5.1f}"
        )
    load = os.getloadavg()
    print(f"load average after: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    worst = max(t.gap_ms for t in b)
    worst_partition = max(t.partition_gap_ms for t in b)
    ok = worst_partition <= 250 and b_report.lost == 0 and b_report.duplicates == 0
    print(
        f"handover target (gap ≤ 250 ms, 0 lost, 0 duplicated): {'met' if ok else 'NOT met'} "
        f"(worst gap {worst:.0f} ms, worst for one partition {worst_partition:.0f} ms)"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    asyncio.run(main())
