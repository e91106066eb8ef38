"""The typed model of a ``ScalingPolicy`` file (``apiVersion: lagscaler.io/v1``): the one definition.

Everything else about policy files is generated from the classes below: the JSON Schema that
``lagscaler policy schema`` prints (:func:`lagscaler.core.policy.schema.policy_schema`), validation and
its messages (:mod:`lagscaler.core.policy.loader` hands each file to pydantic), the defaults, and the
reference in ``docs/policy-reference.md`` (``lagscaler policy reference``). To add a field, add one
annotated attribute with a default and a docstring to the right class; the schema, the loader and
the docs follow, and ``tests/test_policy_loader.py`` checks that the docs were regenerated.

One policy per workload. The YAML uses Kubernetes-style camelCase keys; the classes use the same
names in snake_case (pydantic's ``to_camel`` maps them). Every field has a default a user of this
kind of tool would expect, so a minimal policy names only the workload, its consumer group and its
SLO. Units are in the names: ``*_seconds``, ``*_per_second`` (messages per second unless the name
says bytes).

The classes are plain frozen dataclasses, so the engine, the simulator and the tests build and
``dataclasses.replace`` them freely; only a file goes through validation. The validators accept
exactly JSON's types (``"5"`` is not a number and ``1`` is not ``true``), because a policy that
means something other than what it says is worse than one that is refused.
"""

from __future__ import annotations

import enum
import json
import re
import sys
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, WithJsonSchema, with_config
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from lagscaler.core.quantity import parse_quantity

__all__ = [
    "API_VERSION",
    "KIND",
    "Capacity",
    "Fallback",
    "Hpa",
    "KafkaSource",
    "Metadata",
    "Mode",
    "PolicyFile",
    "PolicySpec",
    "ScaleDown",
    "ScaleTargetRef",
    "ScaleUp",
    "ScalingPolicy",
    "Smoothing",
    "StaleAction",
    "Stateful",
    "describe",
]

API_VERSION = "lagscaler.io/v1"
KIND = "ScalingPolicy"

# Every class of a policy file: camelCase keys, unknown keys refused, attribute docstrings as the
# field descriptions of the schema and the docs.
_FILE = ConfigDict(alias_generator=to_camel, extra="forbid", use_attribute_docstrings=True)


# --- JSON's own types, without coercion ---------------------------------------------------------

_SHOWN = 60  # characters of a value a message quotes: enough to recognise it, never a flood


