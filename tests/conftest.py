"""Shared fixtures: one real Kafka broker per test session, captured logs, and a guard against leaked tasks."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest
import structlog
from lagscaler_demo.localkafka import KafkaEndpoint, KafkaTools, kafka_endpoint
from structlog.typing import EventDict

if TYPE_CHECKING:
    from controlplane.cluster import ControlPlane


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``make test`` runs two workers), one worker runs every test of the control plane.

    Each worker is its own session with its own broker; grouping keeps the control plane (etcd,
    kube-apiserver, kube-controller-manager and the chart's ``serve``) to one instance.
    """
    for item in items:
        if "control_plane" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("controlplane"))


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaEndpoint]:
    """A running Kafka cluster for the whole session: ``KAFKA_BOOTSTRAP``, testcontainers, or local KRaft."""
    with kafka_endpoint() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def kafka_tools() -> KafkaTools:
    """Kafka's own CLI tools (fetched from Maven Central on first use)."""
    tools = KafkaTools()
    tools.distribution.ensure("tools")
    return tools


@pytest.fixture
def logs() -> Iterator[list[EventDict]]:
    """Every structlog event the test logs, as event dicts with the bound context merged in.

    Tests assert on keys, never on rendered text. Every level is captured whatever an earlier test
    configured (``lagscaler lag`` keeps only CRITICAL, ``serve`` its ``--log-level``); the
    configuration is restored afterwards.
    """
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as events:
            yield events
    finally:
        structlog.configure(**saved)


_counter = itertools.count()


@pytest.fixture
def unique() -> str:
    """A name no other test (or earlier run against a shared cluster) uses: for topics and groups."""
    return f"t{os.getpid()}-{next(_counter)}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(autouse=True)
async def _no_leaked_tasks(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Fail an async test that leaves asyncio tasks running: a leaked task is a leaked sampler or server."""
    before = asyncio.all_tasks()
    yield
    if request.node.get_closest_marker("asyncio") is None:
        return
    for _ in range(3):  # let cancellations that are already under way finish
        await asyncio.sleep(0)
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    for task in leaked:
        task.cancel()
    if leaked:
        pytest.fail(f"test leaked {len(leaked)} asyncio task(s): {[t.get_coro() for t in leaked]}")


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A real etcd + kube-apiserver + kube-controller-manager for the whole session (see tests/controlplane).

    Started on first use; ``control_plane.admin_kubeconfig``, ``.user_kubeconfig(user, groups)`` and
    ``.service_account_kubeconfig(namespace, name)`` give clients any identity.
    """
    from controlplane.build import go_binary
    from controlplane.cluster import running_control_plane
    from support import need_tool

    # without Go nothing can build it: skip (fail in CI); with Go but unbuilt, the fixture says how
    need_tool(
        go_binary() is not None, "go is not installed (needed to build the control plane: make test-deps)"
    )
    with running_control_plane(tmp_path_factory.mktemp("controlplane")) as plane:
        yield plane
