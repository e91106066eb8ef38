"""The service's Prometheus metrics, defined in one place so names, labels and buckets stay consistent.

Every part of the service takes the :class:`ServiceMetrics` it should report to (one per process in
production; tests make their own so counters start at zero). Label sets are bounded: paths are
route templates, reasons are short fixed words, workloads come from policy files.

Label names are chosen to survive the Prometheus Operator's defaults. A ServiceMonitor scrapes with
``honor_labels: false`` and attaches the target labels ``namespace``, ``service``, ``pod``,
``container``, ``endpoint``, ``job`` and ``instance`` (prometheus-operator
``pkg/prometheus/promcfg.go``, ``generateServiceMonitorConfig``); a metric label of the same name
would be renamed ``exported_<name>``. So a workload is labelled ``workload_namespace`` and
``workload``, never ``namespace``, and the scrape's ``namespace``/``pod`` keep meaning the
lagscaler pod.

Counters with a fixed label set (sample errors, policy reloads, each workload's scale events) are
created at zero, so a healthy service shows 0 rather than no data.

Served on a separate plain-HTTP port by :func:`metrics_app` (Prometheus scrapes it without the
client certificates the external metrics API demands).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from lagscaler import __version__
from lagscaler.core.engine import Reason

__all__ = [
    "DIRECTIONS",
    "METRICS_KEY",
    "POLICY_RELOAD_OUTCOMES",
    "REASON_CODES",
    "REQUEST_OUTCOMES",
    "SAMPLE_ERROR_REASONS",
    "WORKLOAD_ERROR_STAGES",
    "WORKLOAD_LABELS",
    "ServiceMetrics",
    "metrics_app",
]

# Fine buckets at the low end: the API's target is a p99 of a few milliseconds.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_CYCLE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

WORKLOAD_LABELS = ("workload_namespace", "workload")
"""The labels of every per-workload series: the policy's ``metadata.namespace`` and ``metadata.name``."""
SAMPLE_ERROR_REASONS = ("timeout", "unreachable", "kafka", "state-file", "internal")
POLICY_RELOAD_OUTCOMES = ("ok", "partial")
REQUEST_OUTCOMES = ("ok", "failed")
DIRECTIONS = ("up", "down")
WORKLOAD_ERROR_STAGES = ("observe", "decide", "handover", "publish")
"""The steps of a cycle that can fail for one workload alone (``lagscaler_workload_errors_total``)."""
REASON_CODES: tuple[str, ...] = tuple(r.name for r in Reason if r.name is not None)
"""Every reason code the engine can give, in declaration order (one ``lagscaler_decision_reason`` each)."""


class _DataAge(Collector):
    """``lagscaler_cache_age_seconds``, computed when scraped rather than when a cycle publishes.

    A gauge set at publication would read a few milliseconds forever if the loop stalled; this one
    keeps growing, which is what the "data stale" alert needs to see. A workload never sampled counts
    from when its policy was loaded, so its age is how long it has been without data (never ``+Inf``).
    """

    NAME = "lagscaler_cache_age_seconds"
    HELP = (
        "Seconds since the newest sample the API serves for a workload was taken, at scrape time "
        "(never sampled: since its policy was loaded)."
    )

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._since: dict[tuple[str, str], float] = {}

    def since(self, workload: tuple[str, str], at: float) -> None:
        self._since[workload] = at

    def forget(self, workload: tuple[str, str]) -> None:
        self._since.pop(workload, None)

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self.NAME, self.HELP, labels=WORKLOAD_LABELS)]

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=WORKLOAD_LABELS)
        for labels, since in sorted(self._since.items()):
            family.add_metric(labels, max(0.0, now - since))
        yield family


