"""The Kubernetes backend: one Deployment per generation, cloned from the workload's own Deployment.

What it does for each request of the controller (``docs/handover.md`` §7):

* ``ensure(g, n)``: Deployment ``<target>-g<g>`` exists with ``n`` replicas. It is created once, by
  name (a second create answers 409 and changes nothing), from the workload's Deployment as it is at
  that moment (its pod template: image, command, resources, service account…) with the generation's
  identity in every container's environment, labelled ``lagscaler.io/workload`` and
  ``lagscaler.io/generation``, and owned by the workload's Deployment (deleting it deletes every
  generation through the garbage collector). Later calls only patch ``spec.replicas``: a generation's
  template never changes under it (that would roll its pods, a rebalance), so a new template reaches
  the workload at its next generation.
* ``observe()``: the pods of each generation that are not confirmed gone (listed by the API server and
  not ``Succeeded``/``Failed``), by pod name, which is each worker's id (the downward API puts it in
  ``LAGSCALER_HANDOVER_WORKER``). The workload's own Deployment's pods are **generation 0**: the
  controller removes them like any generation it does not run, so lagscaler scales that Deployment to 0
  when it takes a workload over and keeps it there (docs/handover.md §7).
* ``problems()``: from what ``observe`` read, the pods of a generation that cannot run, and the
  generations whose pods the API server refuses to create (a ResourceQuota, a LimitRange, PodSecurity:
  no pod to read, but the Deployment's ``ReplicaFailure`` condition says why).
* ``remove(g)``: scale the generation to 0 (its pods get SIGTERM and their grace period from the
  ReplicaSet); once it has no pod left, ``observe`` deletes the Deployment.
* ``kill(pods)``: lower the generation's replicas so its ReplicaSet does not replace them, then delete
  them with a one-second grace period. A pod leaves the API only when its kubelet confirms its
  containers stopped, so a pod on an unreachable node stays listed (and the handover aborts) rather
  than being taken for gone while it might still run.

The backend keeps nothing in memory that matters: a restarted controller finds every generation by
its labels and adopts it.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from lagscaler.core.handover.machine import WorkerProblem
from lagscaler.edges.handover.backend import WORKER_ENV as ENV
from lagscaler.edges.handover.backend import GenerationSpec
from lagscaler.edges.handover.pods import PodTrouble, deployment_trouble, pod_trouble
from lagscaler.errors import UserError
from lagscaler.logs import get_logger

__all__ = [
    "LABEL_GENERATION",
    "LABEL_WORKLOAD",
    "KubernetesBackend",
    "KubernetesBackendError",
    "clone_deployment",
    "generation_deployment_name",
    "selector_string",
    "workload_problem",
]

_log = get_logger("lagscaler.edges.handover.kubernetes")

LABEL_WORKLOAD = "lagscaler.io/workload"  # the policy's name (the workload key without its namespace)
LABEL_GENERATION = "lagscaler.io/generation"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
ANNOTATION_CLONED_FROM = "lagscaler.io/cloned-from"  # <name>@<resourceVersion> of the workload's Deployment
FIELD_MANAGER = "lagscaler"
KILL_GRACE_SECONDS = 1  # not 0: a force delete would drop the pod from the API before its kubelet stops it
# The ReplicaSet controller removes the pods with the lowest cost first when its Deployment shrinks.
ANNOTATION_DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
LOWEST_DELETION_COST = str(-(2**31))
FORGET_TROUBLE_AFTER = 60.0  # s out of trouble before a pod's trouble is forgotten (see problems())
_GONE_PHASES = ("Succeeded", "Failed")  # its containers will not run again


class KubernetesBackendError(RuntimeError):
    """A request the API server refused or could not answer; the message names the object and the reason."""


_LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


def workload_problem(workload: str, target: str) -> str | None:
    """Why this backend cannot run ``workload`` (``namespace/name``) cloning Deployment ``target``."""
    namespace, sep, name = workload.partition("/")
    if not sep or not namespace or not name:
        return f"expected the workload as namespace/name, got {workload!r}"
    if not _LABEL_VALUE.fullmatch(name):
        return (
            f"its name {name!r} must be a Kubernetes label value (at most 63 letters, digits, '-', '_'"
            " or '.', starting and ending with a letter or digit): generations are labelled with it"
        )
    if not target:
        return "no Deployment to clone (scaleTargetRef.name)"
    return None


def generation_deployment_name(target: str, generation: int) -> str:
    return f"{target}-g{generation}"


def selector_string(selector: Mapping[str, Any]) -> str:
    """A LabelSelector (``matchLabels``/``matchExpressions``, as JSON) as a ``label_selector`` query."""
    parts = [f"{key}={value}" for key, value in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or ():
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or ()
        if operator == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif operator == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif operator == "Exists":
            parts.append(key)
        elif operator == "DoesNotExist":
            parts.append(f"!{key}")
        else:
            raise KubernetesBackendError(f"unknown label selector operator {operator!r}")
    return ",".join(parts)


def _identity_env(spec: GenerationSpec) -> list[dict[str, Any]]:
    """The variables ``lagscaler.worker.WorkerConfig.from_env`` reads, the worker id from the pod name."""
    return [
        {"name": ENV["workload"], "value": spec.workload},
        {"name": ENV["generation"], "value": str(spec.generation)},
        {"name": ENV["group"], "value": spec.group},
        {"name": ENV["topics"], "value": ",".join(spec.topics)},
        {"name": ENV["control_topic"], "value": spec.control_topic},
        {"name": ENV["worker"], "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]


def clone_deployment(
    original: Mapping[str, Any], spec: GenerationSpec, *, name: str, workload_label: str, replicas: int
) -> dict[str, Any]:
    """Deployment ``name`` for generation ``spec.generation``, made from the workload's Deployment (as JSON).

    Pure, so what a generation's pods get is checked without a cluster. Every container gets the
    generation's identity ahead of its own variables (so its own can refer to them as ``$(NAME)``);
    a variable of the same name it had is dropped, except ``LAGSCALER_KAFKA_BOOTSTRAP``, which it keeps
    if it sets one (the application may reach the brokers through another listener than ``serve``)
    and otherwise gets ``serve``'s bootstrap servers. The selector is the original's narrowed to the
    generation, and the pods keep the original's labels (Services, PodDisruptionBudgets and
    monitors that select the workload's pods select every generation's).
    """
    metadata = original["metadata"]
    ours = {LABEL_WORKLOAD: workload_label, LABEL_GENERATION: str(spec.generation)}
    selector = copy.deepcopy(original["spec"]["selector"])
    selector["matchLabels"] = {**(selector.get("matchLabels") or {}), **ours}
    template = copy.deepcopy(original["spec"]["template"])
    template_meta = template.setdefault("metadata", {})
    template_meta.pop("creationTimestamp", None)
    template_meta["labels"] = {**(template_meta.get("labels") or {}), **ours}
    identity = _identity_env(spec)
    names = {e["name"] for e in identity}
    for container in template["spec"]["containers"]:
        own = [e for e in container.get("env") or () if e["name"] not in names]
        bootstrap = [] if any(e["name"] == ENV["bootstrap"] for e in own) else [
            {"name": ENV["bootstrap"], "value": ",".join(spec.bootstrap)}
        ]  # fmt: skip
        container["env"] = [*identity, *bootstrap, *own]
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": metadata["namespace"],
            "labels": {**(metadata.get("labels") or {}), **ours, LABEL_MANAGED_BY: FIELD_MANAGER},
            "annotations": {
                ANNOTATION_CLONED_FROM: f"{metadata['name']}@{metadata.get('resourceVersion', '')}"
            },
            # Not a controller reference and not blocking: the garbage collector deletes generations
            # after their workload, and creating one needs no rights on the workload's finalizers.
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": metadata["name"],
                    "uid": metadata["uid"],
                }
            ],
        },
        "spec": {"replicas": replicas, "selector": selector, "template": template},
    }
    for key in ("minReadySeconds", "progressDeadlineSeconds", "revisionHistoryLimit"):
        if key in original["spec"]:
            body["spec"][key] = original["spec"][key]
    return body


@dataclass(frozen=True, slots=True)
class _Pod:
    name: str
    generation: int
    terminating: bool
    trouble: PodTrouble | None = None


def _may_be_in_trouble(pod: Any) -> bool:
    """Cheap test on the client's object before the pod is turned into JSON and read closely: only a
    Pending pod, or one with a container waiting, can be in trouble (a crash loop is ``Running``)."""
    status = pod.status
    if status is None:
        return False
    if status.phase == "Pending":
        return True
    containers = [*(status.init_container_statuses or ()), *(status.container_statuses or ())]
    return any(c.state is not None and c.state.waiting is not None for c in containers)


def _refused(deployment: Any) -> PodTrouble | None:
    """Why a generation's pods are not created (its Deployment's ``ReplicaFailure``), or None; the
    Deployment is turned into JSON and read closely only when it has that condition."""
    status = deployment.status
    conditions = (status.conditions if status is not None else None) or ()
    if not deployment.spec.replicas or not any(c.type == "ReplicaFailure" for c in conditions):
        return None
    return deployment_trouble({"status": {"conditions": [c.to_dict(serialize=True) for c in conditions]}})


def _problem(exc: ApiException) -> str:
    """The API server's own message (it names the verb, resource and namespace of a 403)."""
    try:
        message = json.loads(exc.body or "{}").get("message") or exc.reason
    except (ValueError, TypeError, AttributeError):
        message = exc.reason
    return f"{exc.status} {message}"


