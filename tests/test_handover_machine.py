"""The handover protocol and controller state machine, pure: records, roles, transitions, invariants.

The machine is stepped by hand through every phase; a property test then drives it with random
observations (statuses, backend views, offsets, clocks, decisions) and checks what must hold whatever
happens: generations are never reused, at most one generation serves, a cut is only ever taken from
the source group's committed offsets once no source worker can still process, and a repeated step
changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lagscaler.core.handover.machine import (
    Commit,
    Ensure,
    Forget,
    GroupView,
    HandBack,
    Kill,
    MachineSettings,
    Needs,
    Note,
    Observation,
    Remove,
    Trouble,
    WorkerProblem,
    hopeless,
    needs,
    step,
    superseded,
)
from lagscaler.core.handover.protocol import (
    HAND_BACK,
    ControllerRecord,
    Handover,
    Phase,
    ProtocolError,
    Role,
    Serving,
    Status,
    WorkerStatus,
    decode,
    encode,
    role,
)

W = "ns/app"
BASE = "app"
T = "orders"
PARTS = frozenset({(T, 0), (T, 1), (T, 2)})
SETTINGS = MachineSettings(
    workload=W, base_group=BASE, initial_replicas=2, warmup_timeout=60, fence_timeout=5, kill_grace=10
)


def obs(now: float = 1000.0, **fields: object) -> Observation:
    base: dict[str, object] = {
        "now": now,
        "desired": None,
        "partitions": PARTS,
        "running": {},
        "statuses": {},
    }
    return Observation(**{**base, **fields})  # type: ignore[arg-type]


def status(
    worker: str, generation: int, state: Status, parts: set[tuple[str, int]], **fields: object
) -> WorkerStatus:
    return WorkerStatus(W, worker, generation, state, tuple(sorted(parts)), **fields)  # type: ignore[arg-type]


def serving_record(
    generation: int = 1, replicas: int = 2, start: Mapping[tuple[str, int], int] | None = None
) -> ControllerRecord:
    return ControllerRecord(
        W, term=1, seq=5, serving=Serving(generation, f"{BASE}-gen-{generation}", replicas, dict(start or {})),
        next_generation=generation + 1,
    )  # fmt: skip


# --- protocol -----------------------------------------------------------------------------------------


offsets = st.dictionaries(
    st.tuples(st.sampled_from(["a", "b.c", "x-y"]), st.integers(0, 50)), st.integers(0, 2**40), max_size=6
)
handovers = st.builds(
    Handover,
    source=st.none() | st.integers(1, 100),
    target=st.integers(1, 100),
    group=st.text(min_size=1, max_size=20),
    replicas=st.integers(1, 64),
    phase=st.sampled_from(list(Phase)),
    warm_to=offsets,
    deadline=st.floats(0, 2e9, allow_nan=False),
    started_at=st.floats(0, 2e9, allow_nan=False),
    cut=st.none() | offsets,
    overdue=st.booleans(),
    source_replicas=st.none() | st.integers(1, 64),
)


def _steppable(record: ControllerRecord) -> ControllerRecord:
    """The record made what a controller writes: in FENCING the serving generation is the source, in
    REVERTING the source and its size are known, RELEASING has a serving generation (decode refuses
    anything else)."""
    h = record.handover
    if h is None:
        return record
    if h.phase is Phase.FENCING:
        source = h.source if h.source is not None else 1
        serving = record.serving or Serving(source, f"{BASE}-gen-{source}", 1, {})
        return replace(
            record, serving=replace(serving, generation=source), handover=replace(h, source=source)
        )
    if h.phase is Phase.REVERTING:
        return replace(
            record, handover=replace(h, source=h.source or 1, source_replicas=h.source_replicas or 1)
        )
    if h.phase is Phase.RELEASING and record.serving is None:
        return replace(record, serving=Serving(1, f"{BASE}-gen-1", 1, {}))
    return record


records = st.builds(
    ControllerRecord,
    workload=st.text(min_size=1, max_size=20),
    term=st.integers(0, 10**6),
    seq=st.integers(0, 10**6),
    serving=st.none()
    | st.builds(Serving, st.integers(1, 100), st.text(min_size=1), st.integers(1, 64), offsets),
    handover=st.none() | handovers,
    next_generation=st.integers(1, 1000),
    hold_until=st.floats(0, 2e9, allow_nan=False),
    reverts=st.integers(0, 100),
).map(_steppable)
statuses = st.builds(
    WorkerStatus,
    workload=st.text(min_size=1, max_size=20),
    worker=st.text(min_size=1, max_size=20).filter(lambda s: "/" not in s),
    generation=st.integers(1, 100),
    status=st.sampled_from(list(Status)),
    partitions=st.lists(st.tuples(st.text(min_size=1, max_size=5), st.integers(0, 9)), unique=True).map(
        lambda ps: tuple(sorted(ps))
    ),
    warm_to=offsets,
    offsets=offsets,
    epoch=st.none() | st.integers(1, 100),
    at=st.floats(0, 2e9, allow_nan=False),
    error=st.text(max_size=30),
)


@given(st.one_of(records, statuses))
def test_every_record_survives_its_json_form(record: ControllerRecord | WorkerStatus) -> None:
    key, value = encode(record)
    assert decode(value) == record
    assert key.startswith(f"{record.workload}/")


@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_garbage_is_refused_with_a_protocol_error(value: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode(value)


@pytest.mark.parametrize(
    "body",
    [
        {"v": 2, "kind": "controller"},
        {"v": 1, "kind": "nope"},
        {"v": 1, "kind": "worker", "workload": "w"},
        {"v": 1, "kind": "worker", "workload": "w", "worker": "a", "generation": "1", "status": "warm"},
    ],
)
def test_a_malformed_record_names_its_problem(body: dict[str, object]) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(json.dumps(body).encode())
    assert str(caught.value)


def _set(body: dict[str, Any], path: tuple[str | int, ...], value: object) -> None:
    node: Any = body
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


HOSTILE_FIELDS = [
    (("serving", "replicas"), 2**31, "serving.replicas"),
    (("serving", "replicas"), -3, "serving.replicas"),
    (("serving", "generation"), -1, "serving.generation"),
    (("serving", "start", 0, 2), 2**63, "serving.start"),
    (("serving", "start", 0, 1), 2**31, "serving.start"),
    (("handover", "replicas"), 10**30, "handover.replicas"),
    (("handover", "cut", 0, 2), 10**40, "handover.cut"),
    (("handover", "source_replicas"), 2**31, "handover.source_replicas"),
    (("term",), True, "term"),
    (("reverts",), -1, "reverts"),
    (("next_generation",), 2**63, "next_generation"),
]


@pytest.mark.parametrize(("path", "value", "named"), HOSTILE_FIELDS)
def test_a_controller_record_with_an_impossible_number_is_refused_naming_the_field(
    path: tuple[str | int, ...], value: object, named: str
) -> None:
    """A record whose numbers no Kafka or Kubernetes can hold (replicas past int32, an offset past
    int64, a negative generation) was taken as it was: a backend asked to start 10**30 workers, a
    worker to seek where no fetch can be sent. Refused, naming the field, like any malformed record."""
    serving = Serving(3, f"{BASE}-gen-3", 2, {("t", 0): 5})
    handover = Handover(3, 4, f"{BASE}-gen-4", 2, Phase.STARTING, {}, 0.0, 0.0, cut={("t", 0): 7})
    record = ControllerRecord("shop/orders", 1, 4, serving, replace(handover, source_replicas=2), 5)
    body = json.loads(encode(record)[1])
    assert decode(json.dumps(body).encode()) == record
    _set(body, path, value)
    with pytest.raises(ProtocolError, match=re.escape(named)):
        decode(json.dumps(body).encode())


@pytest.mark.parametrize(
    ("phase", "change", "message"),
    [
        (Phase.REVERTING, {"source": None}, "reverting needs its source"),
        (Phase.REVERTING, {"source_replicas": None}, "reverting needs its source"),
        (Phase.FENCING, {"source": 9}, "fencing needs the serving generation to be its source"),
        (Phase.RELEASING, None, "releasing needs the serving generation"),
    ],
)
def test_a_record_the_machine_cannot_step_is_refused_not_asserted_on(
    phase: Phase, change: dict[str, object] | None, message: str
) -> None:
    """A REVERTING record without its source (corrupt, or not a controller's) decoded fine and then
    failed every step of the workload's controller with a bare AssertionError, mid-handover for good."""
    serving = Serving(3, f"{BASE}-gen-3", 2, {(T, 0): 5})
    handover = Handover(3, 4, f"{BASE}-gen-4", 2, phase, {}, 0.0, 0.0, cut={(T, 0): 7}, source_replicas=2)
    record = ControllerRecord(W, 1, 4, serving, handover, 5)
    assert decode(encode(record)[1]) == record
    body = json.loads(encode(record)[1])
    if change is None:
        body["serving"] = None
    else:
        body["handover"].update(change)
    with pytest.raises(ProtocolError, match=message):
        decode(json.dumps(body).encode())


@pytest.mark.parametrize("partition", [True, -1, 2**31])
def test_a_worker_status_with_an_impossible_partition_is_refused(partition: object) -> None:
    status = WorkerStatus("shop/orders", "w1", 4, Status.SERVING, (("t", 0),), {}, {("t", 0): 3}, None, 1.0)
    body = json.loads(encode(status)[1])
    body["partitions"] = [["t", partition]]
    with pytest.raises(ProtocolError, match="partitions"):
        decode(json.dumps(body).encode())


def test_roles_follow_the_phases() -> None:
    serving = serving_record(generation=3)

    def at(phase: Phase, *, serving_gen: int = 3) -> ControllerRecord:
        h = Handover(3, 4, f"{BASE}-gen-4", 2, phase, {}, 0.0, 0.0)
        return replace(serving, serving=replace(serving.serving, generation=serving_gen), handover=h)  # type: ignore[arg-type]

    assert role(None, 3) is Role.STOP
    assert role(serving, 3) is Role.SERVE
    assert role(serving, 4) is Role.STOP  # unknown generations never process
    assert (role(at(Phase.WARMING), 3), role(at(Phase.WARMING), 4)) == (Role.SERVE, Role.WARM)
    assert (role(at(Phase.FENCING), 3), role(at(Phase.FENCING), 4)) == (Role.STOP, Role.WARM)
    starting = at(Phase.STARTING, serving_gen=4)
    assert (role(starting, 3), role(starting, 4)) == (Role.STOP, Role.SERVE)
    assert (role(at(Phase.ABORTING), 3), role(at(Phase.ABORTING), 4)) == (Role.SERVE, Role.STOP)


# --- the machine, phase by phase ----------------------------------------------------------------------


def test_the_first_generation_waits_for_the_base_group_to_empty() -> None:
    busy = obs(groups={BASE: GroupView("Stable", {"old-1": frozenset(PARTS)})}, committed={BASE: {}})
    result = step(None, busy, SETTINGS, term=1)
    assert result.record.handover is None
    assert any(isinstance(a, Note) and a.event == "handover blocked" for a in result.actions)

    empty = obs(groups={BASE: GroupView("Empty")}, committed={BASE: {(T, 0): 7, ("other", 0): 3}})
    result = step(result.record, empty, SETTINGS, term=1)
    h = result.record.handover
    assert h is not None
    assert (h.source, h.target, h.replicas, h.phase) == (None, 1, 2, Phase.WARMING)
    assert h.warm_to == {(T, 0): 7}  # the base group's offsets, only for the workload's partitions
    assert result.record.next_generation == 2
    assert not any(isinstance(a, Ensure) for a in result.actions)  # the record first, then the workers
    assert Ensure(1, f"{BASE}-gen-1", 2) in step(result.record, empty, SETTINGS, term=1).actions


def warm_target(
    generation: int, replicas: int, warm_to: Mapping[tuple[str, int], int]
) -> tuple[dict[str, GroupView], dict[str, WorkerStatus]]:
    """A target group that is Stable with ``replicas`` members that are all warm."""
    parts = sorted(PARTS)
    members = {f"n{i}": frozenset(parts[i::replicas]) for i in range(replicas)}
    group = f"{BASE}-gen-{generation}"
    statuses = {
        w: status(
            w,
            generation,
            Status.WARM,
            set(ps),
            warm_to={tp: o for tp, o in warm_to.items() if tp in ps},
            epoch=generation,
        )
        for w, ps in members.items()
    }
    return {group: GroupView("Stable", members)}, statuses


def test_a_full_handover_warms_fences_cuts_starts_verifies_and_retires() -> None:
    record = serving_record(generation=1, start={(T, 0): 0, (T, 1): 0, (T, 2): 0})
    old = {
        "o1": status("o1", 1, Status.SERVING, {(T, 0), (T, 1)}),
        "o2": status("o2", 1, Status.SERVING, {(T, 2)}),
    }
    running = {1: frozenset(old)}

    # idle → WARMING: the decision differs from the serving size; warm up to the source's commits.
    result = step(
        record,
        obs(desired=3, running=running, statuses=old, committed={f"{BASE}-gen-1": {(T, 0): 10, (T, 1): 11}}),
        SETTINGS,
        term=1,
    )
    h = result.record.handover
    assert h is not None
    assert (h.source, h.target, h.replicas, h.phase) == (1, 2, 3, Phase.WARMING)
    assert h.warm_to == {(T, 0): 10, (T, 1): 11, (T, 2): 0}  # a partition without a commit: its start
    record = result.record

    # WARMING, not ready (a member short): nothing changes; both generations are kept running.
    groups, warm = warm_target(2, 3, h.warm_to)
    short = {g: GroupView("Stable", dict(list(v.members.items())[:2])) for g, v in groups.items()}
    running = {1: frozenset(old), 2: frozenset(warm)}
    result = step(record, obs(running=running, statuses={**old, **warm}, groups=short), SETTINGS, term=1)
    assert not result.changed
    assert {a for a in result.actions if isinstance(a, Ensure)} == {
        Ensure(2, f"{BASE}-gen-2", 3),
        Ensure(1, f"{BASE}-gen-1", 2),
    }

    # WARMING → FENCING once every member is warm with the final assignment.
    result = step(record, obs(running=running, statuses={**old, **warm}, groups=groups), SETTINGS, term=1)
    assert result.record.handover is not None
    assert result.record.handover.phase is Phase.FENCING
    record = result.record

    # FENCING: one old worker has fenced, the other has not: no cut yet, whatever the offsets say.
    # o1's commit of (T, 1) failed (the coordinator was away): it reports 25, the group says 21.
    fenced = {
        **old,
        "o1": status("o1", 1, Status.FENCED, {(T, 0), (T, 1)}, epoch=2, offsets={(T, 0): 20, (T, 1): 25}),
    }
    committed = {f"{BASE}-gen-1": {(T, 0): 20, (T, 1): 21}}
    result = step(
        record,
        obs(now=1001, running=running, statuses={**fenced, **warm}, committed=committed),
        SETTINGS,
        term=1,
    )
    assert not result.changed
    # The straggler is killed after the fence deadline...
    result = step(
        record,
        obs(now=1006, running=running, statuses={**fenced, **warm}, committed=committed),
        SETTINGS,
        term=1,
    )
    assert Kill(frozenset({"o2"})) in result.actions
    # ...and once the backend confirms it gone, the cut is the source's commits (start where none).
    running = {1: frozenset({"o1"}), 2: frozenset(warm)}
    result = step(
        record,
        obs(now=1007, running=running, statuses={**fenced, **warm}, committed=committed),
        SETTINGS,
        term=1,
    )
    new = result.record
    assert new.handover is not None
    assert new.handover.phase is Phase.STARTING
    assert new.handover.cut == {(T, 0): 20, (T, 1): 25, (T, 2): 0}  # what o1 processed, not its stale commit
    assert new.serving == Serving(2, f"{BASE}-gen-2", 3, {(T, 0): 20, (T, 1): 25, (T, 2): 0})
    record = new

    # STARTING → RETIRING once every member serves and the group has committed progress everywhere:
    # past the cut, or at the log end where nothing was produced beyond the cut.
    serving_statuses = {w: replace(s, status=Status.SERVING) for w, s in warm.items()}
    behind = {f"{BASE}-gen-2": {(T, 0): 20, (T, 1): 21}}
    step_obs = obs(
        now=1008,
        running=running,
        statuses={**fenced, **serving_statuses},
        groups=groups,
        committed=behind,
        ends={(T, 0): 30, (T, 1): 25, (T, 2): 0},
    )
    # Behind the cut, or the cut itself committed with records beyond it: every target worker commits
    # the cut as it takes a partition, before processing anything, so that proves nothing yet.
    at_cut, there = ({f"{BASE}-gen-2": {(T, 0): c, (T, 1): 25, (T, 2): 0}} for c in (20, 25))
    assert not any(
        step(record, replace(step_obs, committed=c), SETTINGS, term=1).changed for c in (behind, at_cut)
    )
    result = step(record, replace(step_obs, committed=there), SETTINGS, term=1)
    assert result.record.handover is not None
    assert result.record.handover.phase is Phase.RETIRING
    record = result.record

    # RETIRING removes the source, then forgets it and goes idle.
    result = step(record, obs(now=1009, running=running), SETTINGS, term=1)
    assert Remove(1) in result.actions
    assert not result.changed
    result = step(record, obs(now=1010, running={2: frozenset(warm)}), SETTINGS, term=1)
    assert Forget(1) in result.actions
    assert result.record.handover is None
    assert result.record.serving is not None
    assert result.record.serving.generation == 2


def test_a_target_that_never_gets_ready_is_aborted_and_the_source_keeps_serving() -> None:
    record = serving_record()
    result = step(record, obs(desired=4, committed={f"{BASE}-gen-1": {}}), SETTINGS, term=1)
    record = result.record
    assert record.handover is not None
    late = obs(now=1000 + SETTINGS.warmup_timeout + 1, running={1: frozenset({"o"}), 2: frozenset({"n"})})
    result = step(record, late, SETTINGS, term=1)
    assert result.record.handover is not None
    assert result.record.handover.phase is Phase.ABORTING
    assert role(result.record, 1) is Role.SERVE
    assert role(result.record, 2) is Role.STOP
    record = result.record
    result = step(record, late, SETTINGS, term=1)
    assert Remove(2) in result.actions
    result = step(record, replace(late, running={1: frozenset({"o"})}), SETTINGS, term=1)
    assert result.record.handover is None
    assert result.record.serving == serving_record().serving
    assert result.record.next_generation == 3  # generation 2 is never reused


def started(*, replicas: int, deadline: float) -> tuple[Handover, ControllerRecord]:
    """Generation 2 (``replicas`` workers) took over from generation 1 (2 workers) at a cut."""
    cut = {(T, 0): 10, (T, 1): 12, (T, 2): 5}
    h = Handover(
        1, 2, f"{BASE}-gen-2", replicas, Phase.STARTING, {}, deadline=deadline, started_at=900.0, cut=cut,
        source_replicas=2,
    )  # fmt: skip
    return h, ControllerRecord(W, 1, 9, Serving(2, f"{BASE}-gen-2", replicas, cut), h, next_generation=3)


def _warming(settings: MachineSettings = SETTINGS) -> ControllerRecord:
    result = step(serving_record(), obs(desired=4, committed={f"{BASE}-gen-1": {}}), settings, term=1)
    assert result.record.handover is not None
    return result.record


def test_a_target_whose_pod_cannot_be_scheduled_is_aborted_after_its_grace_naming_the_pod() -> None:
    """The scheduler's verdict, as the Kubernetes backend reports it: the target is aborted once the
    pod has been Unschedulable for ``unschedulable_grace``, long before the warm-up timeout, and the
    note names the generation, the pod and the scheduler's own message."""
    settings = replace(SETTINGS, warmup_timeout=3600, unschedulable_grace=300, failing_grace=30)
    record = _warming(settings)
    message = "0/3 nodes are available: 3 Insufficient cpu."
    pod = WorkerProblem("app-g2-7d9f-x2k", Trouble.UNSCHEDULABLE, "Unschedulable", message, since=1000.0)
    world = obs(now=1299, running={1: frozenset({"o"}), 2: frozenset({pod.worker})}, problems={2: (pod,)})
    waiting = step(record, world, settings, term=1)
    assert not waiting.changed  # within its grace: a cluster autoscaler may still add a node
    result = step(record, replace(world, now=1300), settings, term=1)
    assert result.record.handover is not None
    assert result.record.handover.phase is Phase.ABORTING
    assert result.record.serving == record.serving  # generation 1 keeps serving
    (note,) = [a for a in result.actions if isinstance(a, Note)]
    assert note.event == "handover aborted"
    assert note.fields["target"] == 2
    assert (note.fields["worker"], note.fields["cause"], note.fields["message"]) == (
        pod.worker,
        "Unschedulable",
        message,
    )
    assert (
        note.fields["reason"] == f"generation 2 cannot run: {pod.worker} Unschedulable for 300 s: {message}"
    )
    aborted = step(result.record, replace(world, now=1301), settings, term=1)
    assert Remove(2) in aborted.actions  # the same abort as a warm-up timeout's


def test_a_pod_that_cannot_start_gets_the_shorter_grace_and_another_generations_pod_none() -> None:
    settings = replace(SETTINGS, warmup_timeout=3600, unschedulable_grace=300, failing_grace=30)
    record = _warming(settings)
    pulled = WorkerProblem("p", Trouble.FAILING, "ImagePullBackOff", 'Back-off pulling image "x"', 1000.0)
    serving_pod = replace(pulled, worker="o")
    world = obs(now=1029, running={1: frozenset({"o"}), 2: frozenset({"p"})}, problems={2: (pulled,)})
    assert not step(record, world, settings, term=1).changed
    # A problem of the serving generation (its replacement pod cannot pull) does not abort the target.
    late = replace(world, now=1100, problems={1: (serving_pod,)})
    assert not step(record, late, settings, term=1).changed
    result = step(record, replace(world, now=1030), settings, term=1)
    assert result.record.handover is not None
    assert result.record.handover.phase is Phase.ABORTING


def test_a_target_given_up_as_unable_to_run_holds_the_next_attempt_back_and_doubles_the_hold() -> None:
    """A broken image fails every attempt the same way: after each abort for it the decision (still 4)
    waits ``revert_backoff``, doubled per failure in a row, instead of starting a new generation at once
    (one every grace, each a pod that cannot pull); a warm-up timeout does not hold anything back."""
    settings = replace(SETTINGS, warmup_timeout=3600, failing_grace=30, revert_backoff=60)
    record = _warming(settings)
    holds = []
    now = 1030.0
    for _ in range(3):
        assert record.handover is not None
        target = record.handover.target
        pulled = WorkerProblem("p", Trouble.FAILING, "ImagePullBackOff", "Back-off", since=now - 30)
        world = obs(
            now=now, running={1: frozenset({"o"}), target: frozenset({"p"})}, problems={target: (pulled,)}
        )
        record = step(record, world, settings, term=1).record
        assert record.handover is not None
        assert record.handover.phase is Phase.ABORTING
        holds.append(record.hold_until - now)
        gone = obs(now=now + 1, running={1: frozenset({"o"})}, committed={f"{BASE}-gen-1": {}}, desired=4)
        record = step(record, gone, settings, term=1).record
        assert record.handover is None
        held = step(record, replace(gone, now=record.hold_until - 1), settings, term=1)
        assert held.record.handover is None
        assert [a.event for a in held.actions if isinstance(a, Note)] == ["handover held"]
        now = record.hold_until
        record = step(record, replace(gone, now=now), settings, term=1).record
        assert record.handover is not None
        assert record.handover.phase is Phase.WARMING
        now += 30
    assert holds == [60, 120, 240]
    timed_out = step(
        record, obs(now=record.handover.deadline + 1, running={1: frozenset({"o"})}), settings, term=1
    )
    assert timed_out.record.hold_until == record.hold_until  # a timeout holds nothing back


def test_a_warm_up_timeout_names_the_pods_that_cannot_run_yet() -> None:
    record = _warming()
    assert record.handover is not None
    pod = WorkerProblem("p", Trouble.UNSCHEDULABLE, "Unschedulable", "0/1 nodes are available", 1050.0)
    late = obs(now=record.handover.deadline + 1, running={1: frozenset({"o"})}, problems={2: (pod,)})
    result = step(record, late, SETTINGS, term=1)
    (note,) = [a for a in result.actions if isinstance(a, Note)]
    assert note.event == "handover aborted"
    assert "cannot run: p Unschedulable for 11 s: 0/1 nodes are available" in str(note.fields["reason"])
    assert "worker" not in note.fields  # the timeout decided, not the pod


def test_a_target_that_cannot_run_after_the_cut_is_handed_back_before_the_verify_timeout() -> None:
    """Generation 2 took over and its pods crash-loop (a handler that raises on every record): the
    workload processes nothing while it is verified, so it is handed back once the crash loop has
    lasted ``failing_grace``, not after ``verify_timeout``. A first generation has nothing to go back to."""
    settings = replace(SETTINGS, verify_timeout=3600, failing_grace=30)
    h, record = started(replicas=2, deadline=5000.0)
    cut = h.cut or {}
    crash = WorkerProblem("n0", Trouble.FAILING, "CrashLoopBackOff", "last exit code 1 (Error)", 1000.0)
    world = obs(
        now=1029,
        running={1: frozenset({"o1", "o2"}), 2: frozenset({"n0", "n1"})},
        committed={h.group: cut},
        ends=dict.fromkeys(PARTS, 50),
        problems={2: (crash,)},
    )
    assert not step(record, world, settings, term=1).changed
    result = step(record, replace(world, now=1030), settings, term=1)
    assert result.record.handover is not None
    assert result.record.handover.phase is Phase.REVERTING
    (note,) = [a for a in result.actions if isinstance(a, Note)]
    assert (note.event, note.fields["worker"], note.fields["cause"]) == (
        "handover reverting",
        "n0",
        "CrashLoopBackOff",
    )
    first = replace(record, handover=replace(h, source=None, source_replicas=None))
    assert not step(first, replace(world, now=1030), settings, term=1).changed


@pytest.mark.parametrize(
    ("problems", "now", "expected"),
    [
        ((), 2000.0, None),
        ((WorkerProblem("a", Trouble.UNSCHEDULABLE, "Unschedulable", "", 1000.0),), 1299.0, None),
        ((WorkerProblem("a", Trouble.UNSCHEDULABLE, "Unschedulable", "", 1000.0),), 1300.0, "a"),
        ((WorkerProblem("a", Trouble.FAILING, "ErrImagePull", "", 1000.0),), 1030.0, "a"),
        # the longest-standing of those past their grace
        (
            (
                WorkerProblem("late", Trouble.FAILING, "CrashLoopBackOff", "", 1010.0),
                WorkerProblem("early", Trouble.FAILING, "ImagePullBackOff", "", 1005.0),
                WorkerProblem("within", Trouble.UNSCHEDULABLE, "Unschedulable", "", 900.0),
            ),
            1040.0,
            "early",
        ),
        # a time stated ahead of our clock is within its grace
        ((WorkerProblem("a", Trouble.FAILING, "ErrImagePull", "", 1100.0),), 1040.0, None),
    ],
)
def test_which_problem_gives_a_target_up(
    problems: tuple[WorkerProblem, ...], now: float, expected: str | None
) -> None:
    settings = replace(SETTINGS, unschedulable_grace=300, failing_grace=30)
    found = hopeless(problems, now, settings)
    assert (found.worker if found is not None else None) == expected


def test_a_warming_scale_down_is_superseded_once_the_decision_rises_above_its_target() -> None:
    record = serving_record(generation=1, replicas=3)
    source = {1: frozenset({"o1", "o2", "o3"})}
    result = step(record, obs(desired=1, running=source, committed={f"{BASE}-gen-1": {}}), SETTINGS, term=1)
    record = result.record
    h = record.handover
    assert h is not None
    assert (h.source, h.target, h.replicas, h.phase) == (1, 2, 1, Phase.WARMING)
    groups, warm = warm_target(2, 1, h.warm_to)
    running = {**source, 2: frozenset(warm)}

    # The decision still fits (at or below the target, or none yet: a restarted controller): go on.
    for desired in (None, 1):
        result = step(record, obs(desired=desired, running=running, statuses=warm), SETTINGS, term=1)
        assert not result.changed

    # A spike: the decision rises above the target while the target is warm and ready. Cutting over
    # now would leave one worker where two are wanted; instead the attempt is abandoned, the source
    # (never stopped) keeps serving at its size, and nothing asks for the target any more.
    rising = obs(desired=2, running=running, statuses=warm, groups=groups)
    result = step(record, rising, SETTINGS, term=1)
    assert result.changed
    assert result.record.handover is not None
    assert result.record.handover.phase is Phase.ABORTING
    assert result.record.serving == record.serving
    assert role(result.record, 1) is Role.SERVE
    assert role(result.record, 2) is Role.STOP
    assert Ensure(1, f"{BASE}-gen-1", 3) in result.actions
    assert not any(isinstance(a, Ensure) and a.generation == 2 for a in result.actions)
    assert any(isinstance(a, Note) and a.event == "handover superseded" for a in result.actions)
    record = result.record

    # ABORTING removes the target, then goes idle; the next step starts the size now decided, as a
    # new generation (2 is never reused). Repeating a step (a restarted leader) changes nothing.
    again = step(record, rising, SETTINGS, term=1)
    assert Remove(2) in again.actions
    assert not again.changed
    result = step(record, obs(desired=2, running=source), SETTINGS, term=1)
    assert result.record.handover is None
    record = result.record
    result = step(record, obs(desired=2, running=source, committed={f"{BASE}-gen-1": {}}), SETTINGS, term=1)
    h = result.record.handover
    assert h is not None
    assert (h.source, h.target, h.replicas, h.phase) == (1, 3, 2, Phase.WARMING)


def test_a_warming_scale_up_is_replaced_only_by_a_decision_for_twice_its_increase() -> None:
    record = serving_record(generation=1, replicas=1)
    source = {1: frozenset({"o1"})}
    result = step(record, obs(desired=3, running=source, committed={f"{BASE}-gen-1": {}}), SETTINGS, term=1)
    record = result.record
    h = record.handover
    assert h is not None
    groups, warm = warm_target(2, 3, h.warm_to)
    running = {**source, 2: frozenset(warm)}
    # Fallen back to the serving size, in between, or beyond the target by less than its increase
    # again (1 → 3 adds 2; 4 adds 3): carried through to its cut.
    for desired in (1, 2, 4):
        result = step(record, obs(desired=desired, running=running, statuses=warm), SETTINGS, term=1)
        assert not result.changed  # still warming
        result = step(
            record, obs(desired=desired, running=running, statuses=warm, groups=groups), SETTINGS, term=1
        )
        assert result.record.handover is not None
        assert result.record.handover.phase is Phase.FENCING
    # A burst seen at its start: the decision asks for 5 (adds 4, twice the 2 in flight). Landing 3
    # first would put the full size a second warm-up away: the attempt is replaced by one at 5.
    result = step(record, obs(desired=5, running=running, statuses=warm, groups=groups), SETTINGS, term=1)
    assert result.record.handover is not None
    assert result.record.handover.phase is Phase.ABORTING
    assert result.record.serving == record.serving
    assert any(isinstance(a, Note) and a.event == "handover superseded" for a in result.actions)
    result = step(result.record, obs(desired=5, running=source), SETTINGS, term=1)
    result = step(
        result.record, obs(desired=5, running=source, committed={f"{BASE}-gen-1": {}}), SETTINGS, term=1
    )
    h = result.record.handover
    assert h is not None
    assert (h.source, h.target, h.replicas, h.phase) == (1, 3, 5, Phase.WARMING)


@pytest.mark.parametrize(
    ("serving", "target", "desired", "expected"),
    [
        (4, 2, 2, False), (4, 2, 1, False), (4, 2, 3, True), (4, 2, 9, True),  # scale-down
        (2, 4, 2, False), (2, 4, 5, False), (2, 4, 6, True), (2, 4, 1, False),  # scale-up
        (4, 2, 0, False), (3, 3, 9, False),
    ],
)  # fmt: skip
def test_which_warming_handovers_a_decision_supersedes(
    serving: int, target: int, desired: int, expected: bool
) -> None:
    assert superseded(serving, target, desired) is expected


def test_a_target_that_makes_no_progress_after_the_cut_hands_back_to_the_source_where_it_stopped() -> None:
    """Generation 2 took over at the cut and then stalled (a handler that hangs: it committed the cut
    and nothing more on partition 0; on partition 1 it got to 14). After ``verify_timeout`` it is
    fenced like a source; generation 1, fenced and idle but never removed, serves again from where 2
    stopped: nothing frozen, nothing processed twice, nothing skipped."""
    h, record = started(replicas=3, deadline=1030.0)
    members = {"n0": frozenset({(T, 0)}), "n1": frozenset({(T, 1)}), "n2": frozenset({(T, 2)})}
    new = {w: status(w, 2, Status.SERVING, set(ps)) for w, ps in members.items()}
    old = {w: status(w, 1, Status.FENCED, set(), epoch=2) for w in ("o1", "o2")}
    running = {1: frozenset(old), 2: frozenset(new)}
    stalled = obs(
        now=1029,
        running=running,
        statuses={**old, **new},
        groups={h.group: GroupView("Stable", members)},
        committed={h.group: {(T, 0): 10, (T, 1): 14, (T, 2): 5}},
        ends={(T, 0): 50, (T, 1): 50, (T, 2): 5},
    )
    assert not step(record, stalled, SETTINGS, term=1).changed  # within the deadline: waiting

    result = step(record, replace(stalled, now=1031), SETTINGS, term=1)
    reverting = result.record
    assert reverting.handover is not None
    assert reverting.handover.phase is Phase.REVERTING
    assert any(isinstance(a, Note) and a.event == "handover reverting" for a in result.actions)
    assert (role(reverting, 1), role(reverting, 2)) == (Role.STOP, Role.STOP)  # nobody processes

    # n1 fenced after processing up to 16 (its commit of 16 failed: the group says 14); n0 hangs in its
    # handler, is killed after the fence deadline, and is confirmed gone; n2 exited meanwhile.
    fenced = {**new, "n1": status("n1", 2, Status.FENCED, {(T, 1)}, epoch=2, offsets={(T, 1): 16})}
    waiting = replace(
        stalled, now=1032, statuses={**old, **fenced}, running={**running, 2: frozenset({"n0", "n1"})}
    )
    result = step(reverting, waiting, SETTINGS, term=1)
    assert not result.changed
    assert Ensure(1, f"{BASE}-gen-1", 2) in result.actions  # the source is kept, at its own size
    assert not any(isinstance(a, Ensure) and a.generation == 2 for a in result.actions)
    late = step(reverting, replace(waiting, now=1031 + SETTINGS.fence_timeout + 1), SETTINGS, term=1)
    assert Kill(frozenset({"n0"})) in late.actions
    assert not late.changed
    gone = replace(waiting, now=1040, running={1: frozenset(old), 2: frozenset({"n1"})})
    result = step(reverting, gone, SETTINGS, term=1)
    back = result.record
    assert back.serving == Serving(1, f"{BASE}-gen-1", 2, {(T, 0): 10, (T, 1): 16, (T, 2): 5})
    assert back.handover is not None
    assert back.handover.phase is Phase.ABORTING
    assert any(isinstance(a, Note) and a.event == "handover reverted" for a in result.actions)
    assert (role(back, 1), role(back, 2)) == (Role.SERVE, Role.STOP)
    assert step(back, gone, SETTINGS, term=1).record == back  # repeated (a restarted leader): the same

    # ABORTING removes generation 2 and goes idle with generation 1 serving; 2 is never reused.
    result = step(back, replace(gone, running={1: frozenset(old)}), SETTINGS, term=1)
    idle = result.record
    assert idle.handover is None
    assert idle.serving == back.serving
    assert idle.next_generation == 3

    # The decision still stands, but no new attempt begins for revert_backoff (doubled per revert in a
    # row): a target that hangs because of the application must not freeze the workload at every try.
    assert (idle.reverts, idle.hold_until) == (1, 1040 + SETTINGS.revert_backoff)
    wants = obs(desired=3, running={1: frozenset(old)}, committed={f"{BASE}-gen-1": {}})
    held = step(idle, replace(wants, now=1040 + SETTINGS.revert_backoff - 1), SETTINGS, term=1)
    assert held.record.handover is None
    assert any(isinstance(a, Note) and a.event == "handover held" for a in held.actions)
    again = step(idle, replace(wants, now=1040 + SETTINGS.revert_backoff), SETTINGS, term=1).record
    assert again.handover is not None
    assert (again.handover.target, again.handover.phase) == (3, Phase.WARMING)
    assert again.reverts == 1  # until a handover is verified and done


def _beyond(actions: tuple[object, ...]) -> list[object]:
    found = [a for a in actions if isinstance(a, Note) and a.event == "handover cut beyond the log end"]
    assert len(found) == 1, actions
    note = found[0]
    assert isinstance(note, Note)
    beyond = note.fields["beyond"]
    assert isinstance(beyond, list)
    return beyond


def test_a_revert_cut_beyond_the_log_end_is_lowered_to_it_and_named() -> None:
    """The target's group says 900 on partition 1, whose log ends at 50 (the topic re-created smaller
    while the target stalled, or a forged commit). Served from 900, the source would find its position
    out of range and start over from the log start, or — once the log grows past 900 — silently skip
    every record in between. It serves from the log end instead, and the warning names both offsets."""
    h, record = started(replicas=2, deadline=1030.0)
    reverting = replace(record, handover=replace(h, phase=Phase.REVERTING, deadline=1040.0))
    old = {w: status(w, 1, Status.FENCED, set(), epoch=2) for w in ("o1", "o2")}
    fenced = {"n0": status("n0", 2, Status.FENCED, {(T, 0)}, epoch=2, offsets={(T, 0): 11})}
    result = step(
        reverting,
        obs(
            now=1035,
            running={1: frozenset(old), 2: frozenset(fenced)},
            statuses={**old, **fenced},
            committed={h.group: {(T, 0): 11, (T, 1): 900, (T, 2): 5}},
            ends={(T, 0): 40, (T, 1): 50, (T, 2): 5},
        ),
        SETTINGS,
        term=1,
    )
    assert result.record.serving == Serving(1, f"{BASE}-gen-1", 2, {(T, 0): 11, (T, 1): 50, (T, 2): 5})
    assert _beyond(result.actions) == [{"partition": f"{T}/1", "cut": 900, "log_end": 50}]


def test_a_handover_cut_beyond_the_log_end_is_lowered_to_it_and_named() -> None:
    """The same for the cut a new generation starts at: a source worker reports having processed to
    70 on a partition that ends at 30."""
    record = serving_record(generation=1, start={(T, 0): 0, (T, 1): 0, (T, 2): 0})
    h = Handover(1, 2, f"{BASE}-gen-2", 2, Phase.FENCING, {}, deadline=1010.0, started_at=900.0)
    record = replace(record, handover=h, next_generation=3)
    fenced = {"o1": status("o1", 1, Status.FENCED, set(PARTS), epoch=2, offsets={(T, 0): 70, (T, 1): 3})}
    result = step(
        record,
        obs(
            running={1: frozenset(fenced)},
            statuses=fenced,
            committed={f"{BASE}-gen-1": {(T, 0): 20, (T, 1): 3}},
            ends={(T, 0): 30, (T, 1): 3, (T, 2): 0},
        ),
        SETTINGS,
        term=1,
    )
    assert result.record.handover is not None
    assert result.record.handover.cut == {(T, 0): 30, (T, 1): 3, (T, 2): 0}
    assert _beyond(result.actions) == [{"partition": f"{T}/0", "cut": 70, "log_end": 30}]


def test_a_first_takeover_cut_beyond_the_log_end_is_lowered_to_it_and_named() -> None:
    """The workload's own group committed 40 on a partition whose log now ends at 9: generation 1
    starts at the log end, not out of range."""
    empty = obs(groups={BASE: GroupView("Empty")}, committed={BASE: {(T, 0): 40, (T, 1): 3}})
    record = step(step(None, empty, SETTINGS, term=1).record, empty, SETTINGS, term=1).record
    h = record.handover
    assert h is not None
    assert (h.source, h.phase) == (None, Phase.WARMING)
    assert needs(record, SETTINGS).ends  # read while it warms: it starts at warm_to once ready
    groups, warm = warm_target(1, 2, h.warm_to)
    ready = obs(
        running={1: frozenset(warm)}, statuses=warm, groups=groups, ends={(T, 0): 9, (T, 1): 3, (T, 2): 0}
    )
    result = step(record, ready, SETTINGS, term=1)
    assert result.record.handover is not None
    assert result.record.handover.phase is Phase.STARTING
    assert result.record.handover.cut == {(T, 0): 9, (T, 1): 3}
    assert _beyond(result.actions) == [{"partition": f"{T}/0", "cut": 40, "log_end": 9}]


def test_a_revert_waits_for_every_target_worker_however_long_it_takes() -> None:
    """A target worker that can be neither fenced nor confirmed gone (a node that vanished) keeps the
    revert waiting: the source serving next to it could process what it processes."""
    h = Handover(
        1, 2, f"{BASE}-gen-2", 1, Phase.REVERTING, {}, 1000.0, 900.0, cut={(T, 0): 3}, source_replicas=2
    )
    record = ControllerRecord(W, 1, 9, Serving(2, f"{BASE}-gen-2", 1, {(T, 0): 3}), h, next_generation=3)
    stuck = obs(
        now=1000 + SETTINGS.kill_grace + 1,
        running={1: frozenset({"o1"}), 2: frozenset({"n0"})},
        committed={h.group: {}},
    )
    result = step(record, stuck, SETTINGS, term=1)
    assert Kill(frozenset({"n0"})) in result.actions
    assert any(isinstance(a, Note) and a.event == "handover revert blocked" for a in result.actions)
    assert result.record.serving == record.serving
    again = step(result.record, replace(stuck, now=stuck.now + 600), SETTINGS, term=1)
    assert not again.changed
    assert Kill(frozenset({"n0"})) in again.actions


def test_a_first_generation_that_makes_no_progress_is_reported_not_reverted() -> None:
    h = Handover(None, 1, f"{BASE}-gen-1", 2, Phase.STARTING, {}, 1000.0, 900.0, cut={})
    record = ControllerRecord(W, 1, 3, Serving(1, f"{BASE}-gen-1", 2, {}), h, next_generation=2)
    result = step(record, obs(now=1001, ends={(T, 0): 9}, committed={h.group: {}}), SETTINGS, term=1)
    assert result.record.handover is not None
    assert result.record.handover.phase is Phase.STARTING
    assert any(isinstance(a, Note) and a.event == "handover verification overdue" for a in result.actions)


def test_a_fence_that_cannot_complete_is_aborted_after_the_kill_grace() -> None:
    h = Handover(1, 2, f"{BASE}-gen-2", 3, Phase.FENCING, {}, deadline=1000.0, started_at=900.0)
    record = replace(serving_record(), handover=h, next_generation=3)
    stuck = obs(now=1000 + SETTINGS.kill_grace + 1, running={1: frozenset({"o1"}), 2: frozenset({"n1"})})
    result = step(record, stuck, SETTINGS, term=1)
    assert result.record.handover is not None
    assert result.record.handover.phase is Phase.ABORTING
    assert result.record.serving == record.serving  # no cut was taken: the source resumes


def test_a_new_leader_restamps_the_record_it_finds_and_repeating_a_step_changes_nothing() -> None:
    record = serving_record()
    quiet = obs(running={1: frozenset({"a", "b"})}, committed={f"{BASE}-gen-1": {}})
    again = step(record, quiet, SETTINGS, term=1)
    assert not again.changed
    assert again.record == record
    taken_over = step(record, quiet, SETTINGS, term=2)
    assert taken_over.changed
    assert (taken_over.record.term, taken_over.record.seq) == (2, 0)
    assert taken_over.record.newer_than(record)
    assert needs(record, SETTINGS).committed == frozenset({f"{BASE}-gen-1"})


def test_a_partition_added_while_a_generation_serves_is_cut_over_at_what_the_source_processed() -> None:
    """Partition 3 was added to the topic after the controller last read the partition list, and the
    source picked it up and processed it. The cut carries it at what the source processed: the
    target starting it from the log start would process all of it again."""
    added = (T, 3)
    grown = PARTS | {added}
    record = serving_record(generation=1, replicas=1, start={(T, 0): 0, (T, 1): 0, (T, 2): 0})
    old = {"o1": status("o1", 1, Status.SERVING, {(T, 0), (T, 1), (T, 2)})}
    source = f"{BASE}-gen-1"

    # The handover begins on the old list: the new partition's commit is in warm_to all the same.
    result = step(
        record,
        obs(desired=2, running={1: frozenset(old)}, committed={source: {(T, 0): 5, added: 7, ("x", 0): 1}}),
        SETTINGS,
        term=1,
    )
    h = result.record.handover
    assert h is not None
    assert h.warm_to == {(T, 0): 5, (T, 1): 0, (T, 2): 0, added: 7}  # the workload's topic only
    # Every phase of a handover reads the partition list afresh (only idle may use a cached one).
    assert needs(result.record, SETTINGS).fresh_partitions
    assert not needs(record, SETTINGS).fresh_partitions
    record = result.record

    # The target's group leader saw the new partition before the controller did: still ready.
    members = {"n0": frozenset({(T, 0), (T, 2)}), "n1": frozenset({(T, 1), added})}
    warm = {
        w: status(w, 2, Status.WARM, set(ps), warm_to={tp: h.warm_to[tp] for tp in ps}, epoch=2)
        for w, ps in members.items()
    }
    groups = {h.group: GroupView("Stable", members)}
    running = {1: frozenset(old), 2: frozenset(warm)}
    result = step(record, obs(running=running, statuses={**old, **warm}, groups=groups), SETTINGS, term=1)
    assert result.record.handover is not None
    assert result.record.handover.phase is Phase.FENCING
    record = result.record

    # The cut: the source's commits and fenced offsets, on the new partition too.
    fenced = {"o1": status("o1", 1, Status.FENCED, {(T, 0), added}, epoch=2, offsets={added: 9})}
    committed = {source: {(T, 0): 6, added: 8}}
    result = step(
        record, obs(running=running, statuses={**fenced, **warm}, committed=committed), SETTINGS, term=1
    )
    assert result.record.handover is not None
    assert result.record.handover.cut == {(T, 0): 6, (T, 1): 0, (T, 2): 0, added: 9}
    record = result.record

    # Verified only once the target serves, and has committed the cut, on every partition it holds.
    serving = {w: replace(s, status=Status.SERVING) for w, s in warm.items()}
    ends = {(T, 0): 6, (T, 1): 0, (T, 2): 0, added: 9}
    starting = obs(running=running, statuses=serving, groups=groups, partitions=grown, ends=ends)
    short = {h.group: {(T, 0): 6, (T, 1): 0, (T, 2): 0, added: 2}}
    assert not step(record, replace(starting, committed=short), SETTINGS, term=1).changed
    there = {h.group: {(T, 0): 6, (T, 1): 0, (T, 2): 0, added: 9}}
    result = step(record, replace(starting, committed=there), SETTINGS, term=1)
    assert result.record.handover is not None
    assert result.record.handover.phase is Phase.RETIRING

    # A partition the controller knows and the target's group does not cover yet: not verified.
    behind = {h.group: GroupView("Stable", {"n0": members["n0"], "n1": frozenset({(T, 1)})})}
    assert not step(record, replace(starting, groups=behind, committed=there), SETTINGS, term=1).changed


# --- handing a workload back (§4.8) -------------------------------------------------------------------

BACK = replace(SETTINGS, hand_back=True)  # the policy left handover mode


def notes(actions: tuple[object, ...], event: str) -> list[Note]:
    return [a for a in actions if isinstance(a, Note) and a.event == event]


def test_a_workload_switched_out_of_handover_mode_is_handed_back_to_its_own_group() -> None:
    """Generation 3 serves; the policy is switched to mode: hpa. Generation 3 fences, the cut (what it
    processed) is persisted, then committed into the policy's own group once that has no members; the
    workload's own consumers then run again at generation 3's size, every generation is removed and the
    record is cleared — a later switch back takes the workload over afresh."""
    record = serving_record(generation=3, replicas=2, start={(T, 0): 5, (T, 1): 5, (T, 2): 5})
    gen = f"{BASE}-gen-3"
    serving = {
        "s1": status("s1", 3, Status.SERVING, {(T, 0), (T, 1)}),
        "s2": status("s2", 3, Status.SERVING, {(T, 2)}),
    }
    # Someone scaled the workload's own Deployment up meanwhile (its pods are generation 0).
    running = {3: frozenset(serving), 0: frozenset({"own-1"})}

    result = step(record, obs(running=running, statuses=serving), BACK, term=1)
    h = result.record.handover
    assert h is not None
    assert (h.source, h.target, h.group, h.replicas, h.phase, h.cut) == (3, 0, BASE, 2, Phase.RELEASING, None)
    assert Remove(0) in result.actions  # never two fleets: not while generation 3 might process
    assert not any(isinstance(a, Ensure | Commit | HandBack) for a in result.actions)
    assert notes(result.actions, "handover releasing")
    assert role(result.record, 3) is Role.STOP
    assert needs(result.record, BACK) == Needs(
        describe=frozenset({BASE}), committed=frozenset({BASE, gen}), fresh_partitions=True, ends=True
    )
    record = result.record

    # s1 fenced (its commit of (T, 1) failed: the group says 8, it processed 9); s2 has not answered.
    fenced = {
        **serving,
        "s1": status("s1", 3, Status.FENCED, {(T, 0), (T, 1)}, epoch=0, offsets={(T, 0): 7, (T, 1): 9}),
    }
    committed = {gen: {(T, 0): 7, (T, 1): 8}, BASE: {(T, 0): 1}}
    waiting = obs(
        now=1001,
        running={3: frozenset(serving)},
        statuses=fenced,
        committed=committed,
        groups={BASE: GroupView("Empty")},
    )
    assert not step(record, waiting, BACK, term=1).changed
    late = step(record, replace(waiting, now=1000 + SETTINGS.fence_timeout + 1), BACK, term=1)
    assert Kill(frozenset({"s2"})) in late.actions
    assert not late.changed

    # s2 is confirmed gone: the cut is persisted before anything uses it (write-ahead).
    gone = replace(waiting, now=1007, running={3: frozenset({"s1"})})
    result = step(record, gone, BACK, term=1)
    assert result.record.handover is not None
    cut = {(T, 0): 7, (T, 1): 9, (T, 2): 5}
    assert result.record.handover.cut == cut
    assert not any(isinstance(a, Commit) for a in result.actions)
    record = result.record

    # The policy's group has members: Kafka would refuse a commit from outside it. Said, and retried.
    busy = replace(gone, groups={BASE: GroupView("Stable", {"own-1": frozenset(PARTS)})})
    result = step(record, busy, BACK, term=1)
    assert not result.changed
    assert not any(isinstance(a, Commit) for a in result.actions)
    (blocked,) = notes(result.actions, "handover blocked")
    assert "active members" in str(blocked.fields["reason"])

    # Empty: the cut is committed into it, again on every step (a restarted leader too) until it is there.
    result = step(record, gone, BACK, term=1)
    assert Commit(BASE, cut) in result.actions
    assert not result.changed
    assert Commit(BASE, cut) in step(record, gone, BACK, term=2).actions
    there = replace(gone, committed={**committed, BASE: cut})
    result = step(record, there, BACK, term=1)
    assert result.record.handover is not None
    assert result.record.handover.phase is Phase.RELEASED
    assert not any(isinstance(a, Commit) for a in result.actions)
    record = result.record

    assert result.record == released(cut)


def released(cut: Mapping[tuple[str, int], int]) -> ControllerRecord:
    h = Handover(3, 0, BASE, 2, Phase.RELEASED, {}, 1005.0, 1000.0, cut=dict(cut), source_replicas=2)
    return replace(
        serving_record(generation=3, replicas=2, start={(T, 0): 5, (T, 1): 5, (T, 2): 5}),
        term=1,
        seq=8,
        handover=h,
    )


def test_a_released_workload_runs_its_own_consumers_again_and_is_forgotten() -> None:
    cut = {(T, 0): 7, (T, 1): 9, (T, 2): 5}
    record = released(cut)
    fenced = {"s1": status("s1", 3, Status.FENCED, {(T, 0), (T, 1)}, epoch=0)}
    # RELEASED: the workload's own consumers run again, at generation 3's size; generation 3 goes.
    result = step(record, obs(now=1008, running={3: frozenset({"s1"}), 0: frozenset()}), BACK, term=1)
    assert HandBack(2) in result.actions
    assert Remove(3) in result.actions
    assert not result.changed
    own = {0: frozenset({"own-1", "own-2"})}
    result = step(record, obs(now=1009, running=own, statuses=fenced), BACK, term=1)
    assert Remove(0) not in result.actions
    assert Forget(3) in result.actions
    assert notes(result.actions, "handover released")
    cleared = result.record
    assert (cleared.serving, cleared.handover) == (None, None)
    assert cleared.next_generation == record.next_generation  # generation numbers are never reused

    # Nothing left to hand back: nothing is done, not even to the workload's own consumers.
    after = step(cleared, obs(running=own), BACK, term=1)
    assert not after.changed
    assert after.actions == ()

    # Switched back to handover mode: taken over afresh (§4.5), from the group's offsets, as generation 4.
    empty = obs(running=own, groups={BASE: GroupView("Empty")}, committed={BASE: cut})
    result = step(cleared, empty, SETTINGS, term=1)
    assert Remove(0) in result.actions
    assert result.record.handover is not None
    assert (result.record.handover.target, result.record.handover.warm_to) == (4, cut)


def test_a_hand_back_never_overwrites_a_commit_the_workloads_own_group_is_already_past() -> None:
    """Offsets at or beyond the cut in the policy's group are taken as the hand-back done: rewinding them
    would process records a second time."""
    h = Handover(3, 0, BASE, 2, Phase.RELEASING, {}, 1000.0, 900.0, cut={(T, 0): 7}, source_replicas=2)
    record = replace(serving_record(generation=3), handover=h)
    ahead = obs(
        committed={BASE: {(T, 0): 9}, f"{BASE}-gen-3": {}},
        groups={BASE: GroupView("Stable", {"x": frozenset()})},
    )
    result = step(record, ahead, BACK, term=1)
    assert result.record.handover is not None
    assert result.record.handover.phase is Phase.RELEASED
    assert not any(isinstance(a, Commit) for a in result.actions)


def in_progress(phase: Phase) -> ControllerRecord:
    """Generation 1 → 2 in ``phase``: the serving record names 2 from STARTING on, as the machine writes."""
    h = Handover(1, 2, f"{BASE}-gen-2", 3, phase, {}, 1000.0, 900.0, cut={(T, 0): 4}, source_replicas=2)
    serving_gen = 2 if phase in (Phase.STARTING, Phase.RETIRING, Phase.REVERTING) else 1
    return replace(
        serving_record(generation=1),
        serving=Serving(serving_gen, f"{BASE}-gen-{serving_gen}", 2, {(T, 0): 4}),
        handover=h,
        next_generation=3,
    )


@pytest.mark.parametrize(
    "phase",
    [Phase.WARMING, Phase.FENCING, Phase.STARTING, Phase.REVERTING, Phase.RETIRING, Phase.ABORTING],
)
def test_a_handover_in_progress_gives_way_to_the_hand_back_of_what_serves(phase: Phase) -> None:
    """Whatever the phase, the generation the record says serves is fenced and cut from; the other one
    processed nothing past that cut (warming, or fenced and idle) and is simply removed."""
    record = in_progress(phase)
    assert record.serving is not None
    serving, other = record.serving.generation, ({1, 2} - {record.serving.generation}).pop()
    running = {1: frozenset({"a"}), 2: frozenset({"b"})}
    result = step(record, obs(running=running), BACK, term=1)
    h = result.record.handover
    assert h is not None
    assert (h.phase, h.source, h.cut) == (Phase.RELEASING, serving, None)
    assert result.record.serving == record.serving
    assert Remove(other) in result.actions
    assert Remove(serving) not in result.actions
    assert (role(result.record, 1), role(result.record, 2)) == (Role.STOP, Role.STOP)


def test_a_first_takeover_still_warming_is_undone_without_a_commit() -> None:
    """Generation 1 was warming to take the workload over: it processed nothing, and the workload's own
    group holds what its consumers committed when they stopped. It is removed, the workload's own
    consumers run again (at the size the takeover was for), and nothing is committed."""
    h = Handover(None, 1, f"{BASE}-gen-1", 3, Phase.WARMING, {(T, 0): 2}, 1000.0, 900.0)
    record = ControllerRecord(W, 1, 2, handover=h, next_generation=2)
    result = step(record, obs(running={1: frozenset({"n1"})}), BACK, term=1)
    assert result.record.handover is not None
    assert (result.record.handover.phase, result.record.handover.source) == (Phase.RELEASED, 1)
    result = step(result.record, obs(running={1: frozenset({"n1"})}), BACK, term=1)
    assert {HandBack(3), Remove(1)} <= set(result.actions)
    assert not any(isinstance(a, Commit) for a in result.actions)
    done = step(result.record, obs(running={}), BACK, term=1).record
    assert (done.serving, done.handover, done.next_generation) == (None, None, 2)


def test_a_hand_back_waits_for_every_worker_of_the_serving_generation_however_long_it_takes() -> None:
    h = Handover(3, 0, BASE, 2, Phase.RELEASING, {}, 1000.0, 900.0, source_replicas=2)
    record = replace(serving_record(generation=3), handover=h)
    stuck = obs(
        now=1000 + SETTINGS.kill_grace + 1, running={3: frozenset({"s1"})}, committed={f"{BASE}-gen-3": {}}
    )
    result = step(record, stuck, BACK, term=1)
    assert Kill(frozenset({"s1"})) in result.actions
    assert notes(result.actions, "handover release blocked")
    assert result.record.handover is not None
    assert result.record.handover.cut is None
    again = step(result.record, replace(stuck, now=stuck.now + 600), BACK, term=1)
    assert not again.changed
    assert Kill(frozenset({"s1"})) in again.actions


def test_a_hand_back_controller_writes_nothing_for_a_workload_never_handed_over() -> None:
    result = step(None, obs(running={0: frozenset({"own-1"})}), BACK, term=1)
    assert not result.changed
    assert result.actions == ()


# --- invariants under random observations --------------------------------------------------------------


workers = st.sampled_from(["a", "b", "c", "d"])


@st.composite
def observations(draw: st.DrawFn, record: ControllerRecord | None, now: float) -> Observation:
    """A random world, often (not always) consistent with the record: warm or serving targets with
    the assignment they report, fenced or vanished sources, commits at any offsets."""
    gens = st.integers(1, 6)
    # Generation 0: the workload's own consumers (the Kubernetes backend reports its Deployment's pods).
    running = dict(draw(st.dictionaries(st.integers(0, 6), st.frozensets(workers, max_size=3), max_size=3)))
    stats = {
        w: status(w, draw(gens), draw(st.sampled_from(list(Status))), draw(st.sets(st.sampled_from(sorted(PARTS)))), epoch=draw(st.none() | gens))
        for w in draw(st.sets(workers))
    }  # fmt: skip
    group_names = [BASE, *(f"{BASE}-gen-{g}" for g in range(1, 7))]
    groups = {
        g: GroupView(draw(st.sampled_from(["Stable", "Empty", "PreparingRebalance", "Dead"])),
                     draw(st.dictionaries(workers, st.frozensets(st.sampled_from(sorted(PARTS))), max_size=3)))
        for g in draw(st.sets(st.sampled_from(group_names)))
    }  # fmt: skip
    # Offsets also of a partition added since the list was read, and of a topic not the workload's.
    offset_parts = st.sampled_from([*sorted(PARTS), (T, 3), ("other", 0)])
    committed = {
        g: draw(st.dictionaries(offset_parts, st.integers(0, 100)))
        for g in draw(st.sets(st.sampled_from(group_names)))
    }
    h = record.handover if record is not None else None
    if h is not None and draw(st.booleans()):  # the target did what it was told
        state = {Phase.STARTING: Status.SERVING, Phase.REVERTING: Status.FENCED}.get(h.phase, Status.WARM)
        parts = sorted(PARTS)
        members = {f"t{i}": frozenset(parts[i :: h.replicas]) for i in range(h.replicas)}
        groups[h.group] = GroupView("Stable", members)
        for w, ps in members.items():
            warm = {tp: o for tp, o in h.warm_to.items() if tp in ps}
            processed = draw(st.dictionaries(offset_parts, st.integers(0, 100)))
            stats[w] = status(w, h.target, state, set(ps), warm_to=warm, epoch=h.target, offsets=processed)
        running[h.target] = frozenset(members)
        committed.setdefault(h.group, dict.fromkeys(PARTS, 1000))
    if h is not None and h.source is not None and draw(st.booleans()):  # the source fenced, or died
        survivors = draw(st.frozensets(st.sampled_from(["s1", "s2"])))
        running[h.source] = survivors
        for w in survivors:
            processed = draw(st.dictionaries(offset_parts, st.integers(0, 100)))
            stats[w] = status(w, h.source, Status.FENCED, set(), epoch=h.target, offsets=processed)
        if record is not None and record.serving is not None:
            committed.setdefault(record.serving.group, {})
    serving = record.serving if record is not None else None
    if h is not None and h.phase in HAND_BACK and serving is not None and draw(st.booleans()):
        # The serving generation fenced for the hand-back, or died; the policy's group emptied, or not.
        survivors = draw(st.frozensets(st.sampled_from(["s1", "s2"])))
        running[serving.generation] = survivors
        for w in survivors:
            processed = draw(st.dictionaries(offset_parts, st.integers(0, 100)))
            stats[w] = status(w, serving.generation, Status.FENCED, set(), epoch=0, offsets=processed)
        committed.setdefault(serving.group, {})
        if h.cut is not None and draw(st.booleans()):
            committed[BASE] = dict(h.cut)
        if draw(st.booleans()):
            groups[BASE] = GroupView("Empty")
    ends = draw(st.dictionaries(st.sampled_from(sorted(PARTS)), st.integers(0, 1000)))
    problem = st.builds(
        WorkerProblem,
        workers,
        st.sampled_from(list(Trouble)),
        st.sampled_from(["Unschedulable", "ImagePullBackOff", "CrashLoopBackOff"]),
        st.text(max_size=20),
        st.floats(now - 400, now + 5),  # within its grace or past it (or stated ahead of our clock)
    )
    problems = draw(st.dictionaries(gens, st.lists(problem, max_size=2).map(tuple), max_size=2))
    return Observation(
        now, draw(st.none() | st.integers(1, 5)), PARTS, running, stats, groups, committed, ends, problems
    )


def _highest_of_topic(*offsets: Mapping[tuple[str, int], int]) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for each in offsets:
        for tp, o in each.items():
            if tp[0] == T:  # every partition of the workload's topic, known to the controller or not
                out[tp] = max(out.get(tp, o), o)
    return out


def _fenced_in(observation: Observation, generation: int, epoch: int) -> list[WorkerStatus]:
    return [
        s
        for s in observation.statuses.values()
        if (s.generation, s.status, s.epoch) == (generation, Status.FENCED, epoch)
    ]


def _check_hold(record: ControllerRecord, observation: Observation, new: ControllerRecord) -> None:
    """Failures are counted only by a revert or by a warming target given up because its workers
    cannot run (not by a timeout or a superseded attempt), and forgotten only by a handover that was
    done or a finished hand-back (the workload is no longer lagscaler's; a later takeover starts
    afresh); no handover begins while their hold lasts."""
    h = record.handover
    if new.reverts != record.reverts:
        assert h is not None
        given_up = (
            h.phase is Phase.WARMING
            and new.handover is not None
            and new.handover.phase is Phase.ABORTING
            and hopeless(observation.problems.get(h.target, ()), observation.now, SETTINGS) is not None
        )
        assert given_up or (h.phase, new.reverts) in (
            (Phase.REVERTING, record.reverts + 1),
            (Phase.RETIRING, 0),
            (Phase.RELEASED, 0),
        )
        if given_up:
            assert new.reverts == record.reverts + 1
            assert new.hold_until > observation.now
    begins = h is None and new.handover is not None and new.handover.phase is Phase.WARMING
    if begins and record.serving is not None:  # a hand-back (RELEASING) is not held back
        assert observation.now >= record.hold_until


def _check_cannot_run(
    record: ControllerRecord | None, observation: Observation, new: ControllerRecord
) -> None:
    """A warming target one of whose workers cannot run past its grace is aborted (unless it is ready
    or superseded first), a target being verified is handed back, and the source serves on untouched;
    a problem still within its grace, or a generation's other than the target's, changes nothing."""
    h = record.handover if record is not None else None
    if record is None or h is None or h.phase not in (Phase.WARMING, Phase.STARTING):
        return
    target = hopeless(observation.problems.get(h.target, ()), observation.now, SETTINGS)
    if h.phase is Phase.WARMING and target is not None:
        assert new.handover is not None
        assert new.handover.phase in (Phase.FENCING, Phase.STARTING, Phase.ABORTING)  # ready, or given up
        assert new.serving == record.serving or new.handover.phase is Phase.STARTING
    if h.phase is Phase.WARMING and target is None and observation.now <= h.deadline:
        assert new.handover is not None
        desired = observation.desired
        if new.handover.phase is Phase.ABORTING:  # only a decision it no longer fits aborts it now
            assert record.serving is not None
            assert desired is not None
            assert superseded(record.serving.replicas, h.replicas, desired)
    if h.phase is Phase.STARTING and h.source is not None and observation.now <= h.deadline:
        assert new.handover is not None
        if new.handover.phase is Phase.REVERTING:
            assert target is not None
        elif target is not None:
            assert new.handover.phase is Phase.RETIRING  # it was verified first


def _check_serving_change(record: ControllerRecord, observation: Observation, new: ControllerRecord) -> None:
    """The serving generation changes only to the handover's target, at a cut taken from the source
    group's commits once no source worker could still process; or, reverting, back to the source once
    no target worker could still process, at the cut raised to what the target committed or fenced at."""
    h = record.handover
    assert h is not None
    assert new.serving is not None
    assert new.handover is not None
    if h.phase is Phase.REVERTING:
        assert (new.serving.generation, new.serving.replicas) == (h.source, h.source_replicas)
        assert new.handover.phase is Phase.ABORTING
        fenced = _fenced_in(observation, h.target, h.epoch)
        assert observation.running.get(h.target, frozenset()) <= {s.worker for s in fenced}
        assert new.serving.start == _at_most_the_end(
            _highest_of_topic(h.cut or {}, observation.committed[h.group], *(s.offsets for s in fenced)),
            observation,
        )
        return
    assert new.serving.generation == h.target
    assert new.handover.phase is Phase.STARTING
    source = record.serving
    if source is not None:
        assert h.phase is Phase.FENCING
        fenced = _fenced_in(observation, source.generation, h.epoch)
        assert observation.running.get(source.generation, frozenset()) <= {s.worker for s in fenced}
        assert new.serving.start == _at_most_the_end(
            _highest_of_topic(
                source.start, observation.committed[source.group], *(s.offsets for s in fenced)
            ),
            observation,
        )


def _at_most_the_end(
    cut: Mapping[tuple[str, int], int], observation: Observation
) -> dict[tuple[str, int], int]:
    """A cut is never beyond the log end the step read (docs/handover.md §4.3): lowered to it."""
    return {tp: min(offset, observation.ends.get(tp, offset)) for tp, offset in cut.items()}


def _check_hand_back(
    record: ControllerRecord | None,
    observation: Observation,
    new: ControllerRecord,
    actions: tuple[object, ...],
) -> None:
    """Handing back: lagscaler starts no worker; the cut is taken once no worker of the serving
    generation can still process, persisted before it is committed, committed only into an empty group,
    and the workload's own consumers run again only once the policy's group holds it; the record is
    cleared only once no generation of lagscaler's runs."""
    assert not any(isinstance(a, Ensure) for a in actions)
    h = record.handover if record is not None else None
    for a in actions:
        if isinstance(a, Commit):
            assert record is not None
            assert h is not None
            assert h.phase is Phase.RELEASING
            assert h.cut is not None
            assert (a.group, a.offsets) == (BASE, h.cut)  # the persisted cut, nothing else
            assert a.offsets == _at_most_the_end(a.offsets, observation)  # never past the log end
            assert not observation.groups.get(BASE, GroupView("Empty")).members
        if isinstance(a, HandBack):
            assert h is not None
            assert h.phase is Phase.RELEASED
        if isinstance(a, Remove) and a.generation == 0:
            assert h is None or h.phase is not Phase.RELEASED
    if record is None:
        return
    nh = new.handover
    if nh is not None and nh.phase is Phase.RELEASING and observation.running.get(0):
        assert Remove(0) in actions  # never two fleets: the workload's own consumers wait
    if nh is not None and nh.phase in HAND_BACK:
        assert all(role(new, g) is Role.STOP for g in range(1, 7))
    if nh is not None and nh.cut is not None and nh.phase is Phase.RELEASING and (h is None or h.cut is None):
        source = record.serving
        assert source is not None
        fenced = _fenced_in(observation, source.generation, 0)
        assert observation.running.get(source.generation, frozenset()) <= {s.worker for s in fenced}
        assert nh.cut == _at_most_the_end(
            _highest_of_topic(
                source.start, observation.committed[source.group], *(s.offsets for s in fenced)
            ),
            observation,
        )
    if nh is not None and nh.phase is Phase.RELEASED and h is not None and h.phase is Phase.RELEASING:
        assert h.cut is not None
        assert all(observation.committed[BASE].get(tp, -1) >= o for tp, o in h.cut.items())
    if new.serving != record.serving:
        assert new.serving is None
        assert nh is None
        assert h is not None
        assert h.phase is Phase.RELEASED
        assert not any(w for g, w in observation.running.items() if g != 0)


@settings(
    max_examples=80, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], deadline=None
)
@given(st.data(), st.integers(1, 24))
def test_whatever_is_observed_the_machine_keeps_its_invariants(data: st.DataObject, steps: int) -> None:
    """Random worlds, with the policy switched out of handover mode at a random step (or never)."""
    record: ControllerRecord | None = None
    now = 1000.0
    switch = data.draw(st.integers(1, steps + 1))
    for i in range(steps):
        now += data.draw(st.floats(0, 30))
        observation = data.draw(observations(record, now))
        machine = BACK if i >= switch else SETTINGS
        result = step(record, observation, machine, term=1)
        new = result.record
        if machine.hand_back:
            _check_hand_back(record, observation, new, result.actions)
        if record is not None:
            assert new.next_generation >= record.next_generation  # generations are never reused
            assert (new.term, new.seq) >= (record.term, record.seq)
            assert result.changed == (new != record)
            if new.serving != record.serving and not machine.hand_back:
                _check_serving_change(record, observation, new)
            _check_hold(record, observation, new)
        if (
            not machine.hand_back
            and record is not None
            and record.handover is not None
            and record.handover.phase is Phase.WARMING
            and record.serving is not None
            and observation.desired is not None
            and superseded(record.serving.replicas, record.handover.replicas, observation.desired)
        ):
            # A warming handover that no longer fits the decision never reaches its cut.
            assert new.handover is not None
            assert new.handover.phase is Phase.ABORTING
            assert new.serving == record.serving
        if not machine.hand_back:  # a hand-back fences or removes the target whatever its workers do
            _check_cannot_run(record, observation, new)
        if new.handover is not None:
            assert new.handover.target < new.next_generation
            assert (
                new.serving is None
                or new.serving.generation != new.handover.target
                or new.handover.phase in (Phase.STARTING, Phase.RETIRING, Phase.REVERTING)
            )
            # Nobody processes while a revert waits for the target to stop.
            if new.handover.phase is Phase.REVERTING:
                assert role(new, new.handover.target) is Role.STOP
                assert new.handover.source is None or role(new, new.handover.source) is Role.STOP
        record = new
