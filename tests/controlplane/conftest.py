"""Fixtures of the control-plane tier: the chart's objects applied once, ``lagscaler serve`` run once."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from lagscaler.localkafka import KafkaEndpoint
from lagscaler.localkafka.broker import free_port

from .adapter import ChartInstall, Serve, install_chart, running_serve
from .cluster import ControlPlane


def wait_for(condition: object, what: str, within: float = 60.0, every: float = 0.25) -> None:
    """Poll ``condition()`` until it is truthy; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within:g}s waiting for {what}")
        time.sleep(every)


@pytest.fixture(scope="session")
def serve_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def chart(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory, serve_port: int
) -> ChartInstall:
    return install_chart(control_plane, tmp_path_factory.mktemp("chart"), serve_port)


@pytest.fixture(scope="session")
def serve_process(
    chart: ChartInstall, kafka: KafkaEndpoint, tmp_path_factory: pytest.TempPathFactory, serve_port: int
) -> Iterator[Serve]:
    with running_serve(
        chart,
        tmp_path_factory.mktemp("serve"),
        bootstrap=kafka.bootstrap,
        port=serve_port,
        metrics_port=free_port(),
    ) as serve:
        yield serve


@pytest.fixture
def serve(chart: ChartInstall, serve_process: Serve) -> Serve:
    """``lagscaler serve``, with the APIService pointing at it and Available."""
    chart.point_at(serve_process.port)
    wait_for(chart.available, "APIService v1beta1.external.metrics.k8s.io to become Available")
    assert serve_process.alive(), serve_process.log_text()[-3000:]
    return serve_process
