"""Local stand-ins for what a cluster provides: lagscaler end to end on a real broker, without Kubernetes.

* :class:`WorkerPool` — a consumer "Deployment": worker processes in one consumer group, each with a
  bounded per-replica capacity and, optionally, a state restore after every rebalance;
* :class:`LoadProducer` with a :class:`RateProfile` — traffic from a trace CSV (rescaled,
  time-compressed) or a step schedule, produced to a topic;
* :class:`LocalHpa` — the HPA controller: polls the external metrics API over HTTPS as the aggregator
  forwards the controller's requests, runs :func:`lagscaler.core.hpa.step` and scales the pool.

Exports load lazily: ``python -m lagscaler_demo.playground.worker`` must not pay for importing aiohttp and
the API just because it lives in this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lagscaler_demo.playground.hpa_loop import (
        ClientIdentity,
        HpaLoopSettings,
        HpaSync,
        LocalHpa,
        ScaleTarget,
    )
    from lagscaler_demo.playground.pool import PoolEvent, PoolSettings, WorkerInfo, WorkerPool, WorkerState
    from lagscaler_demo.playground.producer import (
        LoadProducer,
        ProducedPoint,
        ProducerSettings,
        ProducerStats,
    )
    from lagscaler_demo.playground.rates import RateProfile

__all__ = [
    "ClientIdentity",
    "HpaLoopSettings",
    "HpaSync",
    "LoadProducer",
    "LocalHpa",
    "PoolEvent",
    "PoolSettings",
    "ProducedPoint",
    "ProducerSettings",
    "ProducerStats",
    "RateProfile",
    "ScaleTarget",
    "WorkerInfo",
    "WorkerPool",
    "WorkerState",
]

_HOME = {
    **dict.fromkeys(("ClientIdentity", "HpaLoopSettings", "HpaSync", "LocalHpa", "ScaleTarget"), "hpa_loop"),
    **dict.fromkeys(("PoolEvent", "PoolSettings", "WorkerInfo", "WorkerPool", "WorkerState"), "pool"),
    **dict.fromkeys(("LoadProducer", "ProducedPoint", "ProducerSettings", "ProducerStats"), "producer"),
    "RateProfile": "rates",
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
