"""A scale-down priced against how long the lower count will last (issues 9 and 11).

The lower count lasts until a predicted burst it does not carry is due (stage 2b), or for the life
learned from the workload's own reversed scale-downs (``EngineState.down_life``); a move that will be
undone pays for the climb back, and when moves break the SLO by themselves both must fit the error
budget earned meanwhile. Properties over random policies and random traffic:

* one cycle: a shorter learned life only ever holds a scale-down back; it never turns one into a
  scale-up, never picks another count, never decides lower than a longer life would;
* the closed loop (the fluid model of ``test_engine_recurrence``): with recurring bursts and moves
  that break the SLO by more than the error budget earns between two bursts, once the period is
  learned the capacity for the burst is held from one burst to the next; where the moves cost nothing
  over the SLO and the gap is long, capacity is given back between bursts;
* the learned life follows the workload: a scale-down undone quickly shortens it, and it stays
  fixed-size state (liveness after long low load is ``test_engine_liveness``'s closed loop).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, note, settings
from hypothesis import strategies as st
from test_engine_liveness import CAPACITY, SYNC, Workload, steady_observation, workloads
from test_engine_recurrence import Traffic, carries, pulses, reaction_of, simulate

from lagscaler.core.engine import EngineState, PolicyArrays, decide
from lagscaler.core.engine.core import run_stages
from lagscaler.core.engine.stages.recurrence import MIN_INTERVALS
from lagscaler.core.policy.model import Capacity, Hpa, KafkaSource, ScaleDown, ScaleTargetRef, ScalingPolicy

pytestmark = pytest.mark.slow


def _with_life(state: EngineState, life: np.ndarray) -> EngineState:
    return replace(state, down_life=life.astype(np.float64))


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    w=workloads(),
    current=st.integers(1, 100),
    load=st.floats(0.0, 0.9),
    since=st.floats(1.0, 5.0).map(lambda e: 10.0**e),
    up=st.booleans(),
    short=st.floats(1.0, 4.5).map(lambda e: 10.0**e),
    extra=st.one_of(st.floats(1.0, 2e4), st.just(float("inf"))),
    over=st.one_of(st.just(0.0), st.floats(1.0, 30.0)),
)
def test_a_shorter_learned_life_only_holds_a_scale_down_back(  # noqa: PLR0917 (hypothesis draws)
    w: Workload, current: int, load: float, since: float, up: bool, short: float, extra: float, over: float
) -> None:
    """One cycle after a long steady stretch at ``current`` whose last change (a scale-up or a
    scale-down) was ``since`` s ago: the same cycle with a shorter and a longer learned life. With
    ``over`` > 0 every rebalance breaks the SLO by that much (the budget then paces the move)."""
    if over > 0:
        w = _costly(w, over)
    current = min(max(current, w.lo), w.hi)
    rate = load * CAPACITY * current * w.policy.target_utilization
    params = PolicyArrays.from_policies([w.policy])
    state = EngineState.initial(params)
    for at in (0.0, 1e5):
        _, state = decide(
            params, state, steady_observation(at, replicas=current, partitions=w.partitions, rate=rate)
        )
    now = 1e5 + SYNC
    changed = np.asarray([now - since])
    # Nothing decided pending (the steady stretch's own scale-down would stay decided either way).
    state = replace(state, desired=np.asarray([current]))
    state = replace(state, scaled_up_at=changed) if up else replace(state, scaled_down_at=changed)
    obs = steady_observation(now, replicas=current, partitions=w.partitions, rate=rate)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        held, _ = decide(params, _with_life(state, np.asarray([short])), obs)
        free, _ = decide(params, _with_life(state, np.asarray([short + extra])), obs)
    a, b = int(held.desired[0]), int(free.desired[0])
    note(f"current {current}, shorter life decides {a}, longer {b}")
    event("differs" if a != b else ("both down" if b < current else "same"))
    # Either the same decision, or the shorter life holds at the current count where the longer one
    # scales down: never lower, never another count, never a scale-up.
    assert a == b or (b < current and a == current), (
        f"shorter life decided {a}, longer {b}, current {current}"
    )


def _costly(w: Workload, extra: float) -> Workload:
    """``w`` with every rebalance breaking the SLO by ``extra`` seconds, and a tight error budget."""
    p = w.policy
    return Workload(
        replace(
            p,
            slo_objective=0.999,
            rebalance_stall_seconds=p.max_lag_seconds + extra,
            scale_down=replace(
                p.scale_down, stabilization_seconds=min(p.scale_down.stabilization_seconds, 300.0)
            ),
        ),
        w.partitions,
    )


@st.composite
def recurring(draw: st.DrawFn, w: Workload, bursts: int) -> Traffic:
    """``bursts`` bursts on a clock (jitter ≤ 1 % of the period), far above a low base."""
    p = w.policy
    width = draw(st.floats(2 * SYNC, 300.0))
    shortest = max(
        1200.0,
        3.0 * (reaction_of(w) + p.scale_up.stabilization_seconds) + 16 * SYNC,
        6.0 * p.smoothing.half_life_seconds + width,
        4.0 * width,
        p.scale_down.stabilization_seconds + 6.0 * reaction_of(w),  # a gap to give capacity back in
    )
    period = draw(st.floats(shortest, 1.5 * shortest))
    jitter = draw(st.floats(0.0, 0.01)) * period
    phase = draw(st.floats(0.0, period))
    starts = [phase + period * (i + 1) + draw(st.floats(-jitter, jitter)) for i in range(bursts)]
    hi_rate = CAPACITY * w.hi * p.target_utilization
    height = draw(st.floats(0.6, 1.0)) * hi_rate
    base = draw(st.floats(0.0, 0.1)) * height
    assume(height - base >= 2.0 * CAPACITY)  # the burst needs more than the base's count
    return pulses(starts, [width] * bursts, [height] * bursts, base)


def _lowest_between_bursts(run_times: np.ndarray, desired: np.ndarray, traffic: Traffic) -> list[int]:
    """The lowest count decided in each gap between bursts, once four onsets one period apart are known."""
    onsets = traffic.onsets
    gaps = []
    for k in range(MIN_INTERVALS + 1, len(onsets) - 1):
        inside = (run_times > onsets[k]) & (run_times < onsets[k + 1])
        gaps.append(int(desired[inside].min()))
    return gaps


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(data=st.data(), w=workloads(), extra=st.floats(10.0, 30.0))
def test_capacity_is_held_between_predicted_bursts_when_the_two_moves_break_the_budget(
    data: st.DataObject, w: Workload, extra: float
) -> None:
    w = _costly(w, extra)
    traffic = data.draw(recurring(w, bursts=MIN_INTERVALS + 4))
    assume(not carries(w, w.lo, traffic.peak))  # the base's count does not carry a burst
    run = simulate(w, traffic)
    # Every rebalance is ``extra`` s over the SLO; a gap (< 2 h) earns at most 7.2 s of budget at 99.9 %.
    lowest = _lowest_between_bursts(run.times, run.desired, traffic)
    note(f"period ~{traffic.onsets[1] - traffic.onsets[0]:.0f} s, lowest between bursts {lowest}")
    for k, count in enumerate(lowest, start=MIN_INTERVALS + 1):
        assert carries(w, count, traffic.peak), (
            f"between bursts {k} and {k + 1} the count fell to {count}, which does not carry the "
            f"{traffic.peak:.0f} msg/s burst: two moves that break the SLO were spent on a {extra:.0f} s budget"
        )


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(data=st.data(), partitions=st.sampled_from([12, 24, 32]), slo=st.floats(60.0, 300.0))
def test_capacity_is_given_back_between_predicted_bursts_when_the_moves_pay(
    data: st.DataObject, partitions: int, slo: float
) -> None:
    """Stateless, a stall far inside the SLO, a loose budget: the guard must not hold for its own sake."""
    policy = ScalingPolicy(
        name="cheap",
        namespace="t",
        target=ScaleTargetRef("cheap"),
        kafka=KafkaSource("cheap"),
        max_lag_seconds=slo,
        capacity=Capacity(per_replica=CAPACITY),
        min_replicas=1,
        max_replicas=partitions,
        slo_objective=0.9,
        scale_down=ScaleDown(stabilization_seconds=data.draw(st.sampled_from([60.0, 300.0]))),
        startup_seconds=data.draw(st.floats(5.0, 30.0)),
        rebalance_stall_seconds=data.draw(st.floats(1.0, 5.0)),
        hpa=Hpa(sync_period_seconds=SYNC, configurable_tolerance=True),
    )
    w = Workload(policy, partitions)
    traffic = data.draw(recurring(w, bursts=MIN_INTERVALS + 4))
    assume(not carries(w, w.lo, traffic.peak))
    run = simulate(w, traffic)
    lowest = _lowest_between_bursts(run.times, run.desired, traffic)
    note(f"lowest between bursts {lowest}")
    assert any(not carries(w, count, traffic.peak) for count in lowest), (
        f"capacity for the burst was held through every gap ({lowest}) although each move costs "
        "seconds of a few replicas against half an hour or more of the burst's count"
    )


def test_a_quickly_reversed_scale_down_shortens_the_learned_life() -> None:
    """A scale-down undone 10 minutes later: the life is 600 s, and the next one averages in."""
    policy = ScalingPolicy(
        name="flap",
        namespace="t",
        target=ScaleTargetRef("flap"),
        kafka=KafkaSource("flap"),
        max_lag_seconds=30.0,
        capacity=Capacity(per_replica=CAPACITY, learn=False),
        min_replicas=1,
        max_replicas=24,
        scale_down=ScaleDown(stabilization_seconds=60.0),
        startup_seconds=10.0,
        rebalance_stall_seconds=2.0,
        hpa=Hpa(sync_period_seconds=SYNC, configurable_tolerance=True),
    )
    w = Workload(policy, 24)
    # High, low for 600 s, high again, then low for 1800 s, high again.
    traffic = Traffic(
        np.asarray([0.0, 3000.0, 3005.0, 3600.0, 3605.0, 6000.0, 6005.0, 7800.0, 7805.0, 9000.0]),
        np.asarray([16e3, 16e3, 1e3, 1e3, 16e3, 16e3, 1e3, 1e3, 16e3, 16e3]),
        (),
        16e3,
    )
    lives = sorted({round(v) for v in _life_run(w, traffic) if np.isfinite(v)})
    assert len(lives) == 2, f"two reversals, two updates: {lives}"
    first, second = lives[0], lives[1]
    assert 0 < first < 600, f"the first lower count lasted less than the 600 s of low load: {lives}"
    assert first < second < 1800, f"the second, longer-lived one lengthened the learned life: {lives}"


def _life_run(w: Workload, traffic: Traffic) -> list[float]:
    """The learned life after each cycle of the fluid model (replaying its decisions)."""
    params = PolicyArrays.from_policies([w.policy])
    state = EngineState.initial(params)
    replicas, lives = 16, []
    for now in np.arange(0.0, traffic.times[-1], SYNC):
        rate = float(traffic.at(np.asarray([now]))[0])
        obs = steady_observation(now, replicas=replicas, partitions=w.partitions, rate=rate)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            decisions, state = decide(params, state, obs)
        replicas = int(decisions.desired[0])
        lives.append(float(state.down_life[0]))
    return lives


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(w=workloads(), extra=st.floats(10.0, 30.0), current=st.integers(2, 100), ahead=st.floats(0.0, 7200.0))
def test_a_predicted_burst_holds_a_scale_down_whose_moves_the_budget_cannot_pay(
    w: Workload, extra: float, current: int, ahead: float
) -> None:
    """One cycle, after long low load at ``current``: a burst predicted ``ahead`` s after capacity for
    it is ordered, which the lower count does not carry. Every rebalance is ``extra`` s over the SLO
    and the budget is 0.1 % of the time: the scale-down waits until the burst's window has closed.
    The same cycle without the prediction scales down (the prediction is what holds it)."""
    w = _costly(w, extra)
    current = min(max(current, w.lo + 1), w.hi)
    assume(current > w.lo)
    params = PolicyArrays.from_policies([w.policy])
    state = EngineState.initial(params)
    rate = 0.0
    for at in (0.0, 1e6):
        obs = steady_observation(at, replicas=current, partitions=w.partitions, rate=rate)
        _, state = decide(params, state, obs)
    obs = steady_observation(1e6 + SYNC, replicas=current, partitions=w.partitions, rate=rate)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        free = run_stages(params, state, obs)
    assume(bool(free.down.scaling_down[0]))  # without a prediction it scales down now
    lead = float(free.recurrence.lead[0])
    onset = 1e6 + SYNC + lead + max(ahead, 1.0)
    peak = CAPACITY * w.hi * 2.0  # more than any lower count carries
    predicted = replace(
        state,
        burst_next=np.where(np.arange(state.burst_next.shape[1]) == 0, onset, np.inf)[None, :],
        burst_rate=np.where(np.arange(state.burst_rate.shape[1]) == 0, peak, 0.0)[None, :],
    )
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        held = run_stages(params, predicted, obs)
    budget = (1.0 - w.policy.slo_objective) * max(ahead, 1.0)
    assert budget < extra  # one rebalance alone breaks it
    assert not held.down.scaling_down[0], (
        f"scaled down {current} -> {held.down.candidate[0]} before the burst"
    )
    assert held.down.paced_until[0] >= onset, "the move is reconsidered before the burst has passed"
