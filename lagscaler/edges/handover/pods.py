"""Whether a generation's pods can run, from statuses alone: what the Kubernetes backend reports as a problem.

Pure, so it is tested on real statuses without a cluster. A pod is in trouble when

* the scheduler found no node for it: condition ``PodScheduled`` is ``False`` with reason
  ``Unschedulable`` (``k8s.io/api/core/v1/types.go``, ``PodReasonUnschedulable``, v0.35.4). The
  scheduler's message names why (``0/3 nodes are available: 3 Insufficient cpu. …``), and the
  condition's ``lastTransitionTime`` says since when. ``SchedulingGated`` is not trouble: whoever
  gated the pod means to lift the gate;
* one of its containers (or init containers) waits for a reason the kubelet only leaves when someone
  fixes something: an image it cannot pull (``pkg/kubelet/images/types.go``: ``ImagePullBackOff``,
  ``ErrImagePull``, ``InvalidImageName``, ``ErrImageNeverPull``), a container it cannot configure
  (``pkg/kubelet/kuberuntime/kuberuntime_container.go``, ``ErrCreateContainerConfig``: a missing Secret,
  ConfigMap or key), or a container that keeps exiting (``pkg/kubelet/container/sync_result.go``,
  ``ErrCrashLoopBackOff``) — all kubernetes v1.35.4. Its message is the kubelet's, with the last exit
  of a crash-looping container (its code, reason and termination message) added, since the back-off
  message itself only says how long the kubelet waits.

A generation's Deployment is in trouble when the API server refuses to create its pods, so that there
is no pod to read: a ResourceQuota the pods would exceed (``exceeded quota: …``), a LimitRange or a
PodSecurity level they violate, a ServiceAccount that does not exist. The ReplicaSet controller then
sets condition ``ReplicaFailure`` (status ``True``, reason ``FailedCreate``, the API server's error as
its message) on the generation's ReplicaSet (``pkg/controller/replicaset/replica_set_utils.go``,
``calculateStatus``), and the Deployment controller copies it, with its ``lastTransitionTime``, to the
Deployment (``pkg/controller/deployment/progress.go``, ``getReplicaFailures``), both kubernetes
v1.35.4; the condition goes when a create succeeds again. That is trouble of the *failing* kind,
quota included (``docs/handover.md`` §4.1, "Cannot run", says why).

Reasons that come and go (a pull that fails once, ``ContainerCreating``) are not listed, and every
problem is acted on only after a grace period (:func:`lagscaler.core.handover.machine.hopeless`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lagscaler.core.handover.machine import Trouble

__all__ = ["FAILED_CREATE", "FAILING_REASONS", "PodTrouble", "deployment_trouble", "pod_trouble"]

UNSCHEDULABLE = "Unschedulable"
FAILED_CREATE = "FailedCreate"  # k8s.io/api/apps/v1 DeploymentReplicaFailure's reason for a refused create
IMAGE_REASONS = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"})
FAILING_REASONS = IMAGE_REASONS | {"CreateContainerConfigError", "CrashLoopBackOff"}
_MESSAGE_LIMIT = 500  # a termination message may be 4 KiB; a log line needs the start of it


@dataclass(frozen=True, slots=True)
class PodTrouble:
    """Why a pod cannot run (or cannot be created): ``reason`` as Kubernetes states it, ``message`` in its
    words (with the container it concerns), ``since`` the Unix time the status says it began (None: it
    does not say)."""

    trouble: Trouble
    reason: str
    message: str
    since: float | None = None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _sequence(value: object) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list | tuple) else []


def _time(value: object) -> float | None:
    """An RFC 3339 time as the API (``…Z``) or kubernetes_asyncio (``…+00:00``) writes it."""
    if isinstance(value, datetime):
        return value.timestamp()
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.timestamp() if parsed.tzinfo is not None else None


def _text(value: object) -> str:
    return " ".join(str(value).split())[:_MESSAGE_LIMIT] if value else ""


def _condition(
    status: Mapping[str, Any], kind: str, state: str, reason: str, trouble: Trouble
) -> PodTrouble | None:
    """The first condition of ``status`` of type ``kind`` in ``state`` for ``reason``, as trouble."""
    for condition in _sequence(status.get("conditions")):
        if (
            condition.get("type") == kind
            and condition.get("status") == state
            and condition.get("reason") == reason
        ):
            since = _time(condition.get("lastTransitionTime"))
            return PodTrouble(trouble, reason, _text(condition.get("message")), since)
    return None


def _last_exit(status: Mapping[str, Any]) -> str:
    terminated = _mapping(_mapping(status.get("lastState")).get("terminated"))
    if not terminated:
        return ""
    parts = [f"last exit code {terminated.get('exitCode', '?')}"]
    if terminated.get("reason"):
        parts.append(f"({terminated['reason']})")
    said = _text(terminated.get("message"))
    return " ".join(parts) + (f": {said}" if said else "")


def _waiting(status: Mapping[str, Any], kind: str) -> PodTrouble | None:
    waiting = _mapping(_mapping(status.get("state")).get("waiting"))
    reason = waiting.get("reason")
    if not isinstance(reason, str) or reason not in FAILING_REASONS:
        return None
    said = [_text(waiting.get("message"))]
    if reason == "CrashLoopBackOff":
        said.append(_last_exit(status))
    message = "; ".join(s for s in said if s)
    where = f"{kind} {status.get('name', '?')}"
    return PodTrouble(Trouble.FAILING, reason, f"{where}: {message}" if message else where)


def pod_trouble(pod: Mapping[str, Any]) -> PodTrouble | None:
    """Why ``pod`` (as JSON, camelCase: the API's own form) cannot run, or None if nothing says so."""
    status = _mapping(pod.get("status"))
    unschedulable = _condition(status, "PodScheduled", "False", UNSCHEDULABLE, Trouble.UNSCHEDULABLE)
    if unschedulable is not None:
        return unschedulable
    for key, kind in (("initContainerStatuses", "init container"), ("containerStatuses", "container")):
        for container in _sequence(status.get(key)):
            found = _waiting(container, kind)
            if found is not None:
                return found
    return None


def deployment_trouble(deployment: Mapping[str, Any]) -> PodTrouble | None:
    """Why the pods of ``deployment`` (as JSON, camelCase) cannot be created, or None if nothing says so.

    Only ``FailedCreate``: a ``ReplicaFailure`` of reason ``FailedDelete`` means pods that should go
    stay, which does not keep a generation from running.
    """
    return _condition(
        _mapping(deployment.get("status")), "ReplicaFailure", "True", FAILED_CREATE, Trouble.FAILING
    )
