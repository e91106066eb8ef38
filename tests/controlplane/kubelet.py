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
* restarts a process that exits on its own (``restartPolicy: Always``) a second later, and meanwhile
  reports the container waiting in ``CrashLoopBackOff`` with its last exit, as a kubelet does between
  restarts (a kubelet waits 10 s, doubling; a second keeps the tests short);
* resolves ``secretKeyRef``/``configMapKeyRef`` variables from the API; while one names a Secret or
  ConfigMap (or key) that does not exist, the container waits in ``CreateContainerConfigError`` with the
  kubelet's message (``pkg/kubelet/kubelet_pods.go``, ``makeEnvironmentVariables``, v1.35.4), and starts
  once it exists;
* cannot pull an image under ``unpullable.invalid/`` (the stand-in pulls nothing; this is how a test
  asks for a pull that fails): such a container waits in ``ImagePullBackOff`` with the kubelet's message
  (``pkg/kubelet/images/image_manager.go``: ``Back-off pulling image "…": ErrImagePull: …``).

It leaves a pod whose ``spec.schedulerName`` is not the default scheduler's to that scheduler (the real
kube-scheduler, ``cluster.running_scheduler``), and runs it once that binds it.

The command runs on this machine as written in the pod spec (tests put ``sys.executable`` there), so a
generation Deployment's pods run exactly what lagscaler put in their template.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
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
UNPULLABLE = "unpullable.invalid/"  # images under it cannot be pulled
DEFAULT_SCHEDULER = "default-scheduler"


@dataclass
class _Container:
    pod: str
    uid: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    name: str = "app"
    image: str = ""
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


class _ConfigError(Exception):
    """A variable names a Secret or ConfigMap (or key) that does not exist: the kubelet's message."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeletStandIn:
    """``async with KubeletStandIn(kube, namespace, directory)``: run that namespace's pods until exit."""

    def __init__(self, kube: KubeClient, namespace: str, directory: Path, *, period: float = 0.2) -> None:
        self.kube = kube
        self.namespace = namespace
        self.directory = directory
        self.period = period
        self.containers: dict[str, _Container] = {}  # pod name → its container
        self.errors: list[str] = []  # what went wrong in a round (a stand-in must not fail silently)
        self._reported: dict[str, Any] = {}  # pod name → the last container state written
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
                if pod.metadata.deletion_timestamp is None and pod.spec.scheduler_name in (
                    None,
                    DEFAULT_SCHEDULER,
                ):
                    await self._bind(pod)
                continue
            container = self.containers.get(name)
            if container is not None and container.uid != pod.metadata.uid:
                container = None  # a pod of the same name, created again
            if pod.metadata.deletion_timestamp is not None:
                await self._terminate(pod, container)
                continue
            if container is None:
                spec = pod.spec.containers[0]
                if (spec.image or "").startswith(UNPULLABLE):
                    image = spec.image
                    message = (
                        f'Back-off pulling image "{image}": ErrImagePull: failed to pull and unpack image'
                        f' "{image}": failed to resolve reference "{image}": {image}: not found'
                    )
                    await self._report(
                        pod, spec, {"waiting": {"reason": "ImagePullBackOff", "message": message}}
                    )
                    continue
                try:
                    container = self._container(pod, await self._environment(pod, spec))
                except _ConfigError as exc:
                    waiting = {"reason": "CreateContainerConfigError", "message": str(exc)}
                    await self._report(pod, spec, {"waiting": waiting})
                    continue
                self.containers[name] = container
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

    async def _environment(self, pod: Any, container: Any) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAGSCALER_")}
        for variable in container.env or ():
            source = variable.value_from
            if source is None:
                env[variable.name] = variable.value or ""
            elif source.field_ref is not None:
                env[variable.name] = _field(pod, source.field_ref.field_path)
            elif source.secret_key_ref is not None:
                ref = source.secret_key_ref
                data = await self._read("secret", ref.name, optional=bool(ref.optional))
                if data is not None and ref.key in data:
                    env[variable.name] = base64.b64decode(data[ref.key]).decode()
                elif data is not None and not ref.optional:
                    raise _ConfigError(f"couldn't find key {ref.key} in Secret {self.namespace}/{ref.name}")
            elif source.config_map_key_ref is not None:
                ref = source.config_map_key_ref
                data = await self._read("configmap", ref.name, optional=bool(ref.optional))
                if data is not None and ref.key in data:
                    env[variable.name] = data[ref.key]
                elif data is not None and not ref.optional:
                    raise _ConfigError(
                        f"couldn't find key {ref.key} in ConfigMap {self.namespace}/{ref.name}"
                    )
            else:
                raise ValueError(f"the kubelet stand-in cannot resolve {source}")
        return env

    async def _read(self, kind: str, name: str, *, optional: bool) -> dict[str, str] | None:
        """A Secret's or ConfigMap's data; None if it is absent and optional, else its absence raised
        as the kubelet words it (its secret and configmap managers' NotFound: ``secret "x" not found``)."""
        try:
            if kind == "secret":
                found = await self._core.read_namespaced_secret(name, self.namespace)
            else:
                found = await self._core.read_namespaced_config_map(name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            if optional:
                return None
            raise _ConfigError(f'{kind} "{name}" not found') from None
        return dict(found.data or {})

    def _container(self, pod: Any, env: dict[str, str]) -> _Container:
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
            env=env,
            log=self.directory / f"{pod.metadata.name}.log",
            name=spec.name,
            image=spec.image or "",
        )

    async def _report(
        self,
        pod: Any,
        spec: Any,
        state: dict[str, Any],
        *,
        last: dict[str, Any] | None = None,
        restarts: int = 0,
        phase: str | None = None,
    ) -> None:
        """Write the container's state into the pod's status as a kubelet does (once per change)."""
        key = (pod.metadata.uid, repr(state), restarts)
        if self._reported.get(pod.metadata.name) == key:
            return
        running = "running" in state
        status: dict[str, Any] = {
            "containerStatuses": [
                {
                    "name": spec.name,
                    "image": spec.image or "",
                    "imageID": "",
                    "ready": running,
                    "started": running,
                    "restartCount": restarts,
                    "state": state,
                    "lastState": last or {},
                }
            ]
        }
        if phase is not None:
            status["phase"] = phase
        try:
            await self._core.patch_namespaced_pod_status(
                pod.metadata.name, self.namespace, {"status": status}
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
        self._reported[pod.metadata.name] = key

    async def _keep_running(self, pod: Any, container: _Container) -> None:
        popen = container.popen
        if popen is not None and popen.poll() is None:
            return
        now = time.monotonic()
        spec = pod.spec.containers[0]
        if popen is not None and container.kill_at is None and not container.restart_at:
            container.exits.append(popen.returncode)
            container.restart_at = now + _RESTART_AFTER
            # kuberuntime_manager.go (doBackOff): "back-off %s restarting failed container=%s pod=%s"
            message = (
                f"back-off 10s restarting failed container={spec.name}"
                f" pod={pod.metadata.name}_{self.namespace}({pod.metadata.uid})"
            )
            code = popen.returncode
            last = {"terminated": {"exitCode": code, "reason": "Error", "finishedAt": _now()}}
            await self._report(
                pod,
                spec,
                {"waiting": {"reason": "CrashLoopBackOff", "message": message}},
                last=last,
                restarts=container.starts - 1,
            )
        if now < container.restart_at:
            return
        self._spawn(container)
        container.starts += 1
        container.restart_at = 0.0
        await self._report(pod, spec, {"running": {"startedAt": _now()}}, restarts=container.starts - 1)
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
