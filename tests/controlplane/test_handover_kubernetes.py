"""Handover in Kubernetes, on the real control plane and the real broker.

The workload is a real Deployment whose container runs ``lagscaler_demo.playground.handover_app`` (a worker
built on the SDK that writes what it processed to a sink). There are no nodes: the kubelet stand-in
(``kubelet.py``) runs every pod of the test's namespace as a local process from the pod's own spec
and environment, so a generation's workers run exactly what lagscaler put in its Deployment. The
backend and the Lease act with the identity of the chart's ServiceAccount, rendered with handover
enabled for the test's namespace only.

What a user relies on: the workload's own consumers are taken over (its Deployment scaled to 0) and
every size after that is a new Deployment, labelled, owned by the workload's Deployment and carrying
the worker identity; a handover 2 → 4 → 1 under load loses and duplicates nothing (the sink proves it,
across the takeover too); a controller restarted mid-handover adopts the Deployments it finds and
finishes; deleting the workload deletes its generations; the chart grants exactly what this needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaError
from lagscaler_demo.localkafka import KafkaEndpoint
from lagscaler_demo.localkafka.broker import free_port
from lagscaler_demo.playground.handover_app import SinkReport
from lagscaler_demo.playground.handover_run import HandoverPlayground, PlaygroundSettings
from lagscaler_demo.playground.probe import committed_offsets
from structlog.typing import EventDict
from support import eventually

from lagscaler.core.handover.machine import Trouble, WorkerProblem
from lagscaler.edges.handover import (
    ControllerRecord,
    GenerationSpec,
    HandoverSettings,
    KubernetesBackend,
    LeaseLeadership,
    LeaseSettings,
    Phase,
)
from lagscaler.edges.handover.backend import Backend
from lagscaler.edges.handover.controller import WorkloadSpec
from lagscaler.edges.handover.kubernetes import LABEL_GENERATION, LABEL_WORKLOAD, KubernetesBackendError
from lagscaler.edges.kube import kube_api_client

from .adapter import ChartInstall, HandoverInstall, Serve, granted_rules, install_handover_rbac, running_serve
from .cluster import TEST_SCHEDULER, ControlPlane, _Process, deployment
from .kubeclient import KubeClient
from .kubelet import UNPULLABLE, KubeletStandIn

pytestmark = [pytest.mark.controlplane, pytest.mark.kafka, pytest.mark.slow]

TARGET = "ledger-consumer"
FAST_LEASE = LeaseSettings(lease_duration=4, renew_deadline=3.0, retry_period=0.5)


def workload_deployment(namespace: str, settings: PlaygroundSettings, replicas: int) -> dict[str, Any]:
    """The user's own consumer Deployment: the SDK worker outside handover mode, in the policy's group."""
    body = deployment(namespace, TARGET)
    body["spec"]["replicas"] = replicas
    pod = body["spec"]["template"]["spec"]
    pod["terminationGracePeriodSeconds"] = 10
    pod["containers"][0]["command"] = settings.command()
    pod["containers"][0]["env"] = [
        {"name": "LAGSCALER_KAFKA_BOOTSTRAP", "value": settings.bootstrap},
        {"name": "LAGSCALER_GROUP", "value": settings.group},
        {"name": "LAGSCALER_TOPICS", "value": settings.topic},
        {"name": "LAGSCALER_WORKER_LOG_LEVEL", "value": "WARNING"},
    ]
    return body


def playground(kafka: KafkaEndpoint, unique: str, tmp_path: Path, namespace: str) -> PlaygroundSettings:
    return PlaygroundSettings(
        bootstrap=kafka.bootstrap,
        name=unique,
        state_dir=tmp_path / "state",
        partitions=6,
        rate=300.0,
        initial_replicas=2,
        commit_interval=0.5,
        handover=HandoverSettings(
            control_topic=f"{unique}-control", warmup_timeout=120, fence_timeout=5, kill_grace=15, tick=0.2
        ),
        run_controller=False,
        workload_key=f"{namespace}/ledger",
    )


class Generations:
    """What the API server holds for the workload, read with the admin's identity."""

    def __init__(self, kube: KubeClient, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace

    async def deployments(self) -> dict[str, dict[str, Any]]:
        from kubernetes_asyncio import client as k8s

        listing = await k8s.AppsV1Api(self.kube.client).list_namespaced_deployment(self.namespace)
        return {d.metadata.name: self.kube.client.sanitize_for_serialization(d) for d in listing.items}

    async def pods(self) -> list[str]:
        from kubernetes_asyncio import client as k8s

        listing = await k8s.CoreV1Api(self.kube.client).list_namespaced_pod(self.namespace)
        return sorted(p.metadata.name for p in listing.items)


@pytest.fixture
def namespace(control_plane: ControlPlane, unique: str) -> str:
    return control_plane.namespace(f"ho-{unique[-6:]}")


@pytest.fixture
def identity(control_plane: ControlPlane, namespace: str) -> HandoverInstall:
    """The chart's ServiceAccount with handover enabled for the test's namespace only."""
    return install_handover_rbac(control_plane, f"lagscaler-{namespace}", [namespace])


@pytest.fixture
async def kube(control_plane: ControlPlane) -> AsyncIterator[KubeClient]:
    async with KubeClient(control_plane.admin_kubeconfig) as client:
        yield client


@contextlib.asynccontextmanager
async def controlled(
    settings: PlaygroundSettings, identity: HandoverInstall, kube: KubeClient, namespace: str, tmp_path: Path
) -> AsyncIterator[tuple[KubeletStandIn, HandoverPlayground]]:
    """The kubelet stand-in for the namespace, and the playground whose controller (started by the test)
    runs the workload with the Kubernetes backend and a Lease, both with the chart's identity."""
    api = await kube_api_client(identity.kubeconfig)
    assert api is not None

    def backends(spec: WorkloadSpec) -> Backend:
        return KubernetesBackend(api, spec.workload, TARGET)

    leadership = LeaseLeadership(api, identity.lease_namespace, identity.lease_name, settings=FAST_LEASE)
    try:
        async with (
            KubeletStandIn(kube, namespace, tmp_path / "kubelet") as kubelet,
            HandoverPlayground(settings, leadership=leadership, backends=backends) as play,
        ):
            yield kubelet, play
    finally:
        await api.close()


def _print_logs(kubelet: KubeletStandIn) -> Iterator[str]:
    yield f"kubelet stand-in errors: {kubelet.errors[-10:]}"
    for pod in sorted(kubelet.containers):
        tail = "\n".join(kubelet.log(pod).splitlines()[-15:])
        yield f"--- {pod}\n{tail}"


@contextlib.contextmanager
def explained(
    control_plane: ControlPlane, kubelet: KubeletStandIn, logs: list[Any], namespace: str
) -> Iterator[None]:
    """On a failure, print what the pods, the controller and the API server had to say."""
    try:
        yield
    except BaseException:
        print("\n".join(_print_logs(kubelet)))
        print("\n".join(str(e) for e in logs[-40:]))
        print(control_plane.kubectl("get", "deployments,replicasets,pods", "-n", namespace, "-o", "wide"))
        raise


async def test_a_workload_is_taken_over_and_handed_over_2_4_1_through_generation_deployments(  # noqa: PLR0917 - one story
    control_plane: ControlPlane,
    kafka: KafkaEndpoint,
    unique: str,
    tmp_path: Path,
    namespace: str,
    identity: HandoverInstall,
    kube: KubeClient,
    logs: list[EventDict],
) -> None:
    settings = playground(kafka, unique, tmp_path, namespace)
    seen = Generations(kube, namespace)
    async with controlled(settings, identity, kube, namespace, tmp_path) as (kubelet, play):
        with explained(control_plane, kubelet, logs, namespace):
            await _story(control_plane, settings, play, seen, kubelet, namespace)
            report = await play.verdict(within=90)
        history = play.history()
        # Deleting the workload deletes every generation (ownerReferences and the garbage
        # collector), while the controller still runs: it does not bring any back.
        assert play.runner is not None
        controller = play.runner.controllers[settings.workload]
        control_plane.kubectl("delete", "deployment", TARGET, "-n", namespace, "--wait=false")
        await eventually(
            lambda: _nothing_left(seen), within=120, every=0.5, what="the generations to be collected"
        )
        failures = controller.failures
        await eventually(
            lambda: controller.failures >= failures + 5, within=60, what="five more controller steps"
        )
        assert await seen.deployments() == {}
        assert kubelet.running() == {}
        # What the operator reads, once (not at every step):
        gone = [
            e
            for e in logs
            if e["event"] == "handover step failed"
            and "Deployment" in e["problem"]
            and "does not exist" in e["problem"]
        ]
        assert len(gone) == 1, gone

    print(report.summary())
    assert report.consistent, report.summary()
    assert report.lost == 0
    assert report.duplicates == 0, report.summary()
    assert report.processed == report.produced > 0
    # The original consumers (generation 0) processed before the takeover, then three generations.
    assert {0} < report.generations
    assert len(report.generations) == 4, report.generations
    # The restart mid-handover made a new leader: a higher term, and the handover it found finished.
    terms = [r.term for r in history]
    assert terms == sorted(terms)
    assert terms[-1] > terms[0]
    forbidden = [e for e in logs if "403" in json.dumps(e, default=str)]
    assert forbidden == []


async def _own_consumers_commit(settings: PlaygroundSettings) -> None:
    """Wait until the workload's own consumers (generation 0) have processed and committed records."""

    async def consumed() -> bool:
        try:
            return sum((await committed_offsets(settings.bootstrap, settings.group)).values()) > 0
        except KafkaError:  # a broker that just started has no group coordinator yet
            return False

    await eventually(consumed, within=120, every=0.5, what="the workload's own consumers to commit")


async def _nothing_left(seen: Generations) -> bool:
    return not await seen.deployments() and not await seen.pods()


async def _story(  # noqa: PLR0917
    control_plane: ControlPlane,
    settings: PlaygroundSettings,
    play: HandoverPlayground,
    seen: Generations,
    kubelet: KubeletStandIn,
    namespace: str,
) -> None:
    workload = settings.workload
    # The user's two consumers run and commit in the policy's own group.
    control_plane.apply([workload_deployment(namespace, settings, replicas=2)])

    await _own_consumers_commit(settings)
    assert len(kubelet.running()) == 2

    # Taken over: its Deployment to 0, generation 1 at 2 replicas in a Deployment of its own.
    await play.start_runner()
    first = await play.scale_to(2, within=240)
    assert first.serving is not None
    deployments = await seen.deployments()
    assert deployments[TARGET]["spec"]["replicas"] == 0
    name = f"{TARGET}-g{first.serving.generation}"
    generation = deployments[name]
    assert set(deployments) == {TARGET, name}
    assert generation["spec"]["replicas"] == 2
    assert generation["metadata"]["labels"][LABEL_WORKLOAD] == "ledger"
    assert generation["metadata"]["labels"][LABEL_GENERATION] == str(first.serving.generation)
    (owner,) = generation["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "Deployment",
        TARGET,
        deployments[TARGET]["metadata"]["uid"],
    )
    # Its workers are its pods, by name: the ids in the control topic are the pod names.
    statuses = play.observer.workers(workload)
    workers = {s.worker for s in statuses.values() if s.generation == first.serving.generation}
    assert workers == {p for p in await seen.pods() if p.startswith(f"{name}-")}

    second = await play.scale_to(4, within=240)
    assert second.serving is not None
    assert second.serving.generation > first.serving.generation

    # 4 → 1, with the controller stopped while the new generation warms and started again: the new
    # one (a new backend, a new term) finds the generation Deployments and finishes the handover.
    assert play.runner is not None
    play.runner.set_desired(workload, 1)

    def warming() -> bool:
        record = play.record()
        return record is not None and record.handover is not None and record.handover.phase is Phase.WARMING

    await play.wait(warming, within=60, what="the handover to 1 to start warming")
    record = play.record()
    assert record is not None
    assert record.handover is not None
    target = record.handover.target
    await eventually(
        lambda: _has(seen, f"{TARGET}-g{target}"), within=60, what="the target generation's Deployment"
    )
    await play.stop_runner()
    await play.start_runner()
    assert play.runner is not None
    third = await play.scale_to(1, within=240)
    assert third.serving is not None
    assert third.serving.generation == target  # the same attempt, finished: not a new generation
    assert third.term > record.term
    # Only the serving generation is left; retired ones are deleted once their pods are gone.
    await eventually(
        lambda: _only(seen, {TARGET, f"{TARGET}-g{target}"}),
        within=120,
        every=0.5,
        what="retired generations deleted",
    )


async def _has(seen: Generations, name: str) -> bool:
    return name in await seen.deployments()


async def _only(seen: Generations, names: set[str]) -> None:
    assert set(await seen.deployments()) == names


async def test_the_chart_grants_handover_exactly_what_the_backend_uses(
    control_plane: ControlPlane, unique: str
) -> None:
    listed, unlisted = f"hol-{unique[-6:]}", f"hou-{unique[-6:]}"
    control_plane.namespace(unlisted)
    install = install_handover_rbac(control_plane, f"lagscaler-rbac-{unique[-6:]}", [listed])
    control_plane.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "bare", "namespace": "lagscaler"},
            }
        ]
    )
    subject = f"system:serviceaccount:lagscaler:{install.service_account}"

    def extra(namespace: str) -> list[str]:
        granted = granted_rules(control_plane, subject, namespace)
        return sorted(
            granted - granted_rules(control_plane, "system:serviceaccount:lagscaler:bare", namespace)
        )

    assert set(extra(listed)) == {
        "deployments.apps [] [] [get list create patch delete]",
        "pods [] [] [list patch delete]",
    }
    # The Lease: created by any name (create cannot be limited to one), read and renewed only by its own.
    assert set(extra(install.lease_namespace)) == {
        f"leases.coordination.k8s.io [] [{install.lease_name}] [get update]",
        "leases.coordination.k8s.io [] [] [create]",
    }
    assert extra(unlisted) == []
    assert extra("kube-system") == []

    # The backend with that identity: a namespace that is not listed is refused, and the error says so.
    api = await kube_api_client(install.kubeconfig)
    assert api is not None
    try:
        control_plane.apply([deployment(unlisted, TARGET)])
        backend = KubernetesBackend(api, f"{unlisted}/ledger", TARGET)
        with pytest.raises(KubernetesBackendError, match=r"403 .*cannot list resource \"deployments\""):
            await backend.observe()
        # And the chart's own Lease is taken, and released cleanly: the holder is cleared, so the next
        # candidate takes it at once, one term higher, though the Lease was held for an hour.
        hour = LeaseSettings(lease_duration=3600, renew_deadline=10.0, retry_period=2.0)
        mine = LeaseLeadership(api, install.lease_namespace, install.lease_name, settings=hour)
        term = await mine.acquire()
        assert mine.is_leader()
        lease = control_plane.get_json("lease", "-n", install.lease_namespace, install.lease_name)
        assert lease["spec"]["holderIdentity"] == mine.identity
        await mine.release()
        assert not mine.is_leader()
        lease = control_plane.get_json("lease", "-n", install.lease_namespace, install.lease_name)
        assert not lease["spec"].get("holderIdentity")
        successor = LeaseLeadership(api, install.lease_namespace, install.lease_name, settings=hour)
        # (the bound only keeps a broken release from hanging the test for the hour)
        assert await asyncio.wait_for(successor.acquire(), 120) == term + 1
        await successor.release()
    finally:
        await api.close()


