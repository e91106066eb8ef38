"""The scaling policy engine: pure, synchronous, vectorised across workloads (numpy, no IO).

How the service calls it::

    params = PolicyArrays.from_policies(policies)      # once per loaded policy set (order = keys)
    state = EngineState.initial(params)                # kept for that policy set's lifetime
    # every sample cycle, with the scale targets' current replica counts from Kubernetes:
    obs = ObservationBatch.stack([
        observe(snapshot.group(p.kafka.group), p, replicas=current[p.key], now=snapshot.sampled_at,
                state_bytes=measured_changelog_bytes.get(p.key, math.nan))
        for p in policies
    ])
    decisions, state = decide(params, state, obs)      # decisions[i], decisions.by_key()
    # serve lagscaler.core.hpa.served_value(decisions[i].desired_replicas, current, hpa_spec_for(policy))

A missing group (``snapshot.group`` is ``None``) or a stale sample holds the last decision (reason
``STALE``); the engine never raises on odd numbers (NaN, inf, negative): it clamps them.
"""

from lagscaler.core.engine.core import Engine, decide, rebalance_price, restore_seconds
from lagscaler.core.engine.decision import Decision, Decisions, Reason
from lagscaler.core.engine.observation import Observation, ObservationBatch, observe
from lagscaler.core.engine.params import PolicyArrays
from lagscaler.core.engine.state import EngineState

__all__ = [
    "Decision",
    "Decisions",
    "Engine",
    "EngineState",
    "Observation",
    "ObservationBatch",
    "PolicyArrays",
    "Reason",
    "decide",
    "observe",
    "rebalance_price",
    "restore_seconds",
]
