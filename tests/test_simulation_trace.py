"""Rescaling a trace keeps its shape whatever its magnitude (found by the playground's property tests)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from lagscaler.core.simulation.trace import Trace


@given(
    peak=st.floats(min_value=5e-324, max_value=1e300, allow_subnormal=True),
    shape=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=20),
    target=st.floats(min_value=1e-3, max_value=1e7),
)
def test_rescaled_peak_is_the_requested_rate_and_values_stay_finite(
    peak: float, shape: list[float], target: float
) -> None:
    rates = np.asarray([*shape, 1.0]) * peak
    trace = Trace("t", np.arange(len(rates), dtype=np.float64), rates)
    scaled = trace.rescaled(target)
    assert np.all(np.isfinite(scaled.rates))
    assert math.isclose(scaled.peak, target, rel_tol=1e-9)
