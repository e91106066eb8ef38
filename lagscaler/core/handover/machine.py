"""The handover controller as a pure state machine: (record, observation) → (next record, actions).

No IO and no clock: the driver (:mod:`lagscaler.edges.handover.controller`) observes the world — the worker
statuses in the control topic, what the backend runs, consumer groups and their committed offsets —
calls :func:`step`, writes the returned record to the control topic *before* it carries out the
returned actions (write-ahead), and repeats. Every action is a reconciliation ("generation g has n
workers", "generation g is gone"), so repeating a step, or a new leader repeating its predecessor's
step, changes nothing. ``docs/handover.md`` §4 is the prose version of this module.

What a step needs to see is declared by :func:`needs`, so the driver asks Kafka only for the groups a
phase reads. Ordering matters in one place: the driver must take the statuses and the backend's view
*before* it reads committed offsets, so that a ``fenced`` status seen here always had its commit
finished before the offsets were read (a worker commits, then reports).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from lagscaler.core.handover.protocol import (
    ControllerRecord,
    Handover,
    Offsets,
    Phase,
    Serving,
    Status,
    TopicPartition,
    WorkerStatus,
    generation_group,
    restamp,
)

__all__ = [
    "DURATIONS",
    "Commit",
    "Ensure",
    "Forget",
    "GroupView",
    "HandBack",
    "Kill",
    "MachineSettings",
    "Needs",
    "Note",
    "Observation",
    "Remove",
    "Step",
    "Trouble",
    "WorkerProblem",
    "hopeless",
    "needs",
    "require_seconds",
    "step",
    "superseded",
]


@dataclass(frozen=True, slots=True)
class MachineSettings:
    """One workload's handover settings. Times are seconds.

    ``warmup_timeout``: how long the target may take to join, get its assignment and restore state
    before the attempt is aborted (a stateful restore of a large changelog needs long).
    ``fence_timeout``: how long a source worker may take to finish the record in hand, commit and
    answer; after it the worker is killed, and ``kill_grace`` later the handover is aborted if the
    backend still cannot confirm it gone. ``verify_timeout``: how long the target may take, from the
    cut, to show progress past it; after it the handover is reverted (the source serves again from
    where the target stopped), so it must exceed a stateful target's catch-up at the cut.
    ``revert_backoff``: after a revert no handover begins for this long, doubled for every further
    revert in a row (at most 64 times): a target that hangs because of the application would otherwise
    cost the workload ``verify_timeout`` without processing at every attempt.

    ``unschedulable_grace`` and ``failing_grace``: how long a worker of the target may be reported
    unable to run (:class:`WorkerProblem`) before the target is given up — aborted while it warms,
    reverted while it is verified — instead of waiting out ``warmup_timeout`` or ``verify_timeout``.
    A pod no node can take clears when a cluster autoscaler adds a node (minutes), so it gets the
    longer grace; an image that cannot be pulled, a missing Secret, a crash loop or pods the API server
    refuses to create (a ResourceQuota, PodSecurity) rarely clears by itself, or not while the
    generation waits, and the shorter grace still spans about three of the kubelet's retries
    (docs/handover.md §4.1, "Cannot run", says why a quota is in this group).
    """

    workload: str
    base_group: str
    initial_replicas: int = 1
    warmup_timeout: float = 120.0
    fence_timeout: float = 5.0
    kill_grace: float = 15.0
    verify_timeout: float = 120.0
    revert_backoff: float = 60.0
    unschedulable_grace: float = 300.0
    failing_grace: float = 30.0
    # The policy is no longer in handover mode: hand the workload back to its own group (§4.8).
    hand_back: bool = False

    def __post_init__(self) -> None:
        if self.initial_replicas < 1:
            raise ValueError(f"initial replicas must be >= 1, got {self.initial_replicas}")
        require_seconds(self, DURATIONS)


DURATIONS = (
    "warmup_timeout",
    "fence_timeout",
    "kill_grace",
    "verify_timeout",
    "revert_backoff",
    "unschedulable_grace",
    "failing_grace",
)
"""The durations of :class:`MachineSettings`, which the service's settings carry too."""


def require_seconds(settings: object, names: tuple[str, ...], *, prefix: str = "") -> None:
    """Refuse a duration that is not a finite number of seconds above 0, naming it."""
    for name in names:
        value = getattr(settings, name)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{prefix}{name.replace('_', ' ')} must be > 0 seconds, got {value}")


@dataclass(frozen=True, slots=True)
class GroupView:
    """A consumer group as DescribeGroups shows it: its state and each member's assignment by client id."""

    state: str
    members: Mapping[str, frozenset[TopicPartition]] = field(default_factory=dict)


class Trouble(enum.StrEnum):
    """Why a worker cannot run, by how likely it is to clear on its own (each has its own grace)."""

    UNSCHEDULABLE = "unschedulable"  # no node can take it now; a cluster autoscaler may add one
    # its image cannot be pulled, its configuration is missing, it crashes at start, or the API server
    # refuses to create it (a ResourceQuota, a LimitRange, PodSecurity, a missing ServiceAccount)
    FAILING = "failing"


