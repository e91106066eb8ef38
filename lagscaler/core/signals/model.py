"""What one sample of a consumer group is.

These types are the contract between the sampler (which fills them from Kafka) and everything
downstream: the ``lagscaler lag`` report, the engine, the API cache. They are plain frozen
dataclasses so that the pure core can take them without knowing where they came from.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class PartitionStatus(enum.StrEnum):
    """Health of one partition's consumption, after Burrow's evaluation rules.

    The distinction that matters for scaling: ``STALL`` and ``STOP`` mean the consumer of that
    partition is stuck (a poison message, a dead member), not short of capacity, so adding
    replicas will not help and such partitions must not drive a scale-out.
    """

    OK = "OK"
    WARN = "WARN"  # lag has not decreased over the window: falling behind
    STALL = "STALL"  # committing, but always the same offset while lag > 0
    STOP = "STOP"  # no commit for longer than the window while the log moved on
    REWIND = "REWIND"  # committed offset went backwards (a reset or a replay)
    UNKNOWN = "UNKNOWN"  # not enough history to say

    @property
    def stuck(self) -> bool:
        """True when more replicas would not help this partition."""
        return self in (PartitionStatus.STALL, PartitionStatus.STOP)


@dataclass(frozen=True, slots=True)
class PartitionSample:
    """One partition of one group at one instant.

    ``committed`` is ``None`` when the group has never committed on the partition; ``lag`` is then
    ``None`` too (the sampler does not guess what ``auto.offset.reset`` would do). Rates are
    messages per second over the last sample interval and are ``None`` until two samples exist.
    ``lag_seconds`` is how far behind the newest message the committed offset is, in time; when the
    committed offset is older than the sampler's history, ``lag_seconds`` is a lower bound and
    ``lag_seconds_lower_bound`` says so. A commit below the log start (retention deleted records the
    group never read) counts ``lag`` and ``lag_seconds`` from the log start, where the consumer will
    resume at the earliest; ``committed`` stays the group's own offset. ``owner`` is the member id of
    the group member the partition is assigned to (``None``: nobody holds it);
    ``owner_client_id``/``owner_host`` are that member's client id and host, as
    ``kafka-consumer-groups --describe`` shows them.
    """

    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int | None
    lag_seconds: float | None = None
    lag_seconds_lower_bound: bool = False
    produce_rate: float | None = None
    consume_rate: float | None = None
    status: PartitionStatus = PartitionStatus.UNKNOWN
    owner: str | None = None
    owner_client_id: str | None = None
    owner_host: str | None = None


@dataclass(frozen=True, slots=True)
class GroupSample:
    """One consumer group at one instant: its state, members and partitions.

    ``sampled_at`` is wall-clock Unix time in seconds. ``stale`` is set when the last cycle failed
    and this is the previous good sample kept in its place; ``error`` then names the failure.
    ``found`` is false for a group Kafka does not know (never existed, or deleted): such a sample has
    no partitions. ``warnings`` name partial problems of a good sample (e.g. a partition whose end
    offset could not be read this cycle and is therefore left out).
    """

    group: str
    state: str
    members: int
    sampled_at: float
    partitions: tuple[PartitionSample, ...] = ()
    stale: bool = False
    error: str | None = None
    found: bool = True
    warnings: tuple[str, ...] = ()

    @property
    def total_lag(self) -> int:
        """Sum of lag over partitions that have a committed offset (``None`` counts as 0)."""
        return sum(p.lag for p in self.partitions if p.lag is not None)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The result of one sample cycle over all configured groups.

    ``duration`` is how long the cycle took (seconds); ``requests`` counts the Kafka requests it
    sent, by API name — what the "cheap at hundreds of groups" claim is measured with.
    """

    sampled_at: float
    groups: tuple[GroupSample, ...] = field(default_factory=tuple)
    stale: bool = False
    error: str | None = None
    duration: float | None = None
    requests: tuple[tuple[str, int], ...] = ()

    def group(self, name: str) -> GroupSample | None:
        """The named group's sample, or ``None`` when it was not sampled."""
        for g in self.groups:
            if g.group == name:
                return g
        return None
