"""The engine prices a move by what it costs in the policy's mode (issue 11).

Mode hpa: a rebalance, the group's stall plus the moved partitions' restore on the consuming path.
Mode handover: the new generation's replicas paid for while they start, join and restore beside the
serving ones, plus the measured cut-over pause; nothing restores on the consuming path. Each test
runs the same random policies in both modes on the same observations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from test_engine_stages import W, batch, policies, rows

from lagscaler.core.engine import EngineState, ObservationBatch, PolicyArrays, decide
from lagscaler.core.engine.core import run_stages
from lagscaler.core.engine.params import HANDOVER_CUTOVER_SECONDS
from lagscaler.core.engine.stages import Stages, rebalance_price, restore_seconds
from lagscaler.core.policy.model import (
    Capacity,
    KafkaSource,
    Mode,
    ScaleTargetRef,
    ScalingPolicy,
    Stateful,
)


@dataclass(frozen=True)
class Pair:
    """The stages of one cycle in mode hpa and in mode handover, the params, and handover's state."""

    hpa: Stages
    handover: Stages
    hpa_params: PolicyArrays
    params: PolicyArrays
    state: EngineState


Run = tuple[PolicyArrays, EngineState, ObservationBatch]


def _both_modes(draw: st.DrawFn, ps: list[ScalingPolicy]) -> tuple[Run, Run]:
    """The same policies and history in mode hpa and in mode handover, and this cycle's observations."""
    history = [
        (draw(st.sampled_from([1.0, 15.0, 120.0])), [draw(rows) for _ in range(W)])
        for _ in range(draw(st.integers(0, 4)))
    ]
    last = [draw(rows) for _ in range(W)]
    out = []
    for mode in (Mode.HPA, Mode.HANDOVER):
        params = PolicyArrays.from_policies([replace(p, name=f"w{i}", mode=mode) for i, p in enumerate(ps)])
        state = EngineState.initial(params)
        at = 0.0
        for gap, values in history:
            at += gap
            _, state = decide(params, state, batch(at, values))
        out.append((params, state, batch(at + 15.0, last)))
    return out[0], out[1]


@st.composite
def pairs(draw: st.DrawFn) -> Pair:
    ps = [draw(policies) for _ in range(W)]
    (hp, hs, ho), (vp, vs, vo) = _both_modes(draw, ps)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return Pair(run_stages(hp, hs, ho), run_stages(vp, vs, vo), hp, vp, vs)


@settings(max_examples=80, deadline=None)
@given(pair=pairs())
def test_handover_mode_restores_nothing_on_the_consuming_path(
    pair: Pair,
) -> None:
    hpa, handover, hpa_params, params = pair.hpa, pair.handover, pair.hpa_params, pair.params
    assert not handover.inputs.restore.any()
    assert np.all(params.rebalance_stall == HANDOVER_CUTOVER_SECONDS)
    # The restore moved off the path into the warm-up: the new generation joins its group and restores.
    assert np.array_equal(handover.inputs.warmup, params.group_join + hpa.inputs.restore)
    assert np.array_equal(params.group_join, hpa_params.rebalance_stall)
    # Capacity ordered now still serves only after the warm-up: the reaction time keeps it.
    assert np.all(handover.inputs.reaction >= params.startup + handover.inputs.warmup)
    # Mode hpa has no warm-up: its inputs are exactly what they were before handover mode was priced.
    assert not hpa.inputs.warmup.any()