# --- two `lagscaler serve` replicas, one Lease -------------------------------------------------------


def handover_policy(namespace: str, settings: PlaygroundSettings, replicas: int) -> str:
    """The workload's policy: a fixed size (minReplicas = maxReplicas), so the engine decides exactly it."""
    policy = {
        "apiVersion": "lagscaler.io/v1",
        "kind": "ScalingPolicy",
        "metadata": {"name": "ledger", "namespace": namespace},
        "spec": {
            "mode": "handover",
            "scaleTargetRef": {"name": TARGET},
            "kafka": {"group": settings.group, "topics": [settings.topic]},
            "maxLagSeconds": 30,
            "minReplicas": replicas,
            "maxReplicas": replicas,
            "capacity": {"perReplica": 1000, "learn": False},
        },
    }
    return json.dumps(policy)


def leads(serve: Serve) -> list[int]:
    """The terms in which this serve process started leading, from its JSON log."""
    terms = []
    for line in serve.log_text().splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict) and event.get("event") == "handover controller leads":
                terms.append(int(event["term"]))
    return terms


async def test_two_serve_replicas_share_a_lease_and_the_survivor_finishes_a_handover_in_a_higher_term(  # noqa: PLR0915, PLR0917 - one story
    control_plane: ControlPlane,
    chart: ChartInstall,
    kafka: KafkaEndpoint,
    unique: str,
    tmp_path: Path,
    namespace: str,
    kube: KubeClient,
) -> None:
    settings = playground(kafka, unique, tmp_path, namespace)
    identity = install_handover_rbac(
        control_plane, f"lagscaler-{namespace}", [namespace], controlTopic=settings.handover.control_topic
    )
    flags = [*identity.args, f"--handover-kubeconfig={identity.kubeconfig}"]
    seen = Generations(kube, namespace)
    async with (
        KubeletStandIn(kube, namespace, tmp_path / "kubelet") as kubelet,
        HandoverPlayground(settings) as play,  # topics, load, and the sink's verdict; no controller
    ):
        control_plane.apply([workload_deployment(namespace, settings, replicas=1)])
        await _own_consumers_commit(settings)
        with contextlib.ExitStack() as stack:
            serves = [
                stack.enter_context(
                    running_serve(
                        chart,
                        tmp_path / f"serve-{i}",
                        bootstrap=kafka.bootstrap,
                        port=free_port(),
                        metrics_port=free_port(),
                        extra=flags,
                    )
                )
                for i in range(2)
            ]
            for serve in serves:
                (serve.policy_dir / "ledger.yaml").write_text(handover_policy(namespace, settings, 2))
            try:
                first = await play.wait_settled(2, within=240)
                leaders = [s for s in serves if leads(s)]
                assert len(leaders) == 1, [s.log_text()[-2000:] for s in serves]
                (leader,) = leaders
                (follower,) = [s for s in serves if s is not leader]
                (term,) = leads(leader)
                assert first.term == term
                assert (await seen.deployments())[TARGET]["spec"]["replicas"] == 0  # taken over

                # Both replicas read the new size; the leader starts the handover and dies in it.
                for serve in serves:
                    (serve.policy_dir / "ledger.yaml").write_text(handover_policy(namespace, settings, 3))

                def in_progress() -> bool:
                    record = play.record()
                    return (
                        record is not None and record.handover is not None and record.handover.replicas == 3
                    )

                await play.wait(in_progress, within=120, what="the leader to start the handover to 3")
                os.killpg(leader.popen.pid, signal.SIGKILL)
                leader.popen.wait(10)
                killed_at = len(play.history())
                last = play.history()[-1]
                assert last.term == term
                assert last.handover is not None, "the handover finished before the leader was killed"
                target = last.handover.target

                # The follower takes the Lease over once it expires, in a higher term, and finishes.
                done = await play.wait_settled(3, within=240)
                assert done.serving is not None
                assert done.serving.generation == target  # the same attempt, adopted
                (taken,) = leads(follower)
                assert taken > term
                assert done.term == taken
                # Only one controller acted at a time: every record is the dead leader's until it died,
                # and the survivor's after.
                terms = [r.term for r in play.history()]
                assert set(terms[:killed_at]) == {term}
                assert set(terms[killed_at:]) <= {term, taken}
                assert terms == sorted(terms)
                await eventually(
                    lambda: _only(seen, {TARGET, f"{TARGET}-g{target}"}),
                    within=120,
                    every=0.5,
                    what="retired",
                )
                report = await play.verdict(within=90)
            except BaseException:
                print("\n".join(_print_logs(kubelet)))
                for serve in serves:
                    print(f"=== {serve.log}\n{serve.log_text()[-4000:]}")
                raise
            assert [s.forbidden_lines() for s in serves] == [[], []]
        lease = control_plane.get_json("lease", "-n", identity.lease_namespace, identity.lease_name)
        assert lease["spec"]["leaseTransitions"] + 1 == taken
    print(report.summary())
    assert report.consistent, report.summary()
    assert report.lost == 0
    assert report.duplicates == 0, report.summary()
    assert {0, first.serving.generation if first.serving else -1, target} <= report.generations


