"""The typed model of a ``ScalingPolicy`` file (``apiVersion: lagscaler.io/v1``).

One policy per workload. The YAML uses Kubernetes-style camelCase keys; this model uses the same
names in snake_case. Every field has a default a user of this kind of tool would expect, so a
minimal policy names only the workload, its consumer group and its SLO. Units are in the names:
``*_seconds``, ``*_per_second`` (messages per second unless the name says bytes).

This module is the contract between the policy loader (which validates files against the JSON
Schema and builds these objects) and the engine, the simulator and the service (which read them).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Mode(enum.StrEnum):
    """How a decision reaches the workload."""

    HPA = "hpa"  # lagscaler serves a metric; a stock HPA scales the Deployment
    HANDOVER = "handover"  # lagscaler starts a new generation in its own group and cuts over (no rebalance)


class StaleAction(enum.StrEnum):
    """What to serve when the newest sample is older than ``Fallback.max_age_seconds``."""

    ERROR = "error"  # answer 503: the HPA freezes at the current replica count
    REPLICAS = "replicas"  # serve a value that drives the HPA to ``Fallback.replicas``
    HOLD = "hold"  # keep serving the last decision (marked stale)


@dataclass(frozen=True, slots=True)
class ScaleTargetRef:
    """The object the HPA scales (as in ``HorizontalPodAutoscaler.spec.scaleTargetRef``)."""

    name: str
    kind: str = "Deployment"
    api_version: str = "apps/v1"


@dataclass(frozen=True, slots=True)
class KafkaSource:
    """Where the workload's lag comes from. No topics means every topic the group commits on."""

    group: str
    topics: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Capacity:
    """How many messages per second one replica processes when it is busy (the *true* rate).

    With ``learn`` the engine estimates it online from the consume rate while the group is
    backlogged (DS2) and starts from ``per_replica`` as a prior worth ``prior_weight_seconds`` of
    observation; without it ``per_replica`` is taken as fact.
    """

    per_replica: float
    learn: bool = True
    prior_weight_seconds: float = 300.0


@dataclass(frozen=True, slots=True)
class Smoothing:
    """EWMA/Holt smoothing of the arrival rate and how far ahead to forecast.

    ``seasonal_period_seconds`` enables a seasonal forecast (e.g. 86400 for daily traffic) which may
    only raise the replica floor, never lower it.
    """

    half_life_seconds: float = 60.0
    trend: bool = True
    trend_half_life_seconds: float = 300.0
    forecast_horizon_seconds: float = 120.0
    seasonal_period_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class ScaleUp:
    """Scale up early and fast: how far one step may go and how soon the next may follow."""

    stabilization_seconds: float = 0.0
    max_step_percent: float = 100.0
    max_step_replicas: int = 8


@dataclass(frozen=True, slots=True)
class ScaleDown:
    """Scale down late and slowly: only when it pays for its rebalance, after a dwell time."""

    stabilization_seconds: float = 300.0
    max_step_percent: float = 50.0
    max_step_replicas: int = 4
    payback_horizon_seconds: float = 3600.0


@dataclass(frozen=True, slots=True)
class Stateful:
    """The price of moving partitions of a stateful consumer: restoring their state from a changelog.

    Give ``state_bytes`` (total state of the workload, spread evenly over its partitions) with
    ``restore_bytes_per_second``, or name the ``changelog_topic`` whose size the sampler measures.
    """

    restore_bytes_per_second: float
    state_bytes: float | None = None
    changelog_topic: str | None = None
    standby_replicas: int = 0


@dataclass(frozen=True, slots=True)
class Fallback:
    """What to serve when data is stale (the sampler cannot reach Kafka)."""

    max_age_seconds: float = 60.0
    action: StaleAction = StaleAction.ERROR
    replicas: int | None = None


@dataclass(frozen=True, slots=True)
class Hpa:
    """What we know of the HPA that acts on the served metric; used to design the metric and the manifest."""

    sync_period_seconds: float = 15.0
    tolerance: float = 0.1
    configurable_tolerance: bool = False  # the cluster has HPAConfigurableTolerance (1.33+) enabled


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    """One workload's scaling policy."""

    name: str
    namespace: str
    target: ScaleTargetRef
    kafka: KafkaSource
    max_lag_seconds: float  # the SLO
    capacity: Capacity
    mode: Mode = Mode.HPA
    min_replicas: int = 1
    max_replicas: int = 10
    target_utilization: float = 0.7
    slo_objective: float = 0.99  # fraction of time lag must stay within max_lag_seconds (the error budget)
    smoothing: Smoothing = field(default_factory=Smoothing)
    scale_up: ScaleUp = field(default_factory=ScaleUp)
    scale_down: ScaleDown = field(default_factory=ScaleDown)
    startup_seconds: float = 30.0  # pod start until it consumes
    rebalance_stall_seconds: float = 10.0  # whole-group stop on each membership change
    stateful: Stateful | None = None
    fallback: Fallback = field(default_factory=Fallback)
    hpa: Hpa = field(default_factory=Hpa)
    source: str | None = None  # the file it was loaded from, for messages

    @property
    def key(self) -> str:
        """``namespace/name``: unique across loaded policies."""
        return f"{self.namespace}/{self.name}"
