"""Prometheus metrics and structlog configuration shared by the service's parts."""

from lagscaler.edges.observability.logging import LogFormat, configure_logging
from lagscaler.edges.observability.metrics import (
    METRICS_KEY,
    REASON_CODES,
    SAMPLE_ERROR_REASONS,
    WORKLOAD_ERROR_STAGES,
    WORKLOAD_LABELS,
    ServiceMetrics,
    metrics_app,
)

__all__ = [
    "METRICS_KEY",
    "REASON_CODES",
    "SAMPLE_ERROR_REASONS",
    "WORKLOAD_ERROR_STAGES",
    "WORKLOAD_LABELS",
    "LogFormat",
    "ServiceMetrics",
    "configure_logging",
    "metrics_app",
]
