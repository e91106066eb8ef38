"""The records of the handover control channel, and what each one tells a worker to do.

Pure: values, their JSON form, and :func:`role` — no IO, so the controller's state machine, the worker
SDK and the tests share one definition of the protocol (``docs/handover.md`` §3–§4).

Every record lives in one compacted, single-partition topic. A workload's controller record is the
desired state of its generations; a worker's status record is what it has done. A worker never infers
anything from *when* it read a record, only from its content, so reading a record twice, late, or
after a restart leads to the same action (every step is idempotent).
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "DEFAULT_CONTROL_TOPIC",
    "HAND_BACK",
    "ControllerRecord",
    "Handover",
    "Offsets",
    "Phase",
    "ProtocolError",
    "Role",
    "Serving",
    "Status",
    "TopicPartition",
    "WorkerStatus",
    "controller_key",
    "decode",
    "encode",
    "generation_group",
    "restamp",
    "role",
    "status_key",
    "tombstone_keys",
]

TopicPartition = tuple[str, int]
Offsets = Mapping[TopicPartition, int]

PROTOCOL_VERSION = 1
DEFAULT_CONTROL_TOPIC = "lagscaler.edges.handover"  # one partition, compacted: see docs/handover.md §3


class ProtocolError(ValueError):
    """A control record that cannot be read: wrong shape, unknown version or phase."""


class Phase(enum.StrEnum):
    """A handover's phase (``docs/handover.md`` §4). Idle is the absence of a handover."""

    WARMING = "warming"  # the target generation joins its group and restores state; the source serves
    FENCING = "fencing"  # the source stops after the record in hand and commits what it processed
    STARTING = "starting"  # the cut is persisted; the target serves from it; the controller verifies
    RETIRING = "retiring"  # the source is being removed
    ABORTING = "aborting"  # the target is being removed; the source serves (again)
    # The target started at the cut but made no progress by the deadline: it stops after the record in
    # hand and commits what it processed, and the source serves again from there (docs/handover.md §4.3).
    REVERTING = "reverting"
    # The policy left handover mode: the serving generation stops after the record in hand and commits
    # what it processed, and that cut is committed into the policy's own group (docs/handover.md §4.8).
    RELEASING = "releasing"
    # The cut is in the policy's own group: the workload's own consumers run again, every generation is
    # removed, then the record is cleared (no generation, nothing in progress).
    RELEASED = "released"


HAND_BACK = frozenset({Phase.RELEASING, Phase.RELEASED})  # no generation of lagscaler's processes


class Status(enum.StrEnum):
    """What a worker reports about itself."""

    JOINING = "joining"  # started, not warm yet (joining its group, or restoring state)
    WARM = "warm"  # its assigned partitions' state is restored up to ``warm_to``; processes nothing
    SERVING = "serving"  # processing, from the cut (or its group's commits)
    FENCED = "fenced"  # stopped after the record in hand; ``offsets`` is exactly what it processed
    STOPPED = "stopped"  # exited cleanly
    FAILED = "failed"  # a user hook raised; ``error`` says what; the process exits


class Role(enum.StrEnum):
    """What a worker of one generation must do, according to the controller record."""

    SERVE = "serve"  # process records
    WARM = "warm"  # hold the assignment, restore state up to the handover's ``warm_to``, process nothing
    STOP = "stop"  # process nothing; commit what was processed and report ``fenced``


@dataclass(frozen=True, slots=True)
class Serving:
    """The generation that processes records, and the cut it started at (``start``)."""

    generation: int
    group: str
    replicas: int
    start: Offsets = field(default_factory=dict)  # a partition absent here started at the log start


