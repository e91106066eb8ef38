"""The controller's async edge: observe, step the pure machine, persist, act — for one workload.

:class:`WorkloadController` is the driver of :func:`lagscaler.core.handover.machine.step`. One step:

1. take the worker statuses (from the control channel) and the backend's view of what runs — *before*
   reading any committed offsets (see :mod:`lagscaler.core.handover.machine`);
2. read the partitions of the workload's topics, and the groups and offsets :func:`needs` asks for;
3. step the machine;
4. write the new record to the control topic if it changed, and only then
5. carry out the actions (reconcile the backend, tombstone statuses, log).

:class:`HandoverRunner` owns what the controllers share — the control channel, an admin client,
leadership — and runs one controller per ``mode: handover`` workload while it leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from lagscaler.core.handover.machine import (
    DURATIONS,
    Commit,
    Ensure,
    Forget,
    GroupView,
    HandBack,
    Kill,
    MachineSettings,
    Note,
    Observation,
    Remove,
    Step,
    needs,
    require_seconds,
    step,
)
from lagscaler.core.handover.protocol import (
    DEFAULT_CONTROL_TOPIC,
    ControllerRecord,
    Offsets,
    TopicPartition,
    status_key,
)
from lagscaler.edges.handover.backend import Backend, GenerationSpec
from lagscaler.edges.handover.channel import ControlChannel, ControlTopicUnusable, ensure_control_topic
from lagscaler.edges.handover.leader import Leadership
from lagscaler.edges.kafka import ClusterLayout, KafkaAdmin, KafkaSettings
from lagscaler.edges.kafka.admin import capture_client_errors
from lagscaler.edges.kafka.commit import commit_from_outside
from lagscaler.edges.kafka.errors import refusal
from lagscaler.logs import get_logger

__all__ = ["Deposed", "HandoverRunner", "HandoverSettings", "WorkloadController", "WorkloadSpec"]

log = get_logger("lagscaler.edges.handover")

CONNECT_BACKOFF_MAX = 30.0  # s, the longest pause between two attempts to reach the control topic


class Deposed(Exception):
    """The control topic holds a record of a higher term than ours: another controller leads."""


@dataclass(frozen=True, slots=True)
class HandoverSettings:
    """How the controllers run. Times are seconds; see
    :class:`~lagscaler.core.handover.machine.MachineSettings`.

    ``tick``: the longest a controller waits between steps when nothing happens (a status record or a
    new decision wakes it at once). ``partitions_ttl``: how long a topic's partition list is reused while
    no handover runs (during one it is read on every step: a cut must cover a partition added meanwhile).
    """

    control_topic: str = DEFAULT_CONTROL_TOPIC
    warmup_timeout: float = 120.0
    fence_timeout: float = 5.0
    kill_grace: float = 15.0
    verify_timeout: float = 120.0
    revert_backoff: float = 60.0
    unschedulable_grace: float = 300.0
    failing_grace: float = 30.0
    tick: float = 0.5
    partitions_ttl: float = 10.0

    def __post_init__(self) -> None:
        require_seconds(self, (*DURATIONS, "tick", "partitions_ttl"), prefix="handover ")
        if not self.control_topic:
            raise ValueError("the handover control topic needs a name")


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """One ``mode: handover`` workload, as the controller needs it."""

    workload: str  # namespace/name
    base_group: str  # the policy's kafka.group; generation g consumes in <base_group>-gen-<g>
    topics: tuple[str, ...]
    initial_replicas: int = 1
    target: str = ""  # the workload's own Deployment (its scaleTargetRef): what the Kubernetes backend clones
    # Seconds the policy says a new generation needs before it can serve (0: unknown). A warm-up
    # deadline shorter than that would abort every handover of the workload.
    expected_warmup: float = 0.0
    # The policy is no longer in handover mode: hand the workload back to its own group and
    # Deployment, then stop (docs/handover.md §4.8).
    hand_back: bool = False

    def machine(self, settings: HandoverSettings) -> MachineSettings:
        return MachineSettings(
            workload=self.workload,
            base_group=self.base_group,
            initial_replicas=self.initial_replicas,
            warmup_timeout=max(settings.warmup_timeout, 2.0 * self.expected_warmup),
            fence_timeout=settings.fence_timeout,
            kill_grace=settings.kill_grace,
            # A stateful target's catch-up at the cut restores at most what a whole warm-up does: a
            # shorter deadline would revert a target that is only catching up.
            verify_timeout=max(settings.verify_timeout, self.expected_warmup),
            revert_backoff=settings.revert_backoff,
            unschedulable_grace=settings.unschedulable_grace,
            failing_grace=settings.failing_grace,
            hand_back=self.hand_back,
        )


@dataclass
class _Partitions:
    at: float = -math.inf
    value: frozenset[TopicPartition] = field(default_factory=frozenset)
    layout: ClusterLayout | None = None  # where their leaders are, for ListOffsets


class WorkloadController:
    """Drives one workload's handovers; :meth:`step` once, or :meth:`run` while ``leadership`` holds."""

    def __init__(
        self,
        spec: WorkloadSpec,
        *,
        channel: ControlChannel,
        admin: KafkaAdmin,
        backend: Backend,
        bootstrap: tuple[str, ...],
        settings: HandoverSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self.channel = channel
        self.admin = admin
        self.backend = backend
        self.bootstrap = bootstrap
        self.settings = settings
        self.machine = spec.machine(settings)
        self._clock = clock
        self.desired: int | None = None
        self._written: ControllerRecord | None = None
        self._partitions = _Partitions()
        self._poke = asyncio.Event()
        self._noted: set[tuple[str, str]] = set()
        self.steps = 0  # steps that completed
        self.failures = 0  # steps that raised (Kafka or the backend away, a workload gone)
        self._problem: str | None = None  # the last failure logged; repeated failures are logged once
        self.handed_back = False  # a hand-back controller's work is done: the record is cleared

    def set_desired(self, replicas: int | None) -> None:
        if replicas != self.desired:
            self.desired = replicas
            self._poke.set()

    @property
    def record(self) -> ControllerRecord | None:
        """The newest record: the channel's, or the one this controller just wrote if the channel lags."""
        seen = self.channel.controller(self.spec.workload)
        if self._written is not None and self._written.newer_than(seen):
            return self._written
        return seen

    async def _topic_partitions(self, *, fresh: bool = False) -> frozenset[TopicPartition]:
        now = time.monotonic()
        if not fresh and now - self._partitions.at < self.settings.partitions_ttl:
            return self._partitions.value
        layout = await self.admin.metadata(self.spec.topics)
        self._partitions = _Partitions(now, frozenset(layout.partitions(self.spec.topics)), layout)
        return self._partitions.value

    async def _ends(self, partitions: frozenset[TopicPartition]) -> Offsets:
        layout = self._partitions.layout
        if not partitions or layout is None:
            return {}
        ends = await self.admin.list_end_offsets(sorted(partitions), layout)
        if ends.errors:
            raise RuntimeError(f"ListOffsets failed: {ends.errors}")
        return dict(ends.offsets)

    async def _groups(self, groups: Iterable[str]) -> dict[str, GroupView]:
        wanted = sorted(groups)
        if not wanted:
            return {}
        results = await self.admin.describe_groups(wanted)
        if results.errors:
            raise RuntimeError(f"DescribeGroups failed: {results.errors}")
        views = {}
        for group in wanted:
            d = results.values.get(group)
            if d is None or not d.found:
                views[group] = GroupView("Dead", {})
                continue
            members = {m.client_id: frozenset(m.assignment) for m in d.members}
            views[group] = GroupView(d.state, members)
        return views

    async def _committed(self, groups: Iterable[str]) -> dict[str, Offsets]:
        wanted = sorted(groups)
        if not wanted:
            return {}
        results = await self.admin.fetch_committed(wanted)
        if results.errors:
            raise RuntimeError(f"OffsetFetch failed: {results.errors}")
        return {g: dict(results.values[g].offsets) for g in wanted if g in results.values}

    async def step(self, term: int) -> Step:
        """One observe → decide → persist → act round as leader of ``term``."""
        record = self.record
        if record is not None and record.term > term:
            raise Deposed(
                f"{self.spec.workload}: the control topic has term {record.term}, we lead term {term}"
            )
        statuses = self.channel.workers(self.spec.workload)  # first: see the module docstring
        running = await self.backend.observe()
        problems = self.backend.problems()
        wanted = needs(record, self.machine)
        partitions = await self._topic_partitions(fresh=wanted.fresh_partitions)
        groups = await self._groups(wanted.describe)
        committed = await self._committed(wanted.committed)
        ends = await self._ends(partitions) if wanted.ends else {}  # after the commits: never behind them
        observation = Observation(
            now=self._clock(),
            desired=self.desired,
            partitions=partitions,
            running=running,
            statuses=statuses,
            groups=groups,
            committed=committed,
            ends=ends,
            problems=problems,
        )
        result = step(record, observation, self.machine, term=term)
        if result.changed:
            await self.channel.publish(result.record)  # write-ahead: the record before the actions
            self._written = result.record
        for action in result.actions:
            await self._act(action, result.record)
        self.steps += 1
        return result

    async def _act(self, action: object, record: ControllerRecord) -> None:
        if isinstance(action, Ensure):
            spec = GenerationSpec(
                workload=self.spec.workload,
                generation=action.generation,
                group=action.group,
                topics=self.spec.topics,
                bootstrap=self.bootstrap,
                control_topic=self.channel.topic,
            )
            await self.backend.ensure(spec, action.replicas)
        elif isinstance(action, Remove):
            await self.backend.remove(action.generation)
        elif isinstance(action, Kill):
            log.warning(
                "killing workers that did not fence",
                workload=self.spec.workload,
                workers=sorted(action.workers),
            )
            await self.backend.kill(action.workers)
        elif isinstance(action, Forget):
            for status in self.channel.workers(self.spec.workload).values():
                if status.generation == action.generation:
                    await self.channel.delete(
                        status_key(self.spec.workload, status.generation, status.worker)
                    )
        elif isinstance(action, Commit):
            await commit_from_outside(self.admin.settings, action.group, action.offsets)
        elif isinstance(action, HandBack):
            await self.backend.hand_back(action.replicas)
        elif isinstance(action, Note):
            self._log(action, record)

    def _log(self, note: Note, record: ControllerRecord) -> None:
        handover = record.handover
        key = (note.event, f"{record.term}/{handover.target if handover else record.next_generation}")
        if note.event == "handover blocked":
            key = (note.event, str(note.fields.get("reason")))
        if key in self._noted:
            return  # the machine repeats a note while the condition lasts; log it once
        self._noted.add(key)
        level = (
            "warning"
            if note.event
            in (
                "handover aborted",
                "handover blocked",
                "handover verification overdue",
                "handover reverting",
                "handover revert blocked",
                "handover release blocked",
                "handover held",
                "handover cut beyond the log end",
                "handover cut on partitions that are gone",
            )
            else "info"
        )
        getattr(log, level)(note.event, **{"workload": self.spec.workload, **dict(note.fields)})

    async def run(self, term: int, leadership: Leadership) -> None:
        """Step until cancelled or leadership is lost; a failing step (Kafka away) is retried next tick."""
        while leadership.is_leader():
            version = self.channel.version
            self._poke.clear()
            try:
                await self.step(term)
            except Deposed:
                raise
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                problem = f"{type(exc).__name__}: {exc}"
                if problem != self._problem:  # every tick would repeat it: say it once, and when it changes
                    self._problem = problem
                    log.warning("handover step failed", workload=self.spec.workload, problem=problem)
            else:
                if self._problem is not None:
                    log.info("handover step succeeded again", workload=self.spec.workload)
                    self._problem = None
                if self.spec.hand_back and _clear(self.record):
                    # Once more: a backend deletes what it emptied in the last step (a generation
                    # Deployment at 0 replicas) when it next looks.
                    with contextlib.suppress(Exception):
                        await self.backend.observe()
                    self.handed_back = True
                    return
            await _first(self.channel.wait_changed(version, self.settings.tick), self._poke.wait())


def _clear(record: ControllerRecord | None) -> bool:
    """Nothing of lagscaler's runs the workload: no generation serves, no handover is in progress."""
    return record is None or (record.serving is None and record.handover is None)


async def _first(*awaitables: object) -> None:
    tasks = [asyncio.ensure_future(a) for a in awaitables]  # type: ignore[call-overload]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class HandoverRunner:
    """Runs a :class:`WorkloadController` per workload while ``leadership`` holds; ``async with`` it.

    ``backends(spec)`` builds the backend of a workload (local processes, or Deployments in Kubernetes).
    :meth:`sync` is called with the current handover workloads whenever policies change;
    :meth:`set_desired` with each engine decision.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: HandoverSettings,
        *,
        backends: Callable[[WorkloadSpec], Backend],
        leadership: Leadership,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kafka = kafka
        self.settings = settings
        self._backends = backends
        self.leadership = leadership
        self._clock = clock
        self.channel = ControlChannel(
            kafka.client_options(), settings.control_topic, client_id="lagscaler-handover"
        )
        self.admin = KafkaAdmin(kafka)
        self.controllers: dict[str, WorkloadController] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._main: asyncio.Task[None] | None = None
        self._term = 0
        self._leading = asyncio.Event()
        self._unrun_warned: set[tuple[str, int]] = set()

    async def __aenter__(self) -> HandoverRunner:
        await self._connect()
        self._main = asyncio.create_task(self._lead(), name="handover-leadership")
        return self

    async def _connect(self) -> None:
        """Reach the control topic and read it to its end, retrying until Kafka answers.

        A broker that is down when ``serve`` starts is an outage to wait out, as the sampler waits
        one out, not a reason to exit: every attempt that fails is one warning naming the topic and
        the problem, then the next comes after a doubling pause of at most ``CONNECT_BACKOFF_MAX``.
        Until it succeeds nothing about the handovers is known, so nothing after it may run (the
        scaling loop would sample the wrong generation's group).

        A broker that *refuses* (SASL authentication failed, no ACL on the control topic, a request
        it does not support, an untrusted certificate: :func:`~lagscaler.edges.kafka.errors.refusal`)
        will refuse every attempt until someone changes something, so each attempt is an ERROR naming
        the cause and the fix, and the next comes after ``CONNECT_BACKOFF_MAX``. It is retried rather
        than ``serve`` exiting because that fix is made outside lagscaler, usually while it runs — an
        ACL granted, a Secret rotated (each attempt re-reads the password file), a broker upgraded —
        and the next attempt then succeeds without a restart; exiting would only trade this retry for
        the kubelet's crash-loop back-off (or, run by hand, for nobody retrying at all).
        """
        pause = self.settings.tick
        while True:
            try:
                with capture_client_errors() as seen:
                    # A fresh channel per attempt: its client options (a password file) are read here.
                    options = self.kafka.client_options()
                    self.channel = ControlChannel(
                        options, self.settings.control_topic, client_id="lagscaler-handover"
                    )
                    await ensure_control_topic(options, self.settings.control_topic)
                    await self.channel.start()
                    await self.admin.start()
                return
            except (ControlTopicUnusable, asyncio.CancelledError):
                # A topic no waiting can fix, or serve stopping before Kafka came back: close what was
                # opened (the caller gets no runner to leave) and let it go up.
                await self.channel.close()
                await self.admin.close()
                raise
            except Exception as exc:
                await self.channel.close()
                await self.admin.close()
                problem = str(exc) or type(exc).__name__
                if seen and seen[-1] not in problem:  # aiokafka raises "Unable to bootstrap", logs why
                    problem = f"{problem}: {seen[-1]}"
                fix = refusal(exc, seen)
                if fix is not None:
                    log.error(
                        "handover control topic refused; retrying",
                        topic=self.settings.control_topic,
                        problem=problem,
                        fix=fix,
                        retry_in=CONNECT_BACKOFF_MAX,
                    )
                    await asyncio.sleep(CONNECT_BACKOFF_MAX)
                    continue
                log.warning(
                    "handover control topic unreachable; retrying",
                    topic=self.settings.control_topic,
                    problem=problem,
                    retry_in=round(pause, 1),
                )
                await asyncio.sleep(pause)
                pause = min(2.0 * pause, CONNECT_BACKOFF_MAX)

    async def __aexit__(self, *exc: object) -> None:
        main, self._main = self._main, None
        if main is not None:
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await main
        await self._stop_all()
        for controller in self.controllers.values():
            await controller.backend.close()
        await self.leadership.release()
        await self.admin.close()
        await self.channel.close()

    @property
    def leading(self) -> bool:
        return self._leading.is_set()

    @property
    def leadership_term(self) -> int:
        """The term this runner leads in (0 before it first leads)."""
        return self._term

    async def wait_leading(self) -> None:
        await self._leading.wait()

    def sync(self, specs: Iterable[WorkloadSpec]) -> None:
        """Run controllers for exactly these workloads: ``mode: handover`` ones, and hand-backs
        (``spec.hand_back``) of those the control topic still shows a generation of lagscaler's for.

        A workload the control topic shows handed over that none of ``specs`` names (its policy was
        removed, or cannot be run) is left as it is — its serving generation keeps consuming, nothing
        is removed — with a warning that says how to hand it back (docs/handover.md §4.8).
        """
        wanted = {
            s.workload: s for s in specs if not s.hand_back or not _clear(self.channel.controller(s.workload))
        }
        replaced: dict[str, WorkloadController] = {}
        for workload in list(self.controllers):
            if workload not in wanted or self.controllers[workload].spec != wanted[workload]:
                task = self._tasks.pop(workload, None)
                if task is not None:
                    task.cancel()
                replaced[workload] = self.controllers.pop(workload)
        for workload, spec in wanted.items():
            if workload not in self.controllers:
                controller = self.controllers[workload] = WorkloadController(
                    spec,
                    channel=self.channel,
                    admin=self.admin,
                    backend=self._backends(spec),
                    bootstrap=self.kafka.bootstrap,
                    settings=self.settings,
                    clock=self._clock,
                )
                if workload in replaced:
                    # What its predecessor wrote last, should the channel not have read it back yet: a
                    # step from an older record would write one the channel does not take as newer.
                    controller._written = replaced[workload]._written
                if self.leading:
                    self._start(workload)
        self._warn_unrun({s.workload for s in specs})

    def _warn_unrun(self, named: set[str]) -> None:
        for workload, record in sorted(self.channel.controllers.items()):
            if workload in named or _clear(record):
                continue
            serving = record.serving
            key = (workload, serving.generation if serving is not None else -1)
            if key in self._unrun_warned:
                continue
            self._unrun_warned.add(key)
            log.warning(
                "handover workload not run",
                workload=workload,
                serving=f"generation {serving.generation} in group {serving.group}" if serving else None,
                handover=str(record.handover.phase) if record.handover is not None else None,
                problem=(
                    "no runnable policy names it (removed, or see 'handover not run'); what runs keeps"
                    " running, uncontrolled: to hand the workload back to its own group, put its policy"
                    " back with mode: hpa"
                ),
            )

    def set_desired(self, workload: str, replicas: int | None) -> None:
        controller = self.controllers.get(workload)
        if controller is not None:
            controller.set_desired(replicas)

    def record(self, workload: str) -> ControllerRecord | None:
        return self.channel.controller(workload)

    def serving_group(self, workload: str) -> str | None:
        """The group of the generation that serves ``workload`` now (None before its first generation)."""
        record = self.channel.controller(workload)
        return record.serving.group if record is not None and record.serving is not None else None

    def _start(self, workload: str) -> None:
        controller = self.controllers[workload]
        self._tasks[workload] = asyncio.create_task(
            controller.run(self._term, self.leadership), name=f"handover-{workload}"
        )

    async def _stop_all(self) -> None:
        tasks, self._tasks = list(self._tasks.values()), {}
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _lead(self) -> None:
        while True:
            self._term = await self.leadership.acquire()
            log.info("handover controller leads", term=self._term)
            self._leading.set()
            for workload in self.controllers:
                self._start(workload)
            try:
                while self.leadership.is_leader():
                    done = [w for w, t in self._tasks.items() if t.done()]
                    for workload in done:
                        task = self._tasks.pop(workload)
                        problem = task.exception() if not task.cancelled() else None
                        if isinstance(problem, Deposed):
                            log.warning("handover controller deposed", problem=str(problem))
                            await self.leadership.release()
                            break
                        if problem is not None:
                            log.error("handover controller crashed", workload=workload, problem=repr(problem))
                        controller = self.controllers.get(workload)
                        if controller is not None and controller.handed_back:
                            self.controllers.pop(workload)
                            await controller.backend.close()
                            continue
                        if workload in self.controllers:
                            self._start(workload)
                    await asyncio.sleep(self.settings.tick)
            finally:
                self._leading.clear()
                await self._stop_all()
