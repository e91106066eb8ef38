"""Handover mode in the simulator (pure): what a change of size costs when no running group rebalances.

The model follows the controller (:mod:`lagscaler.core.handover.machine`, docs/handover.md §4):

* **A decision starts generation N+1** at the decided size when nothing is in progress and the
  decision differs from the serving size (``_idle``). Its pods start (``startup_seconds``), join
  their own consumer group (one group formation, ``rebalance_stall_seconds``, off the consuming
  path) and warm up: each worker restores the state of the partitions it will own from the
  changelog, every partition at the policy's restore rate (``restore_seconds``), all at once, as a
  rebalance's restore is modelled. All that time generation N keeps consuming, and both
  generations' replicas are paid for.
* **A decision that arrives during a warm-up** changes nothing unless the warming handover no
  longer fits it (the machine's ``superseded``, docs/handover.md §4.1): a scale-down once the
  decision rises above its target, a scale-up once the decision asks for at least twice its
  increase. Such an attempt is abandoned (the serving generation never stopped) and the next one
  starts at the new decision: at once here, a few controller ticks later live. Every other warming
  handover is carried to its cut; the next decision after it starts the next handover if the size
  still differs (``_warming``, then ``_idle``). An abandoned attempt counts as a scale event (its
  generation was started and paid for). An attempt that never becomes ready is aborted after
  ``--handover-warmup-timeout``; the simulation assumes that timeout covers the warm-up (set it so;
  docs/handover.md §10).
* **The cut-over** fences N and starts N+1 at exactly the offsets N processed: every partition stops
  for :data:`~lagscaler.core.engine.params.HANDOVER_CUTOVER_SECONDS` (measured, stateless), nothing
  is lost or processed twice, and N's replicas go. There is no group stall and no restore on the
  consuming path. A stateful application's catch-up at the cut (restoring what N processed after the
  warm-up's offsets) is not modelled: it is not in the measured figure.
* **The engine decides directly**: the controller acts on the engine's desired count
  (``lagscaler serve`` passes each decision to it), not through an HPA, and the engine sees the
  serving generation's members as the current count, as it does live (it samples the serving group).
  It decides at every HPA sync period of the scenario, as the other policies do (live it decides every
  sampling interval and the controller steps every ``tick``: a decision is acted on a little sooner).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from lagscaler.core.policy.model import Mode, ScalingPolicy
from lagscaler.core.simulation.controllers import GroupView, LagscalerController
from lagscaler.core.simulation.model import Scenario

__all__ = ["HANDOVER_NAME", "HandoverController", "warmup_seconds"]

HANDOVER_NAME = "lagscaler-handover"


def warmup_seconds(scenario: Scenario) -> float:
    """From the decision until generation N+1 is ready to take over: start-up, its own group's
    formation, and the restore of its partitions' state (0 when stateless)."""
    return scenario.startup_seconds + scenario.rebalance_stall_seconds + scenario.restore_seconds


def handover_policy(policy: ScalingPolicy) -> ScalingPolicy:
    """The policy in mode handover (the engine prices moves by that mode)."""
    return replace(policy, mode=Mode.HANDOVER)


@dataclass
class HandoverController(LagscalerController):
    """The engine with the policy in mode handover, driving generations instead of an HPA."""

    name: str = HANDOVER_NAME

    def __post_init__(self) -> None:
        self.policy = handover_policy(self.policy)
        LagscalerController.__post_init__(self)

    def desired(self, now: float, view: GroupView) -> int:
        """The engine's decision at this sync, within the scenario's bounds."""
        self.reading(now, view)
        assert self.last is not None
        s = self.scenario
        return min(max(int(self.last.desired[0]), s.min_replicas, 1), s.max_replicas)