@dataclass(frozen=True, slots=True)
class Handover:
    """A handover in progress from generation ``source`` (None: the first generation) to ``target``.

    ``deadline`` is a Unix time: WARMING aborts after it; FENCING kills stragglers after it (and
    aborts ``kill_grace`` later); STARTING reverts to the source after it; REVERTING kills the target's
    stragglers after it. Wall-clock time because a controller that restarts must honour its
    predecessor's deadlines. ``source_replicas``: the source's size, to serve with again on a revert
    (the serving record names the target from STARTING on).

    A hand-back (``RELEASING``, ``RELEASED``: the policy left handover mode) is one too: ``source`` is the
    generation handed back, ``target`` 0 (the policy's own group, ``group``), ``replicas`` the size the
    workload's own consumers get back, and ``cut`` what is committed into that group.
    """

    source: int | None
    target: int
    group: str
    replicas: int
    phase: Phase
    warm_to: Offsets
    deadline: float
    started_at: float
    cut: Offsets | None = None
    overdue: bool = False  # REVERTING: the target's stragglers could not be confirmed gone (reported once)
    source_replicas: int | None = None

    @property
    def epoch(self) -> int:
        """The handover's identity: its target generation (never reused)."""
        return self.target


@dataclass(frozen=True, slots=True)
class ControllerRecord:
    """The desired state of one workload's generations, written only by the leading controller."""

    workload: str
    term: int  # the leader's term; workers ignore records of a lower term than one they have seen
    seq: int  # increases with every write within a term
    serving: Serving | None = None
    handover: Handover | None = None
    next_generation: int = 1
    # After a revert, or a target given up because its workers cannot run, no new handover begins
    # before ``hold_until`` (Unix time); ``reverts`` counts those failures since the last handover
    # that was verified, and doubles the hold each time.
    hold_until: float = 0.0
    reverts: int = 0

    def newer_than(self, other: ControllerRecord | None) -> bool:
        return other is None or (self.term, self.seq) > (other.term, other.seq)


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """One worker's report about itself (its latest one is kept by compaction)."""

    workload: str
    worker: str
    generation: int
    status: Status
    partitions: tuple[TopicPartition, ...] = ()
    warm_to: Offsets = field(default_factory=dict)  # WARM: restored up to these offsets
    offsets: Offsets = field(default_factory=dict)  # FENCED: exactly what it processed (committed)
    epoch: int | None = None  # the handover this answers (its target generation)
    at: float = 0.0  # Unix time of the report
    error: str = ""


def generation_group(base_group: str, generation: int) -> str:
    """The consumer group of one generation: a group is never shared by two generations."""
    return f"{base_group}-gen-{generation}"


def controller_key(workload: str) -> str:
    return f"{workload}/controller"


def status_key(workload: str, generation: int, worker: str) -> str:
    return f"{workload}/worker/{generation}/{worker}"


def tombstone_keys(workload: str, statuses: Iterable[WorkerStatus], generation: int) -> list[str]:
    """The keys to delete so compaction forgets a removed generation's status records."""
    return [status_key(workload, s.generation, s.worker) for s in statuses if s.generation == generation]


def role(record: ControllerRecord | None, generation: int) -> Role:
    """What generation ``generation`` must do under ``record`` (``docs/handover.md`` §4).

    Everything that is not explicitly serving or warming stops: a generation the record does not know
    (a leftover, a retired one) never processes.
    """
    if record is None:
        return Role.STOP
    handover = record.handover
    if handover is not None and handover.phase in HAND_BACK:
        return Role.STOP  # the workload is being handed back to its own consumers
    if record.serving is not None and record.serving.generation == generation:
        if handover is not None and handover.source == generation and handover.phase is Phase.FENCING:
            return Role.STOP
        if handover is not None and handover.target == generation and handover.phase is Phase.REVERTING:
            return Role.STOP
        return Role.SERVE
    if (
        handover is not None
        and handover.target == generation
        and handover.phase in (Phase.WARMING, Phase.FENCING)
    ):
        return Role.WARM
    return Role.STOP


# --- JSON ------------------------------------------------------------------------------------------


def _offsets_out(offsets: Offsets | None) -> list[list[Any]] | None:
    if offsets is None:
        return None
    return [[t, p, o] for (t, p), o in sorted(offsets.items())]