@dataclass(frozen=True, slots=True)
class WorkerProblem:
    """A worker the backend runs that cannot run, as the backend sees it (for a pod: its status).

    ``reason`` is the short cause as the source states it (``Unschedulable``, ``ImagePullBackOff``…),
    ``message`` its own words (``0/3 nodes are available: 3 Insufficient cpu.``); ``since`` is the
    Unix time from which it has been so (as the source states it, else when the backend first saw it).
    """

    worker: str
    trouble: Trouble
    reason: str
    message: str
    since: float

    def describe(self, now: float) -> str:
        lasted = f" for {now - self.since:.0f} s" if now >= self.since else ""
        return f"{self.worker} {self.reason}{lasted}" + (f": {self.message}" if self.message else "")


@dataclass(frozen=True, slots=True)
class Observation:
    """What the driver saw, in the order it must look (statuses and backend before offsets)."""

    now: float  # Unix time
    desired: int | None  # the engine's latest decision (None: none yet)
    partitions: frozenset[TopicPartition]  # every partition of the workload's topics
    running: Mapping[int, frozenset[str]]  # generation → workers the backend has not confirmed gone
    statuses: Mapping[str, WorkerStatus]  # worker id → its latest status (this workload)
    groups: Mapping[str, GroupView] = field(default_factory=dict)  # for the groups in needs().describe
    committed: Mapping[str, Offsets] = field(default_factory=dict)  # for the groups in needs().committed
    ends: Offsets = field(default_factory=dict)  # log end offsets of the partitions, when needs().ends
    # generation → its workers that cannot run (Backend.problems): a target's lets it be given up early
    problems: Mapping[int, tuple[WorkerProblem, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Needs:
    """What the next step reads. ``fresh_partitions``: the partition list must be read now, not reused
    from a cache: the step may take a cut or judge coverage, and a partition added to a topic since the
    list was read would be missed (docs/handover.md §4.6)."""

    describe: frozenset[str] = frozenset()
    committed: frozenset[str] = frozenset()
    fresh_partitions: bool = False
    ends: bool = False  # the log end offsets of the partitions (read after the committed offsets)


@dataclass(frozen=True, slots=True)
class Ensure:
    """Generation ``generation`` (consuming in ``group``) must have ``replicas`` live workers."""

    generation: int
    group: str
    replicas: int


@dataclass(frozen=True, slots=True)
class Remove:
    """Generation ``generation`` must have no workers (SIGTERM, then SIGKILL after a grace period)."""

    generation: int


@dataclass(frozen=True, slots=True)
class Kill:
    """These workers must stop now (they did not answer a fence)."""

    workers: frozenset[str]


@dataclass(frozen=True, slots=True)
class Forget:
    """Delete the status records of generation ``generation`` (its workers are gone)."""

    generation: int


@dataclass(frozen=True, slots=True)
class Note:
    """Something to log: a fixed event phrase and its fields."""

    event: str
    fields: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Commit:
    """Commit ``offsets`` into ``group`` from outside it (the group has no active members)."""

    group: str
    offsets: Offsets


@dataclass(frozen=True, slots=True)
class HandBack:
    """The workload's own consumers (generation 0, in the policy's group) must run again, with ``replicas``
    where lagscaler knows how (the workload's Deployment); idempotent."""

    replicas: int


Action = Ensure | Remove | Kill | Forget | Note | Commit | HandBack


@dataclass(frozen=True, slots=True)
class Step:
    """The record to persist (``changed``: it differs from the one given) and the actions to take after."""

    record: ControllerRecord
    actions: tuple[Action, ...]
    changed: bool


def initial_record(settings: MachineSettings, term: int) -> ControllerRecord:
    """A workload the control topic has never seen: no generation, nothing in progress."""
    return ControllerRecord(workload=settings.workload, term=term, seq=-1)


def needs(record: ControllerRecord | None, settings: MachineSettings) -> Needs:
    """Which groups the next :func:`step` must see described and which committed offsets it reads."""
    handover, serving = (record.handover, record.serving) if record is not None else (None, None)
    if settings.hand_back:
        if handover is None or handover.phase is not Phase.RELEASING or serving is None:
            return Needs()  # every other phase goes to RELEASING, or on, without reading anything
        base = settings.base_group
        return Needs(
            describe=frozenset({base}),
            committed=frozenset({base, serving.group}),
            fresh_partitions=True,
            ends=True,  # the cut is held to the log end before it is persisted and committed
        )
    if record is None or (serving is None and handover is None):
        return Needs(describe=frozenset({settings.base_group}), committed=frozenset({settings.base_group}))
    if handover is None:
        assert serving is not None
        return Needs(committed=frozenset({serving.group}))  # warm_to, should a handover begin
    if handover.phase is Phase.WARMING:
        # The first generation starts at warm_to once ready: held to the log end like any cut.
        return Needs(
            describe=frozenset({handover.group}), fresh_partitions=True, ends=handover.source is None
        )
    if handover.phase is Phase.FENCING:
        assert serving is not None
        return Needs(committed=frozenset({serving.group}), fresh_partitions=True, ends=True)
    if handover.phase is Phase.STARTING:
        return Needs(
            describe=frozenset({handover.group}),
            committed=frozenset({handover.group}),
            fresh_partitions=True,
            ends=True,
        )
    if handover.phase is Phase.REVERTING:
        return Needs(committed=frozenset({handover.group}), fresh_partitions=True, ends=True)
    return Needs()


def step(record: ControllerRecord | None, obs: Observation, settings: MachineSettings, *, term: int) -> Step:
    """One move of the controller of one workload, as leader of ``term``."""
    current = record if record is not None else initial_record(settings, term)
    handover = current.handover
    if settings.hand_back:
        if record is None:
            return Step(current, (), False)  # never handed over: nothing to give back, nothing to write
        new, actions = _handing_back(current, obs, settings)
    elif handover is None:
        new, actions = _idle(current, obs, settings)
    elif handover.phase is Phase.WARMING:
        new, actions = _warming(current, handover, obs, settings)
    elif handover.phase is Phase.FENCING:
        new, actions = _fencing(current, handover, obs, settings)
    elif handover.phase is Phase.STARTING:
        new, actions = _starting(current, handover, obs, settings)
    elif handover.phase is Phase.REVERTING:
        new, actions = _reverting(current, handover, obs, settings)
    elif handover.phase is Phase.RETIRING:
        new, actions = _retiring(current, handover, obs)
    else:
        new, actions = _aborting(current, handover, obs)
    changed = record is None or new != current
    if changed:
        new = restamp(new, term=term)
    elif record is not None and record.term != term:
        # A new leader re-writes the record it found under its own term: from now on workers ignore
        # anything its predecessor might still write.
        new, changed = restamp(new, term=term), True
    return Step(new, tuple(actions), changed)


# --- phases ------------------------------------------------------------------------------------------


def _strays(obs: Observation, keep: set[int]) -> list[Remove]:
    """Generations the backend runs that the record does not account for (an aborted leftover)."""
    return [Remove(g) for g in sorted(obs.running) if g not in keep and obs.running[g]]


def _forget_strays(obs: Observation, keep: set[int]) -> list[Forget]:
    """Status records of generations that neither run nor matter any more."""
    gone = {s.generation for s in obs.statuses.values()} - keep - set(obs.running)
    return [Forget(g) for g in sorted(gone)]


def _begin(
    record: ControllerRecord,
    *,
    source: int | None,
    replicas: int,
    warm_to: Offsets,
    obs: Observation,
    settings: MachineSettings,
) -> ControllerRecord:
    target = record.next_generation
    serving = record.serving
    handover = Handover(
        source=source,
        target=target,
        group=generation_group(settings.base_group, target),
        replicas=replicas,
        phase=Phase.WARMING,
        warm_to=dict(warm_to),
        deadline=obs.now + settings.warmup_timeout,
        started_at=obs.now,
        source_replicas=serving.replicas if source is not None and serving is not None else None,
    )
    return replace(record, handover=handover, next_generation=target + 1)


def _idle(
    record: ControllerRecord, obs: Observation, settings: MachineSettings
) -> tuple[ControllerRecord, list[Action]]:
    serving = record.serving
    keep = {serving.generation} if serving is not None else set()
    actions: list[Action] = [*_strays(obs, keep), *_forget_strays(obs, keep)]
    if not obs.partitions:
        actions.append(Note("handover blocked", {"reason": "the workload's topics have no partitions"}))
        return record, actions
    if serving is None:
        base = obs.groups.get(settings.base_group)
        if base is not None and base.members:
            reason = (
                f"group {settings.base_group} has {len(base.members)} active members not run by lagscaler:"
                " scale them to zero before the first generation starts"
            )
            actions.append(Note("handover blocked", {"reason": reason}))
            return record, actions
        if settings.base_group not in obs.committed:
            return record, actions  # not read yet
        warm_to = _within(obs.committed[settings.base_group], obs)
        replicas = max(1, obs.desired if obs.desired is not None else settings.initial_replicas)
        new = _begin(record, source=None, replicas=replicas, warm_to=warm_to, obs=obs, settings=settings)
        actions.append(Note("handover started", _describe(new)))
        return new, actions
    actions.append(Ensure(serving.generation, serving.group, serving.replicas))
    if obs.desired is None or obs.desired < 1 or obs.desired == serving.replicas:
        return record, actions
    if obs.now < record.hold_until:
        wait = record.hold_until - obs.now
        reason = (
            f"{record.reverts} handovers in a row reverted or given up as unable to run;"
            f" the next one may begin in {wait:.0f} s"
        )
        actions.append(Note("handover held", {"workload": record.workload, "reason": reason}))
        return record, actions
    if serving.group not in obs.committed:
        return record, actions
    warm_to = _highest(_within(serving.start, obs), _within(obs.committed[serving.group], obs))
    new = _begin(
        record, source=serving.generation, replicas=obs.desired, warm_to=warm_to, obs=obs, settings=settings
    )
    actions.append(Note("handover started", _describe(new)))
    return new, actions


def _warming(
    record: ControllerRecord, handover: Handover, obs: Observation, settings: MachineSettings
) -> tuple[ControllerRecord, list[Action]]:
    serving = record.serving
    keep = {handover.target} | ({serving.generation} if serving is not None else set())
    serving_actions: list[Action] = (
        [Ensure(serving.generation, serving.group, serving.replicas)] if serving is not None else []
    )
    superseded = _superseded(record, handover, obs)
    if superseded is not None:
        # The source never stopped: it keeps serving; ABORTING removes the target (§4.1).
        aborting = replace(handover, phase=Phase.ABORTING)
        note = Note("handover superseded", {**_describe(record, aborting), "reason": superseded})
        return replace(record, handover=aborting), [*_strays(obs, keep), *serving_actions, note]
    actions: list[Action] = [
        *_strays(obs, keep),
        Ensure(handover.target, handover.group, handover.replicas),
        *serving_actions,
    ]
    if _ready(handover, obs):
        if serving is None:
            cut = _held_to_the_end(handover.warm_to, obs, record, actions)
            return _start(record, handover, cut=cut, obs=obs, settings=settings), actions
        fencing = replace(handover, phase=Phase.FENCING, deadline=obs.now + settings.fence_timeout)
        actions.append(Note("handover fencing", _describe(record, fencing)))
        return replace(record, handover=fencing), actions
    problem = hopeless(obs.problems.get(handover.target, ()), obs.now, settings)
    if problem is not None or obs.now > handover.deadline:
        aborting = replace(handover, phase=Phase.ABORTING)
        why = _cannot_run(handover, problem, obs) if problem is not None else _not_ready(handover, obs)
        aborted = replace(record, handover=aborting)
        if problem is not None and serving is not None:
            # The decision still wants the new size, and a fresh attempt from the same template would
            # fail the same way a grace later: hold the next one back as after a revert (§4.3), so a
            # broken image or a missing Secret costs a pod every few minutes, not one every 35 s.
            aborted = _held(aborted, obs, settings)
        fields = {**_describe(aborted, aborting), "reason": why, **_problem_fields(problem)}
        actions.append(Note("handover aborted", fields))
        return aborted, actions
    return record, actions


def _fencing(
    record: ControllerRecord, handover: Handover, obs: Observation, settings: MachineSettings
) -> tuple[ControllerRecord, list[Action]]:
    serving = record.serving
    assert serving is not None
    assert handover.source == serving.generation
    keep = {handover.target, serving.generation}
    actions: list[Action] = [*_strays(obs, keep), Ensure(handover.target, handover.group, handover.replicas)]
    pending = frozenset(
        w
        for w in obs.running.get(serving.generation, frozenset())
        if not _fenced(obs.statuses.get(w), handover)
    )
    if not pending:
        if serving.group not in obs.committed:
            return record, actions
        cut = _held_to_the_end(_cut(serving, handover, obs), obs, record, actions)
        return _start(record, handover, cut=cut, obs=obs, settings=settings), actions
    if obs.now > handover.deadline + settings.kill_grace:
        aborting = replace(handover, phase=Phase.ABORTING)
        reason = f"workers {sorted(pending)} neither fenced nor confirmed gone"
        actions.append(Note("handover aborted", {**_describe(record, aborting), "reason": reason}))
        return replace(record, handover=aborting), actions
    if obs.now > handover.deadline:
        actions.append(Kill(pending))
    return record, actions


def _cut(serving: Serving, handover: Handover, obs: Observation) -> dict[TopicPartition, int]:
    """Where the target starts: the source group's commits (its start where it has none), raised to
    what fenced source workers reported processing.

    A fenced worker's ``offsets`` are exactly what it processed, and it processes nothing more, so they
    are as safe a cut as its commit — and right even when that commit failed (the coordinator was
    away: a broker restart), where the group's offset would lag behind and cause duplicates.
    """
    fenced = [
        _within(s.offsets, obs)
        for s in obs.statuses.values()
        if s.generation == serving.generation and _fenced(s, handover)
    ]
    return _highest(_within(serving.start, obs), _within(obs.committed[serving.group], obs), *fenced)


def _held_to_the_end(
    cut: Offsets, obs: Observation, record: ControllerRecord, actions: list[Action]
) -> dict[TopicPartition, int]:
    """``cut`` with every offset beyond its partition's log end lowered to that end, and a note naming
    each such partition with both offsets.

    A cut past the end cannot be a position anyone processed to (a worker commits the offset after a
    record it fetched, at most the high watermark, and the end is read after the commits, as the
    high watermark too): the log was cut short under it — the topic
    deleted and re-created, an unclean leader election — or the record was forged. Used as it is, the
    next consumer positions past the end and Kafka resets it (the worker SDK: to the log start, all
    over again), or, once the log has grown past the offset, silently skips every record produced in
    between. At the end, every record from now on is processed exactly once; what lay between the
    end and the cut no longer exists in this log. Kafka's own ``kafka-consumer-groups
    --reset-offsets`` does the same with an offset past the end (``ConsumerGroupCommand``,
    ``checkOffsetsRange``: "Value will be set to" the log end, with a warning). A partition whose end
    was not read (not among ``obs.partitions``) is left as it is.
    """
    beyond = {
        tp: (offset, obs.ends[tp]) for tp, offset in cut.items() if tp in obs.ends and offset > obs.ends[tp]
    }
    if not beyond:
        return dict(cut)
    fields = {
        **_describe(record),
        "beyond": [
            {"partition": f"{topic}/{partition}", "cut": offset, "log_end": end}
            for (topic, partition), (offset, end) in sorted(beyond.items())
        ],
        "reason": (
            "the cut lies beyond the log end (the topic re-created, an unclean leader election, or a"
            " corrupted control record): it is set to the log end, so nothing produced from now on is"
            " skipped; check the topic's history for what lay in between"
        ),
    }
    actions.append(Note("handover cut beyond the log end", fields))
    return {tp: min(offset, obs.ends.get(tp, offset)) for tp, offset in cut.items()}


def _on_existing_partitions(
    cut: Offsets, obs: Observation, record: ControllerRecord, actions: list[Action]
) -> dict[TopicPartition, int]:
    """``cut`` without the partitions its topic no longer has (deleted and re-created with fewer), and a
    note naming them.

    Kafka refuses a commit for a partition that does not exist, so the hand-back would retry it on
    every step and never finish; nobody can consume such a partition, so there is nothing to hand
    back on it. A topic missing altogether is left as it is: an empty answer is more likely a broker
    that lost its metadata than a workload whose topic was deleted, and the step's error names it.
    """
    topics = {topic for topic, _ in obs.partitions}
    gone = sorted(tp for tp in cut if tp[0] in topics and tp not in obs.partitions)
    if not gone:
        return dict(cut)
    fields = {
        **_describe(record),
        "partitions": [f"{topic}/{partition}" for topic, partition in gone],
        "reason": (
            "the topic no longer has these partitions (re-created with fewer?): nothing is committed for them"
        ),
    }
    actions.append(Note("handover cut on partitions that are gone", fields))
    return {tp: offset for tp, offset in cut.items() if tp not in gone}


def _highest(*offsets: Offsets) -> dict[TopicPartition, int]:
    """Partition by partition, the highest of these offsets.

    A generation's commits are at or beyond its start (it commits the start when it takes a partition),
    except where that commit failed or, after a revert, where the start was raised past its old
    commits to what its successor processed: the start is then the one to trust.
    """
    out: dict[TopicPartition, int] = {}
    for each in offsets:
        for tp, offset in each.items():
            out[tp] = max(out.get(tp, offset), offset)
    return out


def _start(
    record: ControllerRecord, handover: Handover, *, cut: Offsets, obs: Observation, settings: MachineSettings
) -> ControllerRecord:
    starting = replace(
        handover, phase=Phase.STARTING, cut=dict(cut), deadline=obs.now + settings.verify_timeout
    )
    serving = Serving(handover.target, handover.group, handover.replicas, dict(cut))
    return replace(record, serving=serving, handover=starting)


def _starting(
    record: ControllerRecord, handover: Handover, obs: Observation, settings: MachineSettings
) -> tuple[ControllerRecord, list[Action]]:
    keep = {handover.target} | ({handover.source} if handover.source is not None else set())
    actions: list[Action] = [*_strays(obs, keep), Ensure(handover.target, handover.group, handover.replicas)]
    if _verified(handover, obs):
        retiring = replace(handover, phase=Phase.RETIRING)
        actions.append(Note("handover verified", _describe(record, retiring)))
        return replace(record, handover=retiring), actions
    can_revert = handover.source is not None and handover.source_replicas is not None
    # A target that cannot run is given up once its grace is over rather than after verify_timeout:
    # until it is, the source waits fenced. (The first generation has nothing to go back to.)
    problem = hopeless(obs.problems.get(handover.target, ()), obs.now, settings) if can_revert else None
    if obs.now <= handover.deadline and problem is None:
        return record, actions
    if can_revert:
        # The target makes no progress: the source, fenced and idle but still running, serves again
        # from wherever the target stopped. Nothing is frozen, and nothing is processed twice.
        reverting = replace(handover, phase=Phase.REVERTING, deadline=obs.now + settings.fence_timeout)
        reason = _cannot_run(handover, problem, obs) if problem is not None else _not_verified(handover, obs)
        note = {**_describe(record, reverting), "reason": reason, **_problem_fields(problem)}
        actions.append(Note("handover reverting", note))
        return replace(record, handover=reverting), actions
    if not handover.overdue:  # the first generation: there is nothing to go back to
        note = {**_describe(record, handover), "reason": _not_verified(handover, obs)}
        actions.append(Note("handover verification overdue", note))
        return replace(record, handover=replace(handover, overdue=True)), actions
    return record, actions


def _reverting(
    record: ControllerRecord, handover: Handover, obs: Observation, settings: MachineSettings
) -> tuple[ControllerRecord, list[Action]]:
    """The target stops after the record in hand and commits what it processed (a fence, as the source
    had); once each of its workers has fenced or is confirmed gone, the source serves again from
    there: the cut raised to the target's commits and fenced offsets.

    There is no aborting a revert: nothing serves while it runs, but a target worker that might still
    process must never overlap with the source. One that neither fences nor can be confirmed gone
    is killed again on every step and reported once.
    """
    source, replicas = handover.source, handover.source_replicas
    assert source is not None
    assert replicas is not None
    source_group = generation_group(settings.base_group, source)
    actions: list[Action] = [
        *_strays(obs, {source, handover.target}),
        Ensure(source, source_group, replicas),  # fenced, idle: replaced if one died, to serve next
    ]
    pending = frozenset(
        w
        for w in obs.running.get(handover.target, frozenset())
        if not (
            (s := obs.statuses.get(w)) is not None
            and s.generation == handover.target
            and _fenced(s, handover)
        )
    )
    if not pending:
        if handover.group not in obs.committed:
            return record, actions
        fenced = [
            _within(s.offsets, obs)
            for s in obs.statuses.values()
            if s.generation == handover.target and _fenced(s, handover)
        ]
        cut = _held_to_the_end(
            _highest(handover.cut or {}, _within(obs.committed[handover.group], obs), *fenced),
            obs,
            record,
            actions,
        )
        aborting = replace(handover, phase=Phase.ABORTING, cut=cut)
        back = _held(
            replace(record, serving=Serving(source, source_group, replicas, cut), handover=aborting),
            obs,
            settings,
        )
        actions.append(Note("handover reverted", _describe(back)))
        return back, actions
    if obs.now <= handover.deadline:
        return record, actions
    return _kill_stragglers(
        record,
        handover,
        pending,
        obs=obs,
        settings=settings,
        actions=actions,
        event="handover revert blocked",
    )


def _kill_stragglers(
    record: ControllerRecord,
    handover: Handover,
    pending: frozenset[str],
    *,
    obs: Observation,
    settings: MachineSettings,
    actions: list[Action],
    event: str,
) -> tuple[ControllerRecord, list[Action]]:
    """Kill the workers that did not fence by the deadline, again on every step, and say once, after
    ``kill_grace``, that they cannot be confirmed gone: a phase that has no going back (a revert, a
    hand-back) waits for them however long it takes, for one of them might still process."""
    actions.append(Kill(pending))
    if obs.now > handover.deadline + settings.kill_grace and not handover.overdue:
        reason = f"workers {sorted(pending)} neither fenced nor confirmed gone; nothing serves until they are"
        actions.append(Note(event, {**_describe(record), "reason": reason}))
        return replace(record, handover=replace(handover, overdue=True)), actions
    return record, actions


def _retiring(
    record: ControllerRecord, handover: Handover, obs: Observation
) -> tuple[ControllerRecord, list[Action]]:
    actions: list[Action] = [Ensure(handover.target, handover.group, handover.replicas)]
    source = handover.source
    if source is not None and obs.running.get(source):
        actions.append(Remove(source))
        return record, actions
    if source is not None:
        # Once more with nothing left to stop: a backend may hold more than workers for a generation
        # (a Deployment whose pods were never created) and lets go of it here.
        actions += [Remove(source), Forget(source)]
    actions.append(Note("handover done", _describe(record, handover)))
    return replace(record, handover=None, reverts=0, hold_until=0.0), actions


def _held(record: ControllerRecord, obs: Observation, settings: MachineSettings) -> ControllerRecord:
    """``record`` after a failed attempt: no handover begins for ``revert_backoff``, doubled for every
    failed attempt in a row (at most 64×); a handover that is verified and done forgets them."""
    hold = settings.revert_backoff * 2 ** min(record.reverts, 6)
    return replace(record, reverts=record.reverts + 1, hold_until=obs.now + hold)


def _aborting(
    record: ControllerRecord, handover: Handover, obs: Observation
) -> tuple[ControllerRecord, list[Action]]:
    actions: list[Action] = []
    if record.serving is not None:
        actions.append(Ensure(record.serving.generation, record.serving.group, record.serving.replicas))
    if obs.running.get(handover.target):
        actions.append(Remove(handover.target))
        return record, actions
    actions += [Remove(handover.target), Forget(handover.target)]  # Remove: see _retiring
    return replace(record, handover=None), actions


# --- handing the workload back (§4.8) -----------------------------------------------------------------


def _handing_back(
    record: ControllerRecord, obs: Observation, settings: MachineSettings
) -> tuple[ControllerRecord, list[Action]]:
    """The policy left handover mode: from whatever phase the record is in, towards the workload's own
    group serving again from exactly where the serving generation stopped.

    Any handover in progress is given up for it: a generation that serves (or, reverting or starting,
    last served) is the one fenced and cut from, so every other generation — a warming target, a
    fenced source — has processed nothing past that cut and is simply removed. Without a serving
    generation (a first takeover still warming or aborting) nothing was processed by lagscaler's
    workers: the workload's own group still holds what its consumers committed when they stopped.
    """
    handover, serving = record.handover, record.serving
    if handover is not None and handover.phase is Phase.RELEASED:
        return _released(record, handover, obs)
    if handover is not None and handover.phase is Phase.RELEASING:
        return _releasing(record, handover, obs, settings)
    if serving is None:
        if handover is None:
            return record, [*_strays(obs, {0}), *_forget_strays(obs, {0})]  # nothing left to hand back
        released = _hand_back(handover.target, handover.replicas, Phase.RELEASED, obs=obs, settings=settings)
        back = replace(record, handover=released)
        return back, [Note("handover releasing", _describe(back))]
    releasing = _hand_back(serving.generation, serving.replicas, Phase.RELEASING, obs=obs, settings=settings)
    back = replace(record, handover=releasing)
    return back, [*_strays(obs, {serving.generation}), Note("handover releasing", _describe(back))]


def _hand_back(
    source: int, replicas: int, phase: Phase, *, obs: Observation, settings: MachineSettings
) -> Handover:
    """The hand-back of generation ``source`` to generation 0 (the policy's own group) at ``replicas``.
    Its epoch is 0: a generation is handed back at most once, so its fence answers only this."""
    return Handover(
        source=source,
        target=0,
        group=settings.base_group,
        replicas=replicas,
        phase=phase,
        warm_to={},
        deadline=obs.now + settings.fence_timeout,
        started_at=obs.now,
        source_replicas=replicas,
    )


def _releasing(
    record: ControllerRecord, handover: Handover, obs: Observation, settings: MachineSettings
) -> tuple[ControllerRecord, list[Action]]:
    """The serving generation fences (as a source does, §4.2); once each of its workers has fenced or
    is confirmed gone, the cut — its commits raised to what it fenced at — is persisted, then committed
    into the policy's group, which Kafka accepts only while that group has no members.

    There is no aborting a hand-back: the policy asks for it. A worker that neither fences nor can be
    confirmed gone is killed again on every step and reported once; nothing serves until it is gone.
    """
    serving = record.serving
    assert serving is not None
    base = settings.base_group
    # Generation 0 too: the workload's own consumers must not run while a generation might process.
    actions: list[Action] = list(_strays(obs, {serving.generation}))
    if handover.cut is None:
        pending = frozenset(
            w
            for w in obs.running.get(serving.generation, frozenset())
            if not _fenced(obs.statuses.get(w), handover)
        )
        if pending:
            if obs.now <= handover.deadline:
                return record, actions
            return _kill_stragglers(
                record,
                handover,
                pending,
                obs=obs,
                settings=settings,
                actions=actions,
                event="handover release blocked",
            )
        if serving.group not in obs.committed:
            return record, actions
        cut = _held_to_the_end(_cut(serving, handover, obs), obs, record, actions)
        return replace(record, handover=replace(handover, cut=cut)), actions  # persisted before it is used
    held = _held_to_the_end(_on_existing_partitions(handover.cut, obs, record, actions), obs, record, actions)
    if held != handover.cut:  # beyond the log end (a forged record), or on partitions since gone: fixed
        return replace(record, handover=replace(handover, cut=held)), actions
    committed = obs.committed.get(base)
    if committed is None:
        return record, actions
    if all(committed.get(tp, -1) >= offset for tp, offset in handover.cut.items()):
        released = replace(handover, phase=Phase.RELEASED)
        return replace(record, handover=released), actions
    group = obs.groups.get(base)
    if group is not None and group.members:
        reason = (
            f"group {base} has {len(group.members)} active members: Kafka takes the hand-back's offsets"
            " only while it has none; stop them until the hand-back is done"
        )
        actions.append(Note("handover blocked", {"workload": record.workload, "reason": reason}))
        return record, actions
    actions.append(Commit(base, dict(handover.cut)))
    return record, actions


def _released(
    record: ControllerRecord, handover: Handover, obs: Observation
) -> tuple[ControllerRecord, list[Action]]:
    """The policy's group holds the cut: the workload's own consumers run again, every generation of
    lagscaler's is removed, and the record is cleared (a later switch to handover mode takes over afresh)."""
    actions: list[Action] = [HandBack(handover.replicas), *_strays(obs, {0})]
    if handover.source is not None and not obs.running.get(handover.source):
        actions.append(Remove(handover.source))  # once more with nothing left to stop: see _retiring
    if any(g != 0 and workers for g, workers in obs.running.items()):
        return record, actions
    actions += _forget_strays(obs, {0})
    then = f"the workload's own consumers consume in group {handover.group} from its committed offsets"
    actions.append(Note("handover released", {**_describe(record, handover), "next": then}))
    return replace(record, serving=None, handover=None, reverts=0, hold_until=0.0), actions


# --- conditions ---------------------------------------------------------------------------------------


def _superseded(record: ControllerRecord, handover: Handover, obs: Observation) -> str | None:
    """Why a warming handover no longer fits the decision (None: it still does).

    * A **scale-down** carried through to its cut after the decision rose above its target would cut
      over to fewer workers than the engine now asks for, and only then start the next warm-up: the
      workload runs short for a whole warm-up when it needs capacity most. Abandoning it keeps the
      serving generation, larger than the target, consuming; the next step starts the size decided.
    * A **scale-up** too small for the decision (a burst seen at its start) would land, then a second
      warm-up would follow: the full size arrives two warm-ups after the burst began. A fresh attempt
      at the decided size arrives one warm-up after the decision instead. It is replaced only when the
      decision asks for at least twice the increase in flight, so a decision that creeps up sample by
      sample during a long ramp replaces it a handful of times at most (each replacement doubles the
      increase) and cannot keep the capacity from ever landing. A decision that falls back does not
      abandon a scale-up: one dipping sample must not restart the warm-up a burst waits for.
    """
    serving = record.serving
    desired = obs.desired
    if serving is None or handover.source is None or desired is None:
        return None
    if not superseded(serving.replicas, handover.replicas, desired):
        return None
    direction = "scale-down" if handover.replicas < serving.replicas else "scale-up"
    return (
        f"the decision ({desired}) no longer fits this {direction} ({serving.replicas} → {handover.replicas})"
        f" while it warmed; generation {serving.generation} keeps serving with {serving.replicas}"
    )


def superseded(serving: int, target: int, desired: int) -> bool:
    """A warming handover from ``serving`` to ``target`` workers no longer fits the decision ``desired``
    (:func:`_superseded` says why; the simulator models handover mode with it)."""
    if desired < 1:
        return False
    if target < serving:
        return desired > target
    return target > serving and desired - serving >= 2 * (target - serving)


def _within(offsets: Offsets, obs: Observation) -> dict[TopicPartition, int]:
    """The offsets of the workload's topics — of every partition of them, including one added since
    ``obs.partitions`` was read: a generation that picked a new partition up and processed it has its
    offset there, and a cut without it would start the next generation at the log start (duplicates).
    """
    topics = {topic for topic, _ in obs.partitions}
    return {tp: o for tp, o in offsets.items() if tp[0] in topics}


def _fenced(status: WorkerStatus | None, handover: Handover) -> bool:
    return status is not None and status.status is Status.FENCED and status.epoch == handover.epoch


def _assignment(handover: Handover, obs: Observation) -> GroupView | None:
    """The target group's view if it is Stable with exactly the planned members covering every partition."""
    view = obs.groups.get(handover.group)
    if view is None or view.state != "Stable" or len(view.members) != handover.replicas:
        return None
    covered = frozenset().union(*view.members.values()) if view.members else frozenset()
    # At least every partition known: a group whose leader saw a partition added since is no less ready.
    return view if obs.partitions <= covered else None


def _ready(handover: Handover, obs: Observation) -> bool:
    """Every planned member holds its final assignment and reports it warm up to ``warm_to``."""
    view = _assignment(handover, obs)
    if view is None:
        return False
    for worker, assigned in view.members.items():
        status = obs.statuses.get(worker)
        if (
            status is None
            or status.generation != handover.target
            or status.status is not Status.WARM
            or frozenset(status.partitions) != assigned
            or any(status.warm_to.get(tp) != handover.warm_to.get(tp) for tp in assigned)
        ):
            return False
    return True


def hopeless(
    problems: tuple[WorkerProblem, ...], now: float, settings: MachineSettings
) -> WorkerProblem | None:
    """The longest-standing of ``problems`` that has outlasted its grace (None: none has).

    One worker that cannot run is enough: a target is ready only with every planned worker warm, and
    its workers are interchangeable, so one that cannot run means none of them could in its place.
    """
    grace = {Trouble.UNSCHEDULABLE: settings.unschedulable_grace, Trouble.FAILING: settings.failing_grace}
    over = [p for p in problems if now - p.since >= grace[p.trouble]]
    return min(over, key=lambda p: (p.since, p.worker)) if over else None


def _cannot_run(handover: Handover, problem: WorkerProblem, obs: Observation) -> str:
    return f"generation {handover.target} cannot run: {problem.describe(obs.now)}"


def _problem_fields(problem: WorkerProblem | None) -> dict[str, object]:
    """The log fields that name the worker that cannot run and the source's own words for why."""
    if problem is None:
        return {}
    return {"worker": problem.worker, "cause": problem.reason, "message": problem.message}


def _not_ready(handover: Handover, obs: Observation) -> str:
    """Why the target is not ready, for the abort log line."""
    view = obs.groups.get(handover.group)
    if view is None:
        return f"group {handover.group} was not seen" + _cannot_run_yet(handover, obs)
    warm = sum(
        1
        for w in view.members
        if (s := obs.statuses.get(w)) is not None
        and s.generation == handover.target
        and s.status is Status.WARM
    )
    failed = sorted(
        f"{s.worker}: {s.error}"
        for s in obs.statuses.values()
        if s.generation == handover.target and s.status is Status.FAILED
    )
    members = f"{len(view.members)}/{handover.replicas} members"
    reason = f"group {handover.group} is {view.state} with {members}, {warm} warm"
    return reason + (f"; failed: {'; '.join(failed[:3])}" if failed else "") + _cannot_run_yet(handover, obs)


def _cannot_run_yet(handover: Handover, obs: Observation) -> str:
    """The target's workers that cannot run (within their grace), for a timeout's log line."""
    problems = [p.describe(obs.now) for p in obs.problems.get(handover.target, ())]
    return f"; cannot run: {'; '.join(problems[:3])}" if problems else ""


def _verified(handover: Handover, obs: Observation) -> bool:
    """The target serves every partition and its group has committed progress everywhere: past the
    cut, or (where nothing has been produced beyond it) at the log end.

    A commit *at* the cut proves nothing: every target worker commits the cut as it takes a partition,
    before its handler has processed anything (a handler that hangs would pass).
    """
    view = obs.groups.get(handover.group)
    committed = obs.committed.get(handover.group)
    if view is None or committed is None or view.state != "Stable" or not view.members:
        return False
    covered = frozenset().union(*view.members.values())
    if not obs.partitions <= covered:
        return False
    for worker in view.members:
        status = obs.statuses.get(worker)
        if status is None or status.generation != handover.target or status.status is not Status.SERVING:
            return False
    cut = handover.cut or {}
    return all(
        _progressed(committed.get(tp), cut.get(tp, 0), obs.ends.get(tp)) for tp in obs.partitions | covered
    )


def _progressed(committed: int | None, cut: int, end: int | None) -> bool:
    if committed is None or committed < cut:
        return False
    return committed > cut or (end is not None and committed >= end)


def _not_verified(handover: Handover, obs: Observation) -> str:
    """Why the target has not shown progress, for the log line."""
    view = obs.groups.get(handover.group)
    committed = obs.committed.get(handover.group, {})
    cut = handover.cut or {}
    stuck = sorted(
        tp for tp in obs.partitions if not _progressed(committed.get(tp), cut.get(tp, 0), obs.ends.get(tp))
    )
    members = (
        "not seen" if view is None else f"{view.state} with {len(view.members)}/{handover.replicas} members"
    )
    where = ", ".join(f"{t}[{p}]" for t, p in stuck[:5]) + (" …" if len(stuck) > 5 else "")
    return (
        f"group {handover.group} is {members}; no progress past the cut on {len(stuck)} partitions ({where})"
        + _cannot_run_yet(handover, obs)
    )


def _describe(record: ControllerRecord, handover: Handover | None = None) -> dict[str, object]:
    h = handover if handover is not None else record.handover
    fields: dict[str, object] = {"workload": record.workload}
    if h is not None:
        fields.update(
            source=h.source, target=h.target, replicas=h.replicas, phase=str(h.phase), group=h.group
        )
    return fields
