"""A handover workload on a real broker, end to end: topics, sequenced load, the controller, and the verdict.

:class:`HandoverPlayground` is what the tests, ``bench/handover.py`` and ``lagscaler demo --mode
handover`` share: it creates a source topic (and a sink, and for a stateful run a changelog), runs a
:class:`~lagscaler.edges.handover.HandoverRunner` whose local backend starts
:mod:`lagscaler_demo.playground.handover_app` workers, and a sequenced :class:`LoadProducer`. Then
:meth:`~HandoverPlayground.scale_to` asks for a count as the engine would and waits for the handover to
finish, and :meth:`~HandoverPlayground.verdict` drains the workload and checks the sink.

Everything it starts it stops: the runner, the producer, and (on exit) every worker process of the
workload, whatever state the run ended in.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from lagscaler.edges.handover import (
    ControlChannel,
    ControllerRecord,
    FileLeadership,
    HandoverRunner,
    HandoverSettings,
    Leadership,
    LocalProcessBackend,
    WorkloadSpec,
    ensure_control_topic,
)
from lagscaler.edges.handover.backend import WORKER_ENV as ENV
from lagscaler.edges.handover.backend import Backend
from lagscaler.edges.kafka import KafkaSettings
from lagscaler.edges.observability import configure_logging
from lagscaler_demo.playground.handover_app import SinkBatch, SinkReport, check, read_sink
from lagscaler_demo.playground.probe import committed_offsets, end_offsets, topic_partitions
from lagscaler_demo.playground.producer import LoadProducer, ProducerSettings
from lagscaler_demo.playground.rates import RateProfile
from lagscaler_demo.seed import add_partitions, create_topics

__all__ = ["GroupWorkers", "HandoverPlayground", "PlaygroundSettings", "crash_attributed"]


@dataclass(frozen=True)
class PlaygroundSettings:
    """The workload: names, partitions, load, and how its workers and controller are run."""

    bootstrap: str
    name: str  # prefix of every topic and group; the workload is playground/<name>
    state_dir: Path
    partitions: int = 6
    rate: float = 1000.0  # msg/s while the producer runs
    duration: float = 600.0  # the producer stops after this long, or when the playground closes
    schedule: tuple[tuple[float, float], ...] = ()  # (seconds, msg/s) steps instead of rate × duration
    stateful: bool = False
    initial_replicas: int = 2
    commit_interval: float = 1.0
    app_args: tuple[str, ...] = ()  # extra flags for handover_app (fault injection)
    handover: HandoverSettings = field(default_factory=HandoverSettings)
    worker_log_level: str = "WARNING"
    run_controller: bool = True  # False: controllers run as processes of their own (controller_main)

    workload_key: str | None = None  # the workload's namespace/name (default playground/<name>)

    @property
    def workload(self) -> str:
        return self.workload_key or f"playground/{self.name}"

    @property
    def topic(self) -> str:
        return f"{self.name}-in"

    @property
    def sink(self) -> str:
        return f"{self.name}-sink"

    @property
    def changelog(self) -> str:
        return f"{self.name}-changelog"

    @property
    def group(self) -> str:
        return f"{self.name}-consumer"

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "lagscaler_demo.playground.handover_app", "--sink", self.sink]
        if self.stateful:
            command += ["--changelog", self.changelog]
        return [*command, "--commit-interval", repr(self.commit_interval), *self.app_args]


class HandoverPlayground:
    """Use as ``async with HandoverPlayground(settings) as play``; then ``scale_to`` and ``verdict``."""

    def __init__(
        self,
        settings: PlaygroundSettings,
        *,
        leadership: Leadership | None = None,
        backends: Callable[[WorkloadSpec], Backend] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.kafka = KafkaSettings(bootstrap=(settings.bootstrap,))
        self.leadership = leadership or FileLeadership(settings.state_dir / "leader.lock")
        self._backends = backends  # None: local processes of settings.command()
        self._clock = clock
        self.runner: HandoverRunner | None = None
        self.handing_back = False  # the workload's policy left handover mode (see hand_back())
        self.producer: LoadProducer | None = None
        self.extra_producers: list[LoadProducer] = []  # load on partitions added by add_partitions()
        self.sink_batches: list[SinkBatch] = []  # what verdict() read
        self.observer = ControlChannel(
            self.kafka.client_options(), settings.handover.control_topic, keep_history=True
        )
        # Knows every worker of the workload through the state directory, whoever started it.
        self.janitor = self._backend(settings.workload)

    def _backend(self, workload: str) -> LocalProcessBackend:
        return LocalProcessBackend(
            self.settings.state_dir / "workers",
            workload,
            self.settings.command(),
            env={"LAGSCALER_WORKER_LOG_LEVEL": self.settings.worker_log_level},
            restart_backoff=0.2,
            max_backoff=2.0,
        )

    def backend(self, spec: WorkloadSpec) -> Backend:
        return self._backends(spec) if self._backends is not None else self._backend(spec.workload)

    @property
    def spec(self) -> WorkloadSpec:
        s = self.settings
        return WorkloadSpec(
            s.workload, s.group, (s.topic,), initial_replicas=s.initial_replicas, hand_back=self.handing_back
        )

    def hand_back(self) -> None:
        """Switch the workload out of handover mode, as a policy reloaded with ``mode: hpa`` does in
        ``serve``; a runner started later keeps handing it back."""
        self.handing_back = True
        if self.runner is not None:
            self.runner.sync([self.spec])

    async def create_topics(self) -> None:
        s = self.settings
        topics = {s.topic: s.partitions, s.sink: s.partitions}
        if s.stateful:
            topics[s.changelog] = s.partitions
        await create_topics(self.kafka, topics)

    async def __aenter__(self) -> HandoverPlayground:
        try:
            await self.create_topics()
            await ensure_control_topic(self.kafka.client_options(), self.settings.handover.control_topic)
            await self.observer.start()
            if self.settings.run_controller:
                await self.start_runner()
            await self.start_producer()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def start_runner(self) -> HandoverRunner:
        """Start (or, after :meth:`stop_runner`, restart) the controller for the workload."""
        runner = HandoverRunner(
            self.kafka, self.settings.handover, backends=self.backend, leadership=self.leadership
        )
        await runner.__aenter__()
        self.runner = runner
        runner.sync([self.spec])
        return runner

    async def stop_runner(self) -> None:
        runner, self.runner = self.runner, None
        if runner is not None:
            await runner.__aexit__(None, None, None)

    def _load(self, partitions: tuple[int, ...] = ()) -> LoadProducer:
        s = self.settings
        return LoadProducer(
            ProducerSettings(
                s.bootstrap,
                s.topic,
                sequenced=True,
                payload_bytes=16,
                tick_seconds=0.05,
                partitions=partitions,
            ),
            RateProfile.from_schedule(list(s.schedule) or [(s.duration, s.rate)], name="load"),
        )

    async def start_producer(self) -> None:
        producer = self._load()
        await producer.__aenter__()
        self.producer = producer

    async def stop_producer(self) -> None:
        producers = [self.producer, *self.extra_producers]
        self.producer, self.extra_producers = None, []
        for producer in producers:
            if producer is not None:
                await producer.__aexit__(None, None, None)

    async def add_partitions(self, total: int) -> tuple[int, ...]:
        """Grow the source topic (and the sink and changelog, which follow its partitioning) to ``total``
        partitions while everything runs, and put sequenced load on the new ones (the first producer
        keeps loading the partitions it started with, each sequence unbroken). Returns the new ids."""
        s = self.settings
        before = await topic_partitions(s.bootstrap, s.topic)
        # The sink and changelog first: a worker that gets a new source partition writes to its twin.
        for topic in (s.sink, *((s.changelog,) if s.stateful else ()), s.topic):
            await add_partitions(self.kafka, topic, total)
        added = tuple(range(len(before), total))
        producer = self._load(added)
        await producer.__aenter__()
        self.extra_producers.append(producer)
        return added

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.stop_producer()
        finally:
            try:
                await self.stop_runner()
            finally:
                self.janitor.destroy()
                await self.observer.close()

    # --- observing and driving ----------------------------------------------------------------------

    def record(self) -> ControllerRecord | None:
        return self.observer.controller(self.settings.workload)

    def history(self) -> list[ControllerRecord]:
        """Every controller record of the workload seen so far, in order."""
        return [r for r in self.observer.history or () if r.workload == self.settings.workload]

    def settled(self, replicas: int | None = None) -> bool:
        record = self.record()
        return (
            record is not None
            and record.handover is None
            and record.serving is not None
            and (replicas is None or record.serving.replicas == replicas)
        )

    async def wait(self, predicate: Callable[[], bool], *, within: float, what: str) -> None:
        """Poll ``predicate`` (every 50 ms) until it holds; TimeoutError naming ``what`` and the record."""
        deadline = time.monotonic() + within
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {within:g}s for {what}; control record: {self.record()}")
            await asyncio.sleep(0.05)

    async def scale_to(self, replicas: int, *, within: float = 90.0) -> ControllerRecord:
        """Decide ``replicas`` (as the engine would) and wait until a generation of that size serves."""
        assert self.runner is not None
        self.runner.set_desired(self.settings.workload, replicas)
        return await self.wait_settled(replicas, within=within)

    async def wait_settled(self, replicas: int, *, within: float = 90.0) -> ControllerRecord:
        """Wait until a generation of ``replicas`` serves and no handover is in progress."""
        await self.wait(lambda: self.settled(replicas), within=within, what=f"{replicas} replicas serving")
        record = self.record()
        assert record is not None
        return record

    async def drained(self, *, within: float = 60.0) -> None:
        """Wait until the serving generation has committed everything produced so far."""
        ends = await end_offsets(self.settings.bootstrap, self.settings.topic)
        deadline = time.monotonic() + within
        behind: dict[int, int] = {}
        while True:
            record = self.record()
            if record is not None and record.serving is not None:
                committed = await committed_offsets(self.settings.bootstrap, record.serving.group)
                behind = {p: e - committed.get((self.settings.topic, p), 0) for p, e in ends.items()}
                if all(b <= 0 for b in behind.values()):
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the workload did not drain within {within:g}s: behind {behind}")
            await asyncio.sleep(0.2)

    async def verdict(self, *, within: float = 60.0, drain: str = "sink") -> SinkReport:
        """Stop the load, wait until everything is processed, and check the sink against the source.

        ``drain="sink"`` waits until the sink holds every record produced (whatever the commit interval:
        fit for small runs); ``"commits"`` until the serving group has committed everything (cheaper
        for a large run, whose sink is expensive to read more than once).
        """
        await self.stop_producer()
        if drain == "commits":
            await self.drained(within=within)
        produced = await end_offsets(self.settings.bootstrap, self.settings.topic)
        deadline = time.monotonic() + within
        while True:
            self.sink_batches = await read_sink(self.settings.bootstrap, self.settings.sink)
            report = check(self.sink_batches, produced)
            if report.lost == 0 or time.monotonic() > deadline:
                return report
            await asyncio.sleep(0.5)

    def worker_pids(self, generation: int) -> dict[str, int]:
        """The pid of every worker of ``generation`` that has not been confirmed gone."""
        return {w.worker: w.pid for w in self.janitor.workers() if w.generation == generation}


class GroupWorkers:
    """SDK workers as plain members of the workload's own group (``settings.group``), started and
    stopped like a Deployment's pods: the workload outside handover mode (the rebalance bench), and
    its own consumers after a hand-back."""

    def __init__(self, play: HandoverPlayground) -> None:
        self.play = play
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, count: int) -> None:
        s = self.play.settings
        for _ in range(count):
            index = len(self.processes)
            env = {
                **os.environ,
                ENV["bootstrap"]: s.bootstrap,
                "LAGSCALER_GROUP": s.group,
                "LAGSCALER_TOPICS": s.topic,
                ENV["worker"]: f"{s.name}-member-{index}",
            }
            log = (s.state_dir / f"member-{index}.log").open("ab")
            self.processes.append(
                subprocess.Popen(
                    s.command(), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )

    def stop_newest(self, count: int) -> None:
        for process in [p for p in self.processes if p.poll() is None][-count:]:
            os.killpg(process.pid, signal.SIGTERM)

    def live(self) -> int:
        return sum(1 for p in self.processes if p.poll() is None)

    def kill_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def crash_attributed(report: SinkReport, crashed: Sequence[str]) -> bool:
    """Every duplicate's first copy was processed by a worker that crashed (at-least-once on a crash)."""
    return set(report.duplicated_first_by) <= set(crashed)


