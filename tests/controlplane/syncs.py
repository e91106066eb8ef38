"""Every sync of the real HPA controller, read from its log, and replayed through ``lagscaler.core.hpa``.

kube-controller-manager runs with ``--vmodule=horizontal=4``, so ``horizontal.go`` (v1.35.4,
``reconcileAutoscaler``) logs each sync of each HPA: ``"Proposing desired replicas"`` with what the
metrics asked for, then ``"Successfully rescaled"`` (currentReplicas, desiredReplicas) or
``"Decided not to scale"`` (desiredReplicas). A sync whose metrics all failed logs none of these
(it only records a ``FailedGetExternalMetric`` Event) and changes nothing the next sync depends on,
so the replay skips it; tests check those through the Events. :func:`replay` feeds the same inputs to :func:`lagscaler.core.hpa.step` sync by sync
and reports every sync where the model's proposal or replica count differs from the controller's.

The inputs a test knows only as timelines (the value it served, the Deployment's status.replicas,
its ready pods) are read around each sync's log time: the controller read them a moment before it
logged, and a test that polls sees a change up to a poll (plus the request) after it happened. When a timeline changed inside that moment, every value it took there is tried, and the
sync counts as matched if any of them gives the controller's proposal and answer (it is reported as
ambiguous); the matching one is the model's state for the next sync.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from lagscaler.core.hpa import HpaSpec, HpaState, MetricError, MetricReading, step

__all__ = ["Sync", "SyncLog", "Timeline", "repeatedly", "replay"]

_LINE = re.compile(r"^[IWE](\d\d)(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{6})\s+\d+ \S+\] (.*)$")
_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def _fields(text: str) -> dict[str, str]:
    return {key: value.strip('"') for key, value in _FIELD.findall(text)}


def _timestamp(groups: Sequence[str]) -> float:
    month, day, hour, minute, second, micro = (int(g) for g in groups)
    now = dt.datetime.now().astimezone()
    stamp = now.replace(month=month, day=day, hour=hour, minute=minute, second=second, microsecond=micro)
    return stamp.timestamp()


@dataclass(frozen=True, slots=True)
class Sync:
    """One sync as the controller logged it."""

    time: float
    current: int  # spec.replicas it started from
    desired: int  # spec.replicas it left (unchanged when it held)
    proposal: int | None  # what the metrics asked for, before stabilization and limits


class SyncLog:
    """The syncs of HPA ``namespace/name`` (scaling Deployment ``target``) in kube-controller-manager's log."""

    def __init__(self, log_text: object, namespace: str, name: str, target: str) -> None:
        self._log_text = log_text  # a callable returning the log so far
        self.namespace = namespace
        self.name = name
        self.scale_target = f"Deployment/{namespace}/{target}"

    def read(self) -> list[Sync]:
        syncs: list[Sync] = []
        proposal: int | None = None
        for line in self._log_text().splitlines():  # type: ignore[operator]
            match = _LINE.match(line)
            if match is None:
                continue
            text = match.group(7)
            when = _timestamp(match.groups()[:6])
            if text.startswith('"Proposing desired replicas"'):
                fields = _fields(text)
                if fields.get("scaleTarget") == self.scale_target:
                    proposal = int(fields["desiredReplicas"])
            elif text.startswith('"Successfully rescaled"'):
                fields = _fields(text)
                if fields.get("HPA") == f"{self.namespace}/{self.name}":
                    syncs.append(
                        Sync(when, int(fields["currentReplicas"]), int(fields["desiredReplicas"]), proposal)
                    )
                    proposal = None
            elif text.startswith('"Decided not to scale"'):
                fields = _fields(text)
                if fields.get("scaleTarget") == self.scale_target:
                    desired = int(fields["desiredReplicas"])
                    syncs.append(Sync(when, desired, desired, proposal))
                    proposal = None
        return syncs


@dataclass
class Timeline:
    """Values a test saw or set, each from its time on: ``(time, value)`` in time order."""

    points: list[tuple[float, object]] = field(default_factory=list)

    def add(self, when: float, value: object) -> None:
        if not self.points or self.points[-1][1] != value:
            self.points.append((when, value))

    def around(self, when: float, before: float, after: float) -> list[object]:
        """Every value in effect at some time in ``[when - before, when + after]``."""
        values: list[object] = []
        for index, (start, value) in enumerate(self.points):
            end = self.points[index + 1][0] if index + 1 < len(self.points) else float("inf")
            if start <= when + after and end >= when - before and value not in values:
                values.append(value)
        return values


@dataclass
class Replay:
    syncs: int = 0
    ambiguous: int = 0
    mismatches: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def describe(self) -> str:
        head = f"{self.syncs} syncs, {self.ambiguous} ambiguous, {len(self.mismatches)} mismatched"
        return "\n".join([head, *self.lines])


def replay(
    syncs: Sequence[Sync],
    spec: HpaSpec,
    *,
    served: Timeline,
    status_replicas: Timeline | None = None,
    ready_pods: Timeline | None = None,
    before: float = 1.0,
    after: float = 1.0,
) -> Replay:
    """Run the model over the controller's syncs; ``served`` holds float values or ``MetricError``."""
    report = Replay()
    state = HpaState()
    for sync in syncs:
        start = sync.current
        values = served.around(sync.time, before, after) or [MetricError("nothing served")]
        statuses = status_replicas.around(sync.time, before, after) if status_replicas else [start]
        readies = ready_pods.around(sync.time, before, after) if ready_pods else [None]
        outcomes = []
        for value, status, ready in itertools.product(values, statuses or [start], readies or [None]):
            reading: MetricReading = value if isinstance(value, MetricError) else float(value)  # type: ignore[arg-type]
            result = step(
                spec,
                state,
                sync.time,
                start,
                [reading],
                status_replicas=int(status),  # type: ignore[call-overload]
                ready_pods=None if ready is None else int(ready),  # type: ignore[call-overload]
            )
            outcomes.append(((value, status, ready), result))
        report.syncs += 1
        expected = sync.desired
        # the proposal the controller logged decides between candidate inputs, and must agree too
        matched = [
            (inputs, r)
            for inputs, r in outcomes
            if r.replicas == expected and (sync.proposal is None or r.proposal == sync.proposal)
        ]
        real = f"controller {start}->{expected} proposal {sync.proposal}"
        if matched:
            inputs, result = matched[0]
            if len(outcomes) > 1:
                report.ambiguous += 1
            report.lines.append(
                f"{sync.time:.3f}: {real}; model {result.replicas} ({result.reason}) from {inputs}"
            )
        else:
            inputs, result = outcomes[0]
            models = sorted({(r.replicas, r.proposal) for _, r in outcomes})
            message = (
                f"{sync.time:.3f}: {real}; model {models} ({result.reason}) from {[i for i, _ in outcomes]}"
            )
            report.mismatches.append(message)
            report.lines.append("MISMATCH " + message)
        state = result.state
    return report


async def repeatedly(seconds: float, action: Callable[[], Awaitable[object]]) -> None:
    """Record a timeline: run ``action`` every ``seconds`` until cancelled (a sampler, not a wait)."""
    while True:
        await action()
        await asyncio.sleep(seconds)
