"""Stage 1, forecast: the arrival rate smoothed, its trend, the seasonal profile and whether lag rises."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lagscaler.core.engine.observation import BACKLOG_SECONDS
from lagscaler.core.engine.params import PolicyArrays
from lagscaler.core.engine.sizing import BoolArray, FloatArray
from lagscaler.core.engine.stages.prepare import Inputs
from lagscaler.core.engine.stages.windows import Season, season
from lagscaler.core.engine.state import EngineState

LN2 = math.log(2.0)
OUTRUN_MARGIN = 1.0001
"""Arrivals count as outrunning the group only above this multiple of the consume rate (float noise)."""


@dataclass(frozen=True, slots=True)
class Forecast:
    """The arrival rate's level and trend after this cycle; shapes ``(W,)``, rates in messages/s."""

    level: FloatArray  # messages/s, EWMA of the arrival rate
    slope: FloatArray  # messages/s², the measured rate's change since the last observation
    trend_fast: FloatArray  # messages/s², slope smoothed with the level's half-life
    trend_slow: FloatArray  # messages/s², slope smoothed with the trend half-life
    trend: FloatArray  # messages/s², the two where they agree in sign (the smaller in size), else 0
    projected: FloatArray  # messages/s, level + rising trend over the horizon
    season: Season | None  # the seasonal profile (None when no workload has a period)
    seasonal_peak: FloatArray  # messages/s, the profile's peak within the horizon (0: none or immature)
    lag_rising: BoolArray  # lag (messages) is higher than at the last usable observation
    arrivals_ahead: BoolArray  # more arrives than the group consumes
    outrun: BoolArray  # both: the group is falling behind right now
    lag_growing: BoolArray  # either, beyond what offset commits explain (a backlog of BACKLOG_SECONDS)


def forecast_arrivals(params: PolicyArrays, state: EngineState, *, inputs: Inputs) -> Forecast:
    """Stage 1 (see :mod:`lagscaler.core.engine.core`): level, agreeing trend, projection, season, outrun."""
    first, dt, arrival = inputs.first, inputs.dt, inputs.arrival
    alpha = 1.0 - np.exp(-dt * LN2 / params.half_life)
    beta = 1.0 - np.exp(-dt * LN2 / params.trend_half_life)
    level = np.where(first, arrival, state.level + alpha * (arrival - state.level))
    slope = np.divide(arrival - state.last_rate, dt, out=np.zeros(dt.shape[0]), where=dt > 0)
    no_trend = first | ~params.trend
    trend_fast = np.where(no_trend, 0.0, state.trend_fast + alpha * (slope - state.trend_fast))
    trend_slow = np.where(no_trend, 0.0, state.trend + beta * (slope - state.trend))
    # A step is one jump, not growth: the fast estimate forgets it within a few half-lives while the
    # slow one barely moves, so only where both see the same sign is the (smaller) trend believed.
    agree = (trend_fast > 0) == (trend_slow > 0)
    trend = np.where(
        agree,
        np.where(trend_fast > 0, np.minimum(trend_fast, trend_slow), np.maximum(trend_fast, trend_slow)),
        0.0,
    )
    profile = (
        season(
            params=params,
            state=state,
            now=inputs.now,
            dt=dt,
            arrival=arrival,
            usable=inputs.usable,
            since=inputs.observed_since,
        )
        if params.any_seasonal
        else None
    )
    lag_rising = ~first & (inputs.lag > state.lag_prev)
    arrivals_ahead = arrival > inputs.consumed * OUTRUN_MARGIN + 1e-9
    # Consumers commit offsets in batches (every second or few), so live lag sits near one commit
    # interval's arrivals and ticks up and down with each commit, and the consume rate read from
    # committed offsets jitters with it. Below BACKLOG_SECONDS those ticks are commits, not a queue:
    # only a real backlog that rises, or is outrun, counts as growing (else a scale-down flips to
    # hold and back every sample, and the HPA sees whichever its sync happens to read).
    backlog = inputs.age >= BACKLOG_SECONDS
    return Forecast(
        level=level,
        slope=slope,
        trend_fast=trend_fast,
        trend_slow=trend_slow,
        trend=trend,
        projected=level + np.maximum(trend, 0.0) * inputs.horizon,
        season=profile,
        seasonal_peak=profile.peak_within(inputs.horizon) if profile is not None else np.zeros(dt.shape[0]),
        lag_rising=lag_rising,
        arrivals_ahead=arrivals_ahead,
        outrun=lag_rising & arrivals_ahead,
        lag_growing=backlog & (lag_rising | arrivals_ahead),
    )
