"""The stages of one decision cycle, in order; :mod:`lagscaler.engine.core` describes the rules.

Each stage is a pure function over arrays of shape ``(W,)`` returning one small frozen result;
it reads only the policy arrays, the previous state and the results of earlier stages (an
import-linter contract keeps a stage from importing a later one, or ``core``).
"""

from lagscaler.engine.stages.capacity import CapacityEstimate, estimate_capacity
from lagscaler.engine.stages.forecast import Forecast, forecast_arrivals
from lagscaler.engine.stages.need import Need, size_need
from lagscaler.engine.stages.prepare import Inputs, prepare
from lagscaler.engine.stages.pricing import breach_seconds, rebalance_price, restore_seconds
from lagscaler.engine.stages.scale_down import ScaleDownPlan, plan_scale_down
from lagscaler.engine.stages.scale_up import ScaleUpPlan, plan_scale_up
from lagscaler.engine.stages.settle import Stages, settle

__all__ = [
    "CapacityEstimate",
    "Forecast",
    "Inputs",
    "Need",
    "ScaleDownPlan",
    "ScaleUpPlan",
    "Stages",
    "breach_seconds",
    "estimate_capacity",
    "forecast_arrivals",
    "plan_scale_down",
    "plan_scale_up",
    "prepare",
    "rebalance_price",
    "restore_seconds",
    "settle",
    "size_need",
]
