"""Handover mode in the simulator (issue 11): generations warmed up beside the serving one, no rebalance.

A scripted decision sequence checks the mechanics exactly (billing during the warm-up, the controller
carrying a warming generation through the decisions it still fits and abandoning it for the ones it
does not, the cut-over); the real engine in mode handover, over
random policies and traces, checks that no rebalance ever happens and no message is lost or doubled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_simulation import P, bench_like, flat

from lagscaler.core.engine.params import HANDOVER_CUTOVER_SECONDS
from lagscaler.core.policy.model import Mode, ScaleDown, ScaleUp
from lagscaler.core.simulation.compare import compare
from lagscaler.core.simulation.controllers import GroupView, LagscalerController
from lagscaler.core.simulation.handover import (
    HANDOVER_NAME,
    HandoverController,
    warmup_seconds,
)
from lagscaler.core.simulation.model import Scenario
from lagscaler.core.simulation.simulator import _Run
from lagscaler.core.simulation.trace import Trace


@dataclass
class Scripted(HandoverController):
    """Decides the counts of ``script`` (sync time → count) instead of asking the engine: the simulator's
    handling of decisions is what is under test here, not the engine's. Between scripted times it
    repeats its last decision, as the engine keeps a decided count until it decides another."""

    script: dict[float, int] = field(default_factory=dict)
    asked: list[tuple[float, int]] = field(default_factory=list)
    decided: int | None = None

    def desired(self, now: float, view: GroupView) -> int:
        self.decided = self.script.get(now, view.members if self.decided is None else self.decided)
        self.asked.append((now, view.members))
        return self.decided


def scenario(stateful: bool = True) -> Scenario:
    return Scenario.from_policy(bench_like(stateful), partitions=P)


def run(trace: Trace, s: Scenario, *controllers: LagscalerController) -> _Run:
    r = _Run(trace, s, controllers, None, 20_000)
    r.run(None)
    return r


def test_both_generations_are_paid_for_while_the_new_one_warms_up() -> None:
    s = scenario()
    warm = warmup_seconds(s)
    assert warm == s.startup_seconds + s.rebalance_stall_seconds + s.restore_seconds > 60
    c = Scripted(bench_like(True), s, start=2, script={15.0: 6})
    r = run(flat(2000.0, 1.0), s, c)
    lane = r.lanes[0]
    assert (lane.members, lane.cutovers, lane.rebalances, lane.scale_events) == (6, 1, 0, 1)
    # Per 5 s step: 2 replicas until the decision at 15 s, 2 + 6 until the warm generation is ready,
    # then 6. Replica-hours are those replicas over time, nothing else.
    result = r.result("flat")
    expected = (2 * 15.0 + 8 * warm + 6 * (3600.0 - 15.0 - warm)) / 3600.0
    assert result.policies[0].replica_hours == pytest.approx(expected)
    series = result.replicas[HANDOVER_NAME]
    assert series[0] == 2
    assert series[5] == 8
    assert series[-1] == 6
    # The engine would have seen the serving generation's members, as it does live.
    assert all(members == (2 if now < 15.0 + warm else 6) for now, members in c.asked)


def test_a_decision_during_a_warm_up_waits_for_the_cut_over_as_the_controller_does() -> None:
    s = scenario()
    warm = warmup_seconds(s)
    ready = 15.0 + warm
    first_sync_after = math.ceil(ready / s.sync_period_seconds) * s.sync_period_seconds
    c = Scripted(bench_like(True), s, start=2, script={15.0: 6, 30.0: 3, 45.0: 9, first_sync_after: 3})
    r = run(flat(2000.0, 1.0), s, c)
    lane = r.lanes[0]
    # 2 → 6 carried to its end; 3 and 9 (less than twice its increase) asked during the warm-up changed
    # nothing; 3 asked after it did.
    assert (lane.members, lane.cutovers, lane.scale_events, lane.rebalances) == (3, 2, 2, 0)


def test_a_warming_scale_down_is_abandoned_when_the_decision_rises_above_its_target() -> None:
    """As the controller's machine does: 6 → 2 is warming when a spike asks for 8. Carrying it through
    would cut over to 2 and then warm 8 up; instead the 6 keep serving, 2 is dropped (no cut-over),
    and 8 warms up from the decision that asked for it."""
    s = scenario()
    warm = warmup_seconds(s)
    c = Scripted(bench_like(True), s, start=6, script={15.0: 2, 45.0: 8})
    r = run(flat(2000.0, 1.0), s, c)
    lane = r.lanes[0]
    assert (lane.members, lane.cutovers, lane.scale_events, lane.rebalances) == (8, 1, 2, 0)
    result = r.result("flat")
    # 6 until 15 s, 6 + 2 until the abandon at 45 s, then 6 + 8 until 8 is warm, then 8.
    expected = (6 * 15.0 + 8 * 30.0 + 14 * warm + 8 * (3600.0 - 45.0 - warm)) / 3600.0
    assert result.policies[0].replica_hours == pytest.approx(expected)
    # Never fewer than 6 served meanwhile: the members the engine saw.
    assert all(members == (6 if now < 45.0 + warm else 8) for now, members in c.asked)


def test_a_warming_scale_up_too_small_for_the_decision_is_replaced_by_one_at_the_decision() -> None:
    """A burst seen at its start: 2 → 3 warms when the decision asks for 8 (6 more, twice the 1 in
    flight and then some). Landing 3 first would put 8 a second warm-up away; 8 warms up instead,
    from the decision that asked for it."""
    s = scenario()
    warm = warmup_seconds(s)
    c = Scripted(bench_like(True), s, start=2, script={15.0: 3, 30.0: 8})
    r = run(flat(2000.0, 1.0), s, c)
    lane = r.lanes[0]
    assert (lane.members, lane.cutovers, lane.scale_events) == (8, 1, 2)
    assert all(members == (2 if now < 30.0 + warm else 8) for now, members in c.asked)


def test_a_scale_down_whose_decision_stays_at_or_below_its_target_is_carried_through() -> None:
    s = scenario()
    c = Scripted(bench_like(True), s, start=6, script={15.0: 3, 30.0: 1, 45.0: 3})
    r = run(flat(2000.0, 1.0), s, c)
    lane = r.lanes[0]
    assert (lane.members, lane.cutovers, lane.scale_events) == (3, 1, 1)


def test_no_group_stall_and_no_restore_on_the_consuming_path() -> None:
    """Scaling 2 → 6 → 2 of a workload whose moved partitions restore for 60 s against a 30 s SLO: in
    mode hpa each move would stop every partition for the 10 s stall and moved ones for the restore;
    here the consuming path stops only for the two cut-over pauses, and never misses the SLO."""
    s = scenario()
    script = {15.0: 6, 1800.0: 2}
    trace = flat(1500.0, 1.0)
    handover = run(trace, s, Scripted(bench_like(True), s, start=2, script=script)).result("flat")
    mine = handover.policies[0]
    assert mine.rebalances == 0
    assert mine.cutovers == 2
    assert mine.stall_seconds == pytest.approx(2 * HANDOVER_CUTOVER_SECONDS)
    assert mine.slo_violation_fraction == 0.0
    assert mine.as_json()["stall_seconds"] < s.rebalance_stall_seconds
    assert handover.as_json()["details"][HANDOVER_NAME]["cutovers"] == 2


def test_no_message_is_lost_or_processed_twice_across_a_cut_over() -> None:
    s = replace(scenario(), commit_interval_seconds=10.0)
    c = Scripted(bench_like(True), s, start=2, script={15.0: 6, 600.0: 1, 1200.0: 4})
    r = _Run(flat(2500.0, 0.5), s, (c,), None, 20_000)
    cut_overs: list[tuple[float, float, float]] = []
    original = r._cut_over

    def watched(i: int, at: float) -> None:
        before = (r.consumed[i].sum(), r.lag[i].sum())
        original(i, at)
        # The cut is exactly what the old generation processed: nothing consumed or dropped by it,
        # and the new generation's committed position is its consumed one (nothing to reprocess).
        assert (r.consumed[i].sum(), r.lag[i].sum()) == before
        assert not r.uncommitted[i].any()
        cut_overs.append((at, *before))

    r._cut_over = watched  # type: ignore[method-assign]
    r.run(None)
    assert len(cut_overs) == 3
    assert r.consumed[0].sum() + r.lag[0].sum() == pytest.approx(r.arrived, rel=1e-12)


def test_a_handover_policy_is_simulated_in_both_modes_by_default() -> None:
    policy = replace(bench_like(True), mode=Mode.HANDOVER)
    s = Scenario.from_policy(policy, partitions=P)
    result = compare(flat(3000.0, 0.5), policy, s, None)
    names = [p.name for p in result.policies]
    assert "lagscaler" in names
    assert HANDOVER_NAME in names
    assert "keda" in names
    assert result.policy("lagscaler").cutovers is None
    assert result.policy(HANDOVER_NAME).rebalances == 0


# --- the real engine in mode handover, over random policies and traces ------------------------------


@st.composite
def cases(draw: st.DrawFn) -> tuple[Scenario, Trace, HandoverController, LagscalerController]:
    stateful = draw(st.booleans())
    base = bench_like(stateful)
    policy = replace(
        base,
        max_lag_seconds=draw(st.sampled_from([15.0, 30.0, 120.0])),
        min_replicas=draw(st.integers(1, 3)),
        target_utilization=draw(st.floats(0.6, 0.9)),
        scale_up=ScaleUp(max_step_percent=draw(st.sampled_from([50.0, 100.0, 400.0]))),
        scale_down=ScaleDown(
            stabilization_seconds=draw(st.sampled_from([0.0, 120.0, 300.0])),
            max_step_percent=draw(st.sampled_from([25.0, 50.0, 100.0])),
        ),
        startup_seconds=draw(st.floats(0.0, 90.0)),
        rebalance_stall_seconds=draw(st.floats(0.0, 30.0)),
    )
    s = replace(
        Scenario.from_policy(policy, partitions=P),
        commit_interval_seconds=draw(st.sampled_from([0.0, 5.0, 30.0])),
    )
    knots = draw(st.lists(st.floats(0.0, 1.0), min_size=3, max_size=8))
    times = np.linspace(0.0, 3600.0, len(knots))
    trace = Trace("random", times, np.asarray(knots) * P * 1000.0)
    return s, trace, HandoverController(policy, s, start=2), LagscalerController(policy, s, start=2)


@settings(max_examples=8, deadline=None)
@given(case=cases())
def test_handover_mode_never_rebalances_and_conserves_every_message(
    case: tuple[Scenario, Trace, HandoverController, LagscalerController],
) -> None:
    s, trace, handover, hpa = case
    r = run(trace, s, handover, hpa)
    result = r.result("random")
    mine = result.policy(HANDOVER_NAME)
    assert mine.rebalances == 0
    assert mine.cutovers is not None
    assert mine.cutovers <= mine.scale_events
    # The only stops on the consuming path are cut-over pauses.
    assert mine.stall_seconds <= mine.cutovers * HANDOVER_CUTOVER_SECONDS + 1e-6
    for i in range(2):
        assert r.consumed[i].sum() + r.lag[i].sum() == pytest.approx(r.arrived, rel=1e-9, abs=1e-6)
        assert np.all(r.consumed[i] >= 0)
        assert np.all(r.lag[i] >= 0)
