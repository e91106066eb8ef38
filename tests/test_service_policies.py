"""The watched policy directory: hot reload off the event loop, and hostile files that cost nothing.

A file dropped into the policy ConfigMap is read in a worker thread, so the API keeps answering the
HPA while it is read, whatever it holds. The tests hold the loader on a gate (the ``check`` seam of
:class:`PolicyWatcher`) and ask the API a question meanwhile: no timing is measured, only whether
the answer comes while the loader is provably still blocked.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from support import BILLION_LAUGHS, eventually, open_api_settings

from lagscaler.core.policy import ScalingPolicy
from lagscaler.core.policy.loader import PolicyIssue, check_policy_file
from lagscaler.edges.api import HealthChecks, MetricsCache, RunningApi, running_api
from lagscaler.edges.kafka import KafkaSettings
from lagscaler.edges.observability import ServiceMetrics
from lagscaler.edges.sampler import Sampler, SamplerSettings
from lagscaler.service.loop import ScalingLoop
from lagscaler.service.policies import PolicyWatcher

POLICIES = Path(__file__).resolve().parent.parent / "policies"


class Gate:
    """A ``check`` that tells when the loader reached it and holds the loader there until opened."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.threads: set[int] = set()

    def __call__(self, path: Path) -> tuple[ScalingPolicy | None, list[PolicyIssue]]:
        self.threads.add(threading.get_ident())
        self.entered.set()
        # Bounded so that a regression (a load on the event loop) fails instead of hanging the run.
        if not self.opened.wait(timeout=60):
            raise AssertionError("the gate was never opened: was the event loop blocked?")
        return check_policy_file(path)


@pytest.fixture
async def api() -> AsyncIterator[tuple[RunningApi, HealthChecks]]:
    readiness = HealthChecks()
    async with running_api(open_api_settings(), MetricsCache(), readiness=readiness) as running:
        yield running, readiness


async def _readyz(url: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as session,
        session.get(url + "/readyz?verbose") as response,
    ):
        return response.status, await response.text()


async def test_the_api_answers_while_a_bomb_in_the_directory_is_being_loaded(
    api: tuple[RunningApi, HealthChecks], tmp_path: Path
) -> None:
    running, readiness = api
    (tmp_path / "bomb.yaml").write_text(BILLION_LAUGHS)
    gate = Gate()
    watcher = PolicyWatcher(tmp_path, check=gate)
    loop = ScalingLoop(
        Sampler(KafkaSettings(bootstrap=("127.0.0.1:9",)), SamplerSettings(all_groups=True)),  # not reached
        watcher,
        MetricsCache(),
        ServiceMetrics(),
    )
    readiness.add("policies", loop.policies_ready)
    cycle = asyncio.create_task(loop.cycle())  # what `lagscaler serve` runs every interval
    try:
        await eventually(gate.entered.is_set, what="the loader to reach the first file")
        status, body = await _readyz(running.url)  # answered while the loader is held
        assert not gate.opened.is_set()
        assert status == 503
        assert "policies not loaded yet" in body
        assert threading.get_ident() not in gate.threads  # the event loop's thread never read a file
    finally:
        gate.opened.set()
    await cycle
    status, body = await _readyz(running.url)
    assert status == 200
    assert "0 policies in force" in body
    assert "bomb.yaml:1:1: <document>: more than 10000 YAML nodes" in body


def test_a_bomb_is_reported_and_the_other_policies_stay_in_force(tmp_path: Path) -> None:
    (tmp_path / "clickstream.yaml").write_text((POLICIES / "clickstream.yaml").read_text())
    watcher = PolicyWatcher(tmp_path)
    first = watcher.refresh()
    assert [p.name for p in first.policies] == ["clickstream"]
    (tmp_path / "clickstream.yaml").write_text(BILLION_LAUGHS)  # a good file turns hostile
    (tmp_path / "huge.yaml").write_bytes(b"#" * (1 << 20))
    second = watcher.refresh()
    assert [p.name for p in second.policies] == ["clickstream"]  # the last good version is kept
    assert second.version == first.version  # nothing the engine must rebuild
    lines = second.error_lines
    assert len(lines) == 3
    assert all(len(line) < 1000 for line in lines)
    assert any("keeping the last valid version of analytics/clickstream" in line for line in lines)
    assert any("too large for a policy file" in line for line in lines)


def test_unchanged_files_are_not_read_again(tmp_path: Path) -> None:
    (tmp_path / "bomb.yaml").write_text(BILLION_LAUGHS)
    reads: list[Path] = []

    def counting(path: Path) -> tuple[ScalingPolicy | None, list[PolicyIssue]]:
        reads.append(path)
        return check_policy_file(path)

    watcher = PolicyWatcher(tmp_path, check=counting)
    watcher.refresh()
    watcher.refresh()
    assert reads == [tmp_path / "bomb.yaml"]


