"""A kubelet stand-in: runs the pods of one namespace as local processes, as a kubelet runs containers.

The test tier has no nodes. For every pod of the namespace :class:`KubeletStandIn`

* binds it to a node name (``pods/binding``, the scheduler's own call), so that deleting it is
  graceful as for any scheduled pod: the API server keeps the pod, marked for deletion, until its
  kubelet reports the containers stopped;
* runs its first container's ``command`` + ``args`` with the pod's ``env`` (plain values, and the
  downward API's ``metadata.name``/``metadata.namespace``, which is how a handover worker learns its
  id), and reports it Running and Ready;
* on deletion sends SIGTERM, then SIGKILL when the pod's grace period is over, and once the process
  has exited removes the pod object (grace period 0, UID precondition), as the kubelet's status
  manager does; a pod removed from the API without that (a force delete) has its process killed;
* restarts a process that exits on its own (``restartPolicy: Always``) a second later.

The command runs on this machine as written in the pod spec (tests put ``sys.executable`` there), so a
generation Deployment's pods run exactly what lagscaler put in their template.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from .kubeclient import KubeClient

__all__ = ["KubeletStandIn"]

NODE = "kubelet-stand-in"
_RESTART_AFTER = 1.0


@dataclass
class _Container:
    pod: str
    uid: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    restart_at: float = 0.0
    kill_at: float | None = None  # set once the pod is being deleted
    starts: int = 0
    exits: list[int] = field(default_factory=list)  # exit codes of runs that ended on their own


def _field(pod: Any, path: str) -> str:
    fields = {
        "metadata.name": pod.metadata.name,
        "metadata.namespace": pod.metadata.namespace,
        "metadata.uid": pod.metadata.uid,
        "spec.nodeName": NODE,
    }
    if path not in fields:
        raise ValueError(f"the kubelet stand-in cannot resolve fieldRef {path!r}")
    return str(fields[path])


def _environment(pod: Any, container: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAGSCALER_")}
    for variable in container.env or ():
        if variable.value_from is not None:
            if variable.value_from.field_ref is None:
                raise ValueError(f"the kubelet stand-in resolves only fieldRef, not {variable.value_from}")
            env[variable.name] = _field(pod, variable.value_from.field_ref.field_path)
        else:
            env[variable.name] = variable.value or ""
    return env


class KubeletStandIn:
    """``async with KubeletStandIn(kube, namespace, directory)``: run that namespace's pods until exit."""

    def __init__(self, kube: KubeClient, namespace: str, directory: Path, *, period: float = 0.2) -> None:
        self.kube = kube
        self.namespace = namespace
        self.directory = directory
        self.period = period
        self.containers: dict[str, _Container] = {}  # pod name → its container
        self.errors: list[str] = []  # what went wrong in a round (a stand-in must not fail silently)
        self._task: asyncio.Task[None] | None = None
        self._core = k8s.CoreV1Api(kube.client)

    async def __aenter__(self) -> KubeletStandIn:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._task = asyncio.create_task(self._run(), name=f"kubelet-{self.namespace}")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for container in self.containers.values():
            self._signal(container, signal.SIGKILL)
        for container in self.containers.values():
            if container.popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    container.popen.wait(5)

    def running(self) -> dict[str, int]:
        """Pod name → pid of every container process that runs now."""
        return {
            name: c.popen.pid
            for name, c in self.containers.items()
            if c.popen is not None and c.popen.poll() is None
        }

    def log(self, pod: str) -> str:
        container = self.containers.get(pod)
        return container.log.read_text(errors="replace") if container is not None else ""

    # --- the loop -----------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._sync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # kept for the test to show; the next round tries again
                self.errors.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self.period)

    async def _sync(self) -> None:
        pods = (await self._core.list_namespaced_pod(self.namespace)).items
        present = {pod.metadata.name for pod in pods}
        for name, container in list(self.containers.items()):
            if name not in present:  # removed from the API: a kubelet kills what is left of it
                self._signal(container, signal.SIGKILL)
        for pod in pods:
            name = pod.metadata.name
            if pod.status.phase in ("Succeeded", "Failed"):
                continue
            if not pod.spec.node_name:
                if pod.metadata.deletion_timestamp is None:
                    await self._bind(pod)
                continue
            container = self.containers.get(name)
            if container is not None and container.uid != pod.metadata.uid:
                container = None  # a pod of the same name, created again
            if pod.metadata.deletion_timestamp is not None:
                await self._terminate(pod, container)
                continue
            if container is None:
                container = self.containers[name] = self._container(pod)
            await self._keep_running(pod, container)

    async def _bind(self, pod: Any) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod.metadata.name, "namespace": self.namespace},
            "target": {"apiVersion": "v1", "kind": "Node", "name": NODE},
        }
        try:
            # The answer is a Status, which the generated client cannot read as a V1Binding.
            await self._core.create_namespaced_pod_binding(
                pod.metadata.name, self.namespace, body, _preload_content=False
            )
        except ApiException as exc:
            if exc.status not in (404, 409):  # gone, or bound meanwhile
                raise

    def _container(self, pod: Any) -> _Container:
        spec = pod.spec.containers[0]
        argv = [*(spec.command or ()), *(spec.args or ())]
        if not argv:
            raise ValueError(
                f"pod {pod.metadata.name}: the kubelet stand-in needs a command (it pulls no image)"
            )
        return _Container(
            pod=pod.metadata.name,
            uid=pod.metadata.uid,
            argv=argv,
            env=_environment(pod, spec),
            log=self.directory / f"{pod.metadata.name}.log",
        )

    async def _keep_running(self, pod: Any, container: _Container) -> None:
        popen = container.popen
        if popen is not None and popen.poll() is None:
            return
        now = time.monotonic()
        if popen is not None and container.kill_at is None and not container.restart_at:
            container.exits.append(popen.returncode)
            container.restart_at = now + _RESTART_AFTER
        if now < container.restart_at:
            return
        self._spawn(container)
        container.starts += 1
        container.restart_at = 0.0
        if container.starts == 1:
            await self.kube.mark_ready(self.namespace, pod.metadata.name)

    async def _terminate(self, pod: Any, container: _Container | None) -> None:
        popen = container.popen if container is not None else None
        if container is not None and popen is not None and popen.poll() is None:
            if container.kill_at is None:
                grace = pod.metadata.deletion_grace_period_seconds or 0
                container.kill_at = time.monotonic() + grace
                self._signal(container, signal.SIGTERM)
            elif time.monotonic() >= container.kill_at:
                self._signal(container, signal.SIGKILL)
            return
        # Every container has stopped: the kubelet removes the pod object for good.
        try:
            # In the body, not the query: the API server reads the query only when there is no body
            # (apiserver pkg/endpoints/handlers/delete.go, DeleteResource).
            await self._core.delete_namespaced_pod(
                pod.metadata.name,
                self.namespace,
                body={"gracePeriodSeconds": 0, "preconditions": {"uid": pod.metadata.uid}},
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    @staticmethod
    def _spawn(container: _Container) -> None:
        """Start the container's process (returns at once; it runs in a session of its own)."""
        with container.log.open("ab") as out:
            container.popen = subprocess.Popen(
                container.argv,
                env=container.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @staticmethod
    def _signal(container: _Container, signum: int) -> None:
        popen = container.popen
        if popen is not None and popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signum)