@settings(max_examples=80, deadline=None)
@given(pair=pairs())
def test_a_handover_costs_the_double_running_and_the_cut_over_not_a_rebalance(
    pair: Pair,
) -> None:
    hpa, handover, hpa_params, params = pair.hpa, pair.handover, pair.hpa_params, pair.params
    no = np.zeros(W, dtype=bool)
    # Mode hpa: the rebalance's price, alone or (a move that will be undone within the payback
    # horizon) with every step of the climb back, each a rebalance of its own.
    i = hpa.inputs
    once = rebalance_price(hpa_params, i.replicas, hpa.down.candidate, i.restore, no)
    back = _climb_back(hpa_params, hpa, lambda a, b: rebalance_price(hpa_params, a, b, i.restore, no))
    assert np.allclose(
        hpa.down.price, np.where(hpa.down.lasts < hpa_params.payback_horizon, once + back, once)
    )
    # Mode handover: the new generation's replicas over start-up and warm-up, plus the throughput the
    # cut-over pause loses; no restore and no SLO breach priced in, nothing restores on the path.
    v, after = handover.inputs, handover.down.candidate

    def handover_move(before: np.ndarray, to: np.ndarray) -> np.ndarray:
        cutover = np.maximum(np.maximum(before, to), 1) * HANDOVER_CUTOVER_SECONDS
        return to * (params.startup + v.warmup) + cutover

    once = handover_move(v.replicas, after)
    back = _climb_back(params, handover, handover_move)
    returns = handover.down.lasts < params.payback_horizon
    assert np.allclose(handover.down.price, np.where(returns, once + back, once))
    # A stateful scale-down costs more in mode handover the longer the warm-up, never a breach.
    assert np.all(handover.down.price >= after * v.warmup)


def _climb_back(
    params: PolicyArrays, stages: Stages, price: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> np.ndarray:
    """The price of climbing from the scale-down's candidate back to the current count, one step-limited
    scale-up at a time (``maxStepPercent`` / ``maxStepReplicas``), each priced by ``price(before, after)``."""
    total = np.zeros(W)
    for w in range(W):
        count, stop = int(stages.down.candidate[w]), int(stages.inputs.replicas[w])
        for _ in range(16):
            if count >= stop:
                break
            room = max(math.ceil(count * params.up_step_percent[w] / 100.0), int(params.up_step_replicas[w]))
            step = min(count + room, stop)
            before, after = np.full(W, count), np.full(W, step)
            total[w] += float(price(before, after)[w])
            count = step
    return total


@settings(max_examples=80, deadline=None)
@given(pair=pairs())
def test_handover_mode_spends_no_error_budget_on_a_move(
    pair: Pair,
) -> None:
    handover, state = pair.handover, pair.state
    # A cut-over pause far below the SLO breaks nothing: no move is paced by the error budget, and a
    # scale-down waits only for the SLO after the last one, not for a restore.
    assert np.array_equal(handover.down.paced_until, np.maximum(state.scaled_up_at, state.scaled_down_at))
    assert np.allclose(handover.down.dwell_down, HANDOVER_CUTOVER_SECONDS + handover.inputs.slo)


def _sessionizer_like(mode: Mode) -> PolicyArrays:
    """A stateful workload whose moved partitions take longer to restore than the SLO (160 s > 120 s)."""
    policy = ScalingPolicy(
        name="s",
        namespace="t",
        target=ScaleTargetRef("s"),
        kafka=KafkaSource("s", ("events",)),
        mode=mode,
        max_lag_seconds=120.0,
        capacity=Capacity(per_replica=1000.0, learn=False),
        min_replicas=1,
        max_replicas=32,
        stateful=Stateful(restore_bytes_per_second=1e6, state_bytes=32 * 160e6),
    )
    return PolicyArrays.from_policies([policy])


def test_a_restore_longer_than_the_slo_paces_scale_downs_only_in_mode_hpa() -> None:
    """The same scale-down, 16 → 8 replicas after the load fell: in mode hpa its 160 s restore breaks
    the 120 s SLO by itself, so it spends error budget and is paced; in mode handover it is not."""
    paced = {}
    for mode in (Mode.HPA, Mode.HANDOVER):
        params = _sessionizer_like(mode)
        restore = restore_seconds(params, np.asarray([32]), np.asarray([np.nan]))
        assert restore[0] == 160.0
        state = EngineState.initial(params)
        values = {
            "replicas": 16,
            "members": 16,
            "partitions": 32,
            "arrival_rate": 1000.0,
            "consume_rate": 1000.0,
            "lag": 0.0,
            "lag_seconds": 0.0,
            "busy_rate": 0.0,
            "busy_members": 0,
            "stale": False,
        }
        _, state = decide(params, state, batch(0.0, [values]))
        state = replace(state, scaled_up_at=np.asarray([0.0]))
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            stages = run_stages(params, state, batch(15.0, [values]))
        paced[mode] = float(stages.down.paced_until[0])
    assert paced[Mode.HANDOVER] <= 0.0 < paced[Mode.HPA]
