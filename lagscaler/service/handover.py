"""What ``serve`` needs to run handovers: the settings, and the policies turned into controller workloads.

In phase 1 the only backend is the local-process one (``docs/handover.md`` §7): ``serve`` runs a
``mode: handover`` workload's generations as local processes of a command given per workload
(``--handover-command namespace/name=COMMAND``), with the file lock in ``--handover-state-dir`` for
leader election. The Kubernetes backend (a Deployment per generation, cloned from the policy's
``scaleTargetRef``) and a Lease are planned.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lagscaler.core.policy import Mode, ScalingPolicy
from lagscaler.edges.handover import (
    FileLeadership,
    HandoverRunner,
    HandoverSettings,
    LocalProcessBackend,
    WorkloadSpec,
)
from lagscaler.edges.handover.backend import Backend
from lagscaler.edges.kafka import KafkaSettings
from lagscaler.errors import UserError
from lagscaler.logs import get_logger

__all__ = ["LocalHandover", "handover_workloads", "local_runner", "parse_commands"]

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


def handover_workloads(policies: Sequence[ScalingPolicy], local: LocalHandover | None) -> list[WorkloadSpec]:
    """The ``mode: handover`` policies a controller can run; the others are logged with the reason."""
    specs = []
    for policy in policies:
        if policy.mode is not Mode.HANDOVER:
            continue
        problem = None
        if local is None:
            problem = "serve has no handover backend (--handover-state-dir): serving metrics only"
        elif not policy.kafka.topics:
            problem = "a handover policy must name its kafka.topics (a new generation subscribes to them)"
        elif policy.key not in local.commands:
            problem = f"no worker command for it (--handover-command {policy.key}=COMMAND)"
        if problem is not None:
            log.warning("handover not run", workload=policy.key, problem=problem)
            continue
        specs.append(
            WorkloadSpec(
                workload=policy.key,
                base_group=policy.kafka.group,
                topics=tuple(policy.kafka.topics),
                initial_replicas=policy.min_replicas,
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
