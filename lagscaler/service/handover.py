"""What ``serve`` needs to run handovers: the settings, and the policies turned into controller workloads.

Two backends (``docs/handover.md`` §7):

* :class:`LocalHandover` runs a ``mode: handover`` workload's generations as local processes of a
  command given per workload (``--handover-command namespace/name=COMMAND``), led under a file lock in
  ``--handover-state-dir``;
* :class:`KubernetesHandover` runs each generation as a Deployment cloned from the policy's
  ``scaleTargetRef``, in the policy's namespace, led under a Lease (``--handover-backend kubernetes``).
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lagscaler.core.engine import PolicyArrays
from lagscaler.core.engine.stages import handover_warmup, restore_seconds
from lagscaler.core.policy import Mode, ScalingPolicy
from lagscaler.edges.handover import (
    FileLeadership,
    HandoverRunner,
    HandoverSettings,
    KubernetesBackend,
    LeaseLeadership,
    LeaseSettings,
    LocalProcessBackend,
    WorkloadSpec,
)
from lagscaler.edges.handover.backend import Backend
from lagscaler.edges.handover.kubernetes import workload_problem
from lagscaler.edges.handover.leader import DEFAULT_LEASE_NAME
from lagscaler.edges.kafka import KafkaSettings
from lagscaler.edges.kube import kube_api_client
from lagscaler.errors import UserError
from lagscaler.logs import get_logger

__all__ = [
    "HandoverBackend",
    "KubernetesHandover",
    "LocalHandover",
    "handover_workloads",
    "local_runner",
    "parse_commands",
    "running_handover",
]

log = get_logger("lagscaler.service")


@dataclass(frozen=True)
class LocalHandover:
    """Run handovers with local worker processes.

    ``state_dir``: worker pid files and logs, and the leader lock (``leader.lock``); workers outlive
    ``serve`` and are adopted by the next one that uses the same directory. ``commands``: the worker
    command line of each workload (``namespace/name``), an application built on ``lagscaler.worker``.
    """

    state_dir: Path
    commands: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    settings: HandoverSettings = field(default_factory=HandoverSettings)

    def __post_init__(self) -> None:
        for workload, command in self.commands.items():
            if "/" not in workload or not command:
                raise UserError(
                    f"--handover-command {workload}: expected namespace/name=COMMAND with a command"
                )


@dataclass(frozen=True)
class KubernetesHandover:
    """Run handovers with a Deployment per generation, led under Lease ``lease_namespace/lease_name``.

    ``kubeconfig``: how to reach the API server (None: the pod's service account). ``lease``: its
    timings. The identity of this process in the Lease is its host name (the pod name) and a random part.
    """

    lease_namespace: str
    lease_name: str = DEFAULT_LEASE_NAME
    kubeconfig: Path | None = None
    settings: HandoverSettings = field(default_factory=HandoverSettings)
    lease: LeaseSettings = field(default_factory=LeaseSettings)

    def __post_init__(self) -> None:
        if not self.lease_namespace:
            raise UserError("--handover-lease-namespace: the namespace of the leader Lease is empty")
        if not self.lease_name:
            raise UserError("--handover-lease-name: the leader Lease needs a name")


HandoverBackend = LocalHandover | KubernetesHandover


def parse_commands(values: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """``namespace/name=COMMAND`` flags (the command split as a shell would) by workload."""
    commands: dict[str, tuple[str, ...]] = {}
    for value in values:
        workload, sep, command = value.partition("=")
        if not sep or not workload.strip() or not command.strip():
            raise UserError(f"--handover-command {value!r}: expected namespace/name=COMMAND")
        try:
            commands[workload.strip()] = tuple(shlex.split(command))
        except ValueError as exc:
            raise UserError(f"--handover-command {value!r}: {exc}") from None
    return commands


def _problem(policy: ScalingPolicy, handover: HandoverBackend | None) -> str | None:
    """Why ``serve`` cannot run this handover policy (None: it can)."""
    if handover is None:
        return "serve has no handover backend (--handover-backend): serving metrics only"
    if not policy.kafka.topics:
        return "a handover policy must name its kafka.topics (a new generation subscribes to them)"
    if isinstance(handover, LocalHandover):
        if policy.key not in handover.commands:
            return f"no worker command for it (--handover-command {policy.key}=COMMAND)"
        return None
    target = policy.target
    if (target.api_version, target.kind) != ("apps/v1", "Deployment"):
        return (
            f"the kubernetes handover backend clones a Deployment (apps/v1); scaleTargetRef is a"
            f" {target.kind} ({target.api_version})"
        )
    return workload_problem(policy.key, target.name)


def expected_warmup(policy: ScalingPolicy) -> float:
    """Seconds a new generation of ``policy``'s workload needs before it can serve: its start-up and
    the engine's own handover warm-up (joining its group, restoring its partitions in parallel).

    The engine sizes a partition's state from the topic's partition count, which is not known until
    the first sample; ``maxReplicas`` stands in for it (at most the partition count, as the policy
    reference asks), so this errs long. A state measured from a changelog topic is not known here
    either: then only start-up and join count.
    """
    params = PolicyArrays.from_policies([policy])
    partitions = np.asarray([max(policy.max_replicas, 1)], dtype=np.int64)
    restore = restore_seconds(params, partitions, np.asarray([np.nan]))
    return float((params.startup + handover_warmup(params, restore))[0])


def handover_workloads(
    policies: Sequence[ScalingPolicy], handover: HandoverBackend | None
) -> list[WorkloadSpec]:
    """The ``mode: handover`` policies a controller can run (the others are logged with the reason),
    and, as hand-backs, every other policy it could run: switched out of handover mode, a workload is
    handed back to its own group (the runner drops a hand-back with nothing to give back)."""
    specs = []
    for policy in policies:
        handing_over = policy.mode is Mode.HANDOVER
        problem = _problem(policy, handover)
        if problem is not None:
            if handing_over:
                log.warning("handover not run", workload=policy.key, problem=problem)
            continue
        specs.append(
            WorkloadSpec(
                workload=policy.key,
                base_group=policy.kafka.group,
                topics=tuple(policy.kafka.topics),
                initial_replicas=policy.min_replicas,
                target=policy.target.name,
                expected_warmup=expected_warmup(policy),
                hand_back=not handing_over,
            )
        )
    return specs


def local_runner(kafka: KafkaSettings, local: LocalHandover) -> HandoverRunner:
    """A runner whose workloads run as local processes, led under a file lock in the state directory."""

    def backend(spec: WorkloadSpec) -> Backend:
        return LocalProcessBackend(local.state_dir / "workers", spec.workload, local.commands[spec.workload])

    return HandoverRunner(
        kafka,
        local.settings,
        backends=backend,
        leadership=FileLeadership(local.state_dir / "leader.lock"),
    )


@contextlib.asynccontextmanager
async def running_handover(kafka: KafkaSettings, handover: HandoverBackend) -> AsyncIterator[HandoverRunner]:
    """The runner for ``handover``, started; stopped (and its API client closed) on exit."""
    if isinstance(handover, LocalHandover):
        async with local_runner(kafka, handover) as runner:
            yield runner
        return
    api = await kube_api_client(handover.kubeconfig)
    if api is None:
        raise UserError(
            "the kubernetes handover backend needs --handover-kubeconfig, or to run in a pod with a"
            " service account"
        )
    try:
        leadership = LeaseLeadership(
            api, handover.lease_namespace, handover.lease_name, settings=handover.lease
        )

        def backend(spec: WorkloadSpec) -> Backend:
            return KubernetesBackend(api, spec.workload, spec.target)

        runner = HandoverRunner(kafka, handover.settings, backends=backend, leadership=leadership)
        async with runner:
            yield runner
    finally:
        await api.close()
