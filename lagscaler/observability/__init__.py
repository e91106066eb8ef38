"""Prometheus metrics and structlog configuration shared by the service's parts."""
