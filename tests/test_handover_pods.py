"""Which pods cannot run (or cannot be created), read from pod and Deployment statuses
(``lagscaler.edges.handover.pods``), pure.

Where the statuses come from: the ``Unschedulable`` one was recorded from the real kube-scheduler
v1.35.4 in this repository's control-plane tier
(``tests/controlplane/test_handover_kubernetes.py``, ``…no_node_can_take…``, which prints it). No real
kubelet runs here, so the kubelet's states are written as kubelet v1.35.4 writes them: the reasons and
messages of ``pkg/kubelet/images/image_manager.go`` (``Back-off pulling image %q: <the pull error>``),
``pkg/kubelet/kubelet_pods.go`` (``makeEnvironmentVariables``: a Secret's NotFound, ``couldn't find key
%v in ConfigMap %v/%v``) and ``pkg/kubelet/kuberuntime/kuberuntime_manager.go`` (``back-off %s
restarting failed container=%s pod=%s``), in the shape ``kubectl get pod -o json`` shows. The
Deployment whose pods a ResourceQuota refuses was recorded from the real kube-apiserver and
kube-controller-manager v1.35.4 (``…resource_quota_refuses_are_reported…`` there, which prints it).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lagscaler.core.handover.machine import Trouble
from lagscaler.edges.handover.pods import (
    FAILED_CREATE,
    FAILING_REASONS,
    PodTrouble,
    deployment_trouble,
    pod_trouble,
)

# Recorded: the real kube-scheduler, a pod asking for 2 CPUs, one node with 1.
UNSCHEDULABLE = {
    "conditions": [
        {
            "lastProbeTime": None,
            "lastTransitionTime": "2026-12-07T21:05:04Z",
            "message": "0/1 nodes are available: 1 Insufficient cpu. no new claims to deallocate, preemption:"
            " 0/1 nodes are available: 1 Preemption is not helpful for scheduling.",
            "observedGeneration": 1,
            "reason": "Unschedulable",
            "status": "False",
            "type": "PodScheduled",
        }
    ],
    "phase": "Pending",
    "qosClass": "Burstable",
}

SCHEDULED = {
    "lastProbeTime": None,
    "lastTransitionTime": "2026-12-07T21:05:04Z",
    "status": "True",
    "type": "PodScheduled",
}


def container(name: str, state: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": "registry.example/ledger:2",
        "imageID": "",
        "ready": "running" in state,
        "restartCount": 0,
        "started": "running" in state,
        "state": state,
        "lastState": {},
        **fields,
    }


def waiting(reason: str, message: str | None = None) -> dict[str, Any]:
    return {"waiting": {"reason": reason, **({"message": message} if message is not None else {})}}


RUNNING = {"running": {"startedAt": "2026-12-07T21:05:10Z"}}


def pod(phase: str, *containers: dict[str, Any], init: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [SCHEDULED],
        "containerStatuses": list(containers),
        "qosClass": "BestEffort",
    }
    if init:
        status["initContainerStatuses"] = list(init)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ledger-g2-abc"}, "status": status}


PULL = (
    'Back-off pulling image "registry.example/ledger:2": ErrImagePull: failed to pull and unpack image'
    ' "registry.example/ledger:2": failed to resolve reference "registry.example/ledger:2":'
    " registry.example/ledger:2: not found"
)
CRASH = "back-off 40s restarting failed container=app pod=ledger-g2-abc_payments(0f1e…)"
CRASHED = {
    "terminated": {
        "exitCode": 1,
        "reason": "Error",
        "message": "ModuleNotFoundError: No module named 'ledger'",
        "startedAt": "2026-12-07T21:06:01Z",
        "finishedAt": "2026-12-07T21:06:02Z",
    }
}

CASES: list[tuple[str, dict[str, Any], PodTrouble | None]] = [
    ("running and ready", pod("Running", container("app", RUNNING)), None),
    ("being created", pod("Pending", container("app", waiting("ContainerCreating"))), None),
    (
        "gated: whoever gated it means to lift the gate",
        {
            "status": {
                "phase": "Pending",
                "conditions": [{**SCHEDULED, "status": "False", "reason": "SchedulingGated"}],
            }
        },
        None,
    ),
    ("a pod without status yet", {"metadata": {"name": "x"}}, None),
    (
        "no node can take it (recorded from kube-scheduler)",
        {"status": UNSCHEDULABLE},
        PodTrouble(
            Trouble.UNSCHEDULABLE,
            "Unschedulable",
            UNSCHEDULABLE["conditions"][0]["message"],  # type: ignore[index]
            dt.datetime(2026, 12, 7, 21, 5, 4, tzinfo=dt.UTC).timestamp(),
        ),
    ),
    (
        "its image cannot be pulled",
        pod("Pending", container("app", waiting("ImagePullBackOff", PULL))),
        PodTrouble(Trouble.FAILING, "ImagePullBackOff", f"container app: {PULL}"),
    ),
    (
        "its image failed to pull just now",
        pod("Pending", container("app", waiting("ErrImagePull", "rpc error: code = NotFound"))),
        PodTrouble(Trouble.FAILING, "ErrImagePull", "container app: rpc error: code = NotFound"),
    ),
    (
        "its image name is not one",
        pod(
            "Pending", container("app", waiting("InvalidImageName", 'couldn\'t parse image name "Ledger:2"'))
        ),
        PodTrouble(
            Trouble.FAILING, "InvalidImageName", 'container app: couldn\'t parse image name "Ledger:2"'
        ),
    ),
    (
        "a Secret it reads is missing",
        pod(
            "Pending",
            container("app", waiting("CreateContainerConfigError", 'secret "db-password" not found')),
        ),
        PodTrouble(
            Trouble.FAILING, "CreateContainerConfigError", 'container app: secret "db-password" not found'
        ),
    ),
    (
        "it crashes as it starts: the last exit says why",
        pod(
            "Running", container("app", waiting("CrashLoopBackOff", CRASH), lastState=CRASHED, restartCount=3)
        ),
        PodTrouble(
            Trouble.FAILING,
            "CrashLoopBackOff",
            f"container app: {CRASH}; last exit code 1 (Error): ModuleNotFoundError: No module named 'ledger'",
        ),
    ),
    (
        "an init container crashes: the app never starts",
        pod(
            "Pending",
            container("app", waiting("PodInitializing")),
            init=(container("migrate", waiting("CrashLoopBackOff", CRASH), lastState=CRASHED),),
        ),
        PodTrouble(
            Trouble.FAILING,
            "CrashLoopBackOff",
            f"init container migrate: {CRASH}; last exit code 1 (Error): ModuleNotFoundError: No module"
            " named 'ledger'",
        ),
    ),
    (
        "a sidecar runs, the app cannot pull",
        pod("Pending", container("proxy", RUNNING), container("app", waiting("ImagePullBackOff"))),
        PodTrouble(Trouble.FAILING, "ImagePullBackOff", "container app"),
    ),
    ("a container that stopped", pod("Running", container("app", {"terminated": {"exitCode": 0}})), None),
]


@pytest.mark.parametrize(("pod_json", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_what_a_pod_status_says(pod_json: dict[str, Any], expected: PodTrouble | None) -> None:
    assert pod_trouble(pod_json) == expected


def test_a_time_as_the_python_client_writes_it_is_read_too() -> None:
    condition = {**UNSCHEDULABLE["conditions"][0], "lastTransitionTime": "2026-12-07T21:05:04+00:00"}  # type: ignore[index]
    found = pod_trouble({"status": {"conditions": [condition]}})
    assert found is not None
    assert found.since == dt.datetime(2026, 12, 7, 21, 5, 4, tzinfo=dt.UTC).timestamp()
    unreadable = pod_trouble({"status": {"conditions": [{**condition, "lastTransitionTime": "yesterday"}]}})
    assert unreadable is not None
    assert unreadable.since is None  # the backend then counts from when it first saw it


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
reasons = st.sampled_from([*sorted(FAILING_REASONS), "ContainerCreating", "PodInitializing", "Completed"])


@given(json_values)
def test_any_json_at_all_is_read_without_an_error(value: Any) -> None:
    found = pod_trouble({"status": value}) if not isinstance(value, dict) else pod_trouble(value)
    assert found is None or found.reason in FAILING_REASONS | {"Unschedulable"}


@given(st.lists(reasons, max_size=3), st.lists(reasons, max_size=3), st.booleans())
def test_the_first_failing_container_is_the_one_named_init_containers_first(
    init: list[str], main: list[str], unschedulable: bool
) -> None:
    statuses = [container(f"c{i}", waiting(r)) for i, r in enumerate(main)]
    inits = tuple(container(f"i{i}", waiting(r)) for i, r in enumerate(init))
    body = pod("Pending", *statuses, init=inits)
    if unschedulable:
        body["status"]["conditions"] = UNSCHEDULABLE["conditions"]
    found = pod_trouble(body)
    failing = [(f"init container i{i}", r) for i, r in enumerate(init) if r in FAILING_REASONS] + [
        (f"container c{i}", r) for i, r in enumerate(main) if r in FAILING_REASONS
    ]
    if unschedulable:
        assert found is not None
        assert found.trouble is Trouble.UNSCHEDULABLE
    elif not failing:
        assert found is None
    else:
        assert found is not None
        assert found.trouble is Trouble.FAILING
        assert (found.message, found.reason) == failing[0]


# Recorded: a generation of two pods, a ResourceQuota of one; the ReplicaSet created one and was refused.
QUOTA_MESSAGE = (
    'pods "quota-g1-5c8d8c5db5-9ztp8" is forbidden: exceeded quota: ledger-pods, requested: pods=1, used:'
    " pods=1, limited: pods=1"
)
REFUSED: dict[str, Any] = {
    "conditions": [
        {
            "lastTransitionTime": "2026-12-08T00:07:17Z",
            "lastUpdateTime": "2026-12-08T00:07:17Z",
            "message": "Deployment does not have minimum availability.",
            "reason": "MinimumReplicasUnavailable",
            "status": "False",
            "type": "Available",
        },
        {
            "lastTransitionTime": "2026-12-08T00:07:17Z",
            "lastUpdateTime": "2026-12-08T00:07:17Z",
            "message": QUOTA_MESSAGE,
            "reason": "FailedCreate",
            "status": "True",
            "type": "ReplicaFailure",
        },
        {
            "lastTransitionTime": "2026-12-08T00:07:17Z",
            "lastUpdateTime": "2026-12-08T00:07:17Z",
            "message": 'ReplicaSet "quota-g1-5c8d8c5db5" is progressing.',
            "reason": "ReplicaSetUpdated",
            "status": "True",
            "type": "Progressing",
        },
    ],
    "observedGeneration": 1,
    "replicas": 1,
    "terminatingReplicas": 0,
    "unavailableReplicas": 2,
    "updatedReplicas": 1,
}
REFUSED_SINCE = dt.datetime(2026, 12, 8, 0, 7, 17, tzinfo=dt.UTC).timestamp()


def refused(**changes: Any) -> dict[str, Any]:
    """The recorded Deployment with its ReplicaFailure condition changed (a key set to None: removed)."""
    failure = {**REFUSED["conditions"][1], **changes}
    conditions = [REFUSED["conditions"][0], {k: v for k, v in failure.items() if v is not None}]
    return {"kind": "Deployment", "status": {**REFUSED, "conditions": conditions}}


DEPLOYMENT_CASES: list[tuple[str, dict[str, Any], PodTrouble | None]] = [
    (
        "a quota refuses its pods (recorded from the real control plane)",
        {"status": REFUSED},
        PodTrouble(Trouble.FAILING, FAILED_CREATE, QUOTA_MESSAGE, REFUSED_SINCE),
    ),
    (
        "PodSecurity refuses them",
        refused(
            message='pods "ledger-g2-7f9c-x2x9q" is forbidden: violates PodSecurity "restricted:latest":'
            ' runAsNonRoot != true (pod or container "app" must set securityContext.runAsNonRoot=true)'
        ),
        PodTrouble(
            Trouble.FAILING,
            FAILED_CREATE,
            'pods "ledger-g2-7f9c-x2x9q" is forbidden: violates PodSecurity "restricted:latest":'
            ' runAsNonRoot != true (pod or container "app" must set securityContext.runAsNonRoot=true)',
            REFUSED_SINCE,
        ),
    ),
    (
        "created again: no condition",
        {"status": {"replicas": 2, "conditions": [REFUSED["conditions"][0]]}},
        None,
    ),
    ("a Deployment without status yet", {"metadata": {"name": "ledger-g2"}}, None),
    ("pods that should go stay: not trouble for running", refused(reason="FailedDelete"), None),
    ("a condition no longer true", refused(status="False"), None),
    ("a status not spelt as the API spells it", refused(status="true"), None),
    ("a reason that is not text", refused(reason=["FailedCreate"]), None),
    ("a type that is not text", refused(type={"ReplicaFailure": True}), None),
    (
        "no message: reported with none",
        refused(message=None),
        PodTrouble(Trouble.FAILING, FAILED_CREATE, "", REFUSED_SINCE),
    ),
    (
        "a message that is not text is quoted as it is",
        refused(message=403),
        PodTrouble(Trouble.FAILING, FAILED_CREATE, "403", REFUSED_SINCE),
    ),
    (
        "a message on many lines is one line, cut to a log line's length",
        refused(message="exceeded quota:\n\tcompute,\r\n" + "x" * 2000),
        PodTrouble(
            Trouble.FAILING, FAILED_CREATE, ("exceeded quota: compute, " + "x" * 2000)[:500], REFUSED_SINCE
        ),
    ),
    (
        "no time, or an unreadable one: since when the backend first saw it",
        refused(lastTransitionTime="yesterday"),
        PodTrouble(Trouble.FAILING, FAILED_CREATE, QUOTA_MESSAGE, None),
    ),
    (
        "a time without a zone is not guessed",
        refused(lastTransitionTime="2026-12-08T00:07:17"),
        PodTrouble(Trouble.FAILING, FAILED_CREATE, QUOTA_MESSAGE, None),
    ),
    ("conditions that are not a list", {"status": {"conditions": {"type": "ReplicaFailure"}}}, None),
    (
        "entries that are not objects are passed over",
        {"status": {"conditions": ["ReplicaFailure", None, 7, REFUSED["conditions"][1]]}},
        PodTrouble(Trouble.FAILING, FAILED_CREATE, QUOTA_MESSAGE, REFUSED_SINCE),
    ),
]


@pytest.mark.parametrize(
    ("deployment_json", "expected"), [c[1:] for c in DEPLOYMENT_CASES], ids=[c[0] for c in DEPLOYMENT_CASES]
)
def test_what_a_deployment_status_says(deployment_json: dict[str, Any], expected: PodTrouble | None) -> None:
    assert deployment_trouble(deployment_json) == expected


@given(json_values)
def test_any_deployment_json_at_all_is_read_without_an_error(value: Any) -> None:
    found = (
        deployment_trouble({"status": value}) if not isinstance(value, dict) else deployment_trouble(value)
    )
    assert found is None or (found.trouble, found.reason) == (Trouble.FAILING, FAILED_CREATE)
    assert found is None or len(found.message) <= 500


@given(st.lists(json_values | st.just(REFUSED["conditions"][1]), max_size=5))
def test_a_refusal_among_any_other_conditions_is_found(conditions: list[Any]) -> None:
    found = deployment_trouble({"status": {"conditions": conditions}})
    if REFUSED["conditions"][1] in conditions:
        assert found == PodTrouble(Trouble.FAILING, FAILED_CREATE, QUOTA_MESSAGE, REFUSED_SINCE)