class ServiceMetrics:
    """All metrics of one lagscaler process, registered in ``registry``.

    ``clock`` (Unix seconds) is what data ages are measured against at scrape time.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.build_info = Gauge(
            "lagscaler_build_info",
            "Always 1: one series per running lagscaler process.",
            ["version"],
            registry=r,
        )
        self.build_info.labels(__version__).set(1)
        # --- the external metrics API
        self.api_request_duration = Histogram(
            "lagscaler_api_request_duration_seconds",
            "Time to answer an API request, by route template, method and status code.",
            ["route", "method", "code"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.api_auth_failures = Counter(
            "lagscaler_api_auth_failures_total",
            "Requests refused by authentication (401) or authorization (403), by reason.",
            ["reason"],
            registry=r,
        )
        self.api_review_cache = Counter(
            "lagscaler_api_review_cache_total",
            "TokenReview/SubjectAccessReview cache lookups, by review kind and hit or miss.",
            ["review", "result"],
            registry=r,
        )
        self.api_internal_errors = Counter(
            "lagscaler_api_internal_errors_total",
            "Unexpected exceptions turned into a 500 Status (should stay at zero).",
            registry=r,
        )
        self.api_malformed_requests = Counter(
            "lagscaler_api_malformed_requests_total",
            "Requests that were not valid HTTP (answered 400 and closed; logged only now and then).",
            registry=r,
        )
        self.api_connections_closed = Counter(
            "lagscaler_api_connections_closed_total",
            "Connections the API or metrics listener closed to protect itself: no request within the "
            "header timeout (header-timeout) or idle while over the connection cap (over-limit).",
            ["reason"],
            registry=r,
        )
        self.tls_reloads = Counter(
            "lagscaler_tls_reloads_total",
            "Serving certificate or client CA reloads, by outcome.",
            ["outcome"],
            registry=r,
        )
        # --- the sampler
        self.sample_cycle_duration = Histogram(
            "lagscaler_sample_cycle_duration_seconds",
            "Duration of one sample cycle (all groups).",
            buckets=_CYCLE_BUCKETS,
            registry=r,
        )
        self.sample_cycle_errors = Counter(
            "lagscaler_sample_cycle_errors_total",
            "Sample cycles that failed, and engine state saves that failed (state-file), by reason.",
            ["reason"],
            registry=r,
        )
        for reason in SAMPLE_ERROR_REASONS:
            self.sample_cycle_errors.labels(reason)
        self.kafka_requests = Counter(
            "lagscaler_kafka_requests_total",
            "Kafka requests sent by the sampler, by API (ListOffsets, OffsetFetch, ...) and outcome "
            "(ok or failed; each request counted once, when its outcome is known).",
            ["api", "outcome"],
            registry=r,
        )
        # --- the engine's decisions, per workload
        workload = list(WORKLOAD_LABELS)
        self.data_age = _DataAge(clock)
        r.register(self.data_age)
        self.stale_after = Gauge(
            "lagscaler_workload_stale_after_seconds",
            "The policy's fallback.maxAgeSeconds: data older than this is stale and the fallback is served.",
            workload,
            registry=r,
        )
        self.desired_replicas = Gauge(
            "lagscaler_decision_replicas",
            "The replica count the engine decided for a workload.",
            workload,
            registry=r,
        )
        self.decision_changes = Counter(
            "lagscaler_decision_changes_total",
            "Times the decided replica count changed from the previous cycle's, by direction (up, down).",
            [*workload, "direction"],
            registry=r,
        )
        self.workload_errors = Counter(
            "lagscaler_workload_errors_total",
            "Cycles in which one step failed for this workload alone, by step (observe, decide, handover, "
            "publish): it served its last published values or its fallback while the others were decided.",
            [*workload, "stage"],
            registry=r,
        )
        self.decision_reason = Gauge(
            "lagscaler_decision_reason",
            "1 when the reason code applies to the workload's current decision, else 0.",
            [*workload, "reason"],
            registry=r,
        )
        # --- per-workload signals and the parts of each decision (what the Grafana dashboard plots)
        self.workload_replicas = Gauge(
            "lagscaler_workload_replicas",
            "Replicas the workload runs now (consumer-group members).",
            workload,
            registry=r,
        )
        self.workload_lag_messages = Gauge(
            "lagscaler_workload_lag_messages", "Total lag over the workload's topics.", workload, registry=r
        )
        self.workload_lag_seconds = Gauge(
            "lagscaler_workload_lag_seconds",
            "How far behind the newest message the worst partition is, in seconds.",
            workload,
            registry=r,
        )
        self.workload_slo_seconds = Gauge(
            "lagscaler_workload_slo_seconds",
            "The policy's SLO: maximum lag in seconds.",
            workload,
            registry=r,
        )
        self.workload_arrival_rate = Gauge(
            "lagscaler_workload_arrival_rate",
            "Messages per second produced to the workload's topics.",
            workload,
            registry=r,
        )
        self.workload_forecast_rate = Gauge(
            "lagscaler_workload_forecast_rate",
            "The engine's forecast arrival rate (messages per second).",
            workload,
            registry=r,
        )
        self.workload_capacity_per_replica = Gauge(
            "lagscaler_workload_capacity_per_replica",
            "Estimated true processing rate of one replica (messages per second of busy time).",
            workload,
            registry=r,
        )
        self.workload_stuck_partitions = Gauge(
            "lagscaler_workload_stuck_partitions",
            "Partitions in STALL or STOP: ignored for sizing, since more replicas would not help them.",
            workload,
            registry=r,
        )
        # --- policies
        self.policy_errors = Gauge(
            "lagscaler_policy_errors",
            "Policy files that are currently invalid (the last good version stays in force).",
            registry=r,
        )
        self.policy_reloads = Counter(
            "lagscaler_policy_reloads_total",
            "Policy directory reloads that changed what is in force or what is invalid, by outcome "
            "(ok: every file valid; partial: some file invalid).",
            ["outcome"],
            registry=r,
        )
        for outcome in POLICY_RELOAD_OUTCOMES:
            self.policy_reloads.labels(outcome)

    @property
    def per_workload(self) -> tuple[Gauge, ...]:
        """Gauges labelled by exactly the workload labels."""
        return (
            self.stale_after,
            self.desired_replicas,
            self.workload_replicas,
            self.workload_lag_messages,
            self.workload_lag_seconds,
            self.workload_slo_seconds,
            self.workload_arrival_rate,
            self.workload_forecast_rate,
            self.workload_capacity_per_replica,
            self.workload_stuck_partitions,
        )

    def add_workload(self, namespace: str, name: str, *, loaded_at: float) -> None:
        """Create a new workload's counters at zero; its data age counts from ``loaded_at`` until sampled."""
        for direction in DIRECTIONS:
            self.decision_changes.labels(namespace, name, direction)
        for stage in WORKLOAD_ERROR_STAGES:
            self.workload_errors.labels(namespace, name, stage)
        self.data_age.since((namespace, name), loaded_at)

    def sampled(self, namespace: str, name: str, *, at: float) -> None:
        """The workload's newest sample was taken at ``at`` (Unix seconds)."""
        self.data_age.since((namespace, name), at)

    def record_reasons(self, namespace: str, name: str, reasons: Iterable[str]) -> None:
        """Every reason code as 0 or 1, so a code that stops applying drops to 0 instead of going stale."""
        present = set(reasons)
        for code in REASON_CODES:
            self.decision_reason.labels(namespace, name, code).set(1 if code in present else 0)

    def remove_workload(self, namespace: str, name: str) -> None:
        """Drop every series of a workload whose policy went away (Prometheus marks them stale)."""
        for gauge in self.per_workload:
            gauge.remove(namespace, name)  # a label set never used is ignored
        for direction in DIRECTIONS:
            self.decision_changes.remove(namespace, name, direction)
        for stage in WORKLOAD_ERROR_STAGES:
            self.workload_errors.remove(namespace, name, stage)
        for code in REASON_CODES:
            self.decision_reason.remove(namespace, name, code)
        self.data_age.forget((namespace, name))

    def request_outcomes(self, api: str) -> None:
        """Create both outcome series of a Kafka API at zero (a failure ratio needs both)."""
        for outcome in REQUEST_OUTCOMES:
            self.kafka_requests.labels(api, outcome)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


METRICS_KEY = web.AppKey("metrics", ServiceMetrics)


async def _serve_metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS_KEY].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def metrics_app(metrics: ServiceMetrics) -> web.Application:
    """A plain-HTTP app serving ``GET /metrics`` in the Prometheus text format."""
    app = web.Application()
    app[METRICS_KEY] = metrics
    app.router.add_get("/metrics", _serve_metrics)
    return app
