"""Partition cliffs: the engine does not round a load a little over the target up to twice the replicas.

On 64 partitions every count from 33 to 63 is as slow as 32 (the busiest member owns two), so the
aligned counts jump from 32 to 64. The target utilisation asks for a margin of ``1 - u`` above the
load; rounding up across such a jump adds far more, and the shipped clickstream example paid for
64 replicas wherever 32 ran at 86-92 % of their capacity (where a plain HPA on msg/s ran 37, no
faster than 32). ``sized_with_headroom`` takes the count below the cliff while it carries the load
within the scale-up's dead band; these tests hold it to that over random inputs and in the loop
(``test_engine_stages.py`` holds the stages to it over random policies).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_engine_liveness import steady_observation

from lagscaler.core.engine import EngineState, ObservationBatch, PolicyArrays, decide
from lagscaler.core.engine.core import run_stages
from lagscaler.core.engine.sizing import (
    aligned_at_most,
    aligned_replicas,
    effective_replicas,
    sized_with_headroom,
)
from lagscaler.core.engine.stages.need import HOT_FRACTION, SHRINK_FRACTION
from lagscaler.core.policy.model import (
    Capacity,
    Hpa,
    KafkaSource,
    ScaleDown,
    ScaleTargetRef,
    ScaleUp,
    ScalingPolicy,
    Stateful,
)
from lagscaler.core.simulation.compare import compare
from lagscaler.core.simulation.model import Scenario
from lagscaler.core.simulation.trace import Trace

CAPACITY = 1000.0  # msg/s per replica, true and prior

inputs = st.tuples(
    st.floats(0.0, 200_000.0),  # rate
    st.floats(10.0, 10_000.0),  # per-replica capacity
    st.floats(0.3, 1.0),  # target utilisation
    st.floats(0.0, 1.0),  # where the band lies between the target and saturation
    st.one_of(st.sampled_from([0, 1, 7, 12, 24, 32, 64, 96]), st.integers(0, 200)),
)


@settings(max_examples=500, deadline=None)
@given(case=st.lists(inputs, min_size=1, max_size=8))
def test_sizing_across_a_cliff_never_asks_for_more_and_never_runs_past_the_band(
    case: list[tuple[float, float, float, float, int]],
) -> None:
    rate, c, u, frac, p = (np.asarray(col) for col in zip(*case, strict=True))
    partitions = p.astype(np.int64)
    band = u + (1.0 - u) * frac
    with np.errstate(over="ignore"):  # as decide() runs it: a tiny rate's ratio overflows to inf
        got = sized_with_headroom(rate, c, u, band, partitions)
        at_target = aligned_replicas(rate / (c * u), partitions)
        plain = sized_with_headroom(rate, c, u, u, partitions)
    # Never more than the target utilisation asks for; exactly that where the band is the target.
    assert np.all(got <= at_target)
    assert np.array_equal(plain, at_target)
    below = got < at_target
    carries = effective_replicas(got, partitions) * c
    # Below the target's count only across a cliff, on an aligned count that carries the load
    # within the band (the scale-up would not grow it back).
    assert np.all(rate[below] <= carries[below] * band[below] * (1.0 + 1e-9))
    cliff = effective_replicas(at_target, partitions) * u > effective_replicas(got, partitions)
    assert np.all(cliff[below])
    known = partitions > 0
    assert np.array_equal(got[known & below], aligned_at_most(got, partitions)[known & below])
    assert np.all(got >= 0)


# --- the stages, over random policies --------------------------------------------------------------


@st.composite
def near_a_cliff(draw: st.DrawFn) -> tuple[PolicyArrays, EngineState, ObservationBatch]:
    """A random policy after a long steady stretch, at a load near what an aligned count carries."""
    partitions = draw(st.sampled_from([7, 12, 24, 32, 64, 96]))
    stateful = draw(st.booleans())
    p = ScalingPolicy(
        name="w",
        namespace="t",
        target=ScaleTargetRef("w"),
        kafka=KafkaSource("w"),
        max_lag_seconds=draw(st.floats(15.0, 300.0)),
        capacity=Capacity(per_replica=CAPACITY),
        min_replicas=1,
        max_replicas=partitions,
        target_utilization=draw(st.floats(0.4, 1.0)),
        scale_up=ScaleUp(max_step_percent=draw(st.floats(10.0, 400.0))),
        scale_down=ScaleDown(
            stabilization_seconds=draw(st.floats(0.0, 600.0)),
            max_step_percent=draw(st.floats(0.0, 100.0)),
            max_step_replicas=draw(st.integers(1, 64)),
        ),
        startup_seconds=draw(st.floats(0.0, 120.0)),
        rebalance_stall_seconds=draw(st.floats(0.0, 30.0)),
        stateful=Stateful(
            restore_bytes_per_second=1e6, state_bytes=draw(st.floats(1.0, 300.0)) * 1e6 * partitions
        )
        if stateful
        else None,
        hpa=Hpa(sync_period_seconds=15.0, configurable_tolerance=draw(st.booleans())),
    )
    params = PolicyArrays.from_policies([p])
    aligned = sorted({-(-partitions // k) for k in range(1, partitions + 1)})
    rate = draw(st.sampled_from(aligned)) * CAPACITY * draw(st.floats(0.5, 1.0))
    replicas = draw(st.integers(1, partitions))
    steady = partial(steady_observation, replicas=replicas, partitions=partitions, rate=rate)

    state = EngineState.initial(params)
    for at in (0.0, 1e5, 2e5):
        _, state = decide(params, state, steady(at))
    return params, state, steady(3e5)


@settings(max_examples=300, deadline=None)
@given(case=near_a_cliff())
def test_no_count_is_chosen_that_the_same_load_runs_hot(
    case: tuple[PolicyArrays, EngineState, ObservationBatch],
) -> None:
    """The need, and a scale-down's candidate, carry the forecast without tripping a scale-up.

    Sizing may take the aligned count below a partition cliff, but only where stage 4 would not
    grow it back for the same forecast (else a group flaps across the cliff, a rebalance each
    way); where a rebalance breaks the SLO by itself the need keeps the whole margin the target
    utilisation asks for.
    """
    params, state, obs = case
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        stages = run_stages(params, state, obs)
    inputs, need, down = stages.inputs, stages.need, stages.down
    u = params.target_utilization
    per_replica = stages.capacity.per_replica
    hot = u + (1.0 - u) * HOT_FRACTION
    usable = inputs.usable & (need.replicas < inputs.hi)
    carries = per_replica * effective_replicas(need.replicas, inputs.partitions)
    assert np.all(need.forecast[usable] <= carries[usable] * hot[usable] * (1 + 1e-9))
    kept = usable & (params.rebalance_stall + inputs.restore > inputs.slo)
    assert np.all(need.required[kept] <= carries[kept] * (1 + 1e-9))
    chosen = down.scaling_down & (down.candidate < inputs.hi)
    at_candidate = per_replica * effective_replicas(down.candidate, inputs.partitions)
    assert np.all(need.forecast[chosen] <= at_candidate[chosen] * hot[chosen] * (1 + 1e-9))
    # Across a cliff a scale-down keeps a margin the scale-up's dead band does not: hysteresis.
    band = u + (1.0 - u) * SHRINK_FRACTION
    assert np.all(need.forecast[chosen] <= at_candidate[chosen] * band[chosen] * (1 + 1e-9))


# --- in the loop -----------------------------------------------------------------------------------

PARTITIONS = 64
U = 0.85


def policy() -> ScalingPolicy:
    return ScalingPolicy(
        name="cliff",
        namespace="t",
        target=ScaleTargetRef("c"),
        kafka=KafkaSource("g"),
        max_lag_seconds=30.0,
        capacity=Capacity(per_replica=CAPACITY),
        min_replicas=2,
        max_replicas=PARTITIONS,
        target_utilization=U,
        scale_up=ScaleUp(max_step_percent=400.0, max_step_replicas=PARTITIONS),
        scale_down=ScaleDown(max_step_percent=100.0, max_step_replicas=PARTITIONS),
        startup_seconds=25.0,
        rebalance_stall_seconds=5.0,
        hpa=Hpa(configurable_tolerance=True),
    )


def plateau_run(*, start: float, level: float) -> tuple[np.ndarray, float]:
    """``start`` × what 32 replicas carry for an hour, a 5 s step to ``level`` × that, held two hours.

    Returns the replica series once the plateau has settled, and the worst lag (s) over it.
    """
    full = 32 * CAPACITY
    times = np.asarray([0.0, 3600.0, 3605.0, 10805.0])
    trace = Trace("plateau", times, np.asarray([start, start, level, level]) * full)
    p = policy()
    result = compare(trace, p, Scenario.from_policy(p, partitions=PARTITIONS), ("lagscaler",))
    series = result.replicas["lagscaler"]
    late = result.times >= 3605.0 + 1800.0
    return series[late], float(result.lag_seconds["lagscaler"][late].max())


@pytest.mark.parametrize(
    ("start", "level"),
    [
        (0.5, 0.88),  # a step up to 88 % of what 32 carry: past the 85 % target, inside the dead band
        (1.2, 0.87),  # a step down from a load that needs 64 to 87 %: inside the scale-down's band
    ],
)
def test_a_load_just_past_the_target_of_32_replicas_runs_on_32_not_64(start: float, level: float) -> None:
    """Whether the load arrives from below or from above, 32 carry it; 64 would idle half the group."""
    settled, worst_lag = plateau_run(start=start, level=level)
    assert settled.max() <= 32
    assert worst_lag <= 30.0


def test_past_the_dead_band_the_group_still_crosses_the_cliff() -> None:
    """97 % of 32 replicas' capacity is hot: the engine must cross to 64 and stay there."""
    settled, worst_lag = plateau_run(start=0.5, level=0.97)
    assert settled.min() == 64
    assert worst_lag <= 30.0
