"""Sampler cost at scale: 200 groups over topics totalling 10,000 partitions, on a fresh local broker.

Measures, in one run on the same broker state:

(a) the steady-state sampler cycle (``--all-groups``): wall time and Kafka requests per cycle,
    against coordinators + partition leaders, and against a per-group baseline written with
    aiokafka's own admin calls (ListGroups, one FindCoordinator + OffsetFetch per group), whose
    requests are counted at its client's ``send``. The baseline does less than the sampler, so the
    comparison flatters it: it skips DescribeGroups (aiokafka 0.14 decodes DescribeGroups v3 with the
    v2 response schema and fails on any request describing two or more groups) and borrows our
    batched Metadata + ListOffsets for end offsets (aiokafka's ``consumer.end_offsets`` did not finish
    10,000 partitions within 30 s: it refreshes metadata topic by topic);
(a') the same cycle when every cycle also asks log start offsets (``log_start_interval=0``; by
    default they are asked every 60 s), against (a) measured before and after it;
(b) the one-shot ``lagscaler lag --all-groups --output json`` against Kafka's
    ``kafka-consumer-groups --describe --all-groups``, both as fresh processes, as a ratio of
    median wall times, after checking that both report identical numbers for every partition.

Usage: ``.venv/bin/python bench/sampler.py [--groups 200] [--partitions 10000] [--cycles 10]``
(takes a few minutes: creating 10,000 partitions is most of it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from lagscaler_demo.localkafka import BrokerConfig, KafkaTools, LocalBroker, parse_describe
from lagscaler_demo.localkafka.tools import CONSUMER_GROUPS_MAIN
from lagscaler_demo.seed import commit_many, create_topics, produce

from lagscaler.edges.kafka import KafkaAdmin, KafkaSettings
from lagscaler.edges.sampler import Sampler, SamplerSettings

Rows = dict[tuple[str, str, int], tuple[int | None, int, int | None]]


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def broker_usage(broker: LocalBroker) -> str:
    assert broker._process is not None
    pid = broker._process.pid
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/maps") as maps:
        mapped = sum(1 for _ in maps)
    return f"broker: {fds} open files (ulimit -n {os.sysconf('SC_OPEN_MAX')}), {mapped} memory maps"


async def seed(bootstrap: str, groups: int, partitions: int) -> dict[str, dict[tuple[str, int], int]]:
    """One topic per group, ``partitions / groups`` partitions each; 1-5 messages each, partial commits."""
    per_topic = partitions // groups
    topics = {f"bench-{i:04d}": per_topic for i in range(groups)}
    started = time.monotonic()
    names = list(topics)
    for start in range(0, len(names), 20):
        await create_topics(bootstrap, {n: topics[n] for n in names[start : start + 20]})
        done = min(start + 20, len(names))
        log(f"  created {done} topics ({done * per_topic} partitions) in {time.monotonic() - started:.0f}s")
    counts = {(t, p): 1 + (p * 7 + i) % 5 for i, t in enumerate(names) for p in range(per_topic)}
    await produce(bootstrap, counts)
    log(f"  produced {sum(counts.values())} messages in {time.monotonic() - started:.0f}s")
    commits = {
        f"bench-group-{i:04d}": {(t, p): (p + i) % (counts[(t, p)] + 1) for p in range(per_topic)}
        for i, t in enumerate(names)
    }
    await commit_many(bootstrap, commits, concurrency=8)
    log(f"  committed for {len(commits)} groups in {time.monotonic() - started:.0f}s")
    return commits


class CountingSend:
    """Counts requests by API at an aiokafka client's ``send`` (the baseline has no counters of its own)."""

    def __init__(self, client: Any, counts: Counter[str]) -> None:
        self._send: Callable[..., Awaitable[Any]] = client.send
        self._counts = counts
        client.send = self

    async def __call__(self, node_id: int, request: Any, **kwargs: Any) -> Any:
        self._counts[type(request).__name__.removesuffix("Request")] += 1
        return await self._send(node_id, request, **kwargs)


async def baseline_cycle(admin: AIOKafkaAdminClient, ours: KafkaAdmin) -> Rows:
    """What a sampler written with aiokafka's admin API does: two requests per group."""
    listed = await admin.list_consumer_groups()
    groups = sorted(g[0] for g in listed if g[0].startswith("bench-group-"))
    offsets = await asyncio.gather(*(admin.list_consumer_group_offsets(g) for g in groups))
    partitions = sorted({(tp.topic, tp.partition) for o in offsets for tp in o})
    layout = await ours.metadata({t for t, _ in partitions})
    ends = (await ours.list_end_offsets(partitions, layout)).offsets
    return {
        (g, tp.topic, tp.partition): (
            om.offset,
            ends[(tp.topic, tp.partition)],
            ends[(tp.topic, tp.partition)] - om.offset,
        )
        for g, o in zip(groups, offsets, strict=True)
        for tp, om in o.items()
    }


