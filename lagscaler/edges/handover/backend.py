"""What runs a workload's workers, behind one small interface (``docs/handover.md`` §7).

The controller only ever asks for reconciliations, so a backend can be as dumb as a process table or
as indirect as a Deployment per generation: ``ensure`` and ``remove`` may return before anything has
happened, and ``observe`` tells the controller when it has. A worker stays in ``observe``'s answer
until the backend is *sure* it can no longer process (its process has exited, its pod is gone), which is
what lets the controller take a cut without it.

Implemented: :class:`lagscaler.edges.handover.local.LocalProcessBackend` (local processes) and
:class:`lagscaler.edges.handover.kubernetes.KubernetesBackend` (a Deployment per generation, cloned from the
workload's own).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from lagscaler.core.handover.machine import WorkerProblem

__all__ = ["WORKER_ENV", "Backend", "GenerationSpec"]

# What a backend puts in every worker's environment; ``lagscaler.worker.WorkerConfig.from_env`` reads it.
WORKER_ENV = {
    "bootstrap": "LAGSCALER_KAFKA_BOOTSTRAP",  # comma-separated host:port
    "topics": "LAGSCALER_HANDOVER_TOPICS",  # comma-separated; LAGSCALER_TOPICS outside handover mode
    "workload": "LAGSCALER_HANDOVER_WORKLOAD",  # namespace/name; absent: not in handover mode
    "generation": "LAGSCALER_HANDOVER_GENERATION",
    "group": "LAGSCALER_HANDOVER_GROUP",  # the generation's group; LAGSCALER_GROUP outside handover mode
    "worker": "LAGSCALER_HANDOVER_WORKER",  # this worker's id (its Kafka client id)
    "control_topic": "LAGSCALER_HANDOVER_CONTROL_TOPIC",
    "watch_path": "LAGSCALER_HANDOVER_WATCH_PATH",  # stop when this path disappears (local backend)
}


@dataclass(frozen=True, slots=True)
class GenerationSpec:
    """What a generation's workers need to know, passed to them in ``LAGSCALER_HANDOVER_*`` variables."""

    workload: str  # namespace/name
    generation: int
    group: str  # the generation's consumer group
    topics: tuple[str, ...]
    bootstrap: tuple[str, ...]
    control_topic: str


class Backend(Protocol):
    """Runs the workers of one workload's generations."""

    async def observe(self) -> Mapping[int, frozenset[str]]:
        """Generation → ids of its workers that are not confirmed gone (starting, running or stopping)."""
        ...

    def problems(self) -> Mapping[int, tuple[WorkerProblem, ...]]:
        """Generation → its workers that the last :meth:`observe` saw unable to run (a pod no node
        takes, an image that cannot be pulled, a process that exits as it starts), longest first.

        Read from what ``observe`` already fetched, so it costs no request. The controller gives a
        handover's target up once one of them has lasted its grace (docs/handover.md §4.1)."""
        ...

    async def ensure(self, spec: GenerationSpec, replicas: int) -> None:
        """Make ``spec.generation`` have ``replicas`` live workers: start missing ones, replace dead ones."""
        ...

    async def remove(self, generation: int) -> None:
        """Stop every worker of ``generation`` (gracefully, then forcibly after a grace period)."""
        ...

    async def kill(self, workers: frozenset[str]) -> None:
        """Stop these workers now, without grace: they did not answer a fence."""
        ...

    async def hand_back(self, replicas: int) -> None:
        """The workload's own consumers (generation 0) run again, with ``replicas`` where the backend
        runs them: the policy left handover mode (docs/handover.md §4.8). Idempotent."""
        ...

    async def close(self) -> None:
        """Release what the backend holds; the workers it started keep running (they outlive controllers)."""
        ...