# --- the backend's reconciliations, one by one ------------------------------------------------------

# Ignores SIGTERM, like a worker stuck in its handler: only the kubelet's SIGKILL stops it.
STUCK = [
    sys.executable,
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(3600)",
]


async def test_the_backend_clones_scales_kills_and_removes_generations(
    control_plane: ControlPlane,
    tmp_path: Path,
    namespace: str,
    identity: HandoverInstall,
    kube: KubeClient,
) -> None:
    original = deployment(namespace, "stuck")
    pod = original["spec"]["template"]["spec"]
    pod["terminationGracePeriodSeconds"] = 2
    pod["containers"][0]["command"] = STUCK
    control_plane.apply([original])
    seen = Generations(kube, namespace)
    spec = GenerationSpec(f"{namespace}/stuck", 1, "stuck-gen-1", ("t",), ("127.0.0.1:9",), "control")
    api = await kube_api_client(identity.kubeconfig)
    assert api is not None
    try:
        async with KubeletStandIn(kube, namespace, tmp_path / "kubelet") as kubelet:
            backend = KubernetesBackend(api, f"{namespace}/stuck", "stuck")

            async def running() -> dict[int, frozenset[str]]:
                return await backend.observe()

            # The workload's own pod is generation 0; removing it scales its Deployment to 0.
            (own,) = (await eventually(running, within=60, what="the workload's own pod"))[0]
            await backend.remove(0)
            assert (await seen.deployments())["stuck"]["spec"]["replicas"] == 0
            await eventually(lambda: _observed(backend, {}), within=60, what="generation 0 gone")

            await backend.ensure(spec, 2)
            now = await eventually(lambda: _generation_size(backend, 1, 2), within=60, what="two pods")
            await eventually(lambda: now <= set(kubelet.running()), within=60, what="their processes")
            for name in now:  # what the kubelet gave each process: its own pod name as worker id
                env = kubelet.containers[name].env
                assert env["LAGSCALER_HANDOVER_WORKER"] == name
                assert env["LAGSCALER_HANDOVER_GENERATION"] == "1"
                assert env["LAGSCALER_HANDOVER_GROUP"] == "stuck-gen-1"

            # A new backend (a restarted controller) finds the generation and creates nothing twice.
            adopted = KubernetesBackend(api, f"{namespace}/stuck", "stuck")
            assert await adopted.observe() == {1: now}
            await adopted.ensure(spec, 2)
            assert set(await seen.deployments()) == {"stuck", "stuck-g1"}

            # Killing a worker that ignores SIGTERM: gone within its 1 s grace, and not replaced.
            victim, survivor = sorted(now)
            await adopted.kill(frozenset({victim}))
            assert (await seen.deployments())["stuck-g1"]["spec"]["replicas"] == 1
            await eventually(lambda: _observed(adopted, {1: frozenset({survivor})}), within=60, what="killed")
            assert kubelet.containers[victim].popen is not None
            assert kubelet.containers[victim].popen.returncode == -signal.SIGKILL

            # Removing the generation stops its pods (SIGKILL after their grace), then deletes it.
            await adopted.remove(1)
            await eventually(lambda: _observed(adopted, {}), within=60, what="generation 1 gone")
            await eventually(lambda: _only(seen, {"stuck"}), within=60, what="its Deployment deleted")
            assert own not in kubelet.running()
    finally:
        await api.close()


