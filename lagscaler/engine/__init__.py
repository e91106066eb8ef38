"""The scaling policy engine: pure, synchronous, vectorised across workloads (numpy, no IO).

Each cycle::

    params = PolicyArrays.from_policies(policies)      # once per loaded policy set
    state = EngineState.initial(params)                # kept for the policy set's lifetime
    obs = ObservationBatch.stack([observe(snapshot.group(p.kafka.group), p, replicas=n) ...])
    decisions, state = decide(params, state, obs)      # decisions[i] / decisions.by_key()
"""

from lagscaler.engine.core import Engine, decide, rebalance_price, restore_seconds
from lagscaler.engine.decision import Decision, Decisions, Reason
from lagscaler.engine.observation import Observation, ObservationBatch, observe
from lagscaler.engine.params import PolicyArrays
from lagscaler.engine.state import EngineState

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
