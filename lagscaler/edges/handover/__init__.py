"""Rebalance-free scaling: hand a workload over to a new consumer generation at exact offsets.

``docs/handover.md`` is the protocol. The modules, from the pure core (:mod:`lagscaler.core.handover`)
outwards:

* :mod:`lagscaler.core.handover.protocol` — the control records and what each tells a worker to do (pure);
* :mod:`lagscaler.core.handover.machine` — the controller as a pure state machine (pure);
* :mod:`.backend` — the interface to what runs workers; :mod:`.local` — local processes;
  :mod:`.kubernetes` — a Deployment per generation;
* :mod:`.leader` — leader election (a file lock); :mod:`.lease` — a Kubernetes Lease;
* :mod:`.channel` — the control topic, read and written;
* :mod:`.controller` — the async driver of the machine, and the runner ``serve`` uses.

Exports load lazily: the worker SDK imports the protocol without the controller's dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lagscaler.core.handover.protocol import (
        DEFAULT_CONTROL_TOPIC,
        ControllerRecord,
        Phase,
        Role,
        Status,
        WorkerStatus,
        generation_group,
    )
    from lagscaler.edges.handover.backend import WORKER_ENV, Backend, GenerationSpec
    from lagscaler.edges.handover.channel import ControlChannel, ensure_control_topic
    from lagscaler.edges.handover.controller import (
        Deposed,
        HandoverRunner,
        HandoverSettings,
        WorkloadController,
        WorkloadSpec,
    )
    from lagscaler.edges.handover.kubernetes import KubernetesBackend
    from lagscaler.edges.handover.leader import FileLeadership, Leadership
    from lagscaler.edges.handover.lease import LeaseLeadership, LeaseSettings
    from lagscaler.edges.handover.local import LocalProcessBackend

__all__ = [
    "DEFAULT_CONTROL_TOPIC",
    "WORKER_ENV",
    "Backend",
    "ControlChannel",
    "ControllerRecord",
    "Deposed",
    "FileLeadership",
    "GenerationSpec",
    "HandoverRunner",
    "HandoverSettings",
    "KubernetesBackend",
    "Leadership",
    "LeaseLeadership",
    "LeaseSettings",
    "LocalProcessBackend",
    "Phase",
    "Role",
    "Status",
    "WorkerStatus",
    "WorkloadController",
    "WorkloadSpec",
    "ensure_control_topic",
    "generation_group",
]

_HOMES = {
    "backend": ["WORKER_ENV", "Backend", "GenerationSpec"],
    "channel": ["ControlChannel", "ensure_control_topic"],
    "controller": ["Deposed", "HandoverRunner", "HandoverSettings", "WorkloadController", "WorkloadSpec"],
    "kubernetes": ["KubernetesBackend"],
    "leader": ["FileLeadership", "Leadership"],
    "lease": ["LeaseLeadership", "LeaseSettings"],
    "local": ["LocalProcessBackend"],
    "protocol": [
        "DEFAULT_CONTROL_TOPIC", "ControllerRecord", "Phase", "Role", "Status", "WorkerStatus",
        "generation_group",
    ],
}  # fmt: skip
_HOME = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    home = "lagscaler.core.handover" if module == "protocol" else __name__
    return getattr(importlib.import_module(f"{home}.{module}"), name)
