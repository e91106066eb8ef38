"""Prometheus metrics on their own plain-HTTP port, and structlog output in both formats."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import structlog
from lagscaler_demo.harness import LocalCluster

from lagscaler.edges.api import MetricsCache, running_api
from lagscaler.edges.observability import ServiceMetrics, configure_logging


async def test_metrics_are_served_over_plain_http_on_their_own_port(tmp_path: Path) -> None:
    metrics = ServiceMetrics(clock=lambda: 1_000.0)
    metrics.add_workload("shop", "orders", loaded_at=990.0)
    metrics.sampled("shop", "orders", at=996.5)
    metrics.kafka_requests.labels("ListOffsets", "ok").inc(2)
    async with (
        LocalCluster(tmp_path) as cluster,
        running_api(cluster.settings(), MetricsCache(), metrics=metrics) as api,
    ):
        assert api.metrics_url is not None
        assert api.metrics_url.startswith("http://127.0.0.1:")
        assert not api.metrics_url.startswith(api.url.replace("https", "http"))
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientError):  # the API port speaks TLS only
                async with session.get(api.url.replace("https", "http") + "/healthz"):
                    pass
            async with session.get(api.metrics_url) as response:
                assert response.status == 200
                assert response.content_type == "text/plain"
                text = await response.text()
    assert 'lagscaler_cache_age_seconds{workload="orders",workload_namespace="shop"} 3.5' in text
    assert 'lagscaler_kafka_requests_total{api="ListOffsets",outcome="ok"} 2.0' in text
    for name in (
        "lagscaler_api_request_duration_seconds",
        "lagscaler_api_auth_failures_total",
        "lagscaler_sample_cycle_duration_seconds",
        "lagscaler_sample_cycle_errors_total",
        "lagscaler_decision_changes_total",
        "lagscaler_policy_errors",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in text


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Logging is process-global: put back what other tests expect."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_json_logs_for_machines() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    structlog.get_logger("lagscaler.test").info("sampled", groups=3)
    logging.getLogger("aiohttp.server").warning("from the standard library")
    structlog.get_logger("lagscaler.test").debug("hidden below the level")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["event"] == "sampled"
    assert first["groups"] == 3
    assert first["level"] == "info"
    assert first["timestamp"].endswith("Z")
    assert second["event"] == "from the standard library"
    assert second["logger"] == "aiohttp.server"


@pytest.mark.usefixtures("restore_logging")
def test_console_logs_for_people() -> None:
    stream = io.StringIO()
    configure_logging("debug", "console", stream)
    structlog.get_logger("lagscaler.test").info("sampled", groups=3)
    line = stream.getvalue()
    assert "sampled" in line
    assert "groups" in line
    assert not line.startswith("{")
