"""One decision cycle for W workloads at once: ``decide(params, state, observations) -> (decisions, state)``.

The decision rules, stage by stage. This is the one place they are written down (the README
summarises it); each stage is one function in :mod:`lagscaler.core.engine.stages`, an array operation
over all workloads that returns a small frozen result for the later stages.

0. **Prepare** (:func:`~lagscaler.core.engine.stages.prepare.prepare`). The observations are sanitised
   once (NaN, infinities and negatives clamped). A stale sample or unknown rates make a row
   *unusable*: it keeps its last decision. The *reaction time* is HPA sync + pod start-up +
   rebalance stall + state restore: capacity ordered now serves no sooner.
1. **Forecast** (:func:`~lagscaler.core.engine.stages.forecast.forecast_arrivals`). The level is an EWMA
   of the arrival rate; the trend of the measured rate is smoothed twice, fast and slow, and believed
   only where both agree in sign (the smaller one): a step is one jump, which the fast estimate
   forgets within a few half-lives, not growth (no Holt-style overshoot). The projection is the
   level plus the rising trend over ``max(forecastHorizonSeconds, reaction time)``; a seasonal
   profile (``seasonalPeriodSeconds``) gives its peak over the same horizon. Lag rising while
   more arrives than the group consumes means the group is *outrun*; lag *grows* only when that
   happens with a real backlog (the worst partition at least ``BACKLOG_SECONDS`` behind): below
   it, lag ticking up and down is consumers committing offsets in batches, not a queue.
2. **Capacity** (:func:`~lagscaler.core.engine.stages.capacity.estimate_capacity`). The true
   per-replica rate is learned online as in DS2: members whose every partition is backlogged are
   busy all the time, so their consume rate *is* their capacity. The warm-up after a membership
   change (stall + restore + one sync) is ignored. The policy's figure is the prior, worth
   ``priorWeightSeconds`` of evidence; evidence is capped at four priors so the estimate follows a
   changing true rate.
   **Recurrence** (:func:`~lagscaler.core.engine.stages.recurrence.predict_bursts`, stage 2b). A burst
   starts when the arrival rate doubles against the level and rises by at least one replica's worth;
   its onset, peak and duration go into a fixed ring per workload. When four onsets lie one period
   apart (a line through them misses none by more than 5 % of the period, plus one sync) and each of
   those bursts was over within half the period (a longer rise is a level, not a burst), the next onset is
   predicted, and from the lead before it (the reaction time, one sync for the data's age, the
   up-stabilization and one sync per further step the scale-up limit needs) until it has passed (its
   window: twice the line's worst miss, at least 3 % of the period, plus one sync) the chain's peak
   rate is due. With ``smoothing.burstRecurrence: false`` nothing is ever due. A prediction whose
   onset passes with no burst is in the past: the stage switches itself off until four onsets line
   up again; a flash crowd, a staircase or random spikes never do.
3. **Need** (:func:`~lagscaler.core.engine.stages.need.size_need`). The rate to provision for is the
   largest of the level, the projection, the seasonal peak, a recurring burst that is due and the
   *surge*: while the group is
   outrun, the last rebalance has settled and the backlog threatens the SLO, the measured rate at
   its slope over the reaction time (a burst is met by one scale-up, not one per sync). The slope
   is the latest interval's, except where a rebalance breaks the SLO by itself: a scale-up is then
   held for hours, and one interval's jump (often a step, not a ramp) is not believed until the
   fast trend confirms it.
   The need is ``max(forecast / targetUtilization, arrival × (1 + excess / SLO))``, the excess
   being how far past half the SLO the worst partition will be when new capacity lands; the count
   is the smallest whose busiest member keeps up (:mod:`~lagscaler.core.engine.sizing`: on 24
   partitions 9-11 replicas are no faster than 8), within ``[min, min(max, partitions)]``. Across a
   partition cliff, where the next aligned count up has more than ``1 / targetUtilization`` times the
   throughput of the one below (on 64 partitions: 32 to 64), the forecast's part of the need takes the
   count below while that carries the forecast within the scale-up's dead band (stage 4 would not grow
   it back); where a rebalance breaks the SLO by itself the whole margin is kept.
4. **Scale up early and fast** (:func:`~lagscaler.core.engine.stages.scale_up.plan_scale_up`). Scale up
   when the current count would run hotter than halfway between the target utilisation and
   saturation (a dead band: aligned counts are far apart), or when the backlog needs more than
   the current count *and* a scale-up would drain it sooner, counting the stall and restore it
   causes itself. While the last rebalance settles, its backlog is the rebalance's, not a shortage:
   that stops rebalance cascades. A scale-up made while behind is sized so that partitions it moves,
   back past the SLO after their restore, catch up within two SLOs. Up-stabilization takes the
   smallest recommendation over its window; a step limit stops on an aligned count; after an
   ineffective scale-up (stage 6) no scale-up for a while.
5. **Scale down late and slowly** (:func:`~lagscaler.core.engine.stages.scale_down.plan_scale_down`).
   The candidate covers the highest measured rate of the stabilization window at the target
   utilisation, across a partition cliff within a quarter of the way to saturation (inside the
   scale-up's dead band: hysteresis), and, when a rebalance breaks the SLO by itself, the catch-up of
   the moved partitions. The step limit stops on an aligned count, and when no aligned count lies within
   it, on the next aligned count below (a smaller step loses as much throughput and costs one more
   rebalance; rounding up instead kept 64 replicas on 64 partitions forever); a step inside the
   HPA's tolerance band, which the HPA would never carry out, is widened to the nearest count it
   reaches, or not taken when even the need is inside the band. So once its gates open, a
   scale-down always moves. No scale-down while a recurring burst is due (stage 2b), so the
   prediction can only raise a decision. The gates: the dwell is over (after a scale-up: start-up + stall +
   restore + one SLO; after a scale-down: stall + restore + one SLO, its rebalance settling; and
   never before a whole window has been observed since the engine started), lag neither grows nor
   is above half the SLO, the replicas
   saved while the lower count lasts (at most the payback horizon) outweigh the rebalance's price
   (:func:`~lagscaler.core.engine.stages.pricing.rebalance_price`), and, when the rebalance breaks
   the SLO by itself, the error budget (``sloObjective``) since the last change pays for that miss
   (:func:`~lagscaler.core.engine.stages.pricing.breach_seconds`). The lower count lasts until the
   trend or the seasonal profile outgrows it, until capacity is ordered for a predicted burst it
   does not carry (stage 2b), or for the life learned from this workload's own reversals (how long
   lower counts lasted before a scale-up undid them, averaged; raised by the time since the last
   change); a move that will be undone within the horizon also pays for each step-limited scale-up
   back. When the moves break the SLO by themselves, the move and the climb back must fit the
   budget earned while the lower count lasts: if a predicted burst is due sooner, the capacity is
   held through it; if the learned life is too short, the move waits until the time since the last
   change earns it (quickly reversed scale-downs hold the next one longer).
6. **Settle** (:func:`~lagscaler.core.engine.stages.settle.settle`). The count served is the scale-up,
   the scale-down or the current count; a scale-down decided earlier stays decided while the group
   is calm, until the HPA (which syncs on its own clock) carries it out. A scale-up decided while
   backlogged that did not raise throughput by 10 % of what it should have is *ineffective*:
   further scale-ups are held for 10 minutes, and the decision says so. Then the reason codes and
   the dwell timers (a scale-down's dwell runs from when the group actually shrank).
"""

