"""The lag sampler: one cheap cycle of Kafka requests → one :class:`~lagscaler.core.signals.Snapshot`.

A cycle, for the configured groups (or every consumer group the cluster lists):

1. coordinators of the groups (cached; one batched FindCoordinator for the unknown ones);
2. per coordinator, concurrently: one DescribeGroups (state, members, assignments) and one
   OffsetFetch (committed offsets of all the groups it coordinates);
3. one Metadata request for the topics those groups commit on or are assigned;
4. one ListOffsets per partition leader for the high watermarks and, every ``log_start_interval``
   seconds (and for partitions not seen before), a second one, sent at the same time, for the log
   start offsets: a commit below the log start points at records retention deleted before the group
   read them, and lag counts from the log start instead (see :meth:`SignalTracker.update`);
5. the pure :class:`~lagscaler.core.signals.tracker.SignalTracker` turns the numbers into lag, rates,
   lag in seconds and status, with bounded history.

Every partition of every topic a group has touched is reported, including partitions without a
commit (``committed: None``): a partition just added to a topic shows up at once, before any
member is assigned it, instead of hiding until someone commits.

Failure is visible and harmless: when a cycle cannot reach Kafka, :meth:`Sampler.sample` raises
:class:`SampleFailed` (one line), the failure is counted and logged, and :attr:`Sampler.latest`
keeps the previous snapshot marked ``stale`` with the error — nothing crashes, and the next cycle
tries again. A group whose coordinator alone does not answer is kept stale on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import TracebackType

import numpy as np

from lagscaler.core.signals.model import GroupSample, PartitionSample, Snapshot
from lagscaler.core.signals.status import STATUS_ORDER
from lagscaler.core.signals.tracker import NO_COMMIT, GroupPartition, Signals, SignalTracker, TrackerSettings
from lagscaler.edges.kafka import (
    ClusterLayout,
    CommittedOffsets,
    EndOffsets,
    GroupDescription,
    GroupMember,
    KafkaAdmin,
    KafkaError,
    KafkaSettings,
    RequestStats,
    TopicPartition,
)
from lagscaler.edges.sampler.settings import SamplerSettings
from lagscaler.logs import get_logger

log = get_logger("lagscaler.edges.sampler")


class SampleFailed(KafkaError):
    """A sample cycle failed (Kafka unreachable, timed out, refused); the previous snapshot is kept, stale."""


@dataclass(frozen=True)
class GroupState:
    """What one cycle learned about one group, before signals are derived."""

    name: str
    description: GroupDescription | None
    committed: CommittedOffsets | None
    listed_state: str | None = None

    @property
    def found(self) -> bool:
        has_offsets = self.committed is not None and bool(self.committed.offsets)
        return has_offsets or (self.description is not None and self.description.found)

    @property
    def state(self) -> str:
        if self.description is not None and self.description.found:
            return self.description.state
        if self.found:
            return self.listed_state or "Unknown"  # e.g. a KIP-848 group DescribeGroups does not describe
        return "Dead"

    def topics(self, only: Sequence[str]) -> set[str]:
        touched = {t for t, _ in self.committed.offsets} if self.committed else set()
        if self.description is not None:
            touched |= {t for m in self.description.members for t, _ in m.assignment}
        return touched & set(only) if only else touched


class Sampler:
    """Samples consumer-group lag from one Kafka cluster; an async context manager with explicit lifetime.

    ``async with Sampler(kafka, settings) as sampler:`` creates the Kafka client (connecting lazily,
    so a sampler can start while Kafka is down); leaving the block closes it and stops nothing else
    — :meth:`run` is the caller's task to cancel.
    """

    def __init__(self, kafka: KafkaSettings, settings: SamplerSettings) -> None:
        self.kafka = kafka
        self.settings = settings
        self.stats = RequestStats()
        self.failures = 0
        self.cycles = 0
        self.latest: Snapshot | None = None
        self._tracker = SignalTracker(TrackerSettings(history=settings.history, status=settings.status))
        self._admin: KafkaAdmin | None = None
        self._listed: dict[str, str | None] = {}
        self._listed_at = -math.inf
        self._layout: ClusterLayout | None = None
        self._layout_for: frozenset[str] = frozenset()
        self._layout_at = -math.inf
        self._starts: dict[TopicPartition, int] = {}
        self._starts_at = -math.inf

    # -- lifetime ------------------------------------------------------------------------------

    async def __aenter__(self) -> Sampler:
        self._admin = KafkaAdmin(self.kafka, concurrency=self.settings.concurrency, stats=self.stats)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            await admin.close()

    @property
    def admin(self) -> KafkaAdmin:
        if self._admin is None:
            raise RuntimeError("use the sampler as `async with Sampler(...) as sampler:`")
        return self._admin

    # -- cycles --------------------------------------------------------------------------------

    async def sample(self) -> Snapshot:
        """Run one cycle. Raises :class:`SampleFailed` (after marking :attr:`latest` stale) on failure."""
        admin = self.admin
        started = time.monotonic()
        before = self.stats.snapshot()
        try:
            async with asyncio.timeout(self.settings.cycle_timeout):
                if not admin.started:
                    await admin.start()
                snapshot = await self._cycle(admin)
        except (KafkaError, TimeoutError, OSError) as exc:
            message = str(exc)
            if isinstance(exc, TimeoutError):
                message = f"sample cycle did not finish within {self.settings.cycle_timeout:g}s"
            self._failed(message)
            raise SampleFailed(message) from exc
        self.cycles += 1
        snapshot = replace(
            snapshot,
            duration=time.monotonic() - started,
            requests=tuple(sorted(self.stats.since(before).items())),
        )
        self.latest = snapshot
        return snapshot

    def _failed(self, message: str) -> None:
        self.failures += 1
        log.warning("sample cycle failed", error=message, failures=self.failures)
        previous = self.latest
        if previous is None:
            self.latest = Snapshot(sampled_at=time.time(), stale=True, error=message)
        else:
            self.latest = replace(
                previous,
                stale=True,
                error=message,
                groups=tuple(replace(g, stale=True, error=message) for g in previous.groups),
            )

    async def run(
        self, interval: float | None = None, on_snapshot: Callable[[Snapshot], None] | None = None
    ) -> None:
        """Sample every ``interval`` seconds (default: the settings') until cancelled.

        ``on_snapshot`` gets every result, fresh or stale. A failed cycle is logged and counted and
        never ends the loop.
        """
        period = self.settings.interval if interval is None else interval
        while True:
            started = time.monotonic()
            with contextlib.suppress(SampleFailed):
                await self.sample()
            if on_snapshot is not None and self.latest is not None:
                on_snapshot(self.latest)
            await asyncio.sleep(max(0.0, period - (time.monotonic() - started)))

    async def _group_names(self, admin: KafkaAdmin) -> list[str]:
        if not self.settings.all_groups:
            return list(self.settings.groups)
        now = time.monotonic()
        if now - self._listed_at >= self.settings.discovery_interval:
            listed = await admin.list_groups()
            self._listed = {g.group_id: g.state for g in listed if g.is_consumer_group}
            self._listed_at = now
        return sorted(self._listed)

    async def _cycle(self, admin: KafkaAdmin) -> Snapshot:
        names = await self._group_names(admin)
        if names:
            await admin.find_coordinators(names)  # one batched lookup for any group not cached yet
        described, committed = await asyncio.gather(
            admin.describe_groups(names), admin.fetch_committed(names)
        )
        errors = {**described.errors, **committed.errors}
        states = [
            GroupState(n, described.values.get(n), committed.values.get(n), self._listed.get(n))
            for n in names
            if n not in errors
        ]
        if self.settings.all_groups and self.settings.topics:
            states = [s for s in states if s.topics(self.settings.topics)]
        topics = set().union(*(s.topics(self.settings.topics) for s in states)) if states else set()
        layout = await self._current_layout(admin, topics, states)
        wanted = list(layout.partitions(sorted(topics)))
        ends = await self._offsets(admin, wanted, layout) if wanted else None
        if ends is not None and (ends.missing or ends.errors):
            self._layout_at = -math.inf  # something moved or went away: fresh metadata next cycle
            self._starts_at = -math.inf  # and fresh log starts (a recreated topic starts at 0 again)
        now_wall, now = time.time(), time.monotonic()

        end_offsets = ends.offsets if ends else {}
        unreadable = ends.errors if ends else {}
        rows = _rows(states, layout, end_offsets, self._starts, self.settings.topics)
        signals = self._tracker.update(
            rows.keys,
            rows.committed,
            rows.end,
            rows.owned,
            now,
            keep=self._kept_keys(errors),
            start=rows.start,
        )
        groups = _group_samples(
            states, rows, signals, sampled_at=now_wall, layout=layout, unreadable=unreadable
        )
        for name in names:
            if name in errors:
                groups[name] = self._stale_group(name, errors[name], now_wall)
        ordered = tuple(groups[n] for n in names if n in groups)
        return Snapshot(sampled_at=now_wall, groups=ordered)

    async def _offsets(
        self, admin: KafkaAdmin, wanted: list[TopicPartition], layout: ClusterLayout
    ) -> EndOffsets:
        """End offsets of ``wanted``; and, when due, their log start offsets into ``self._starts``.

        Log starts move only when retention deletes a segment (checked every 5 minutes by default,
        ``log.retention.check.interval.ms``) or DeleteRecords runs, so they are asked every
        ``log_start_interval`` seconds, and at once for partitions not asked before. A start a
        little old is at most the lag retention removed since: it only makes lag less clamped. The
        two ListOffsets go out together, so a cycle that asks both costs no extra round trip.
        """
        now = time.monotonic()
        if now - self._starts_at >= self.settings.log_start_interval:
            due, refresh = wanted, True
        else:
            due, refresh = [tp for tp in wanted if tp not in self._starts], False
        if not due:
            return await admin.list_end_offsets(wanted, layout)
        ends, starts = await asyncio.gather(
            admin.list_end_offsets(wanted, layout),
            admin.list_start_offsets(due, layout),
            return_exceptions=True,
        )
        if isinstance(ends, BaseException):
            raise ends
        if isinstance(starts, KafkaError):
            # Log starts only refine lag: their leaders not answering must not cost the cycle what the
            # end offsets already gave. Asked again next cycle; until then, lag is not clamped.
            log.info("log start offsets unavailable this cycle", error=str(starts))
            return ends
        if isinstance(starts, BaseException):
            raise starts
        # A start the broker did not give (an error, a partition gone) stays unknown — no clamp — until the
        # next refresh, rather than costing a second ListOffsets on every cycle.
        answered = {tp: starts.offsets.get(tp, NO_COMMIT) for tp in due}
        if refresh:
            self._starts, self._starts_at = answered, now
        else:
            self._starts.update(answered)
        return ends

    async def _current_layout(
        self, admin: KafkaAdmin, topics: set[str], states: Sequence[GroupState]
    ) -> ClusterLayout:
        """The cached partition layout, or a fresh one when it is old or does not cover what groups touch."""
        if not topics:
            return ClusterLayout({}, {})
        layout = self._layout
        fresh = time.monotonic() - self._layout_at < self.settings.metadata_interval
        if (
            layout is not None
            and fresh
            and topics <= self._layout_for
            and not _unknown_partitions(states, layout)
        ):
            return layout
        layout = await admin.metadata(topics)
        self._layout, self._layout_for, self._layout_at = layout, frozenset(topics), time.monotonic()
        return layout

    def _kept_keys(self, errors: Mapping[str, str]) -> list[GroupPartition]:
        """History to keep for groups that could not be sampled this cycle (from the last snapshot)."""
        if not errors or self.latest is None:
            return []
        return [
            (g.group, p.topic, p.partition)
            for g in self.latest.groups
            if g.group in errors
            for p in g.partitions
        ]

    def _stale_group(self, name: str, error: str, now_wall: float) -> GroupSample:
        log.warning("group not sampled this cycle", group=name, error=error)
        previous = self.latest.group(name) if self.latest is not None else None
        if previous is not None:
            return replace(previous, stale=True, error=error)
        return GroupSample(
            group=name, state="Unknown", members=0, sampled_at=now_wall, stale=True, error=error
        )


def _unknown_partitions(states: Sequence[GroupState], layout: ClusterLayout) -> bool:
    """Does any group commit on, or hold, a partition the layout does not list (it grew since)?"""
    for state in states:
        touched = list(state.committed.offsets) if state.committed else []
        if state.description is not None:
            touched += [tp for m in state.description.members for tp in m.assignment]
        for topic, partition in touched:
            known = layout.topics.get(topic)
            if known is not None and partition not in known:
                return True
    return False


@dataclass(frozen=True)
class _Rows:
    """One cycle's group partitions, flattened into aligned arrays for the tracker."""

    keys: list[GroupPartition]
    committed: np.ndarray
    end: np.ndarray
    owners: list[GroupMember | None]
    start: np.ndarray  # log start offsets, NO_COMMIT where not known

    @property
    def owned(self) -> np.ndarray:
        return np.asarray([o is not None for o in self.owners], dtype=np.bool_)


def _rows(
    states: Sequence[GroupState],
    layout: ClusterLayout,
    ends: Mapping[TopicPartition, int],
    starts: Mapping[TopicPartition, int],
    only_topics: Sequence[str],
) -> _Rows:
    """Flatten groups × partitions (partitions without an end offset this cycle are left out)."""
    keys: list[GroupPartition] = []
    committed: list[int] = []
    end: list[int] = []
    start: list[int] = []
    owners: list[GroupMember | None] = []
    for state in states:
        offsets = state.committed.offsets if state.committed else {}
        held = state.description.owners() if state.description else {}
        for topic in sorted(state.topics(only_topics)):
            for partition in sorted(layout.topics.get(topic, ())):
                tp = (topic, partition)
                if tp not in ends:
                    continue
                keys.append((state.name, topic, partition))
                committed.append(offsets.get(tp, NO_COMMIT))
                end.append(ends[tp])
                start.append(starts.get(tp, NO_COMMIT))
                owners.append(held.get(tp))
    return _Rows(
        keys,
        np.asarray(committed, dtype=np.int64),
        np.asarray(end, dtype=np.int64),
        owners,
        np.asarray(start, dtype=np.int64),
    )


def _number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _group_samples(
    states: Sequence[GroupState],
    rows: _Rows,
    signals: Signals,
    *,
    sampled_at: float,
    layout: ClusterLayout,
    unreadable: Mapping[TopicPartition, str],
) -> dict[str, GroupSample]:
    partitions: dict[str, list[PartitionSample]] = {s.name: [] for s in states}
    lag = signals.lag.tolist()
    produce = signals.produce_rate.tolist()
    consume = signals.consume_rate.tolist()
    seconds = signals.lag_seconds.tolist()
    lower = signals.lag_seconds_lower_bound.tolist()
    status = signals.status.tolist()
    committed_list = rows.committed.tolist()
    end_list = rows.end.tolist()
    start_list = rows.start.tolist()
    deleted: dict[str, list[str]] = {s.name: [] for s in states}
    for i, (group, topic, partition) in enumerate(rows.keys):
        owner = rows.owners[i]
        has_commit = committed_list[i] != NO_COMMIT
        if has_commit and committed_list[i] < start_list[i] <= end_list[i]:
            deleted[group].append(f"{topic}-{partition}")
        partitions[group].append(
            PartitionSample(
                topic=topic,
                partition=partition,
                committed=committed_list[i] if has_commit else None,
                end=end_list[i],
                lag=int(lag[i]) if has_commit else None,
                lag_seconds=_number(seconds[i]),
                lag_seconds_lower_bound=bool(lower[i]),
                produce_rate=_number(produce[i]),
                consume_rate=_number(consume[i]),
                status=STATUS_ORDER[status[i]],
                owner=owner.member_id if owner else None,
                owner_client_id=owner.client_id if owner else None,
                owner_host=owner.client_host if owner else None,
            )
        )
    out: dict[str, GroupSample] = {}
    for state in states:
        warnings: list[str] = []
        for topic in sorted(state.topics(())):
            if topic in layout.missing:
                warnings.append(f"topic {topic} no longer exists; its committed offsets are not reported")
        for (topic, partition), reason in sorted(unreadable.items()):
            if topic in state.topics(()):
                warnings.append(
                    f"end offset of {topic}-{partition} unavailable ({reason}); partition left out"
                )
        if deleted[state.name]:
            below = deleted[state.name]
            shown = ", ".join(below[:5]) + (f" and {len(below) - 5} more" if len(below) > 5 else "")
            warnings.append(
                f"committed offset below the log start on {shown}: those records were deleted "
                "(retention or delete-records) before this group read them; lag counts from the log start"
            )
        out[state.name] = GroupSample(
            group=state.name,
            state=state.state,
            members=len(state.description.members) if state.description else 0,
            sampled_at=sampled_at,
            partitions=tuple(partitions[state.name]),
            found=state.found,
            warnings=tuple(warnings),
        )
    return out