class KubernetesBackend:
    """Runs one workload's generations as Deployments in its namespace; implements ``Backend``.

    ``api`` is owned by the caller (one client serves every workload). ``workload`` is the policy key
    ``namespace/name``; ``target`` the name of the workload's own Deployment (its ``scaleTargetRef``).
    """

    def __init__(
        self,
        api: k8s.ApiClient,
        workload: str,
        target: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        problem = workload_problem(workload, target)
        if problem is not None:
            raise UserError(f"handover workload {workload}: {problem}")
        namespace, _, name = workload.partition("/")
        self.workload = workload
        self.namespace = namespace
        self.name = name
        self.target = target
        self._log = _log.bind(workload=workload, namespace=namespace)
        self._apps = k8s.AppsV1Api(api)
        self._core = k8s.CoreV1Api(api)
        self._api = api
        # What the last observe() saw, for the actions of the same controller step (each is re-read
        # by the next observe, so nothing here outlives a step).
        self._pods: dict[str, _Pod] = {}  # pod name → its generation
        self._seen: dict[str, dict[str, Any]] = {}  # generation Deployment name → its labels and replicas
        self._refused: dict[str, tuple[int, PodTrouble]] = {}  # Deployment name → (generation, why)
        self._clock = clock
        # (pod, trouble) → when this backend first and last saw it, for a status that does not say
        # since when (a container's waiting state has no time). Lost with the backend: a restarted
        # controller waits the grace again.
        self._seen_trouble: dict[tuple[str, str], tuple[float, float]] = {}

    # --- reading ----------------------------------------------------------------------------------

    async def _call(self, what: str, coroutine: Any) -> Any:
        try:
            return await coroutine
        except ApiException as exc:
            raise KubernetesBackendError(f"{self.workload}: {what}: {_problem(exc)}") from None

    async def _read(self, name: str) -> dict[str, Any] | None:
        """Deployment ``name`` as JSON, or None if there is none."""
        try:
            deployment = await self._apps.read_namespaced_deployment(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubernetesBackendError(
                f"{self.workload}: read Deployment {self.namespace}/{name}: {_problem(exc)}"
            ) from None
        result: dict[str, Any] = self._api.sanitize_for_serialization(deployment)
        return result

    async def _list_pods(self, selector: str) -> list[_Pod]:
        listing = await self._call(
            f"list pods ({selector})", self._core.list_namespaced_pod(self.namespace, label_selector=selector)
        )
        pods = []
        for pod in listing.items:
            if pod.status is not None and pod.status.phase in _GONE_PHASES:
                continue
            labels = pod.metadata.labels or {}
            raw = labels.get(LABEL_GENERATION)
            generation = int(raw) if raw is not None and raw.isdigit() else 0
            terminating = pod.metadata.deletion_timestamp is not None
            trouble = (
                pod_trouble(self._api.sanitize_for_serialization(pod))
                if not terminating and _may_be_in_trouble(pod)
                else None
            )
            pods.append(_Pod(pod.metadata.name, generation, terminating, trouble))
        return pods

    def problems(self) -> dict[int, tuple[WorkerProblem, ...]]:
        """The pods the last :meth:`observe` saw unable to run, and the generations whose pods the API
        server refused to create (named by their Deployment: there is no pod), by generation
        (docs/handover.md §4.1)."""
        now = self._clock()
        found: dict[int, list[WorkerProblem]] = {}
        troubled = [("pod", p.name, p.generation, p.trouble) for p in self._pods.values() if p.trouble]
        troubled += [("deployment", name, g, trouble) for name, (g, trouble) in self._refused.items()]
        for kind, worker, generation, trouble in troubled:
            key = (worker, str(trouble.trouble))
            new = key not in self._seen_trouble
            first = now if new else self._seen_trouble[key][0]
            self._seen_trouble[key] = (first, now)
            if new:
                self._log.info(
                    "generation pod cannot run" if kind == "pod" else "generation pods cannot be created",
                    generation=generation,
                    cause=trouble.reason,
                    message=trouble.message,
                    **{kind: worker},
                )
            since = trouble.since if trouble.since is not None else first
            problem = WorkerProblem(worker, trouble.trouble, trouble.reason, trouble.message, since)
            found.setdefault(generation, []).append(problem)
        # A crash-looping container runs for a moment between two back-offs: a pod is forgotten only
        # once it has been out of trouble for a while, so that moment does not restart its grace.
        for key, (_, last) in list(self._seen_trouble.items()):
            if now - last > FORGET_TROUBLE_AFTER:
                del self._seen_trouble[key]
        return {g: tuple(sorted(ps, key=lambda p: (p.since, p.worker))) for g, ps in found.items()}

    async def observe(self) -> dict[int, frozenset[str]]:
        ours = f"{LABEL_WORKLOAD}={self.name}"
        deployments = await self._call(
            "list generation Deployments",
            self._apps.list_namespaced_deployment(self.namespace, label_selector=ours),
        )
        pods = await self._list_pods(f"{ours},{LABEL_GENERATION}")
        original = await self._read(self.target)
        if original is not None:
            selector = selector_string(original["spec"]["selector"])
            pods += [p for p in await self._list_pods(f"{selector},!{LABEL_GENERATION}") if p.generation == 0]
        self._pods = {p.name: p for p in pods}
        running: dict[int, set[str]] = {}
        for pod in pods:
            running.setdefault(pod.generation, set()).add(pod.name)
        self._seen = {}
        self._refused = {}
        for deployment in deployments.items:
            labels = deployment.metadata.labels or {}
            raw = labels.get(LABEL_GENERATION, "")
            if raw.isdigit() and deployment.spec.replicas == 0 and int(raw) not in running:
                await self._delete_deployment(deployment.metadata.name)  # removed, and nothing left of it
                continue
            self._seen[deployment.metadata.name] = {
                "metadata": {"labels": labels},
                "spec": {"replicas": deployment.spec.replicas},
            }
            refused = _refused(deployment) if raw.isdigit() else None
            if refused is not None:
                self._refused[deployment.metadata.name] = (int(raw), refused)
        return {g: frozenset(names) for g, names in running.items()}

    # --- reconciliations ----------------------------------------------------------------------------

    async def ensure(self, spec: GenerationSpec, replicas: int) -> None:
        name = generation_deployment_name(self.target, spec.generation)
        existing = self._seen.get(name) or await self._read(name)
        if existing is None:
            original = await self._read(self.target)
            if original is None:
                raise KubernetesBackendError(
                    f"{self.workload}: cannot start generation {spec.generation}: the workload's Deployment"
                    f" {self.namespace}/{self.target} does not exist"
                )
            body = clone_deployment(original, spec, name=name, workload_label=self.name, replicas=replicas)
            try:
                await self._apps.create_namespaced_deployment(
                    self.namespace, cast(Any, body), field_manager=FIELD_MANAGER
                )
            except ApiException as exc:
                if exc.status != 409:
                    raise KubernetesBackendError(
                        f"{self.workload}: create Deployment {self.namespace}/{name}: {_problem(exc)}"
                    ) from None
                existing = await self._read(name)  # created meanwhile (another leader's last act)
            else:
                self._log.info(
                    "generation deployment created",
                    deployment=name,
                    generation=spec.generation,
                    replicas=replicas,
                )
                return
            if existing is None:
                return  # created and deleted again meanwhile: the next step sees what is true
        labels = existing["metadata"].get("labels") or {}
        if labels.get(LABEL_WORKLOAD) != self.name or labels.get(LABEL_GENERATION) != str(spec.generation):
            raise KubernetesBackendError(
                f"{self.workload}: Deployment {self.namespace}/{name} exists and is not generation"
                f" {spec.generation} of this workload (labels {labels}): rename or delete it"
            )
        if existing["spec"].get("replicas") != replicas:
            await self._scale(name, replicas)

    async def _scale(self, name: str, replicas: int) -> None:
        await self._call(
            f"scale Deployment {self.namespace}/{name} to {replicas}",
            self._apps.patch_namespaced_deployment(
                name, self.namespace, {"spec": {"replicas": replicas}}, field_manager=FIELD_MANAGER
            ),
        )
        if name in self._seen:
            self._seen[name]["spec"]["replicas"] = replicas

    async def remove(self, generation: int) -> None:
        if generation == 0:
            original = await self._read(self.target)
            if original is not None and original["spec"].get("replicas") != 0:
                self._log.warning(
                    "workload deployment scaled to zero",
                    deployment=self.target,
                    replicas=original["spec"].get("replicas"),
                    reason="lagscaler runs this workload in generations of its own",
                )
                await self._scale(self.target, 0)
            return
        name = generation_deployment_name(self.target, generation)
        existing = await self._read(name)
        if existing is not None and existing["spec"].get("replicas") != 0:
            await self._scale(name, 0)

    async def hand_back(self, replicas: int) -> None:
        """Scale the workload's own Deployment back to ``replicas`` — only from 0, where taking the
        workload over left it: once it runs, its size is its HPA's (or its owner's), not lagscaler's."""
        original = await self._read(self.target)
        if original is None:
            raise KubernetesBackendError(
                f"{self.workload}: cannot hand the workload back: its Deployment"
                f" {self.namespace}/{self.target} does not exist"
            )
        if original["spec"].get("replicas") == 0:
            self._log.info(
                "workload deployment scaled back",
                deployment=self.target,
                replicas=replicas,
                reason="the workload left handover mode",
            )
            await self._scale(self.target, replicas)

    async def kill(self, workers: frozenset[str]) -> None:
        if not self._pods:
            await self.observe()
        doomed: dict[int, list[str]] = {}
        for worker in sorted(workers):
            pod = self._pods.get(worker)
            if pod is not None:  # never delete a pod this workload does not own
                doomed.setdefault(pod.generation, []).append(worker)
        for generation, names in doomed.items():
            if generation == 0:
                await self.remove(0)
            else:
                # Shrink the Deployment so that its ReplicaSet does not replace them, and mark them the
                # cheapest to delete so that the ReplicaSet's own pick is them and not a healthy worker.
                for pod_name in names:
                    await self._mark_cheapest(pod_name)
                keep = [
                    p for p in self._pods.values()
                    if p.generation == generation and not p.terminating and p.name not in names
                ]  # fmt: skip
                name = generation_deployment_name(self.target, generation)
                existing = await self._read(name)
                if existing is not None and (existing["spec"].get("replicas") or 0) > len(keep):
                    await self._scale(name, len(keep))
            for pod_name in names:
                try:
                    await self._core.delete_namespaced_pod(
                        pod_name, self.namespace, grace_period_seconds=KILL_GRACE_SECONDS
                    )
                except ApiException as exc:
                    if exc.status != 404:
                        raise KubernetesBackendError(
                            f"{self.workload}: delete pod {self.namespace}/{pod_name}: {_problem(exc)}"
                        ) from None

    async def _mark_cheapest(self, pod_name: str) -> None:
        patch = {"metadata": {"annotations": {ANNOTATION_DELETION_COST: LOWEST_DELETION_COST}}}
        try:
            await self._core.patch_namespaced_pod(
                pod_name, self.namespace, patch, field_manager=FIELD_MANAGER
            )
        except ApiException as exc:
            if exc.status != 404:
                raise KubernetesBackendError(
                    f"{self.workload}: mark pod {self.namespace}/{pod_name} for deletion: {_problem(exc)}"
                ) from None

    async def _delete_deployment(self, name: str) -> None:
        try:
            await self._apps.delete_namespaced_deployment(
                name, self.namespace, propagation_policy="Background"
            )
        except ApiException as exc:
            if exc.status != 404:
                raise KubernetesBackendError(
                    f"{self.workload}: delete Deployment {self.namespace}/{name}: {_problem(exc)}"
                ) from None
            return
        self._log.info("generation deployment deleted", deployment=name)

    async def close(self) -> None:
        """Nothing to release: the API client is the caller's, and the generations keep running."""
