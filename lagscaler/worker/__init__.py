"""The worker SDK: what a consumer application uses to take part in lagscaler's handovers.

The application gives an async handler (per record or per batch) and, for stateful work, a warm-up
hook; :class:`Worker` runs the aiokafka consumer in its generation's group, obeys the controller's
warm-up, fence and start commands from the control topic, commits only what was processed, and stops
cleanly on SIGTERM. See ``docs/handover.md`` §8 for a complete example.

Exports load lazily, so importing :class:`WorkerConfig` to validate settings does not import aiokafka.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lagscaler.worker.config import ENV, HandoverIdentity, WorkerConfig
    from lagscaler.worker.runtime import (
        Batch,
        BatchHandler,
        RecordHandler,
        Release,
        WarmUp,
        Worker,
        WorkerStats,
    )

__all__ = [
    "ENV",
    "Batch",
    "BatchHandler",
    "HandoverIdentity",
    "RecordHandler",
    "Release",
    "WarmUp",
    "Worker",
    "WorkerConfig",
    "WorkerStats",
]

_HOME = {
    **dict.fromkeys(("ENV", "HandoverIdentity", "WorkerConfig"), "config"),
    **dict.fromkeys(
        ("Batch", "BatchHandler", "RecordHandler", "Release", "WarmUp", "Worker", "WorkerStats"), "runtime"
    ),
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
