"""The service's Prometheus metrics, defined in one place so names, labels and buckets stay consistent.

Every part of the service takes the :class:`ServiceMetrics` it should report to (one per process in
production; tests make their own so counters start at zero). Label sets are bounded: paths are
route templates, reasons are short fixed words, workloads come from policy files.

Served on a separate plain-HTTP port by :func:`metrics_app` (Prometheus scrapes it without the
client certificates the external metrics API demands).
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["METRICS_KEY", "ServiceMetrics", "metrics_app"]

# Fine buckets at the low end: the API's target is a p99 of a few milliseconds.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_CYCLE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServiceMetrics:
    """All metrics of one lagscaler process, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
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
            "Connections the API closed to protect itself: no request within the header timeout "
            "(header-timeout) or idle while over the connection cap (over-limit).",
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
            "Sample cycles that failed, by reason.",
            ["reason"],
            registry=r,
        )
        self.kafka_requests = Counter(
            "lagscaler_kafka_requests_total",
            "Kafka requests sent by the sampler, by API (ListOffsets, OffsetFetch, ...) and outcome.",
            ["api", "outcome"],
            registry=r,
        )
        # --- the cache and the engine
        self.cache_age = Gauge(
            "lagscaler_cache_age_seconds",
            "Age of the newest sample served for a workload.",
            ["namespace", "workload"],
            registry=r,
        )
        self.decisions = Counter(
            "lagscaler_decisions_total",
            "Scaling decisions, by workload and direction (up, down, hold).",
            ["namespace", "workload", "direction"],
            registry=r,
        )
        self.desired_replicas = Gauge(
            "lagscaler_decision_replicas",
            "The replica count the engine decided for a workload.",
            ["namespace", "workload"],
            registry=r,
        )
        # --- per-workload signals and the parts of each decision (what the Grafana dashboard plots)
        workload = ["namespace", "workload"]
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
            "Policy file (re)loads, by outcome.",
            ["outcome"],
            registry=r,
        )

    @property
    def per_workload(self) -> tuple[Gauge, ...]:
        """Gauges labelled by (namespace, workload): their series go when the workload's policy goes."""
        return (
            self.cache_age,
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
