"""Shared fixtures: one real Kafka broker per test session, captured logs, and a guard against leaked tasks."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import signal
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from typing import TYPE_CHECKING

import pytest
import structlog
from hypothesis import HealthCheck, settings
from lagscaler_demo.localkafka import KafkaEndpoint, KafkaTools, kafka_endpoint
from structlog.typing import EventDict
from support import eventually

from lagscaler.edges.handover.local import processes_under

if TYPE_CHECKING:
    from controlplane.cluster import ControlPlane


# Hypothesis' own timing checks are timing thresholds: a 200 ms deadline per example and a health
# check on slow data generation fail a correct property on a loaded machine (the shared CI box runs
# two workers, their brokers and control plane on two cores). Properties are judged on their
# assertions alone; a test's own @settings still set its examples.
settings.register_profile("lagscaler", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("lagscaler")


def _shared_module_fixture(item: pytest.Item) -> bool:
    """``item`` uses a fixture built once per module (a broker cluster, a wheel, a batch of simulations)."""
    info = getattr(item, "_fixtureinfo", None)  # pytest's FixtureInfo: there is no public accessor
    definitions = getattr(info, "name2fixturedefs", {})
    return any(d[-1].scope in ("module", "class", "package") for d in definitions.values() if d)


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> Generator[None, None, None]:
    """Schedule for ``make test``'s two pytest-xdist workers (``--dist loadgroup``): build what is
    expensive once, and start the slow tests first.

    * One worker runs every test of the control plane: each worker is its own session with its own
      broker, and grouping keeps the control plane (etcd, kube-apiserver, kube-controller-manager and
      the chart's ``serve``) to one instance.
    * The tests of a module that builds a fixture once per module run on one worker, so it is built
      once, not once per worker.
    * On a worker, tests marked ``slow`` come first (in collection order otherwise), so that the run
      ends on short tests on both workers rather than on one long test while the other worker idles.
      Not in a run without workers: there the order gains nothing, and a module whose slow and quick
      tests share a module fixture would build it twice.

    A wrapper: the marks must be in place before xdist's own ``pytest_collection_modifyitems``
    (``xdist.remote.WorkerInteractor``, registered after the conftests, so called before a plain
    conftest hook) turns each ``xdist_group`` mark into the ``@group`` suffix of the node id that its
    scheduler groups by. Afterwards, a group that did not reach the node id fails the run instead of
    silently costing a second control plane (it did with pytest 9.2: pytest-xdist#1386).
    """
    for item in items:
        if "control_plane" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("controlplane"))
        elif _shared_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    if hasattr(config, "workerinput"):  # an xdist worker: the scheduler hands out tests in this order
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    yield
    if getattr(config.option, "loadgroup", False):  # set on xdist's workers under --dist loadgroup
        lost = [i.nodeid for i in items if i.get_closest_marker("xdist_group") and "@" not in i.nodeid]
        if lost:
            raise pytest.UsageError(
                f"pytest-xdist ignored the xdist_group of {len(lost)} tests, e.g. {lost[0]}"
            )


def _await_chain(task: asyncio.Task[object]) -> list[str]:
    """Where ``task`` waits, outermost first: its coroutine and every coroutine it awaits in turn."""
    lines: list[str] = []
    awaited: object = task.get_coro()
    while awaited is not None and len(lines) < 40:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is not None:
            lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return lines


def _dump_pending_tasks() -> None:
    """Print every unfinished asyncio task and where it waits: what pytest-timeout's thread dump lacks
    (an event loop idle in ``select`` says nothing about which coroutine waits for what)."""
    tasks = [o for o in gc.get_objects() if isinstance(o, asyncio.Task) and not o.done()]
    print(f"\n+++ {len(tasks)} pending asyncio task(s) before the timeout +++", file=sys.stderr)
    for task in tasks:
        with contextlib.suppress(Exception):  # racing the loop's own thread: best effort
            print(f"{task.get_name()}:", *_await_chain(task), sep="\n", file=sys.stderr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Shortly before pytest-timeout fails a test, dump its pending asyncio tasks (see above)."""
    marker = item.get_closest_marker("timeout")
    limit = (
        float(marker.args[0])
        if marker is not None and marker.args
        else float(item.config.getini("timeout") or 0)
    )
    timer = threading.Timer(limit - 15.0, _dump_pending_tasks) if limit > 30.0 else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()


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


@pytest.fixture(autouse=True)
async def _no_orphaned_workers(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Fail a test that leaves a local handover worker running once it (and its fixtures) finished.

    Every worker the local backend starts lives under the test's ``tmp_path``; a user running
    ``serve`` locally has nothing that would ever stop one lagscaler lost track of. The workers told
    to stop by their state directory's removal get a few seconds to exit; whatever is left is killed
    (so it cannot outlive the run) and named in the failure."""
    root = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if root is None:
        return
    try:
        await eventually(lambda: not processes_under(root), within=15.0, what="no worker under tmp_path")
    except (AssertionError, pytest.fail.Exception):
        left = processes_under(root)
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if left:
            pytest.fail(f"the test left {len(left)} worker process(es) running: {left}")


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
