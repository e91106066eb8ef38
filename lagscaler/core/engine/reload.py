"""Keeping what the engine learned when the policy set changes (pure).

A policy file edited, added or removed must not make every other workload forget its smoothed
rates, learned capacity, dwell timers and scale-down windows: a fresh state would hold scale-downs
for a whole window and re-learn capacity from the prior. :func:`carry_over` keeps the rows of
workloads present before and after (matched by ``namespace/name``) and starts only new ones fresh.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

import numpy as np

from lagscaler.core.engine.params import PolicyArrays
from lagscaler.core.engine.state import EngineState


def carry_over(old_keys: Sequence[str], old_state: EngineState, new_params: PolicyArrays) -> EngineState:
    """The state for ``new_params``: rows of surviving workloads from ``old_state``, the rest initial."""
    fresh = EngineState.initial(new_params)
    position = {key: i for i, key in enumerate(old_keys)}
    pairs = [(j, position[key]) for j, key in enumerate(new_params.keys) if key in position]
    if not pairs:
        return fresh
    dst = np.fromiter((j for j, _ in pairs), dtype=np.int64, count=len(pairs))
    src = np.fromiter((i for _, i in pairs), dtype=np.int64, count=len(pairs))
    carried = {}
    for item in fields(EngineState):
        column = getattr(fresh, item.name).copy()
        column[dst] = getattr(old_state, item.name)[src]
        carried[item.name] = column
    return EngineState(**carried)
