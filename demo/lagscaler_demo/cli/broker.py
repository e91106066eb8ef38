"""``lagscaler broker``: fetch Kafka's jars, or run a local single-node broker in the foreground."""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading

from lagscaler_demo.localkafka import KafkaDistribution, LocalBroker


def _fetch(args: argparse.Namespace) -> int:
    dist = KafkaDistribution()
    for component in args.component:
        if not dist.libs(component).is_dir():  # say what a silent minute or two is spent on
            print(
                f"fetching Kafka {dist.version} {component} jars from Maven Central (once; cached)...",
                flush=True,
            )
        print(f"kafka {dist.version} {component}: {dist.ensure(component)}")
    return 0


def _run(args: argparse.Namespace) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with LocalBroker() as broker:
        print(f"Kafka {broker.distribution.version} (KRaft) listening on {broker.bootstrap}; Ctrl-C stops it")
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("broker", help="fetch Kafka's jars or run a local KRaft broker")
    sub = parser.add_subparsers(dest="broker_command", metavar="ACTION")
    sub.required = True
    fetch = sub.add_parser(
        "fetch", help="download the broker and tool jars from Maven Central into the cache"
    )
    fetch.add_argument("--component", action="append", choices=["broker", "tools"], default=None)
    fetch.set_defaults(handler=lambda a: _fetch(_default_components(a)))
    run = sub.add_parser("run", help="run a single-node broker on loopback until interrupted")
    run.set_defaults(handler=_run)


def _default_components(args: argparse.Namespace) -> argparse.Namespace:
    if not args.component:
        args.component = ["broker", "tools"]
    return args