from __future__ import annotations

import numpy as np

from lagscaler.core.engine.decision import Decisions
from lagscaler.core.engine.observation import ObservationBatch
from lagscaler.core.engine.params import PolicyArrays
from lagscaler.core.engine.stages import (
    Stages,
    estimate_capacity,
    forecast_arrivals,
    plan_scale_down,
    plan_scale_up,
    predict_bursts,
    prepare,
    rebalance_price,
    restore_seconds,
    settle,
    size_need,
)
from lagscaler.core.engine.state import EngineState

__all__ = ["Engine", "decide", "rebalance_price", "restore_seconds", "run_stages"]


def decide(params: PolicyArrays, state: EngineState, obs: ObservationBatch) -> tuple[Decisions, EngineState]:
    """Decide replica counts for W workloads; pure and deterministic (same inputs, same outputs)."""
    # Extreme inputs (a rate of 1e-300) overflow intermediate ratios to inf; every such ratio is
    # guarded or clamped afterwards, so the warnings carry no information.
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return _decide(params, state, obs)


def _decide(params: PolicyArrays, state: EngineState, obs: ObservationBatch) -> tuple[Decisions, EngineState]:
    """The stages of the module docstring, in order."""
    return settle(params, state, stages=run_stages(params, state, obs))


def run_stages(params: PolicyArrays, state: EngineState, obs: ObservationBatch) -> Stages:
    """Stages 0-5, whose results stage 6 settles; apart, so that tests can look at each result.

    Call it inside ``np.errstate`` as :func:`decide` does (extreme inputs overflow on the way).
    """
    inputs = prepare(params, state, obs)
    forecast = forecast_arrivals(params, state, inputs=inputs)
    capacity = estimate_capacity(params, state, inputs=inputs)
    recurrence = predict_bursts(params, state, inputs=inputs, capacity=capacity)
    need = size_need(params, inputs=inputs, forecast=forecast, capacity=capacity, recurrence=recurrence)
    up = plan_scale_up(params, state, inputs=inputs, capacity=capacity, need=need)
    down = plan_scale_down(
        params,
        state,
        inputs=inputs,
        forecast=forecast,
        capacity=capacity,
        recurrence=recurrence,
        need=need,
        up=up,
    )
    return Stages(
        inputs=inputs,
        forecast=forecast,
        capacity=capacity,
        recurrence=recurrence,
        need=need,
        up=up,
        down=down,
    )


class Engine:
    """Convenience holder: the policies as arrays plus the current state, advanced one cycle at a time.

    The pure function is :func:`decide`; this wrapper is for callers that want to keep one object.
    """

    def __init__(self, params: PolicyArrays, state: EngineState | None = None) -> None:
        self.params = params
        self.state = state if state is not None else EngineState.initial(params)

    def step(self, observations: ObservationBatch) -> Decisions:
        decisions, self.state = decide(self.params, self.state, observations)
        return decisions
