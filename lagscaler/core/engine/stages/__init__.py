"""The stages of one decision cycle, in order; :mod:`lagscaler.core.engine.core` describes the rules.

Each stage is a pure function over arrays of shape ``(W,)`` returning one small frozen result;
it reads only the policy arrays, the previous state and the results of earlier stages (an
import-linter contract keeps a stage from importing a later one, or ``core``).
"""

from lagscaler.core.engine.stages.capacity import CapacityEstimate, estimate_capacity
from lagscaler.core.engine.stages.forecast import Forecast, forecast_arrivals
from lagscaler.core.engine.stages.need import Need, size_need
from lagscaler.core.engine.stages.prepare import Inputs, prepare
from lagscaler.core.engine.stages.pricing import (
    breach_seconds,
    handover_warmup,
    move_price,
    rebalance_price,
    restore_seconds,
)
from lagscaler.core.engine.stages.recurrence import Recurrence, predict_bursts
from lagscaler.core.engine.stages.scale_down import ScaleDownPlan, plan_scale_down
from lagscaler.core.engine.stages.scale_up import ScaleUpPlan, plan_scale_up
from lagscaler.core.engine.stages.settle import Stages, settle

__all__ = [
    "CapacityEstimate",
    "Forecast",
    "Inputs",
    "Need",
    "Recurrence",
    "ScaleDownPlan",
    "ScaleUpPlan",
    "Stages",
    "breach_seconds",
    "estimate_capacity",
    "forecast_arrivals",
    "handover_warmup",
    "move_price",
    "plan_scale_down",
    "plan_scale_up",
    "predict_bursts",
    "prepare",
    "rebalance_price",
    "restore_seconds",
    "settle",
    "size_need",
]
