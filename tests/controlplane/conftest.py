"""Fixtures of the control-plane tier: the chart's objects applied once, ``lagscaler serve`` run once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lagscaler_demo.localkafka import KafkaEndpoint
from lagscaler_demo.localkafka.broker import free_port
from support import eventually

from .adapter import ChartInstall, Serve, install_chart, running_serve
from .cluster import ControlPlane, _Process, running_scheduler


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
async def serve(chart: ChartInstall, serve_process: Serve) -> Serve:
    """``lagscaler serve``, with the APIService pointing at it and Available."""
    chart.point_at(serve_process.port)
    await eventually(chart.available, within=60, what="APIService v1beta1.external.metrics.k8s.io Available")
    assert serve_process.alive(), serve_process.log_text()[-3000:]
    return serve_process


@pytest.fixture(scope="session")
def scheduler(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Process]:
    """The real kube-scheduler for pods whose ``schedulerName`` is ``cluster.TEST_SCHEDULER``."""
    with running_scheduler(control_plane, tmp_path_factory.mktemp("scheduler")) as process:
        yield process