def describe(value: Any) -> str:
    """A value from a file as a message shows it: ``"many" (a string)``, ``2.5 (a number)``, ``a list``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        if len(value) > _SHOWN:
            return f'{json.dumps(value[:_SHOWN])[:-1]}…" (a string of {len(value)} characters)'
        return f"{json.dumps(value)} (a string)"
    return f"{value!r} (a number)"


def _refuse(expected: str, value: Any) -> PydanticCustomError:
    return PydanticCustomError(
        "json_type", "expected {expected}, got {got}", {"expected": expected, "got": describe(value)}
    )


def _finite(value: Any) -> Any:
    """An integer past the float range is refused as such (pydantic says only "a valid number")."""
    if isinstance(value, int) and abs(value) > sys.float_info.max:
        digits = len(str(abs(value)))
        raise PydanticCustomError(
            "finite_number", "must be a finite number, got a {digits}-digit number", {"digits": digits}
        )
    return value


def _number(value: Any, expected: str = "a number") -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _refuse(expected, value)
    return _finite(value)


def _number_or_null(value: Any) -> Any:
    return None if value is None else _number(value, "a number or null")


def _integer(value: Any) -> Any:
    # JSON Schema's "integer": 3 and 3.0, not 2.5, not true
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _refuse("an integer", value)
    return value


def _boolean(value: Any) -> Any:
    if not isinstance(value, bool):
        raise _refuse("true or false", value)
    return value


def _unique(items: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(items)) != len(items):
        raise PydanticCustomError("unique_items", "must not list the same item twice")
    return items


INT32_MAX = 2**31 - 1
"""Largest replica count: Kubernetes keeps replicas in 32 bits (``HorizontalPodAutoscalerSpec``'s
``MaxReplicas`` and ``ScaleSpec``'s ``Replicas`` are ``int32`` in ``k8s.io/api``), and the engine's
arrays in 64; a larger number is a typo, never a plan."""

MAX_SECONDS = 366 * 24 * 3600
"""Longest duration any policy field takes: a (leap) year. Every duration in a policy — an SLO, a
window, a half-life, a period, a start-up — is seconds to hours in practice; 1e300 s is a typo or a
unit mistake, and the engine and simulator turn such spans into step counts and buffer sizes."""

MAX_RATE = 1e9
"""Largest per-replica rate, in messages per second: far past what one consumer (or one Kafka broker)
sustains."""

MAX_BYTES = 2**63
"""Largest size or byte rate: 8 EiB, where Kubernetes quantities and Kafka's sizes (64-bit integers)
end. A power of two, so a float compares with it exactly."""

NUMBER = BeforeValidator(_number)
INTEGER = BeforeValidator(_integer)
BOOLEAN = BeforeValidator(_boolean)

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# What a pattern means, for messages (a regular expression is not an explanation).
PATTERN_MEANINGS: dict[str, str] = {
    DNS_LABEL: "a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter"
    " or digit, at most 63 characters",
}
DnsLabel = Annotated[str, Field(max_length=63, pattern=DNS_LABEL)]
KafkaName = Annotated[str, Field(min_length=1, max_length=249)]  # topic and group names (Kafka's limit)
Name = Annotated[str, Field(min_length=1)]

# Sizes: a number of bytes, or a quantity with a decimal or binary suffix (read by lagscaler.core.quantity).
BYTES_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
_BYTES_MEANING = "a number of bytes or a quantity such as 512, 1.5Gi, 200G or 50Mi"
_BYTES_TEXT = re.compile(BYTES_PATTERN)


def _bytes(value: Any) -> Any:
    if isinstance(value, str) and _BYTES_TEXT.match(value):
        return float(parse_quantity(value))
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _refuse(_BYTES_MEANING, value)
    if isinstance(value, str):
        raise PydanticCustomError(
            "bytes", "must be {meaning}; got {got}", {"meaning": _BYTES_MEANING, "got": describe(value)}
        )
    return _finite(value)


def _bytes_schema(bound: dict[str, float]) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "type": ["number", "string"],
            **bound,
            "pattern": BYTES_PATTERN,
            "description": f"A size: {_BYTES_MEANING}.",
        }
    )


Bytes = Annotated[
    float,
    Field(ge=0, le=MAX_BYTES),
    BeforeValidator(_bytes),
    _bytes_schema({"minimum": 0, "maximum": MAX_BYTES}),
]
PositiveBytes = Annotated[
    float,
    Field(gt=0, le=MAX_BYTES),
    BeforeValidator(_bytes),
    _bytes_schema({"exclusiveMinimum": 0, "maximum": MAX_BYTES}),
]


# --- the model ------------------------------------------------------------------------------------


class Mode(enum.StrEnum):
    """How a decision reaches the workload."""

    HPA = "hpa"  # lagscaler serves a metric; a stock HPA scales the Deployment
    HANDOVER = "handover"  # lagscaler runs each size as a new generation in its own group (docs/handover.md)


class StaleAction(enum.StrEnum):
    """What to serve when the newest sample is older than ``Fallback.max_age_seconds``."""

    ERROR = "error"  # answer 503: the HPA freezes at the current replica count
    REPLICAS = "replicas"  # serve a value that drives the HPA to ``Fallback.replicas``
    HOLD = "hold"  # keep serving the last decision (marked stale)


@with_config(_FILE)
@dataclass(frozen=True, slots=True)
class ScaleTargetRef:
    """The object whose replica count lagscaler decides (as in an HPA's spec.scaleTargetRef)."""

    name: Name
    """Name of the scale target."""
    kind: Name = "Deployment"
    """Kind of the scale target."""
    api_version: Name = "apps/v1"
    """API version of the scale target."""


@with_config(_FILE)
@dataclass(frozen=True, slots=True)
class KafkaSource:
    """Where the workload's lag comes from."""

    group: KafkaName
    """The Kafka consumer group the workload's replicas join."""
    topics: Annotated[
        tuple[KafkaName, ...], AfterValidator(_unique), Field(json_schema_extra={"uniqueItems": True})
    ] = ()
    """Topics whose lag counts. Empty or absent: every topic the group has committed offsets on."""


@with_config(_FILE)
@dataclass(frozen=True, slots=True)
class Capacity:
    """What one replica can process."""

    per_replica: Annotated[float, Field(gt=0, le=MAX_RATE), NUMBER]
    """Messages per second one replica processes when it is busy (its true rate, not its observed
    throughput)."""
    learn: Annotated[bool, BOOLEAN] = True
    """Estimate the true rate online from the consume rate while the group is backlogged (DS2),
    starting from perReplica; false takes perReplica as fact."""
    prior_weight_seconds: Annotated[float, Field(ge=0, le=MAX_SECONDS), NUMBER] = 300.0
    """How many seconds of backlogged observation perReplica is worth against what is measured."""


@with_config(_FILE)
@dataclass(frozen=True, slots=True)
class Smoothing:
    """Smoothing and forecasting of the arrival rate."""

    half_life_seconds: Annotated[float, Field(gt=0, le=MAX_SECONDS), NUMBER] = 60.0
    """Half-life of the exponentially weighted arrival rate."""
    trend: Annotated[bool, BOOLEAN] = True
    """Follow the arrival rate's trend (Holt) as well as its level."""
    trend_half_life_seconds: Annotated[float, Field(gt=0, le=MAX_SECONDS), NUMBER] = 300.0
    """Half-life of the trend estimate."""
    forecast_horizon_seconds: Annotated[float, Field(ge=0, le=MAX_SECONDS), NUMBER] = 120.0
    """How far ahead to forecast the arrival rate; cover at least the pod start-up time."""
    seasonal_period_seconds: Annotated[
        Annotated[float, Field(gt=0, le=MAX_SECONDS)] | None, BeforeValidator(_number_or_null)
    ] = None
    """Period of a seasonal forecast (86400 for daily traffic). It may only raise the replica floor,
    never lower it. Absent or null: no seasonal forecast."""
    burst_recurrence: Annotated[bool, BOOLEAN] = True
    """Learn the period of bursts that recur (a batch job every hour) from their onsets, and scale up
    a reaction time before the next one is due. It only raises a decision, and only after four bursts
    one period apart; false: bursts are met when they are measured."""


@with_config(_FILE)
@dataclass(frozen=True, slots=True)
class ScaleUp:
    """Scale up early and fast."""

    stabilization_seconds: Annotated[float, Field(ge=0, le=MAX_SECONDS), NUMBER] = 0.0
    """Act on the lowest recommendation of this many seconds (0: act at once)."""
    max_step_percent: Annotated[float, Field(gt=0, le=INT32_MAX), NUMBER] = 100.0
    """At most this percentage of the current replicas added in one step."""
    max_step_replicas: Annotated[int, Field(ge=1, le=INT32_MAX), INTEGER] = 8
    """At most this many replicas added in one step (the larger of the two limits applies)."""


@with_config(_FILE)
@dataclass(frozen=True, slots=True)
class ScaleDown:
    """Scale down late and slowly, and only when it pays for its rebalance."""

    stabilization_seconds: Annotated[float, Field(ge=0, le=MAX_SECONDS), NUMBER] = 300.0
    """Act on the highest recommendation of this many seconds. The same in mode handover: capacity
    given back returns only after a new generation's start-up and warm-up, so a window written for a
    workload whose warm-up is longer than its SLO still protects it (it is not shortened for you)."""
    max_step_percent: Annotated[float, Field(gt=0, le=100), NUMBER] = 50.0
    """At most this percentage of the current replicas removed in one step."""
    max_step_replicas: Annotated[int, Field(ge=1, le=INT32_MAX), INTEGER] = 4
    """At most this many replicas removed in one step."""
    payback_horizon_seconds: Annotated[float, Field(gt=0, le=MAX_SECONDS), NUMBER] = 3600.0
    """A scale-down must save more replica-seconds, while the lower count lasts (at most this
    horizon), than its rebalance (stall or state restore) costs; in mode handover, than the new
    generation's replicas cost while they start and warm up beside the serving ones, plus the cut-over
    pause. The lower count lasts until the trend, the seasonal profile or a predicted recurring burst
    outgrows it, or for as long as this workload's lower counts have lasted before a scale-up undid
    them; a move that will be undone within the horizon pays for the scale-up steps back as well."""


@with_config(_FILE)
@dataclass(frozen=True, slots=True)
class Stateful:
    """For consumers with local state (Kafka Streams stores): moving a partition costs restoring its
    state from a changelog. Give stateBytes or changelogTopic, not both."""

    restore_bytes_per_second: PositiveBytes
    """How fast a moved partition's state restores, in bytes per second: a number, or a quantity such
    as 50Mi."""
    state_bytes: Bytes | None = None
    """Total state of the workload, spread evenly over its partitions: a number of bytes, or a
    quantity such as 200Gi."""
    changelog_topic: KafkaName | None = None
    """A changelog topic whose size lagscaler measures and uses as the state size."""
    standby_replicas: Annotated[int, Field(ge=0, le=INT32_MAX), INTEGER] = 0
    """Standby replicas per task (num.standby.replicas): a standby makes failover near-instant."""


@with_config(_FILE)
@dataclass(frozen=True, slots=True)
class Fallback:
    """What to serve when the newest lag sample is too old (lagscaler cannot reach Kafka)."""

    max_age_seconds: Annotated[float, Field(gt=0, le=MAX_SECONDS), NUMBER] = 60.0
    """Samples older than this are stale."""
    action: StaleAction = StaleAction.ERROR
    """error: answer an error, so the HPA freezes at the current count. replicas: serve a value that
    takes the HPA to fallback.replicas. hold: keep serving the last decision."""
    replicas: Annotated[int, Field(ge=0, le=INT32_MAX), INTEGER] | None = None
    """The replica count for action: replicas; within [minReplicas, maxReplicas]."""


@with_config(_FILE)
@dataclass(frozen=True, slots=True)
class Hpa:
    """What lagscaler knows of the HPA controller acting on its metric (mode hpa)."""

    sync_period_seconds: Annotated[float, Field(gt=0, le=MAX_SECONDS), NUMBER] = 15.0
    """kube-controller-manager --horizontal-pod-autoscaler-sync-period."""
    tolerance: Annotated[float, Field(ge=0, lt=1), NUMBER] = 0.1
    """kube-controller-manager --horizontal-pod-autoscaler-tolerance: the cluster-wide dead band
    around the target."""
    configurable_tolerance: Annotated[bool, BOOLEAN] = False
    """The cluster keeps per-HPA behavior.*.tolerance (feature gate HPAConfigurableTolerance: alpha
    1.33, beta and on by default 1.35). lagscaler's manifest then sets it to 0 and every replica count
    becomes reachable."""


@with_config(_FILE)
@dataclass(frozen=True, slots=True)
class PolicySpec:
    """The scaling policy itself: a file's ``spec``."""

    target: Annotated[ScaleTargetRef, Field(alias="scaleTargetRef")]
    """The object whose replica count lagscaler decides."""
    kafka: KafkaSource
    """Where the workload's lag comes from."""
    max_lag_seconds: Annotated[float, Field(gt=0, le=MAX_SECONDS), NUMBER]
    """The SLO: how far behind the newest message, in seconds, the group may be. Sizing drains any
    backlog within this time."""
    capacity: Capacity
    """What one replica can process."""
    mode: Mode = Mode.HPA
    """How a decision reaches the workload. hpa: lagscaler serves the metric
    lagscaler_desired_replicas and a stock HorizontalPodAutoscaler scales the target (see `lagscaler
    policy hpa`). handover: lagscaler runs the consumers itself (applications built on
    lagscaler.worker): every size is a new generation in a consumer group of its own, warmed up while
    the old one consumes and started at exactly the old one's committed offsets, so scaling never
    rebalances a running group (docs/handover.md). Needs kafka.topics, and `lagscaler serve` started
    with a handover backend: local processes (--handover-state-dir, --handover-command) or Kubernetes
    (--handover-backend kubernetes: a Deployment per generation cloned from scaleTargetRef, which must
    be an apps/v1 Deployment; lagscaler scales scaleTargetRef itself to 0). Without one such a policy
    gets metrics only."""
    min_replicas: Annotated[int, Field(ge=1, le=INT32_MAX), INTEGER] = 1
    """Never fewer replicas than this."""
    max_replicas: Annotated[int, Field(ge=1, le=INT32_MAX), INTEGER] = 10
    """Never more replicas than this. lagscaler also never asks for more replicas than the topics
    have partitions (the extra consumers would idle); keep this at or below the partition count so
    the HPA's clamp lands exactly on it."""
    target_utilization: Annotated[float, Field(gt=0, le=1), NUMBER] = 0.7
    """Fraction of the true capacity to plan for (headroom for bursts and estimation error)."""
    slo_objective: Annotated[float, Field(gt=0, le=1), NUMBER] = 0.99
    """Fraction of the time lag must stay within maxLagSeconds. The rest is the error budget: a
    scale-down whose rebalance would break the SLO is paced so it spends no more than that budget,
    and when the lower count will not last (a predicted recurring burst it does not carry, or this
    workload's scale-downs undone quickly before), the budget earned while it lasts must also pay
    for the scale-up steps back; otherwise the capacity is held."""
    smoothing: Smoothing = field(default_factory=Smoothing)
    """Smoothing and forecasting of the arrival rate."""
    scale_up: ScaleUp = field(default_factory=ScaleUp)
    """Scale up early and fast."""
    scale_down: ScaleDown = field(default_factory=ScaleDown)
    """Scale down late and slowly, and only when it pays for its rebalance."""
    startup_seconds: Annotated[float, Field(ge=0, le=MAX_SECONDS), NUMBER] = 30.0
    """Seconds from asking for a pod until it consumes."""
    rebalance_stall_seconds: Annotated[float, Field(ge=0, le=MAX_SECONDS), NUMBER] = 10.0
    """Seconds the whole group stops consuming on each membership change."""
    stateful: Stateful | None = None
    """For consumers with local state: what moving a partition costs. Absent: stateless."""
    fallback: Fallback = field(default_factory=Fallback)
    """What to serve when the newest lag sample is too old (lagscaler cannot reach Kafka)."""
    hpa: Hpa = field(default_factory=Hpa)
    """What lagscaler knows of the HPA controller acting on its metric (mode hpa)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScalingPolicy(PolicySpec):
    """One workload's scaling policy: a file's ``spec`` with the workload's identity from ``metadata``.

    This is what the engine, the simulator and the service read. It is not validated when built in
    code; files are, through :class:`PolicyFile`.
    """

    name: str
    namespace: str
    source: str | None = None  # the file it was loaded from, for messages

    @property
    def key(self) -> str:
        """``namespace/name``: unique across loaded policies."""
        return f"{self.namespace}/{self.name}"


@with_config(_FILE)
@dataclass(frozen=True, slots=True)
class Metadata:
    """Kubernetes-style identity of the policy."""

    name: DnsLabel
    """The workload's name in lagscaler. It becomes the label value lagscaler.io/workload=<name> that
    selects this workload's metric, so it must be a DNS-1123 label."""
    namespace: DnsLabel = "default"
    """The Kubernetes namespace of the scale target and of its HorizontalPodAutoscaler."""
    labels: dict[str, str] = field(default_factory=dict)
    """Free-form labels, kept for tooling; lagscaler does not read them."""
    annotations: dict[str, str] = field(default_factory=dict)
    """Free-form annotations, kept for tooling; lagscaler does not read them."""


@with_config(_FILE)
@dataclass(frozen=True, slots=True)
class PolicyFile:
    """How lagscaler scales one Kafka consumer workload: its SLO, its bounds, what one replica can
    do, how fast to react, what moving its partitions costs, and what to do when lag data is stale.
    One YAML document per file."""

    api_version: Literal["lagscaler.io/v1"]
    """The version of this file format."""
    kind: Literal["ScalingPolicy"]
    """Always ScalingPolicy."""
    metadata: Metadata
    """Kubernetes-style identity of the policy."""
    spec: PolicySpec
    """The scaling policy itself."""

    def policy(self, source: str | None = None) -> ScalingPolicy:
        """The engine's view: the spec, named by the metadata."""
        values = {name: getattr(self.spec, name) for name in PolicySpec.__dataclass_fields__}
        return ScalingPolicy(
            **values, name=self.metadata.name, namespace=self.metadata.namespace, source=source
        )
