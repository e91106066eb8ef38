"""What a simulation is run on (the scenario) and what it reports (per-policy results)."""

from __future__ import annotations

from dataclasses import dataclass

from lagscaler.core.engine.sizing import FloatArray
from lagscaler.core.policy.model import ScalingPolicy
from lagscaler.errors import UserError

MAX_SECONDS = 1e9
"""The longest duration a scenario takes (about 32 years): longer than any trace it can replay."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """The simulated consumer group and its surroundings.

    ``capacity_per_replica`` is the *true* rate of one busy replica (the policy's figure is only
    the engine's prior). ``restore_seconds`` is how long a partition that changes owner stays
    unavailable after the rebalance stall while its new owner restores its state (0: stateless).
    ``metric_delay_seconds`` is how old the data is that every policy's HPA acts on.
    ``commit_interval_seconds`` is how often each member commits its offsets (0: the group's
    committed position is its consumed position at every instant): between commits the lag a
    sampler reads is the true lag plus what was consumed since the last commit. ``step_seconds``
    is the resolution of arrivals and of the per-step accounting; pod start-ups, rebalances and
    HPA syncs happen at their exact times inside a step.
    """

    partitions: int
    capacity_per_replica: float
    max_lag_seconds: float
    min_replicas: int = 1
    max_replicas: int = 10
    startup_seconds: float = 30.0
    rebalance_stall_seconds: float = 10.0
    restore_seconds: float = 0.0
    sync_period_seconds: float = 15.0
    metric_delay_seconds: float = 15.0
    step_seconds: float = 5.0
    commit_interval_seconds: float = 0.0

    def __post_init__(self) -> None:
        # A duration beyond MAX_SECONDS is no scenario but an overflow: the history the simulator keeps
        # is sized from the sync period and the metric delay, and 1e300 s sizes it past any integer.
        checks = [
            (self.partitions >= 1, f"partitions must be >= 1, got {self.partitions}"),
            (self.capacity_per_replica > 0, "per-replica capacity must be > 0"),
            (self.max_lag_seconds > 0, "the SLO (maxLagSeconds) must be > 0"),
            (self.max_replicas >= 1, f"max replicas must be >= 1, got {self.max_replicas}"),
            (0 <= self.min_replicas <= self.max_replicas, "min replicas must be in [0, max replicas]"),
            (0 < self.step_seconds <= MAX_SECONDS, f"the step must be > 0 and at most {MAX_SECONDS:g} s"),
            (
                0 < self.sync_period_seconds <= MAX_SECONDS,
                f"the HPA sync period (hpa.syncPeriodSeconds) must be > 0 and at most {MAX_SECONDS:g} s, "
                f"got {self.sync_period_seconds:g}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(f"scenario: {message}")
        for name in (
            "startup_seconds",
            "rebalance_stall_seconds",
            "restore_seconds",
            "metric_delay_seconds",
            "commit_interval_seconds",
        ):
            value = getattr(self, name)
            if not (0 <= value <= MAX_SECONDS):
                raise UserError(f"scenario: {name} must be >= 0 and at most {MAX_SECONDS:g}, got {value}")

    @classmethod
    def from_policy(
        cls,
        policy: ScalingPolicy,
        *,
        partitions: int | None = None,
        capacity_per_replica: float | None = None,
        metric_delay_seconds: float = 15.0,
        step_seconds: float = 5.0,
        commit_interval_seconds: float = 0.0,
    ) -> Scenario:
        """The scenario a policy file describes: its capacity, start-up, stall, restore and HPA period.

        Without ``partitions`` the topic is taken to have ``max_replicas`` partitions. A stateful
        policy must give ``state_bytes`` (a changelog topic's size is only known on a live cluster).
        """
        p = partitions if partitions is not None else policy.max_replicas
        restore = 0.0
        if policy.stateful is not None:
            if policy.stateful.state_bytes is None:
                raise UserError(
                    f"{policy.source or policy.key}: simulating a stateful workload needs "
                    "stateful.stateBytes or --state-bytes (a changelog topic's size is only measured live)"
                )
            restore = policy.stateful.state_bytes / max(p, 1) / policy.stateful.restore_bytes_per_second
        return cls(
            partitions=p,
            capacity_per_replica=capacity_per_replica or policy.capacity.per_replica,
            max_lag_seconds=policy.max_lag_seconds,
            min_replicas=policy.min_replicas,
            max_replicas=policy.max_replicas,
            startup_seconds=policy.startup_seconds,
            rebalance_stall_seconds=policy.rebalance_stall_seconds,
            restore_seconds=restore,
            sync_period_seconds=policy.hpa.sync_period_seconds,
            metric_delay_seconds=metric_delay_seconds,
            step_seconds=step_seconds,
            commit_interval_seconds=commit_interval_seconds,
        )


@dataclass(frozen=True, slots=True)
class PolicyResult:
    """One policy's run over the trace.

    ``slo_violation_fraction`` is the fraction of time the worst partition was more than the SLO
    behind; ``stall_violation_fraction`` is the part of it that the same replica schedule would
    not have had without rebalance stalls and restores (a counterfactual queue run alongside).
    ``stall_seconds`` is time during which at least one partition was stopped by a rebalance or a
    restore (in handover mode: by a cut-over pause). ``cutovers`` counts the handovers of a policy
    run in handover mode (None: mode hpa).
    """

    name: str
    replica_hours: float
    slo_violation_fraction: float
    stall_violation_fraction: float
    max_lag_seconds: float
    p99_lag_seconds: float
    scale_events: int
    stall_seconds: float
    rebalances: int
    cutovers: int | None = None

    def as_json(self) -> dict[str, float | int]:
        """Exactly the documented per-policy keys."""
        return {
            "replica_hours": self.replica_hours,
            "slo_violation_fraction": self.slo_violation_fraction,
            "max_lag_seconds": self.max_lag_seconds,
            "p99_lag_seconds": self.p99_lag_seconds,
            "scale_events": self.scale_events,
            "stall_seconds": self.stall_seconds,
        }

    def details_json(self) -> dict[str, float | int]:
        """What the table adds: the misses stalls and restores caused, and the rebalances."""
        details: dict[str, float | int] = {
            "stall_violation_fraction": self.stall_violation_fraction,
            "rebalances": self.rebalances,
        }
        if self.cutovers is not None:
            details["cutovers"] = self.cutovers
        return details


@dataclass(frozen=True, slots=True)
class SimulationResult:
    """Per-policy results plus the series a report plots, reduced to at most a few thousand buckets.

    Each bucket covers ``bucket_seconds`` (whole simulation steps; one step when the run is short
    enough): ``times`` are the buckets' starts, ``arrival_rate`` and ``replicas`` their means (so
    replica-hours read off the series are the real ones), ``lag_seconds`` the worst lag of any step
    in the bucket (a spike shorter than a bucket stays visible).
    """

    trace: str
    scenario: Scenario
    duration_seconds: float
    fluid_bound_replica_hours: float
    policies: tuple[PolicyResult, ...]
    times: FloatArray
    arrival_rate: FloatArray
    lag_seconds: dict[str, FloatArray]
    replicas: dict[str, FloatArray]
    bucket_seconds: float
    peak_arrival_rate: float  # the highest arrival rate of any step

    def policy(self, name: str) -> PolicyResult:
        for p in self.policies:
            if p.name == name:
                return p
        raise KeyError(name)

    def as_json(self) -> dict[str, object]:
        """``{"policies": {name: {six keys}}}``; the fluid bound, stall-caused misses and the run's facts
        are siblings of ``policies``, so the documented shape stays exact."""
        return {
            "policies": {p.name: p.as_json() for p in self.policies},
            "details": {p.name: p.details_json() for p in self.policies},
            "fluid_bound_replica_hours": self.fluid_bound_replica_hours,
            "trace": self.trace,
            "duration_hours": self.duration_seconds / 3600.0,
        }
