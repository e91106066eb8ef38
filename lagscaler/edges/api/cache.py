"""What the API serves: an immutable snapshot of per-workload metric values, swapped atomically.

The API never waits on Kafka. The sampler/engine loop (the service) builds :class:`WorkloadMetrics`
for each workload after every cycle and calls :meth:`MetricsCache.publish`; that builds a new
:class:`CacheSnapshot` (indexed by namespace and metric) and replaces the reference in one
assignment. A request reads :attr:`MetricsCache.snapshot` once and answers from that object only, so
it always sees one consistent cycle, never a half-written one, with no locks (asyncio or threads).

Staleness is judged at *read* time from the workload's sample time and its policy's
``fallback.maxAgeSeconds``: if the sampler loop itself stalls, values still turn stale on time.
What a stale workload serves was decided by the service from the policy and published with it:

- ``stale_values=None`` (policy ``action: error``): the API answers 503, the HPA freezes;
- ``stale_values=(...)`` (``action: replicas`` or ``hold``): those values are served instead,
  each with the workload's last sample time. A metric the stale values do not cover answers 503.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from lagscaler.core.hpa.served import (
    SERVED_METRICS,
    WORKLOAD_LABEL,
)
from lagscaler.edges.api.selector import Selector, validate_label_key, validate_label_value

__all__ = [
    "CacheSnapshot",
    "Freshness",
    "MetricValue",
    "MetricsCache",
    "Selection",
    "WorkloadMetrics",
]


class Freshness(enum.StrEnum):
    FRESH = "fresh"
    STALE_FALLBACK = "stale-fallback"  # stale, serving the values the policy chose for that case
    STALE_ERROR = "stale-error"  # stale, and the policy says: fail so the HPA freezes (503)


@dataclass(frozen=True, slots=True)
class MetricValue:
    """One item of an ``ExternalMetricValueList``: a metric's value under a set of labels."""

    metric: str
    value: float
    labels: Mapping[str, str]
    window_seconds: int | None = None  # the span the value was computed over (rates), if any

    def __post_init__(self) -> None:
        if self.metric not in SERVED_METRICS:
            raise ValueError(f"metric {self.metric!r} is not served (one of {', '.join(SERVED_METRICS)})")
        if not math.isfinite(self.value):
            raise ValueError(f"{self.metric}: value must be finite, got {self.value!r}")
        for key, value in self.labels.items():
            if (problem := validate_label_key(key) or validate_label_value(value)) is not None:
                raise ValueError(f"{self.metric}: {problem}")
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))


@dataclass(frozen=True, slots=True)
class WorkloadMetrics:
    """Everything the API serves for one workload after one sample cycle."""

    namespace: str
    name: str
    sampled_at: float  # unix time of the sample the values come from
    values: tuple[MetricValue, ...]
    max_age_seconds: float  # the policy's fallback.maxAgeSeconds
    stale_values: tuple[MetricValue, ...] | None = None  # served once stale; None → 503
    detail: str = ""  # shown in 503 messages, e.g. "broker unreachable since 12:03:04"

    def freshness(self, now: float) -> Freshness:
        if now - self.sampled_at <= self.max_age_seconds:
            return Freshness.FRESH
        return Freshness.STALE_ERROR if self.stale_values is None else Freshness.STALE_FALLBACK

    def labels_ok(self) -> WorkloadMetrics:
        """Every value carries ``lagscaler.io/workload=<name>``: the label the HPA selects on."""
        for item in (*self.values, *(self.stale_values or ())):
            if item.labels.get(WORKLOAD_LABEL) != self.name:
                raise ValueError(
                    f"{self.namespace}/{self.name}: {item.metric} lacks label {WORKLOAD_LABEL}={self.name}"
                )
        return self


@dataclass(frozen=True, slots=True)
class Selection:
    """The answer to one metric request, computed from a snapshot at one instant."""

    items: tuple[tuple[MetricValue, float], ...] = ()  # (value, sample time)
    unavailable: tuple[WorkloadMetrics, ...] = ()  # matched workloads that are stale with no fallback
    namespace_known: bool = True
    fresh_until: float = math.inf  # when the first matched fresh workload turns stale (answer changes)


@dataclass(frozen=True, slots=True)
class CacheSnapshot:
    """An immutable, indexed view of one publication. Build it with :meth:`of`."""

    workloads: Mapping[tuple[str, str], WorkloadMetrics] = field(default_factory=dict)
    published_at: float = 0.0
    _by_namespace: Mapping[str, tuple[WorkloadMetrics, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, workloads: Iterable[WorkloadMetrics], published_at: float) -> CacheSnapshot:
        by_key: dict[tuple[str, str], WorkloadMetrics] = {}
        for workload in workloads:
            key = (workload.namespace, workload.name)
            if key in by_key:
                raise ValueError(f"workload {workload.namespace}/{workload.name} published twice")
            by_key[key] = workload.labels_ok()
        by_namespace: dict[str, list[WorkloadMetrics]] = {}
        for workload in by_key.values():
            by_namespace.setdefault(workload.namespace, []).append(workload)
        return cls(
            workloads=MappingProxyType(by_key),
            published_at=published_at,
            _by_namespace=MappingProxyType({ns: tuple(ws) for ns, ws in by_namespace.items()}),
        )

    @property
    def namespaces(self) -> frozenset[str]:
        return frozenset(self._by_namespace)

    def select(self, namespace: str, metric: str, selector: Selector, now: float) -> Selection:
        """Items of ``metric`` in ``namespace`` whose labels match ``selector``, judged at ``now``."""
        workloads = self._by_namespace.get(namespace)
        if workloads is None:
            return Selection(namespace_known=False)
        items: list[tuple[MetricValue, float]] = []
        unavailable: list[WorkloadMetrics] = []
        fresh_until = math.inf
        for workload in workloads:
            matched = [v for v in workload.values if v.metric == metric and selector.matches(v.labels)]
            freshness = workload.freshness(now)
            if freshness is Freshness.FRESH:
                items.extend((v, workload.sampled_at) for v in matched)
                if matched:
                    fresh_until = min(fresh_until, workload.sampled_at + workload.max_age_seconds)
                continue
            served = [
                v for v in workload.stale_values or () if v.metric == metric and selector.matches(v.labels)
            ]
            if freshness is Freshness.STALE_ERROR or (matched and not served):
                if matched or served:
                    unavailable.append(workload)
                continue
            items.extend((v, workload.sampled_at) for v in served)
        return Selection(items=tuple(items), unavailable=tuple(unavailable), fresh_until=fresh_until)


class MetricsCache:
    """The one mutable thing: a reference to the current :class:`CacheSnapshot`.

    Readers take :attr:`snapshot` once per request; :meth:`publish` swaps it in a single
    assignment, which is atomic for asyncio tasks and for threads alike.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock  # unix time; tests pass their own to make data stale on demand
        self._snapshot = CacheSnapshot.of((), published_at=0.0)

    @property
    def snapshot(self) -> CacheSnapshot:
        return self._snapshot

    def now(self) -> float:
        return self._clock()

    def publish(self, workloads: Iterable[WorkloadMetrics]) -> CacheSnapshot:
        """Replace everything served with ``workloads`` (validated first: a bad set is refused whole)."""
        snapshot = CacheSnapshot.of(workloads, published_at=self._clock())
        self._snapshot = snapshot
        return snapshot