def test_same_size_edits_within_one_mtime_tick_are_both_picked_up(tmp_path: Path) -> None:
    """Inode, size and mtime all stay equal across these edits (a coarse file system clock, or a tool
    that restores mtimes): only the bytes tell them apart, and each must take effect."""
    path = tmp_path / "clickstream.yaml"
    original = (POLICIES / "clickstream.yaml").read_text()
    assert "maxReplicas: 64 " in original
    path.write_text(original)
    watcher = PolicyWatcher(tmp_path)
    assert watcher.refresh().policies[0].max_replicas == 64
    first = os.stat(path)
    for replicas in (48, 32):
        path.write_text(original.replace("maxReplicas: 64 ", f"maxReplicas: {replicas} "))
        os.utime(path, ns=(first.st_atime_ns, first.st_mtime_ns))
        now = os.stat(path)
        assert (now.st_ino, now.st_size, now.st_mtime_ns) == (first.st_ino, first.st_size, first.st_mtime_ns)
        assert watcher.refresh().policies[0].max_replicas == replicas


def test_a_file_deleted_while_the_directory_is_read_is_gone_not_an_error(tmp_path: Path) -> None:
    """Listed, then deleted before it is read: its policy goes at once, with no "no such file"
    error for a file nobody has any more."""
    for name in ("clickstream", "sessionizer"):
        (tmp_path / f"{name}.yaml").write_text((POLICIES / f"{name}.yaml").read_text())

    def deleting(path: Path) -> tuple[ScalingPolicy | None, list[PolicyIssue]]:
        if path.name == "clickstream.yaml" and deleting.armed:
            path.unlink()
        return check_policy_file(path)

    deleting.armed = False  # type: ignore[attr-defined]
    watcher = PolicyWatcher(tmp_path, check=deleting)
    assert len(watcher.refresh().policies) == 2
    (tmp_path / "clickstream.yaml").write_text((POLICIES / "clickstream.yaml").read_text() + "\n")
    deleting.armed = True  # type: ignore[attr-defined]
    after = watcher.refresh()
    assert [p.name for p in after.policies] == ["sessionizer"]
    assert not after.errors


class ConfigMapVolume:
    """A directory updated the way the kubelet updates a mounted ConfigMap.

    ``k8s.io/kubernetes`` ``pkg/volume/util/atomic_writer.go`` ``AtomicWriter.Write``: the files go
    into a new hidden timestamped directory, a ``..data_tmp`` symlink to it is renamed over
    ``..data``, each user-visible name is a symlink ``name -> ..data/name`` (created for new names,
    removed for names no longer in the ConfigMap), and the old directory is deleted.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.generation = 0

    def write(self, files: dict[str, str]) -> None:
        self.generation += 1
        payload = self.root / f"..2026_12_07_00_00_{self.generation:02d}.000000001"
        payload.mkdir()
        for name, text in files.items():
            (payload / name).write_text(text)
        data = self.root / "..data"
        old = data.resolve() if data.is_symlink() else None
        (self.root / "..data_tmp").symlink_to(payload.name)
        (self.root / "..data_tmp").rename(data)
        for name in files:
            if not (self.root / name).is_symlink():
                (self.root / name).symlink_to(f"..data/{name}")
        for link in self.root.iterdir():
            if link.is_symlink() and not link.name.startswith("..") and link.name not in files:
                link.unlink()
        if old is not None:
            for leftover in old.iterdir():
                leftover.unlink()
            old.rmdir()


def test_configmap_updates_swap_policies_keep_the_last_good_one_and_drop_removed_ones(tmp_path: Path) -> None:
    clickstream = (POLICIES / "clickstream.yaml").read_text()
    sessionizer = (POLICIES / "sessionizer.yaml").read_text()
    volume = ConfigMapVolume(tmp_path)
    volume.write({"clickstream.yaml": clickstream, "sessionizer.yaml": sessionizer})
    watcher = PolicyWatcher(tmp_path)
    first = watcher.refresh()
    assert sorted(p.name for p in first.policies) == ["clickstream", "sessionizer"]
    assert not first.errors

    # One update breaks a file and changes the other: the broken one keeps its last good version,
    # the error names the file (as the user sees it) and the field; the other one's change is in force.
    volume.write(
        {
            "clickstream.yaml": clickstream.replace("maxLagSeconds: 30", "maxLagSeconds: soon"),
            "sessionizer.yaml": sessionizer.replace("maxReplicas: 32", "maxReplicas: 24"),
        }
    )
    second = watcher.refresh()
    by_name = {p.name: p for p in second.policies}
    assert sorted(by_name) == ["clickstream", "sessionizer"]
    assert by_name["clickstream"] == next(p for p in first.policies if p.name == "clickstream")
    assert by_name["sessionizer"].max_replicas == 24
    (problem, kept) = second.errors[str(tmp_path / "clickstream.yaml")]
    assert problem.startswith(f"{tmp_path / 'clickstream.yaml'}:")
    assert 'spec.maxLagSeconds: expected a number, got "soon"' in problem
    assert "keeping the last valid version of analytics/clickstream" in kept

    # The next update fixes nothing but removes the file from the ConfigMap: its policy goes.
    volume.write({"sessionizer.yaml": sessionizer})
    third = watcher.refresh()
    assert [p.name for p in third.policies] == ["sessionizer"]
    assert third.policies[0].max_replicas == 32
    assert not third.errors
    assert third.version > second.version > first.version
