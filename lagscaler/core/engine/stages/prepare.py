"""Stage 0, prepare: the observation batch sanitised once, and the policy's derived times.

Only this stage reads the :class:`ObservationBatch`; every later stage reads :class:`Inputs`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lagscaler.core.engine.observation import ObservationBatch
from lagscaler.core.engine.params import PolicyArrays
from lagscaler.core.engine.sizing import BoolArray, FloatArray, IntArray, finite
from lagscaler.core.engine.stages.pricing import handover_warmup, restore_seconds
from lagscaler.core.engine.state import EngineState

MAX_LAG_SECONDS = 1e7
"""Lag in seconds beyond this (years) is clamped: the arithmetic stays finite, the decision the same."""
MAX_LAG_MESSAGES = 1e12
MAX_INTERVAL_SECONDS = 1e6
"""A longer gap between two observations is treated as this long (it only scales the smoothing)."""


@dataclass(frozen=True, slots=True)
class Inputs:
    """One cycle's observations, clamped to sane values, and what the policy derives from them.

    Shapes are ``(W,)``. A row is *usable* when its sample is fresh and its rates are known; an
    unusable row keeps its last decision (stage 6) and its arrival reads as the smoothed level.
    """

    now: FloatArray  # s, Unix time of the observation
    dt: FloatArray  # s since the last usable observation (0 on the first and on unusable rows)
    observed_since: FloatArray  # s, Unix time of the first usable observation of this state (inf: none)
    first: BoolArray  # no usable observation before this one
    usable: BoolArray  # fresh sample with known rates
    stale: BoolArray  # the sample is stale (as observed)
    replicas: IntArray  # the scale target's current count
    members: IntArray  # consumer-group members
    partitions: IntArray  # 0: unknown
    lo: IntArray  # the lowest count allowed: min(minReplicas, hi)
    hi: IntArray  # the highest useful count: min(maxReplicas, partitions)
    arrival: FloatArray  # messages/s arriving (the smoothed level when unusable), >= 0
    consumed: FloatArray  # messages/s consumed, >= 0
    lag: FloatArray  # messages behind, >= 0
    age: FloatArray  # s, how far the worst partition is behind, >= 0
    busy_rate: FloatArray  # messages/s consumed by members all of whose partitions are backlogged
    busy_members: IntArray  # how many such members
    stuck_partitions: IntArray  # partitions set aside as STALL/STOP, >= 0
    slo: FloatArray  # s, maxLagSeconds (at least 1 ms)
    restore: FloatArray  # s a moved partition is down restoring its state (0: stateless, or mode handover)
    warmup: (
        FloatArray  # s a handover's new generation joins and restores off the consuming path (0: mode hpa)
    )
    reaction: FloatArray  # s until capacity ordered now serves: sync + start-up + stall + restore + warm-up
    horizon: FloatArray  # s to forecast over: max(forecastHorizon, reaction)


def prepare(params: PolicyArrays, state: EngineState, obs: ObservationBatch) -> Inputs:
    """Stage 0: sanitise the observations (NaN, inf and negatives never reach the arithmetic)."""
    now = finite(obs.at, 0.0)
    first = ~state.initialized
    usable = ~obs.stale & np.isfinite(obs.arrival_rate) & np.isfinite(obs.consume_rate)
    dt = np.where(first, 0.0, np.minimum(np.maximum(now - state.at, 0.0), MAX_INTERVAL_SECONDS))
    dt = np.where(usable, dt, 0.0)

    partitions = np.maximum(obs.partitions, 0)
    hi = np.where(partitions > 0, np.minimum(params.max_replicas, partitions), params.max_replicas)
    lo = np.minimum(params.min_replicas, hi)
    age = np.where(
        np.isnan(obs.lag_seconds), 0.0, np.minimum(np.maximum(obs.lag_seconds, 0.0), MAX_LAG_SECONDS)
    )
    state_restore = restore_seconds(params, partitions, obs.state_bytes)
    warmup = handover_warmup(params, state_restore)
    restore = np.where(params.handover, 0.0, state_restore)
    reaction = params.sync_period + params.startup + params.rebalance_stall + restore + warmup
    return Inputs(
        now=now,
        dt=dt,
        observed_since=np.where(usable, np.minimum(state.season_since, now), state.season_since),
        first=first,
        usable=usable,
        stale=obs.stale,
        replicas=np.maximum(obs.replicas, 0),
        members=np.maximum(obs.members, 0),
        partitions=partitions,
        lo=lo,
        hi=hi,
        arrival=np.maximum(np.where(usable, finite(obs.arrival_rate, 0.0), state.level), 0.0),
        consumed=np.maximum(finite(obs.consume_rate, 0.0), 0.0),
        lag=np.minimum(np.maximum(finite(obs.lag, 0.0), 0.0), MAX_LAG_MESSAGES),
        age=age,
        busy_rate=finite(obs.busy_rate, 0.0),
        busy_members=obs.busy_members,
        stuck_partitions=np.maximum(obs.stuck_partitions, 0),
        slo=np.maximum(params.max_lag_seconds, 1e-3),
        restore=restore,
        warmup=warmup,
        reaction=reaction,
        horizon=np.maximum(params.forecast_horizon, reaction),
    )
