"""What the load producer should have sent by a given moment: rate profiles and their integrals (pure).

A :class:`RateProfile` is an arrival rate over wall-clock seconds from the start of a run, either
piecewise linear (a traffic trace, interpolated between its points as the simulator does) or
piecewise constant (a step schedule for tests). The producer never sends "rate × tick" messages per
tick: it sends ``floor(messages_by(now)) - sent``, so late ticks, slow acks and rounding never make
the total drift from the profile's integral.

Traces are replayed time-compressed: ``seconds_per_row`` wall seconds stand for one trace row (the
median spacing of the trace's points), so a day of 5-minute rows plays in 288 × ``seconds_per_row``
seconds, and values are rescaled so the trace's peak is ``peak_rate`` messages per wall second.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lagscaler.core.engine.sizing import FloatArray
from lagscaler.core.simulation.trace import Trace, parse_trace
from lagscaler.errors import UserError

__all__ = ["RateProfile"]


@dataclass(frozen=True, slots=True)
class RateProfile:
    """An arrival rate (messages per second) over ``[0, duration]`` seconds of wall time.

    ``times`` are the knots (strictly increasing, starting at 0); with ``steps`` the rate is
    ``rates[i]`` on ``[times[i], times[i+1])``, otherwise it is interpolated linearly between knots.
    Build one with :meth:`from_schedule`, :meth:`from_trace` or :meth:`from_trace_file`.
    """

    name: str
    times: FloatArray
    rates: FloatArray
    steps: bool
    _cumulative: FloatArray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.times) < 2 or len(self.times) != len(self.rates):
            raise ValueError("a rate profile needs at least two knots and one rate per knot")
        if self.times[0] != 0 or not bool(np.all(np.diff(self.times) > 0)):
            raise ValueError("knot times must start at 0 and increase strictly")
        if not bool(np.all(np.isfinite(self.rates))) or bool(np.any(self.rates < 0)):
            raise ValueError("rates must be finite and >= 0")
        widths = np.diff(self.times)
        heights = self.rates[:-1] if self.steps else (self.rates[:-1] + self.rates[1:]) / 2.0
        areas = widths * heights
        object.__setattr__(self, "_cumulative", np.concatenate(([0.0], np.cumsum(areas))))

    # --- construction ------------------------------------------------------------------------------

    @classmethod
    def from_schedule(cls, schedule: Sequence[tuple[float, float]], name: str = "schedule") -> RateProfile:
        """Hold each ``(seconds, rate)`` in turn: ``[(10, 500), (5, 0)]`` is 10 s at 500 msg/s, 5 s idle."""
        if not schedule:
            raise UserError("a rate schedule needs at least one (seconds, msg/s) step")
        times = [0.0]
        rates: list[float] = []
        for index, (seconds, rate) in enumerate(schedule):
            if not (math.isfinite(seconds) and seconds > 0):
                raise UserError(f"rate schedule step {index}: duration must be > 0 seconds, got {seconds}")
            if not (math.isfinite(rate) and rate >= 0):
                raise UserError(f"rate schedule step {index}: rate must be >= 0 msg/s, got {rate}")
            times.append(times[-1] + float(seconds))
            rates.append(float(rate))
        rates.append(rates[-1])  # the value at the end knot; a step profile never reads it
        return cls(name, np.asarray(times), np.asarray(rates), steps=True)

    @classmethod
    def from_trace(cls, trace: Trace, *, peak_rate: float, seconds_per_row: float) -> RateProfile:
        """Replay ``trace`` peaking at ``peak_rate`` msg/s, one (median) row every ``seconds_per_row``."""
        if not (math.isfinite(seconds_per_row) and seconds_per_row > 0):
            raise UserError(f"seconds per trace row must be > 0, got {seconds_per_row}")
        rescaled = trace.rescaled(peak_rate)  # one-line TraceError for a bad rate or an all-zero trace
        if not bool(np.all(np.isfinite(rescaled.rates))):
            raise UserError(
                f"{trace.name}: its peak ({trace.peak:g}) is too small to rescale to {peak_rate:g}"
            )
        row_spacing = float(np.median(np.diff(rescaled.times)))
        wall_per_trace_second = seconds_per_row / row_spacing
        return cls(rescaled.name, rescaled.times * wall_per_trace_second, rescaled.rates.copy(), steps=False)

    @classmethod
    def from_trace_file(cls, path: str | Path, *, peak_rate: float, seconds_per_row: float) -> RateProfile:
        """:meth:`from_trace` for a ``timestamp,value`` CSV (the simulator's format and parser)."""
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot read trace {file}: {exc.strerror or exc}") from exc
        trace = parse_trace(text, file.name)
        return cls.from_trace(trace, peak_rate=peak_rate, seconds_per_row=seconds_per_row)

    # --- queries -----------------------------------------------------------------------------------

    @property
    def duration(self) -> float:
        return float(self.times[-1])

    @property
    def total_messages(self) -> float:
        return float(self._cumulative[-1])

    @property
    def peak(self) -> float:
        rates = self.rates[:-1] if self.steps else self.rates
        return float(rates.max())

    def rate_at(self, t: float) -> float:
        """The rate at ``t`` seconds (0 outside ``[0, duration)``)."""
        if not 0 <= t < self.duration:
            return 0.0
        if self.steps:
            index = int(np.searchsorted(self.times, t, side="right")) - 1
            return float(self.rates[index])
        return float(np.interp(t, self.times, self.rates))

    def messages_by(self, t: float) -> float:
        """How many messages the profile has asked for in ``[0, t]`` (its integral; flat after the end)."""
        if t <= 0:
            return 0.0
        if t >= self.duration:
            return self.total_messages
        index = int(np.searchsorted(self.times, t, side="right")) - 1
        start = float(self.times[index])
        into = t - start
        if self.steps:
            area = into * float(self.rates[index])
        else:
            area = into * (float(self.rates[index]) + self.rate_at(t)) / 2.0
        return float(self._cumulative[index]) + area

    def truncated(self, seconds: float) -> RateProfile:
        """The first ``seconds`` of the profile (the whole of it when shorter)."""
        if not (math.isfinite(seconds) and seconds > 0):
            raise UserError(f"a run length must be > 0 seconds, got {seconds}")
        if seconds >= self.duration:
            return self
        keep = int(np.searchsorted(self.times, seconds, side="left"))  # knots strictly before the end
        end_rate = float(self.rates[keep - 1]) if self.steps else self.rate_at(seconds)
        times = np.append(self.times[:keep], seconds)
        rates = np.append(self.rates[:keep], end_rate)
        return RateProfile(self.name, times, rates, self.steps)