async def _observed(backend: KubernetesBackend, expected: dict[int, frozenset[str]]) -> None:
    assert await backend.observe() == expected


async def _generation_size(backend: KubernetesBackend, generation: int, size: int) -> frozenset[str]:
    running = (await backend.observe()).get(generation, frozenset())
    assert len(running) == size, running
    return running


# --- a generation that cannot run ---------------------------------------------------------------------

SLEEPER = [sys.executable, "-c", "import time; time.sleep(3600)"]


def _generation(namespace: str, name: str, generation: int) -> GenerationSpec:
    return GenerationSpec(
        f"{namespace}/{name}", generation, f"{name}-gen-{generation}", ("t",), ("127.0.0.1:9",), "control"
    )


async def _problems(backend: KubernetesBackend, generation: int) -> tuple[WorkerProblem, ...]:
    await backend.observe()
    found = backend.problems().get(generation, ())
    assert found, backend.problems()
    return found


async def test_a_generation_no_node_can_take_is_reported_with_the_real_schedulers_message(  # noqa: PLR0917
    control_plane: ControlPlane,
    scheduler: _Process,
    tmp_path: Path,
    namespace: str,
    identity: HandoverInstall,
    kube: KubeClient,
) -> None:
    """The real kube-scheduler decides: a generation whose pods request more CPU than the only node
    that may take them has (a Node object with 1 CPU allocatable, selected by its name) is reported
    Unschedulable with the scheduler's own message and since when it says so; once the workload's
    template asks for less, the next generation is scheduled onto that node and runs (the stand-in
    runs what the scheduler bound), and nothing is reported for it."""
    node = control_plane.add_node(f"node-{namespace}", cpu="1")
    original = deployment(namespace, "hungry")
    original["spec"]["replicas"] = 0
    pod = original["spec"]["template"]["spec"]
    pod["schedulerName"] = TEST_SCHEDULER
    pod["nodeSelector"] = {"kubernetes.io/hostname": node}
    pod["terminationGracePeriodSeconds"] = 1
    pod["containers"][0]["command"] = SLEEPER
    pod["containers"][0]["resources"] = {"requests": {"cpu": "2"}}
    control_plane.apply([original])
    api = await kube_api_client(identity.kubeconfig)
    assert api is not None
    try:
        async with KubeletStandIn(kube, namespace, tmp_path / "kubelet") as kubelet:
            backend = KubernetesBackend(api, f"{namespace}/hungry", "hungry")
            await backend.observe()
            await backend.ensure(_generation(namespace, "hungry", 1), 1)
            (problem,) = await eventually(
                lambda: _problems(backend, 1), within=60, what="the scheduler's verdict"
            )
            assert problem.trouble is Trouble.UNSCHEDULABLE
            assert problem.reason == "Unschedulable"
            assert problem.message.startswith("0/"), problem.message
            assert "1 Insufficient cpu" in problem.message, problem.message
            status = control_plane.get_json("pod", "-n", namespace, problem.worker)["status"]
            print(json.dumps(status))  # the shape tests/test_handover_pods.py reads, as recorded
            (condition,) = [c for c in status["conditions"] if c["type"] == "PodScheduled"]
            assert condition["message"] == problem.message
            # since when: the scheduler's own time, not when the backend happened to look
            stated = dt.datetime.fromisoformat(condition["lastTransitionTime"]).timestamp()
            assert problem.since == stated
            assert kubelet.running() == {}

            # The user asks for less: the next generation (a new clone) is scheduled and runs.
            original["spec"]["template"]["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "100m"}}
            control_plane.apply([original])
            await backend.remove(1)
            await backend.ensure(_generation(namespace, "hungry", 2), 1)

            async def runs() -> None:
                running = await backend.observe()
                assert len(running.get(2, ())) == 1
                assert running.get(2, frozenset()) <= set(kubelet.running())
                assert 2 not in backend.problems()

            await eventually(runs, within=60, what="generation 2 scheduled and running")
            (worker,) = (await backend.observe())[2]
            assert control_plane.get_json("pod", "-n", namespace, worker)["spec"]["nodeName"] == node
    finally:
        await api.close()
        control_plane.kubectl("delete", "node", node, "--wait=false")


async def test_pods_the_kubelet_cannot_start_are_reported_with_its_reason_and_message(
    control_plane: ControlPlane,
    tmp_path: Path,
    namespace: str,
    identity: HandoverInstall,
    kube: KubeClient,
) -> None:
    """Kubelet states, produced by the kubelet stand-in (there is no real kubelet in this tier; see
    kubelet.py for how it words each state as the kubelet does): an image it cannot pull, a variable
    from a Secret that does not exist, a container that exits as it starts. Each generation is reported
    with the reason and the kubelet's message; creating the Secret lets its pod start, and then nothing
    is reported for it."""
    workloads = {
        "unpullable": {"image": f"{UNPULLABLE}ledger:2", "command": SLEEPER},
        "unconfigured": {
            "command": SLEEPER,
            "env": [
                {
                    "name": "DB_PASSWORD",
                    "valueFrom": {"secretKeyRef": {"name": "db-password", "key": "password"}},
                }
            ],
        },
        "crashing": {"command": [sys.executable, "-c", "import no_such_module_for_lagscaler"]},
    }
    for name, container in workloads.items():
        original = deployment(namespace, name)
        original["spec"]["replicas"] = 0
        original["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 1
        original["spec"]["template"]["spec"]["containers"][0].update(container)
        control_plane.apply([original])
    api = await kube_api_client(identity.kubeconfig)
    assert api is not None
    try:
        async with KubeletStandIn(kube, namespace, tmp_path / "kubelet") as kubelet:
            backends = {name: KubernetesBackend(api, f"{namespace}/{name}", name) for name in workloads}
            for name, backend in backends.items():
                await backend.observe()
                await backend.ensure(_generation(namespace, name, 1), 1)
            seen = {
                name: (await eventually(lambda b=b: _problems(b, 1), within=60, what=f"{name} reported"))[0]
                for name, b in backends.items()
            }
            assert kubelet.errors == []
            assert {n: (p.trouble, p.reason) for n, p in seen.items()} == {
                "unpullable": (Trouble.FAILING, "ImagePullBackOff"),
                "unconfigured": (Trouble.FAILING, "CreateContainerConfigError"),
                "crashing": (Trouble.FAILING, "CrashLoopBackOff"),
            }
            assert f'Back-off pulling image "{UNPULLABLE}ledger:2"' in seen["unpullable"].message
            assert seen["unconfigured"].message == 'container app: secret "db-password" not found'
            assert "last exit code 1" in seen["crashing"].message
            assert all(p.since <= time.time() for p in seen.values())

            # The Secret is created: the kubelet starts the container, and nothing is reported any more.
            control_plane.apply(
                [
                    {
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "metadata": {"name": "db-password", "namespace": namespace},
                        "stringData": {"password": "hunter2"},
                    }
                ]
            )
            backend = backends["unconfigured"]

            async def started() -> None:
                running = await backend.observe()
                assert running.get(1, frozenset()) <= set(kubelet.running())
                assert backend.problems() == {}

            await eventually(started, within=60, what="the configured pod to start")
            (worker,) = (await backend.observe())[1]
            assert kubelet.containers[worker].env["DB_PASSWORD"] == "hunter2"
    finally:
        await api.close()


def pod_quota(namespace: str, pods: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "ledger-pods", "namespace": namespace},
        "spec": {"hard": {"pods": str(pods)}},
    }


async def test_pods_a_resource_quota_refuses_are_reported_from_the_deployment_with_the_quota_message(
    control_plane: ControlPlane,
    tmp_path: Path,
    namespace: str,
    identity: HandoverInstall,
    kube: KubeClient,
) -> None:
    """The real API server's ResourceQuota admission and the real ReplicaSet and Deployment controllers:
    with a quota of one pod, a generation of two gets one pod and the second is refused — there is no
    pod to read, and the generation is reported from its Deployment's ``ReplicaFailure`` condition
    (reason ``FailedCreate``, the API server's ``exceeded quota`` message, since the condition's own
    time). A new generation made once the quota has room gets all its pods, and nothing is reported."""
    original = deployment(namespace, "quota")
    original["spec"]["replicas"] = 0
    original["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 1
    original["spec"]["template"]["spec"]["containers"][0]["command"] = SLEEPER
    control_plane.apply([original, pod_quota(namespace, 1)])
    await eventually(
        lambda: _quota_counted(control_plane, namespace, "1"), within=60, every=0.5, what="the quota's status"
    )
    api = await kube_api_client(identity.kubeconfig)
    assert api is not None
    try:
        async with KubeletStandIn(kube, namespace, tmp_path / "kubelet"):
            backend = KubernetesBackend(api, f"{namespace}/quota", "quota")
            await backend.observe()
            await backend.ensure(_generation(namespace, "quota", 1), 2)
            (problem,) = await eventually(
                lambda: _problems(backend, 1), within=60, what="the refused create reported"
            )
            assert problem.trouble is Trouble.FAILING
            assert (problem.worker, problem.reason) == ("quota-g1", "FailedCreate")
            assert "exceeded quota: ledger-pods" in problem.message, problem.message
            assert "limited: pods=1" in problem.message, problem.message
            status = control_plane.get_json("deployment", "-n", namespace, "quota-g1")["status"]
            print(json.dumps(status))  # the shape tests/test_handover_pods.py reads, as recorded
            (condition,) = [c for c in status["conditions"] if c["type"] == "ReplicaFailure"]
            assert condition["message"] == problem.message
            assert problem.since == dt.datetime.fromisoformat(condition["lastTransitionTime"]).timestamp()
            assert len((await backend.observe())[1]) == 1  # the pod the quota had room for

            # Room for both generations' pods: the next generation is created whole, nothing reported.
            control_plane.apply([pod_quota(namespace, 3)])
            await eventually(
                lambda: _quota_counted(control_plane, namespace, "3"), within=60, every=0.5, what="the quota"
            )
            await backend.remove(1)
            await backend.ensure(_generation(namespace, "quota", 2), 2)

            async def created() -> None:
                running = await backend.observe()
                assert len(running.get(2, ())) == 2
                assert 2 not in backend.problems()

            await eventually(created, within=60, what="generation 2 created whole")
    finally:
        await api.close()


def _quota_counted(control_plane: ControlPlane, namespace: str, pods: str) -> None:
    """The resource-quota controller has filled in the quota's ``status.hard``: admission enforces it."""
    status = control_plane.get_json("resourcequota", "-n", namespace, "ledger-pods").get("status", {})
    assert status.get("hard", {}).get("pods") == pods, status


async def test_a_generation_the_scheduler_cannot_place_is_aborted_and_the_next_one_after_a_fix_takes_over(  # noqa: PLR0917 - one story
    control_plane: ControlPlane,
    scheduler: _Process,
    kafka: KafkaEndpoint,
    unique: str,
    tmp_path: Path,
    namespace: str,
    identity: HandoverInstall,
    kube: KubeClient,
    logs: list[EventDict],
) -> None:
    """Under load, with the real kube-scheduler placing every pod on a Node object with one CPU: the
    workload serves in generation 1 (two pods of 100m); its Deployment is then changed to ask for two
    CPUs a pod, so the next generation's pods are Unschedulable. The controller aborts that attempt
    once its grace (3 s here) is over — the warm-up timeout is ten minutes, longer than this test may
    take — with a warning naming the generation, the pod and the scheduler's message; generation 1
    serves throughout. Once the Deployment asks for 100m again, the next attempt clones the fix and
    takes over, and across it all nothing is lost or processed twice."""
    node = control_plane.add_node(f"node-{namespace}", cpu="1")
    base = playground(kafka, unique, tmp_path, namespace)
    settings = replace(
        base, handover=replace(base.handover, warmup_timeout=600, unschedulable_grace=3, revert_backoff=2)
    )

    def workload(cpu: str, replicas: int) -> dict[str, Any]:
        body = workload_deployment(namespace, settings, replicas)
        pod = body["spec"]["template"]["spec"]
        pod["schedulerName"] = TEST_SCHEDULER
        pod["nodeSelector"] = {"kubernetes.io/hostname": node}
        pod["containers"][0]["resources"] = {"requests": {"cpu": cpu}}
        return body

    try:
        async with controlled(settings, identity, kube, namespace, tmp_path) as (kubelet, play):
            try:
                control_plane.apply([workload("100m", 1)])
                await _own_consumers_commit(settings)
                await play.start_runner()
                first = await play.scale_to(2, within=240)
                assert first.serving is not None
                control_plane.apply([workload("2", 0)])  # the user's change: it no longer fits
                await _three_wanted_and_the_attempt_aborted(play, settings, logs, first, "unschedulable")
                control_plane.apply([workload("100m", 0)])  # the fix
                done = await play.wait_settled(3, within=240)
                report = await play.verdict(within=90)
            except BaseException:
                print("\n".join(_print_logs(kubelet)))
                print("\n".join(str(e) for e in logs[-40:]))
                print(control_plane.kubectl("get", "deployments,pods", "-n", namespace, "-o", "wide"))
                raise
    finally:
        control_plane.kubectl("delete", "node", node, "--wait=false")

    warning = _aborted_and_a_later_attempt_took_over(play, logs, first, done, report)
    target = warning["target"]
    assert warning["worker"].startswith(f"{TARGET}-g{target}-")
    assert warning["cause"] == "Unschedulable"
    assert "Insufficient cpu" in warning["message"], warning
    assert warning["reason"].startswith(f"generation {target} cannot run: {warning['worker']} Unschedulable")


async def _three_wanted_and_the_attempt_aborted(
    play: HandoverPlayground,
    settings: PlaygroundSettings,
    logs: list[EventDict],
    first: ControllerRecord,
    what: str,
) -> None:
    """The engine wants three workers; the attempt at them is aborted while ``first``'s generation serves."""
    assert play.runner is not None
    play.runner.set_desired(settings.workload, 3)

    def aborted() -> bool:
        return any(e["event"] == "handover aborted" for e in logs)

    await play.wait(aborted, within=120, what=f"the {what} attempt to be aborted")
    record = play.record()
    assert record is not None
    assert record.serving is not None
    assert first.serving is not None
    assert record.serving.generation == first.serving.generation  # it served throughout


def _aborted_and_a_later_attempt_took_over(
    play: HandoverPlayground,
    logs: list[EventDict],
    first: ControllerRecord,
    done: ControllerRecord,
    report: SinkReport,
) -> EventDict:
    """The warning of the first aborted attempt, once it is checked that the attempt only warmed and was
    aborted, processed nothing, and that a later one took over with nothing lost or processed twice."""
    warning = next(e for e in logs if e["event"] == "handover aborted")
    assert warning["log_level"] == "warning"
    target = warning["target"]
    assert first.serving is not None
    assert target > first.serving.generation
    history = play.history()
    attempt = [r for r in history if r.handover is not None and r.handover.target == target]
    assert {r.handover.phase for r in attempt if r.handover is not None} == {Phase.WARMING, Phase.ABORTING}
    assert done.serving is not None
    assert done.serving.generation > target
    assert target not in report.generations  # the attempt that could not run processed nothing
    print(report.summary())
    assert report.consistent, report.summary()
    assert report.lost == 0
    assert report.duplicates == 0, report.summary()
    return warning


async def test_a_generation_a_resource_quota_refuses_is_aborted_early_and_the_next_one_takes_over_once_raised(  # noqa: PLR0917 - one story
    control_plane: ControlPlane,
    kafka: KafkaEndpoint,
    unique: str,
    tmp_path: Path,
    namespace: str,
    identity: HandoverInstall,
    kube: KubeClient,
    logs: list[EventDict],
) -> None:
    """Under load: the workload serves in generation 1 (two pods), then a ResourceQuota of three pods
    is set in its namespace, so the real API server refuses most of the next generation's three pods —
    its ReplicaSet never gets them, and there is no pod to read. The controller aborts that attempt
    once the failing grace (3 s here) is over — the warm-up timeout is ten minutes, longer than this
    test may take — with a warning naming the generation's Deployment and quoting the quota's message;
    generation 1 serves throughout. Once the quota is raised, the next attempt takes over, and across
    it all nothing is lost or processed twice."""
    base = playground(kafka, unique, tmp_path, namespace)
    settings = replace(
        base, handover=replace(base.handover, warmup_timeout=600, failing_grace=3, revert_backoff=2)
    )
    async with controlled(settings, identity, kube, namespace, tmp_path) as (kubelet, play):
        with explained(control_plane, kubelet, logs, namespace):
            control_plane.apply([workload_deployment(namespace, settings, 1)])
            await _own_consumers_commit(settings)
            await play.start_runner()
            first = await play.scale_to(2, within=240)
            assert first.serving is not None
            control_plane.apply([pod_quota(namespace, 3)])  # room for generation 1 and one pod more
            await eventually(
                lambda: _quota_counted(control_plane, namespace, "3"), within=60, every=0.5, what="the quota"
            )
            await _three_wanted_and_the_attempt_aborted(play, settings, logs, first, "refused")
            control_plane.apply([pod_quota(namespace, 10)])  # the fix: room for both generations
            done = await play.wait_settled(3, within=240)
            report = await play.verdict(within=90)

    warning = _aborted_and_a_later_attempt_took_over(play, logs, first, done, report)
    target = warning["target"]
    print(warning)
    assert warning["worker"] == f"{TARGET}-g{target}"  # the Deployment: no pod names the refusal
    assert warning["cause"] == "FailedCreate"
    assert "exceeded quota: ledger-pods" in warning["message"], warning
    assert warning["reason"].startswith(f"generation {target} cannot run: {TARGET}-g{target} FailedCreate")
    assert "exceeded quota: ledger-pods" in warning["reason"], warning
