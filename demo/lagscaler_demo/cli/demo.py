"""``lagscaler demo``: a Kafka broker, a consumer group with lag, ``lagscaler lag`` watching it, and then
lagscaler scaling a real consumer pool through a local HPA (:mod:`lagscaler_demo.cli.scaling`).

Zero set-up on purpose: the broker is the local one from Maven Central jars (or ``KAFKA_BOOTSTRAP``,
or testcontainers when Docker answers — :func:`lagscaler_demo.localkafka.kafka_endpoint`), started and
stopped here. The demo creates a topic, produces messages, lets a real consumer read and commit
only some of them (so the group has lag), then keeps producing while it prints a few
``lagscaler lag`` reports, so that rates and lag in seconds appear from the second report on.

:func:`run_demo` is the whole scenario on a given cluster, as one small coroutine; later demos
extend :class:`DemoSettings` and the steps here rather than the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import sys
from dataclasses import dataclass

from lagscaler.cli.lag import quiet_logs, report
from lagscaler.edges.kafka.settings import KafkaSettings


@dataclass(frozen=True)
class DemoSettings:
    """The demo scenario. Names get a random suffix so re-runs on a kept cluster do not collide."""

    topic: str = "lagscaler-demo-orders"
    group: str = "lagscaler-demo-consumer"
    partitions: int = 3
    produced: int = 3000  # messages before the group starts
    consumed: int = 1800  # of which the group reads and commits this many
    rate: float = 200.0  # messages per second produced while watching
    watch: float = 1.0
    reports: int = 4

    def __post_init__(self) -> None:
        if not 0 <= self.consumed <= self.produced:
            raise ValueError("the demo group cannot consume more than was produced")


async def consume_and_commit(kafka: KafkaSettings, group: str, targets: dict[tuple[str, int], int]) -> None:
    """Read each partition from the start up to its target offset as ``group``, then commit there."""
    from aiokafka import AIOKafkaConsumer  # noqa: PLC0415 - heavy imports only when the demo runs
    from aiokafka.structs import OffsetAndMetadata  # noqa: PLC0415
    from aiokafka.structs import TopicPartition as _TP  # noqa: PLC0415

    consumer = AIOKafkaConsumer(**kafka.client_options(), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [_TP(t, p) for t, p in targets]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        remaining = {tp for tp in partitions if targets[(tp.topic, tp.partition)] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, records in batches.items():
                if records and records[-1].offset + 1 >= targets[(tp.topic, tp.partition)]:
                    remaining.discard(tp)
                    consumer.pause(tp)
        await consumer.commit({_TP(t, p): OffsetAndMetadata(o, "") for (t, p), o in targets.items()})
    finally:
        await consumer.stop()


async def keep_producing(kafka: KafkaSettings, topic: str, partitions: int, rate: float) -> None:
    """Append ``rate`` messages per second (clock-paced), round-robin over partitions, until cancelled."""
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415 - heavy imports only when the demo runs

    producer = AIOKafkaProducer(**kafka.client_options(), linger_ms=20)
    await producer.start()
    loop = asyncio.get_running_loop()
    try:
        started, sent = loop.time(), 0
        while True:
            due = int((loop.time() - started) * rate)
            batch = [await producer.send(topic, b"demo", partition=n % partitions) for n in range(sent, due)]
            await asyncio.gather(*batch)
            sent = due
            await asyncio.sleep(0.05)
    finally:
        await producer.stop()


async def run_demo(kafka: KafkaSettings, demo: DemoSettings) -> int:
    """Seed a topic and a lagging group, then print ``lagscaler lag`` for it while traffic continues."""
    from lagscaler.core.signals.status import StatusRules  # noqa: PLC0415
    from lagscaler.edges.sampler import SamplerSettings  # noqa: PLC0415
    from lagscaler_demo.seed import create_topics, produce  # noqa: PLC0415 - heavy imports only when run

    say = _say
    say(f"Creating topic {demo.topic} ({demo.partitions} partitions) and producing {demo.produced} messages…")
    await create_topics(kafka, {demo.topic: demo.partitions})
    await produce(kafka, _spread(demo.topic, demo.partitions, demo.produced))
    say(f"Consumer group {demo.group} reads and commits {demo.consumed} of them, then stops…")
    await consume_and_commit(kafka, demo.group, _spread(demo.topic, demo.partitions, demo.consumed))
    say(f"Producing {demo.rate:g} messages/s while sampling; the group stays stopped, so its lag grows.")
    say(
        f"$ lagscaler lag --bootstrap-server {','.join(kafka.bootstrap)} --group {demo.group} "
        f"--watch {demo.watch:g} --count {demo.reports}\n"
    )
    settings = SamplerSettings(
        groups=(demo.group,),
        interval=demo.watch,
        # The demo watches for seconds, not minutes: judge status on what it has.
        status=StatusRules(window=demo.reports, min_samples=min(3, demo.reports), min_span=0.0),
        history=max(demo.reports, 10),
    )
    traffic = asyncio.create_task(keep_producing(kafka, demo.topic, demo.partitions, demo.rate))
    try:
        return await report(kafka, settings, count=demo.reports)
    finally:
        traffic.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await traffic


def _spread(topic: str, partitions: int, total: int) -> dict[tuple[str, int], int]:
    """``total`` split as evenly as possible over the partitions."""
    each, extra = divmod(total, partitions)
    return {(topic, p): each + (1 if p < extra else 0) for p in range(partitions)}


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _demo(args: argparse.Namespace) -> int:
    from lagscaler_demo.cli.scaling import ScalingDemoSettings, run_scaling_demo  # noqa: PLC0415
    from lagscaler_demo.localkafka import kafka_endpoint  # noqa: PLC0415 - heavy imports only when the demo runs

    quiet_logs()
    suffix = secrets.token_hex(3)
    demo = DemoSettings(
        topic=f"{args.topic}-{suffix}", group=f"{args.group}-{suffix}", reports=args.count, watch=args.watch
    )
    scaling = (
        ScalingDemoSettings(
            topic=f"{args.topic}-clicks-{suffix}",
            group=f"{args.group}-clicks-{suffix}",
            duration=args.scale_duration,
        )
        if args.scale_duration > 0
        else None
    )
    _say("Starting Kafka (the first run downloads it from Maven Central into ~/.cache/lagscaler)…")
    if args.mode == "handover":
        return _handover(args, suffix)
    with kafka_endpoint() as endpoint:
        _say(f"Kafka is up at {endpoint.bootstrap} ({endpoint.source}).")
        code = asyncio.run(run_demo(KafkaSettings(bootstrap=(endpoint.bootstrap,)), demo))
        if scaling is not None:
            _say(
                "\nNow lagscaler scales a real consumer pool: workers, lagscaler serve and a local HPA "
                "that reads lagscaler's external metrics API over HTTPS, as a cluster's would."
            )
            result = asyncio.run(run_scaling_demo(endpoint.bootstrap, scaling, say=_say))
            code = code or (0 if result.within_slo else 1)
        if endpoint.broker is not None:
            _say("Stopping the local broker…")
    return code


def _handover(args: argparse.Namespace, suffix: str) -> int:
    from lagscaler_demo.cli.handover import HandoverDemoSettings, run_handover_demo  # noqa: PLC0415
    from lagscaler_demo.localkafka import kafka_endpoint  # noqa: PLC0415

    duration = args.scale_duration or 120.0
    demo = HandoverDemoSettings(name=f"{args.topic}-ledger-{suffix}", duration=duration)
    with kafka_endpoint() as endpoint:
        _say(f"Kafka is up at {endpoint.bootstrap} ({endpoint.source}).")
        _say(
            "lagscaler serve now scales a consumer workload by handover: a new generation of workers in a "
            "consumer group of its own for every size, cut over at the old generation's committed offsets."
        )
        ok = asyncio.run(run_handover_demo(endpoint.bootstrap, demo, say=_say))
        if endpoint.broker is not None:
            _say("Stopping the local broker…")
    return 0 if ok else 1


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value != 0 and value < 40:
        raise argparse.ArgumentTypeError("the scaling part needs at least 40 seconds (or 0 to skip it)")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="start a local Kafka, show `lagscaler lag` on a lagging group, then scale a consumer pool live",
    )
    defaults = DemoSettings()
    parser.add_argument("--topic", default=defaults.topic, help="topic name prefix (default: %(default)s)")
    parser.add_argument("--group", default=defaults.group, help="group name prefix (default: %(default)s)")
    parser.add_argument(
        "--count", type=int, default=defaults.reports, help="reports to print (default: %(default)s)"
    )
    parser.add_argument(
        "--watch", type=float, default=defaults.watch, help="seconds between reports (default: %(default)s)"
    )
    parser.add_argument(
        "--scale-duration",
        type=_seconds,
        default=120.0,
        metavar="SECONDS",
        help="seconds of load in the scaling part; 0 skips it (default: %(default)s)",
    )
    parser.add_argument(
        "--mode",
        choices=["hpa", "handover"],
        default="hpa",
        help="hpa: lagscaler drives a local HPA (default); handover: serve hands the workload over to a "
        "new consumer generation for every size, never rebalancing (docs/handover.md)",
    )
    parser.set_defaults(handler=_demo)