INT32_MAX = 2**31 - 1  # Kafka's partition numbers and Kubernetes' replica counts
INT64_MAX = 2**63 - 1  # Kafka's offsets, and every other count a record holds


def _whole(x: Any, high: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= high


def _offsets_in(value: Any, what: str) -> dict[TopicPartition, int]:
    if not isinstance(value, list):
        raise ProtocolError(f"{what} must be a list of [topic, partition, offset]")
    out: dict[TopicPartition, int] = {}
    for item in value:
        if not (
            isinstance(item, list)
            and len(item) == 3
            and isinstance(item[0], str)
            and _whole(item[1], INT32_MAX)
            and _whole(item[2], INT64_MAX)  # a worker would seek there: past int64 no fetch can be sent
        ):
            raise ProtocolError(f"{what}: bad entry {_shown(item)}")
        out[(item[0], item[1])] = item[2]
    return out


def _partitions_in(value: Any) -> tuple[TopicPartition, ...]:
    if not isinstance(value, list) or not all(
        isinstance(i, list) and len(i) == 2 and isinstance(i[0], str) and _whole(i[1], INT32_MAX)
        for i in value
    ):
        raise ProtocolError("partitions must be a list of [topic, partition] (partition 0 to 2147483647)")
    return tuple(sorted((t, p) for t, p in value))


def _shown(value: Any) -> str:
    """A value from a record as a message quotes it: never more than a line (a record may be hostile)."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _number(value: Any, what: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ProtocolError(f"{what} must be a finite number, got {_shown(value)}")
    return float(value)


def _int(value: Any, what: str, high: int = INT64_MAX, *, low: int = 0) -> int:
    """A count, generation, term or epoch: whole and from ``low`` to ``high`` (a replica count a
    backend would start that many workers for; a negative generation would name no group)."""
    if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
        raise ProtocolError(f"{what} must be an integer from {low} to {high}, got {_shown(value)}")
    return int(value)


def encode(record: ControllerRecord | WorkerStatus) -> tuple[str, bytes]:
    """The record's key and JSON value."""
    if isinstance(record, ControllerRecord):
        body: dict[str, Any] = {
            "v": PROTOCOL_VERSION,
            "kind": "controller",
            "workload": record.workload,
            "term": record.term,
            "seq": record.seq,
            "next_generation": record.next_generation,
            "hold_until": record.hold_until,
            "reverts": record.reverts,
            "serving": None,
            "handover": None,
        }
        if record.serving is not None:
            s = record.serving
            body["serving"] = {
                "generation": s.generation,
                "group": s.group,
                "replicas": s.replicas,
                "start": _offsets_out(s.start),
            }
        if record.handover is not None:
            h = record.handover
            body["handover"] = {
                "source": h.source,
                "target": h.target,
                "group": h.group,
                "replicas": h.replicas,
                "phase": str(h.phase),
                "warm_to": _offsets_out(h.warm_to),
                "cut": _offsets_out(h.cut),
                "deadline": h.deadline,
                "started_at": h.started_at,
                "overdue": h.overdue,
                "source_replicas": h.source_replicas,
            }
        key = controller_key(record.workload)
    else:
        body = {
            "v": PROTOCOL_VERSION,
            "kind": "worker",
            "workload": record.workload,
            "worker": record.worker,
            "generation": record.generation,
            "status": str(record.status),
            "partitions": [[t, p] for t, p in record.partitions],
            "warm_to": _offsets_out(record.warm_to),
            "offsets": _offsets_out(record.offsets),
            "epoch": record.epoch,
            "at": record.at,
            "error": record.error,
        }
        key = status_key(record.workload, record.generation, record.worker)
    return key, json.dumps(body, separators=(",", ":")).encode()


def decode(value: bytes) -> ControllerRecord | WorkerStatus:
    """Parse a record's value; :class:`ProtocolError` names what is wrong."""
    try:
        body = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ProtocolError("a control record must be a JSON object")
    if body.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(
            f"unknown protocol version {body.get('v')!r} (this build speaks {PROTOCOL_VERSION})"
        )
    try:
        if body.get("kind") == "controller":
            return _controller_in(body)
        if body.get("kind") == "worker":
            return _status_in(body)
    except (KeyError, TypeError) as exc:
        raise ProtocolError(f"missing or malformed field: {exc}") from None
    raise ProtocolError(f"unknown record kind {body.get('kind')!r}")


def _controller_in(body: dict[str, Any]) -> ControllerRecord:
    serving = None
    if body["serving"] is not None:
        s = body["serving"]
        serving = Serving(
            generation=_int(s["generation"], "serving.generation"),
            group=str(s["group"]),
            replicas=_int(s["replicas"], "serving.replicas", INT32_MAX),
            start=_offsets_in(s["start"], "serving.start"),
        )
    handover = None
    if body["handover"] is not None:
        h = body["handover"]
        try:
            phase = Phase(h["phase"])
        except ValueError:
            raise ProtocolError(f"unknown phase {h['phase']!r}") from None
        handover = Handover(
            source=None if h["source"] is None else _int(h["source"], "handover.source"),
            target=_int(h["target"], "handover.target"),
            group=str(h["group"]),
            replicas=_int(h["replicas"], "handover.replicas", INT32_MAX),
            phase=phase,
            warm_to=_offsets_in(h["warm_to"], "handover.warm_to"),
            cut=None if h["cut"] is None else _offsets_in(h["cut"], "handover.cut"),
            deadline=_number(h["deadline"], "handover.deadline"),
            started_at=_number(h["started_at"], "handover.started_at"),
            overdue=bool(h.get("overdue", False)),
            source_replicas=(
                None
                if h.get("source_replicas") is None
                else _int(h["source_replicas"], "handover.source_replicas", INT32_MAX)
            ),
        )
    if handover is not None:
        _consistent(handover, serving)
    return ControllerRecord(
        workload=str(body["workload"]),
        term=_int(body["term"], "term"),
        seq=_int(body["seq"], "seq", low=-1),  # -1: a workload's first record, before its first write
        serving=serving,
        handover=handover,
        next_generation=_int(body["next_generation"], "next_generation"),
        hold_until=_number(body.get("hold_until", 0.0), "hold_until"),
        reverts=_int(body.get("reverts", 0), "reverts"),
    )


def _consistent(handover: Handover, serving: Serving | None) -> None:
    """What the machine relies on in each phase, checked where a record comes in: a record that breaks
    it (corrupt, or not written by a controller) is refused and ignored like any malformed one,
    rather than failing every step of its workload's controller on an assertion, frozen mid-handover."""
    if handover.phase is Phase.FENCING and (serving is None or serving.generation != handover.source):
        raise ProtocolError("a handover in phase fencing needs the serving generation to be its source")
    if handover.phase is Phase.REVERTING and (handover.source is None or handover.source_replicas is None):
        raise ProtocolError("a handover in phase reverting needs its source and source_replicas")
    if handover.phase is Phase.RELEASING and serving is None:
        raise ProtocolError("a hand-back in phase releasing needs the serving generation it releases")


def _status_in(body: dict[str, Any]) -> WorkerStatus:
    try:
        status = Status(body["status"])
    except ValueError:
        raise ProtocolError(f"unknown worker status {body['status']!r}") from None
    return WorkerStatus(
        workload=str(body["workload"]),
        worker=str(body["worker"]),
        generation=_int(body["generation"], "generation"),
        status=status,
        partitions=_partitions_in(body["partitions"]),
        warm_to=_offsets_in(body["warm_to"], "warm_to"),
        offsets=_offsets_in(body["offsets"], "offsets"),
        epoch=None if body["epoch"] is None else _int(body["epoch"], "epoch"),
        at=_number(body["at"], "at"),
        error=str(body.get("error", "")),
    )


def restamp(record: ControllerRecord, *, term: int) -> ControllerRecord:
    """The record as the next write of a leader of ``term`` (a new term restarts ``seq``)."""
    seq = record.seq + 1 if record.term == term else 0
    return replace(record, term=term, seq=seq)
