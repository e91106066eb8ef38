"""What the sampler samples and how often: a typed, validated value free of CLI concerns."""

from __future__ import annotations

from dataclasses import dataclass, field

from lagscaler.core.signals.status import StatusRules
from lagscaler.errors import UserError

MAX_HISTORY = 10_000
"""Most samples kept per partition. The rings are allocated per group partition up front (three
8-byte numbers a sample), so ``--history`` sets memory before any sample arrives: 10,000 is
28 hours at the default 10 s interval and about 240 MB for 1,000 partitions."""


class SamplerConfigError(UserError):
    """The sampler settings are contradictory or out of range."""


@dataclass(frozen=True)
class SamplerSettings:
    """Which groups to sample, how often, how much history to keep, and the limits of one cycle.

    Either ``groups`` names the groups, or ``all_groups`` samples every consumer group the cluster
    lists (re-listed every ``discovery_interval`` seconds). ``topics``, when given, restricts the
    sample to partitions of those topics (and, with ``all_groups``, to groups that read them).
    ``history`` is the number of samples kept per partition: it bounds memory and is how far back
    lag in seconds can see (``history × interval`` seconds). ``cycle_timeout`` bounds one whole
    cycle; ``concurrency`` bounds Kafka requests in flight. Partition layout (Metadata) is reused for
    ``metadata_interval`` seconds — like a Kafka client's ``metadata.max.age.ms`` — and fetched at once
    when a group touches a topic or partition the cached layout does not know, or a partition's end
    offset could not be read; so a partition added to a topic shows up within that interval, or as
    soon as a member is assigned it. Log start offsets (to clamp commits retention has overtaken)
    are asked every ``log_start_interval`` seconds, and at once for a partition not seen before.
    """

    groups: tuple[str, ...] = ()
    all_groups: bool = False
    topics: tuple[str, ...] = ()
    interval: float = 5.0
    history: int = 120
    status: StatusRules = field(default_factory=StatusRules)
    cycle_timeout: float = 30.0
    concurrency: int = 8
    discovery_interval: float = 30.0
    metadata_interval: float = 30.0
    log_start_interval: float = 60.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple(dict.fromkeys(self.groups)))
        object.__setattr__(self, "topics", tuple(dict.fromkeys(self.topics)))
        if self.all_groups and self.groups:
            raise SamplerConfigError("give either group names or all groups, not both")
        if not self.all_groups and not self.groups:
            raise SamplerConfigError("no consumer group to sample: name at least one group, or all groups")
        if any(not g for g in self.groups) or any(not t for t in self.topics):
            raise SamplerConfigError("group and topic names must not be empty")
        if not self.interval > 0:
            raise SamplerConfigError(f"sample interval must be positive, got {self.interval}")
        if self.history < max(2, self.status.window):
            raise SamplerConfigError(
                f"history must keep at least {max(2, self.status.window)} samples, got {self.history}"
            )
        if self.history > MAX_HISTORY:
            raise SamplerConfigError(f"history must keep at most {MAX_HISTORY} samples, got {self.history}")
        if not self.cycle_timeout > 0:
            raise SamplerConfigError(f"cycle timeout must be positive, got {self.cycle_timeout}")
        if self.concurrency < 1:
            raise SamplerConfigError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.discovery_interval < 0 or self.metadata_interval < 0 or self.log_start_interval < 0:
            raise SamplerConfigError("discovery, metadata and log start intervals must not be negative")
