"""Run lagscaler and the baselines on one trace and one scenario, and pick the oracle (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import replace
from typing import TypeVar

from lagscaler.core.policy.model import Mode, ScalingPolicy
from lagscaler.core.simulation.controllers import (
    Controller,
    KedaController,
    LagscalerController,
    Lookahead,
    RateController,
    StaticController,
    initial_replicas,
    oracle_candidates,
)
from lagscaler.core.simulation.handover import HandoverController
from lagscaler.core.simulation.model import PolicyResult, Scenario, SimulationResult
from lagscaler.core.simulation.simulator import (
    PLOT_POINTS,
    ArrivalCurve,
    Progress,
    peak_step_rate,
    simulate,
    step_rates,
    steps_in,
)
from lagscaler.core.simulation.trace import Trace
from lagscaler.errors import UserError

_T = TypeVar("_T")

POLICIES = ("lagscaler", "keda", "hpa-rate", "static", "oracle")
"""The policies ``--baselines`` runs by default (``lagscaler`` itself, in mode hpa, included)."""
HANDOVER = "handover"
"""lagscaler in mode handover (result name ``lagscaler-handover``): run by default for a policy in
that mode, on request (``--baselines ...,handover``) for any other."""
CHOICES = (*POLICIES, HANDOVER)

ORACLE_SLO_OBJECTIVE = 0.01
"""The oracle is the cheapest candidate schedule with at most this fraction of time over the SLO
(or, when none manages that, the one with the fewest misses)."""


def parse_policies(names: Sequence[str] | None) -> tuple[str, ...]:
    """Validate ``--baselines`` (comma-separated or repeated); default: all of them."""
    if not names:
        return POLICIES
    chosen: list[str] = []
    for item in names:
        for name in (n.strip() for n in item.split(",")):
            if not name:
                continue
            if name not in CHOICES:
                raise UserError(f"unknown baseline {name!r}; choose from {', '.join(CHOICES)}")
            if name not in chosen:
                chosen.append(name)
    if not chosen:
        raise UserError(f"--baselines named nothing; choose from {', '.join(CHOICES)}")
    return tuple(chosen)


def default_policies(policy: ScalingPolicy) -> tuple[str, ...]:
    """What to run when ``--baselines`` is not given: everything, and handover mode for such a policy."""
    return (*POLICIES, HANDOVER) if policy.mode is Mode.HANDOVER else POLICIES


def compare(
    trace: Trace,
    policy: ScalingPolicy,
    scenario: Scenario,
    policies: Sequence[str] | None = None,
    *,
    progress: Progress | None = None,
    points: int = PLOT_POINTS,
    pool: Executor | None = None,
) -> SimulationResult:
    """Simulate the chosen policies in lockstep on ``trace`` (already in msg/s).

    With a ``pool``, the baselines step in it beside lagscaler (see :func:`simulate`).

    ``lagscaler`` runs the policy in mode hpa and ``handover`` in mode handover, whatever the file
    says, so the two compare on the same arrivals. Default: :func:`default_policies`.
    """
    if policies is None:
        policies = default_policies(policy)
    steps_in(trace, scenario.step_seconds)  # a span nobody can wait for is refused before any set-up
    first_rate = float(step_rates(ArrivalCurve(trace, scenario.step_seconds), 0, 1)[0])
    start = initial_replicas(scenario, first_rate)
    controllers: list[Controller] = []
    if "lagscaler" in policies:
        controllers.append(LagscalerController(replace(policy, mode=Mode.HPA), scenario, start))
    if HANDOVER in policies:
        controllers.append(HandoverController(policy, scenario, start))
    if "keda" in policies:
        controllers.append(KedaController(scenario, start))
    if "hpa-rate" in policies:
        controllers.append(RateController(scenario, start, policy.target_utilization))
    if "static" in policies:
        controllers.append(StaticController(policy, scenario, peak_step_rate(trace, scenario.step_seconds)))
    oracles = []
    lookahead = None
    if "oracle" in policies:
        lookahead = Lookahead()
        oracles = oracle_candidates(policy, scenario, lookahead, start)
        controllers.extend(oracles)
    result = simulate(
        trace, scenario, controllers, lookahead=lookahead, progress=progress, points=points, pool=pool
    )
    if not oracles:
        return result
    candidates = [result.policy(o.name) for o in oracles]
    meeting = [c for c in candidates if c.slo_violation_fraction <= ORACLE_SLO_OBJECTIVE]
    best = (
        min(meeting, key=lambda c: c.replica_hours)
        if meeting
        else min(candidates, key=lambda c: (c.slo_violation_fraction, c.replica_hours))
    )
    names = {c.name for c in candidates}
    kept: list[PolicyResult] = [p for p in result.policies if p.name not in names]
    kept.append(replace(best, name="oracle"))
    return replace(
        result,
        policies=tuple(kept),
        lag_seconds={**_drop(result.lag_seconds, names), "oracle": result.lag_seconds[best.name]},
        replicas={**_drop(result.replicas, names), "oracle": result.replicas[best.name]},
    )


def _drop(series: dict[str, _T], names: set[str]) -> dict[str, _T]:
    return {k: v for k, v in series.items() if k not in names}