# --- a controller as a process of its own (for the kill -9 and two-controller tests) --------------


def controller_main(argv: Sequence[str] | None = None) -> int:
    """``python -m lagscaler_demo.playground.handover_run``: run the controller of a playground workload.

    The desired replica count is read from ``--desired-file`` (as the engine's decision would arrive);
    ``leading term=N`` is printed on stdout when this process becomes the leader.
    """
    parser = argparse.ArgumentParser(prog="python -m lagscaler_demo.playground.handover_run")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--control-topic", required=True)
    parser.add_argument("--desired-file", type=Path, required=True)
    parser.add_argument("--stateful", action="store_true")
    parser.add_argument("--initial-replicas", type=int, default=2)
    parser.add_argument("--warmup-timeout", type=float, default=60.0)
    parser.add_argument("--fence-timeout", type=float, default=5.0)
    parser.add_argument("--app-arg", action="append", default=[])
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    settings = PlaygroundSettings(
        bootstrap=args.bootstrap,
        name=args.name,
        state_dir=args.state_dir,
        stateful=args.stateful,
        initial_replicas=args.initial_replicas,
        app_args=tuple(args.app_arg),
        handover=HandoverSettings(
            control_topic=args.control_topic,
            warmup_timeout=args.warmup_timeout,
            fence_timeout=args.fence_timeout,
            tick=0.2,
        ),
    )
    # stdout carries the 'leading term=' line the parent reads; every log line goes to stderr.
    configure_logging("info", stream=sys.stderr)
    return asyncio.run(_control(settings, args.desired_file))


async def _control(settings: PlaygroundSettings, desired_file: Path) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    play = HandoverPlayground(settings)
    runner = await play.start_runner()
    try:
        announced = False
        while not stop.is_set():
            if runner.leading and not announced:
                print(f"leading term={runner.leadership_term}", flush=True)
                announced = True
            with contextlib.suppress(OSError, ValueError):
                text = await asyncio.to_thread(desired_file.read_text)
                runner.set_desired(settings.workload, int(text.strip()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
    finally:
        await play.stop_runner()
    return 0


if __name__ == "__main__":
    sys.exit(controller_main())
