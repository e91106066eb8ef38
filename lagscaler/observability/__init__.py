"""Prometheus metrics and structlog configuration shared by the service's parts."""

from lagscaler.observability.logging import LogFormat, configure_logging
from lagscaler.observability.metrics import METRICS_KEY, ServiceMetrics, metrics_app

__all__ = ["METRICS_KEY", "LogFormat", "ServiceMetrics", "configure_logging", "metrics_app"]
