"""The policies of W workloads as arrays, so one decision cycle is a handful of numpy operations.

Built once per set of policies (when the service loads or reloads them), not per cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from lagscaler.core.engine.sizing import BoolArray, FloatArray, IntArray
from lagscaler.core.policy.model import Mode, ScalingPolicy

HANDOVER_CUTOVER_SECONDS = 0.191
"""How long the consuming path stops when a handover cuts over from generation N to N+1: the longest
one-partition gap measured during a handover in ``bench/handover.py`` (bench/RESULTS.md, "## Handover",
row "(b) handover: longest gap ... one partition", 2 → 4: 191 ms; it is no longer than the steady
state's own gaps between batches there, so this overstates it rather than understates it). Measured
with a stateless application: a stateful one's catch-up at the cut (restoring what N processed after
``warm_to``) is not in it."""


@dataclass(frozen=True, slots=True)
class PolicyArrays:
    """Per-workload policy parameters, each an array of shape ``(W,)``; see ``ScalingPolicy``."""

    keys: tuple[str, ...]
    min_replicas: IntArray
    max_replicas: IntArray
    max_lag_seconds: FloatArray
    slo_objective: FloatArray
    target_utilization: FloatArray
    capacity_prior: FloatArray
    capacity_learn: BoolArray
    capacity_prior_weight: FloatArray
    half_life: FloatArray
    trend: BoolArray
    trend_half_life: FloatArray
    forecast_horizon: FloatArray
    seasonal_period: FloatArray  # 0: no seasonal forecast
    up_stabilization: FloatArray
    up_step_percent: FloatArray
    up_step_replicas: IntArray
    down_stabilization: FloatArray
    down_step_percent: FloatArray
    down_step_replicas: IntArray
    payback_horizon: FloatArray
    startup: FloatArray
    rebalance_stall: FloatArray  # s the consuming path stops per move: the cut-over pause in mode handover
    group_join: FloatArray  # s a group takes to form (the policy's rebalance stall): off the path in handover
    handover: BoolArray  # mode handover: a move is a new generation warmed up beside the serving one
    stateful: BoolArray
    state_bytes: FloatArray  # NaN when unknown (measured from a changelog topic at run time)
    restore_rate: FloatArray  # bytes/s a moved partition's state restores at
    sync_period: FloatArray
    down_tolerance: FloatArray  # the HPA's band below a ratio of 1 (0 with per-HPA tolerance)
    burst_recurrence: BoolArray  # learn the period of recurring bursts and be ready before the next

    @property
    def size(self) -> int:
        return len(self.keys)

    @property
    def any_seasonal(self) -> bool:
        """Some workload has a seasonal forecast (else the cycle skips that work)."""
        return bool(self.seasonal_period.any())

    @property
    def any_up_stabilization(self) -> bool:
        return bool(self.up_stabilization.any())

    def rows(self, index: IntArray) -> PolicyArrays:
        """The policies of the workloads at ``index`` (for work only a few rows need in a cycle)."""
        picked = {item.name: getattr(self, item.name)[index] for item in fields(self) if item.name != "keys"}
        return PolicyArrays(keys=tuple(self.keys[i] for i in index.tolist()), **picked)

    @classmethod
    def from_policies(cls, policies: Sequence[ScalingPolicy]) -> PolicyArrays:
        def f(values: Sequence[float]) -> FloatArray:
            return np.asarray(values, dtype=np.float64)

        def i(values: Sequence[int]) -> IntArray:
            return np.asarray(values, dtype=np.int64)

        def b(values: Sequence[bool]) -> BoolArray:
            return np.asarray(values, dtype=np.bool_)

        ps = list(policies)
        return cls(
            keys=tuple(p.key for p in ps),
            min_replicas=i([p.min_replicas for p in ps]),
            max_replicas=i([max(p.max_replicas, p.min_replicas) for p in ps]),
            max_lag_seconds=f([p.max_lag_seconds for p in ps]),
            slo_objective=f([min(max(p.slo_objective, 0.0), 1.0) for p in ps]),
            target_utilization=f([min(max(p.target_utilization, 0.05), 1.0) for p in ps]),
            capacity_prior=f([max(p.capacity.per_replica, 1e-9) for p in ps]),
            capacity_learn=b([p.capacity.learn for p in ps]),
            capacity_prior_weight=f([max(p.capacity.prior_weight_seconds, 1.0) for p in ps]),
            half_life=f([max(p.smoothing.half_life_seconds, 1e-3) for p in ps]),
            trend=b([p.smoothing.trend for p in ps]),
            trend_half_life=f([max(p.smoothing.trend_half_life_seconds, 1e-3) for p in ps]),
            forecast_horizon=f([max(p.smoothing.forecast_horizon_seconds, 0.0) for p in ps]),
            seasonal_period=f([p.smoothing.seasonal_period_seconds or 0.0 for p in ps]),
            up_stabilization=f([max(p.scale_up.stabilization_seconds, 0.0) for p in ps]),
            up_step_percent=f([max(p.scale_up.max_step_percent, 0.0) for p in ps]),
            up_step_replicas=i([max(p.scale_up.max_step_replicas, 1) for p in ps]),
            down_stabilization=f([max(p.scale_down.stabilization_seconds, 0.0) for p in ps]),
            down_step_percent=f([max(p.scale_down.max_step_percent, 0.0) for p in ps]),
            down_step_replicas=i([max(p.scale_down.max_step_replicas, 1) for p in ps]),
            payback_horizon=f([max(p.scale_down.payback_horizon_seconds, 0.0) for p in ps]),
            startup=f([max(p.startup_seconds, 0.0) for p in ps]),
            # In mode handover no running group ever rebalances (docs/handover.md): the only stop on
            # the consuming path is the cut-over; the group's join happens while the new one warms up.
            rebalance_stall=f(
                [
                    HANDOVER_CUTOVER_SECONDS
                    if p.mode is Mode.HANDOVER
                    else max(p.rebalance_stall_seconds, 0.0)
                    for p in ps
                ]
            ),
            group_join=f([max(p.rebalance_stall_seconds, 0.0) for p in ps]),
            handover=b([p.mode is Mode.HANDOVER for p in ps]),
            stateful=b([p.stateful is not None for p in ps]),
            state_bytes=f(
                [
                    (p.stateful.state_bytes if p.stateful and p.stateful.state_bytes is not None else np.nan)
                    for p in ps
                ]
            ),
            restore_rate=f(
                [max(p.stateful.restore_bytes_per_second, 1e-9) if p.stateful else 1.0 for p in ps]
            ),
            sync_period=f([max(p.hpa.sync_period_seconds, 1.0) for p in ps]),
            # lagscaler's manifest sets tolerance 0 where the cluster keeps the field (policy/hpa.py).
            down_tolerance=f(
                [0.0 if p.hpa.configurable_tolerance else min(max(p.hpa.tolerance, 0.0), 1.0) for p in ps]
            ),
            burst_recurrence=b([p.smoothing.burst_recurrence for p in ps]),
        )
