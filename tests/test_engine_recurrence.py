"""Recurring bursts: the engine learns their period and is ready before the next one, and only then.

Properties over random policies (``test_engine_liveness.workloads``: partitions, bounds, step limits,
stabilization, tolerance, stateful or not) and random traffic, each run through a small fluid model
of the group (the HPA carries out each decision at the next sync; a replica consumes its true rate;
a backlog builds when arrivals outrun the group):

* periodic bursts (random period, phase, width, base, amplitude, jitter and noise): from the fifth
  burst on (four onsets one period apart), the decision made a reaction time before each onset
  already carries the burst's rate;
* traffic whose rises never repeat on a period (random spikes, a flash crowd, a staircase of random
  holds): no burst is ever predicted;
* on any traffic: no decision is below the one the engine makes from the same state without the
  prediction.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st
from test_engine_liveness import CAPACITY, SYNC, Workload, steady_observation, workloads

from lagscaler.core.engine import EngineState, PolicyArrays, decide
from lagscaler.core.engine.core import run_stages
from lagscaler.core.engine.sizing import effective_replicas
from lagscaler.core.engine.stages import settle
from lagscaler.core.engine.stages.recurrence import MIN_INTERVALS
from lagscaler.core.policy.model import (
    Capacity,
    Hpa,
    KafkaSource,
    ScaleTargetRef,
    ScaleUp,
    ScalingPolicy,
    Smoothing,
)

pytestmark = pytest.mark.slow

EDGE = 5.0  # s a burst's edge takes

EXAMPLE = ScalingPolicy(
    name="bursts",
    namespace="t",
    target=ScaleTargetRef("bursts"),
    kafka=KafkaSource("bursts"),
    max_lag_seconds=30.0,
    capacity=Capacity(per_replica=CAPACITY),
    min_replicas=1,
    max_replicas=24,
    scale_up=ScaleUp(max_step_percent=400.0, max_step_replicas=24),
    startup_seconds=30.0,
    rebalance_stall_seconds=10.0,
    hpa=Hpa(sync_period_seconds=SYNC, configurable_tolerance=True),
)


@dataclass(frozen=True)
class Traffic:
    """A piecewise-linear arrival rate and the times its rises start (the onsets)."""

    times: np.ndarray
    rates: np.ndarray
    onsets: tuple[float, ...]
    peak: float

    def at(self, t: np.ndarray) -> np.ndarray:
        return np.interp(t, self.times, self.rates)


def pulses(starts: list[float], widths: list[float], heights: list[float], base: float) -> Traffic:
    """Trapezoids on a flat ``base``, each rising from ``start`` for ``EDGE`` seconds."""
    times, rates, onsets = [0.0], [base], []
    for start, width, height in sorted(zip(starts, widths, heights, strict=True)):
        if start <= times[-1] + EDGE:  # overlapping pulses: the later one is dropped
            continue
        times += [start, start + EDGE, start + EDGE + width, start + 2 * EDGE + width]
        rates += [base, height, height, base]
        onsets.append(start)
    times.append(times[-1] + 7200.0)
    rates.append(base)
    return Traffic(np.asarray(times), np.asarray(rates), tuple(onsets), max(rates))


@dataclass(frozen=True)
class Run:
    times: np.ndarray
    desired: np.ndarray  # the decision at each observation
    ahead: np.ndarray  # messages/s of a predicted burst at each observation (0: none)
    reaction: float


def simulate(
    w: Workload, traffic: Traffic, *, noise: float = 0.0, seed: int = 0, compare_off: bool = False
) -> Run:
    """The engine in a fluid model of its group, one observation per HPA sync.

    With ``compare_off``, every cycle also asks the engine without the prediction, from the same
    state and observation, and asserts it does not decide more.
    """
    params = PolicyArrays.from_policies([w.policy])
    off = replace(params, burst_recurrence=np.zeros(1, dtype=np.bool_))
    state = EngineState.initial(params)
    rng = np.random.default_rng(seed)
    times = np.arange(0.0, traffic.times[-1], SYNC)
    arrivals = traffic.at(times) * (1.0 + noise * rng.uniform(-1.0, 1.0, times.size))
    arrivals = np.maximum(arrivals, 0.0)
    replicas, lag = w.lo, 0.0
    desired, ahead = np.zeros(times.size, dtype=np.int64), np.zeros(times.size)
    reaction = 0.0
    for i, (now, rate) in enumerate(zip(times, arrivals, strict=True)):
        capacity = CAPACITY * float(effective_replicas(np.asarray([replicas]), np.asarray([w.partitions]))[0])
        consumed = min(rate + lag / SYNC, capacity)
        lag = max(lag + (rate - capacity) * SYNC, 0.0)
        obs = replace(
            steady_observation(now, replicas=replicas, partitions=w.partitions, rate=rate),
            consume_rate=np.asarray([consumed]),
            lag=np.asarray([lag]),
            lag_seconds=np.asarray([min(lag / rate, 1e9) if rate > 1e-9 else 0.0]),
        )
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            stages = run_stages(params, state, obs)
            decisions, next_state = settle(params, state, stages=stages)
        if compare_off:
            without, _ = decide(off, state, obs)
            assert decisions.desired[0] >= without.desired[0], (
                f"at {now:.0f} s the prediction lowered the decision: "
                f"{decisions.desired[0]} < {without.desired[0]} without it"
            )
        desired[i], ahead[i] = decisions.desired[0], stages.recurrence.ahead[0]
        reaction = float(stages.inputs.reaction[0])
        state, replicas = next_state, int(decisions.desired[0])
    return Run(times, desired, ahead, reaction)


def carries(w: Workload, replicas: int, rate: float) -> bool:
    """``replicas`` members keep up with ``rate`` (or are all the policy and the topic allow)."""
    got = CAPACITY * float(effective_replicas(np.asarray([replicas]), np.asarray([w.partitions]))[0])
    return got >= rate or replicas >= w.hi


def reaction_of(w: Workload) -> float:
    """Sync + start-up + stall + restore: capacity ordered now serves no sooner."""
    p = w.policy
    return SYNC + p.startup_seconds + p.rebalance_stall_seconds + w.restore


@st.composite
def periodic(draw: st.DrawFn, w: Workload) -> Traffic:
    """Bursts on a clock: random period, phase, width, base, amplitude, jitter about each slot."""
    p = w.policy
    half_life = p.smoothing.half_life_seconds
    width = draw(st.floats(2 * SYNC, 600.0))
    # Long enough that the level settles back between bursts, and that capacity can be ordered and
    # given back in between (the stabilization windows, the step-limited climb).
    shortest = max(
        1200.0,
        3.0 * (reaction_of(w) + p.scale_up.stabilization_seconds) + 16 * SYNC,
        6.0 * half_life + width,  # the level falls back below half the burst's rate
        4.0 * width,
    )
    period = draw(st.floats(shortest, 2.0 * shortest))
    jitter = draw(st.floats(0.0, 0.01)) * period
    phase = draw(st.floats(0.0, period))
    bursts = MIN_INTERVALS + 1 + draw(st.integers(1, 2))
    slots = [phase + period * (i + 1) for i in range(bursts)]
    starts = [s + draw(st.floats(-jitter, jitter)) for s in slots]
    hi_rate = CAPACITY * w.hi * p.target_utilization
    height = draw(st.floats(0.3, 1.2)) * hi_rate
    base = draw(st.floats(0.0, 0.3)) * height
    # A rise the engine must notice: twice the level and at least one replica's worth more.
    assume(height >= 2.0 * base and height - base >= 1.2 * CAPACITY * p.target_utilization)
    return pulses(starts, [width] * bursts, [height] * bursts, base)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(data=st.data(), w=workloads())
def test_capacity_is_ready_at_each_onset_once_the_period_is_learned(data: st.DataObject, w: Workload) -> None:
    traffic = data.draw(periodic(w))
    noise = data.draw(st.floats(0.0, 0.05))
    run = simulate(w, traffic, noise=noise)
    note(f"onsets {traffic.onsets}, peak {traffic.peak:.0f}, reaction {run.reaction:.0f} s")
    for onset in traffic.onsets[MIN_INTERVALS + 1 :]:
        # The last decision a reaction time before the onset: what is running when it comes.
        before = np.flatnonzero(run.times + run.reaction <= onset)
        assert before.size, "the burst came before the engine could act at all"
        ordered = int(run.desired[before[-1]])
        assert carries(w, ordered, traffic.peak * 1.05), (
            f"burst at {onset:.0f} s: {ordered} replicas ordered by {run.times[before[-1]]:.0f} s "
            f"do not carry {traffic.peak:.0f} msg/s"
        )


def regular_chain(onsets: list[float], slack: float) -> bool:
    """Four of ``onsets`` with three consecutive gaps agreeing within 20 % (plus ``slack``) of the first.

    Looser than the engine's own test (10 % of the period plus two syncs): traffic without such a
    chain has no recurrence the engine could believe, however its onsets were observed.
    """
    ts = sorted(onsets)
    for a in range(len(ts)):
        for b in range(a + 1, len(ts)):
            gap = ts[b] - ts[a]
            chain, last = 1, ts[b]
            while chain < MIN_INTERVALS:
                near = [t for t in ts if abs(t - (last + gap)) <= 0.2 * gap + slack]
                if not near:
                    break
                last, chain = near[0], chain + 1
            if chain >= MIN_INTERVALS:
                return True
    return False


@st.composite
def irregular(draw: st.DrawFn, w: Workload) -> Traffic:
    """Random spikes, a flash crowd or a staircase of random holds: rises that need not repeat."""
    p = w.policy
    hi_rate = CAPACITY * w.hi * p.target_utilization
    kind = draw(st.sampled_from(["spikes", "flash", "staircase"]))
    base = draw(st.floats(0.0, 0.2)) * hi_rate
    if kind == "spikes":
        count = draw(st.integers(1, 10))
        starts = draw(st.lists(st.floats(600.0, 86400.0), min_size=count, max_size=count))
        widths = draw(st.lists(st.floats(2 * SYNC, 600.0), min_size=count, max_size=count))
        heights = draw(st.lists(st.floats(0.3, 1.2), min_size=count, max_size=count))
        return pulses(starts, widths, [h * hi_rate for h in heights], base)
    if kind == "flash":
        start, decay = draw(st.floats(600.0, 20000.0)), draw(st.floats(300.0, 3600.0))
        t = np.concatenate([[0.0, start], start + EDGE + np.linspace(0.0, 6 * decay, 60)])
        r = np.concatenate([[base, base], base + (hi_rate - base) * np.exp(-(t[2:] - t[2]) / decay)])
        return Traffic(t, r, (start,), hi_rate)
    steps = draw(st.lists(st.floats(0.1, 1.2), min_size=2, max_size=12))
    holds = draw(st.lists(st.floats(300.0, 7200.0), min_size=len(steps), max_size=len(steps)))
    times, rates, onsets, now = [0.0], [base], [], 600.0
    for level, hold in zip(steps, holds, strict=True):
        if level * hi_rate > rates[-1]:
            onsets.append(now)
        times += [now, now + 30.0]
        rates += [rates[-1], level * hi_rate]
        now += 30.0 + hold
    times.append(now)
    rates.append(rates[-1])
    return Traffic(np.asarray(times), np.asarray(rates), tuple(onsets), max(rates))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(data=st.data(), w=workloads())
def test_rises_that_do_not_recur_are_never_predicted(data: st.DataObject, w: Workload) -> None:
    traffic = data.draw(irregular(w))
    assume(not regular_chain(list(traffic.onsets), slack=4 * SYNC))
    run = simulate(w, traffic, noise=data.draw(st.floats(0.0, 0.05)))
    predicted = run.times[run.ahead > 0]
    assert predicted.size == 0, f"a burst was predicted at {predicted[:5]} s from onsets {traffic.onsets}"


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(data=st.data(), w=workloads())
def test_the_prediction_never_lowers_a_decision(data: st.DataObject, w: Workload) -> None:
    traffic = data.draw(st.one_of(periodic(w), irregular(w)))
    simulate(w, traffic, noise=data.draw(st.floats(0.0, 0.05)), compare_off=True)


def test_a_policy_can_turn_the_prediction_off() -> None:
    """``smoothing.burstRecurrence: false``: hourly bursts are met when measured, never ahead."""
    w = Workload(replace(EXAMPLE, smoothing=Smoothing(half_life_seconds=30.0, burst_recurrence=False)), 24)
    traffic = pulses([1800.0 + 3600.0 * i for i in range(8)], [90.0] * 8, [18000.0] * 8, 1000.0)
    assert not (simulate(w, traffic).ahead > 0).any()
    on = Workload(replace(w.policy, smoothing=Smoothing(half_life_seconds=30.0)), 24)
    assert (simulate(on, traffic).ahead > 0).any()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    w=workloads(),
    steps=st.integers(3, 6),
    hold=st.floats(600.0, 2400.0),
    cycles=st.integers(4, 7),
    low=st.floats(0.0, 0.3),
    seed=st.integers(0, 2**16),
)
def test_a_repeating_staircase_is_never_predicted(
    w: Workload, *, steps: int, hold: float, cycles: int, low: float, seed: int
) -> None:
    """A ladder up and down again, over and over (as ``shapes.staircase``): its rise lasts most of the
    cycle, a level the forecast follows, however regularly the ladder repeats."""
    rng = np.random.default_rng(seed)
    top = CAPACITY * w.hi * w.policy.target_utilization
    levels = np.linspace(low, 1.0, steps) * top
    ladder = [*levels.tolist(), *levels[-2:0:-1].tolist()]
    times, rates, now = [0.0], [float(levels[0])], 600.0
    for level in ladder * cycles:
        times += [now, now + 30.0]
        rates += [rates[-1], level]
        now += 30.0 + hold * float(rng.uniform(0.7, 1.3))
    times.append(now)
    rates.append(rates[-1])
    traffic = Traffic(np.asarray(times), np.asarray(rates), (), top)
    run = simulate(w, traffic)
    predicted = run.times[run.ahead > 0]
    assert predicted.size == 0, f"the staircase was predicted as bursts at {predicted[:5]} s"