async def measure_every_cycle_log_start(bootstrap: str, cycles: int) -> float:
    """Median cycle when every cycle also asks log start offsets (``log_start_interval=0``)."""
    settings = SamplerSettings(all_groups=True, interval=1.0, discovery_interval=3600, log_start_interval=0)
    durations: list[float] = []
    async with Sampler(KafkaSettings(bootstrap=(bootstrap,), request_timeout=30), settings) as sampler:
        await sampler.sample()
        await sampler.sample()
        for _ in range(cycles):
            snapshot = await sampler.sample()
            assert snapshot.duration is not None
            assert dict(snapshot.requests).get("ListOffsets") == 2
            durations.append(snapshot.duration)
    return statistics.median(durations)


async def measure_cycles(bootstrap: str, cycles: int) -> dict[str, Any]:
    settings = SamplerSettings(all_groups=True, interval=1.0, discovery_interval=3600)
    durations: list[float] = []
    per_cycle: list[dict[str, int]] = []
    async with Sampler(KafkaSettings(bootstrap=(bootstrap,), request_timeout=30), settings) as sampler:
        first = await sampler.sample()
        log(f"  first cycle (discovery, coordinators): {first.duration:.3f}s {dict(first.requests)}")
        await sampler.sample()
        for _ in range(cycles):
            snapshot = await sampler.sample()
            assert snapshot.duration is not None
            durations.append(snapshot.duration)
            per_cycle.append(dict(snapshot.requests))
        rows: Rows = {
            (g.group, p.topic, p.partition): (p.committed, p.end, p.lag)
            for g in snapshot.groups
            if g.group.startswith("bench-group-")
            for p in g.partitions
        }
        coordinators = len({sampler.admin.cached_coordinator(g.group) for g in snapshot.groups})
        leaders = len(sampler.admin.broker_ids())
        tracked = sampler._tracker.tracked
        memory = sampler._tracker.nbytes

    log(f"  sampler: median cycle {statistics.median(durations):.3f}s, requests {per_cycle[-1]}")
    counts: Counter[str] = Counter()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    await admin.start()
    try:
        async with KafkaAdmin(KafkaSettings(bootstrap=(bootstrap,), request_timeout=30)) as ours:
            CountingSend(admin._client, counts)
            await baseline_cycle(admin, ours)  # warm connections and metadata
            base_durations: list[float] = []
            base_counts: list[int] = []
            for _ in range(max(3, cycles // 3)):
                before = sum(counts.values()) + ours.stats.total
                started = time.monotonic()
                base_rows = await baseline_cycle(admin, ours)
                base_durations.append(time.monotonic() - started)
                base_counts.append(sum(counts.values()) + ours.stats.total - before)
    finally:
        await admin.close()
    base_median = statistics.median(base_durations)
    log(f"  baseline: median cycle {base_median:.3f}s, {statistics.median(base_counts)} requests")
    mismatched = {k for k in base_rows if rows.get(k) != base_rows[k]}
    return {
        "cycle_median": statistics.median(durations),
        "cycle_max": max(durations),
        "requests": per_cycle[-1],
        "requests_total": statistics.median(sum(c.values()) for c in per_cycle),
        "coordinators": coordinators,
        "leaders": leaders,
        "group_partitions": tracked[0],
        "history_bytes": memory,
        "baseline_median": statistics.median(base_durations),
        "baseline_requests": statistics.median(base_counts),
        "rows": len(rows),
        "mismatched_vs_baseline": len(mismatched),
    }


LAG_ONLY = """
import sys
from lagscaler.cli import _Parser, lag
parser = _Parser(prog="lagscaler")
lag.register(parser.add_subparsers(dest="command", parser_class=_Parser))
args = parser.parse_args(sys.argv[1:])
sys.exit(args.handler(args))
"""


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({result.returncode}): {result.stderr[-2000:]}")
    return elapsed, result


def measure_one_shot(bootstrap: str, runs: int) -> dict[str, Any]:
    ours_cmd = [sys.executable, "-m", "lagscaler", "lag", "--bootstrap-server", bootstrap, "--all-groups",
                "--output", "json"]  # fmt: skip
    theirs_cmd = [*KafkaTools().command_line(CONSUMER_GROUPS_MAIN), "--bootstrap-server", bootstrap,
                  "--describe", "--all-groups"]  # fmt: skip
    startup_cmd = [sys.executable, "-m", "lagscaler", "--version"]
    # Diagnostic: the same `lag` command, from a parser that registers only it (what start-up costs
    # when the other commands' modules are not imported just to build `lagscaler`'s parser).
    lag_only_cmd = [sys.executable, "-c", LAG_ONLY, *ours_cmd[3:]]
    ours_times, theirs_times, startup_times, lag_only_times = [], [], [], []
    for _ in range(runs):  # alternate, so drift in machine load hits both alike
        startup_times.append(timed(startup_cmd)[0])
        lag_only_times.append(timed(lag_only_cmd)[0])
        t, ours = timed(ours_cmd)
        ours_times.append(t)
        t, theirs = timed(theirs_cmd)
        theirs_times.append(t)
        log(f"  lagscaler lag {ours_times[-1]:.2f}s, kafka-consumer-groups {theirs_times[-1]:.2f}s")
    document = json.loads(ours.stdout)
    ours_rows: Rows = {
        (g["group"], p["topic"], p["partition"]): (p["committed"], p["end"], p["lag"])
        for g in document["groups"]
        if g["group"].startswith("bench-group-")
        for p in g["partitions"]
    }
    theirs_rows = {k: v for k, v in parse_describe(theirs.stdout).items() if k[0].startswith("bench-group-")}
    differing = sorted(k for k in set(ours_rows) | set(theirs_rows) if ours_rows.get(k) != theirs_rows.get(k))
    return {
        "ours_median": statistics.median(ours_times),
        "startup_median": statistics.median(startup_times),
        "lag_only_median": statistics.median(lag_only_times),
        "theirs_median": statistics.median(theirs_times),
        "ours_runs": ours_times,
        "theirs_runs": theirs_times,
        "rows_ours": len(ours_rows),
        "rows_theirs": len(theirs_rows),
        "differing": differing[:5],
        "differing_count": len(differing),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=200)
    parser.add_argument("--partitions", type=int, default=10_000)
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--one-shot-runs", type=int, default=3)
    parser.add_argument("--heap", default="2g")
    args = parser.parse_args()

    config = BrokerConfig(heap=args.heap, start_timeout=180)
    log(f"Starting a local broker (heap {args.heap})…")
    with LocalBroker(config) as broker:
        log(f"Seeding {args.groups} groups over {args.partitions} partitions…")
        asyncio.run(seed(broker.bootstrap, args.groups, args.partitions))
        log(broker_usage(broker))
        log("(a) sampler cycles…")
        cycles = asyncio.run(measure_cycles(broker.bootstrap, args.cycles))
        with_starts = asyncio.run(measure_every_cycle_log_start(broker.bootstrap, args.cycles))
        again = asyncio.run(measure_cycles(broker.bootstrap, args.cycles))  # drift check, same broker
        log("(b) one-shot reports…")
        one_shot = measure_one_shot(broker.bootstrap, args.one_shot_runs)
        usage = broker_usage(broker)

    speedup = one_shot["theirs_median"] / one_shot["ours_median"]
    print(f"# {args.groups} groups, {args.partitions} partitions, one broker; {usage}")
    print(
        f"(a) steady-state cycle: median {cycles['cycle_median']:.3f}s, max {cycles['cycle_max']:.3f}s "
        f"over {args.cycles} cycles, {cycles['group_partitions']} group partitions"
    )
    print(
        f"    requests per cycle: {cycles['requests_total']:.0f} {cycles['requests']} "
        f"vs coordinators + leaders = {cycles['coordinators']} + {cycles['leaders']}"
    )
    print(
        f"    per-group baseline (aiokafka admin): {cycles['baseline_median']:.3f}s, "
        f"{cycles['baseline_requests']:.0f} requests per cycle -> "
        f"{cycles['baseline_median'] / cycles['cycle_median']:.1f}x slower, "
        f"{cycles['baseline_requests'] / cycles['requests_total']:.0f}x the requests; "
        f"numbers equal on {cycles['rows'] - cycles['mismatched_vs_baseline']}/{cycles['rows']} partitions"
    )
    print(
        f"    every cycle also asking log start offsets (log_start_interval=0): median {with_starts:.3f}s "
        f"vs {cycles['cycle_median']:.3f}s / {again['cycle_median']:.3f}s (before / after it) -> "
        f"{with_starts / statistics.mean([cycles['cycle_median'], again['cycle_median']]):.2f}x"
    )
    mib = cycles["history_bytes"] / 2**20
    print(f"    sampler history for {cycles['group_partitions']} group partitions: {mib:.1f} MiB")
    print(
        f"(b) one-shot --all-groups: lagscaler lag {one_shot['ours_median']:.2f}s vs kafka-consumer-groups "
        f"{one_shot['theirs_median']:.2f}s (medians of {args.one_shot_runs}) -> {speedup:.1f}x faster"
    )
    lag_only = one_shot["lag_only_median"]
    print(
        f"    of which CLI start-up (`lagscaler --version`, every command's imports): "
        f"{one_shot['startup_median']:.2f}s; the same report from a parser with only `lag`: "
        f"{lag_only:.2f}s -> {one_shot['theirs_median'] / lag_only:.1f}x"
    )
    print(
        f"    identical numbers: {one_shot['differing_count'] == 0} "
        f"({one_shot['rows_ours']} vs {one_shot['rows_theirs']} partitions; "
        f"first differing: {one_shot['differing']})"
    )
    return 0 if one_shot["differing_count"] == 0 and cycles["mismatched_vs_baseline"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
