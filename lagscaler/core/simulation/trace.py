"""Traffic traces: parsing ``timestamp,value`` CSVs, rescaling, and synthetic shapes (pure).

A trace is a sequence of (time, rate) points; between points the arrival rate is interpolated
linearly (the points of the shared traces are counts per 5 or 30 minutes: a rate sampled at
those instants, not a staircase). Times are seconds from the trace's first point.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from lagscaler.core.engine.sizing import FloatArray
from lagscaler.errors import UserError


class TraceError(UserError):
    """A trace that cannot be replayed; the message names the file and the line."""


MAX_RATE = 1e12
"""Messages per second a trace may reach: a hundred thousand times a large Kafka cluster's throughput,
far below where the simulator's sums overflow (near 1e308 lag and ages turn to inf and NaN)."""


@dataclass(frozen=True, slots=True)
class Trace:
    name: str
    times: FloatArray  # seconds from the first point, strictly increasing
    rates: FloatArray  # messages per second at those instants, >= 0

    @property
    def duration(self) -> float:
        return float(self.times[-1])

    @property
    def peak(self) -> float:
        return float(self.rates.max())

    def rescaled(self, peak_rate: float) -> Trace:
        """The same shape with its highest point at ``peak_rate`` messages per second."""
        if not (math.isfinite(peak_rate) and peak_rate > 0):
            raise TraceError(f"--peak-rate must be a positive number, got {peak_rate}")
        if peak_rate > MAX_RATE:
            raise TraceError(f"--peak-rate: at most {MAX_RATE:g} messages per second, got {peak_rate:g}")
        peak = self.peak
        if peak <= 0:
            raise TraceError(f"{self.name}: every value is 0; nothing to rescale")
        # Divide first: rates / peak is at most 1, where peak_rate / peak overflows for a tiny peak.
        return Trace(self.name, self.times, self.rates / peak * peak_rate)

    def truncated(self, seconds: float) -> Trace:
        """The first ``seconds`` of the trace (the whole trace when it is shorter)."""
        if seconds >= self.duration:
            return self
        keep = int(np.searchsorted(self.times, seconds, side="right"))
        end_rate = float(np.interp(seconds, self.times, self.rates))
        times = np.append(self.times[:keep], seconds) if self.times[keep - 1] < seconds else self.times[:keep]
        rates = np.append(self.rates[:keep], end_rate) if len(times) > keep else self.rates[:keep]
        return Trace(self.name, times, rates)


def _parse_time(text: str) -> float:
    text = text.strip()
    try:
        return float(text)  # Unix seconds
    except ValueError:
        pass
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def parse_trace(text: str | Iterable[str], name: str) -> Trace:
    """Parse a ``timestamp,value`` CSV (a header row is optional; timestamps ISO 8601 or Unix seconds).

    Raises :class:`TraceError` naming ``name`` and the line for anything it cannot use: a missing
    column, a bad number or date, a negative or non-finite value or timestamp, time going backwards,
    fewer than two points. How long a trace may span is the simulator's limit (``steps_in``): a
    longer trace can still be cut with ``--hours``.

    ``text`` is the whole file, or its lines as they are read (a file opened with ``newline=""``): the
    rows are parsed one at a time, so only the numbers are held, never a list of every row.
    """
    rows = csv.reader(io.StringIO(text) if isinstance(text, str) else text)
    times: list[float] = []
    rates: list[float] = []
    for line, row in enumerate(_rows(rows, name), start=1):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) < 2:
            raise TraceError(f"{name}:{line}: expected 'timestamp,value', got {','.join(row)!r}")
        stamp, value = row[0], row[1]
        try:
            rate = float(value)
        except ValueError:
            if not times and line == 1:
                continue  # the header
            raise TraceError(f"{name}:{line}: value {value.strip()!r} is not a number") from None
        try:
            when = _parse_time(stamp)
        except ValueError:
            raise TraceError(
                f"{name}:{line}: timestamp {stamp.strip()!r} is not a date or Unix time"
            ) from None
        if not math.isfinite(when):
            raise TraceError(f"{name}:{line}: timestamp {stamp.strip()!r} must be a finite number")
        if not math.isfinite(rate) or rate < 0:
            raise TraceError(f"{name}:{line}: value {value.strip()!r} must be a finite number >= 0")
        if rate > MAX_RATE:
            raise TraceError(f"{name}:{line}: value {value.strip()!r} is above {MAX_RATE:g} messages/s")
        if times and when <= times[-1]:
            raise TraceError(
                f"{name}:{line}: timestamp {stamp.strip()!r} does not come after the previous one"
            )
        times.append(when)
        rates.append(rate)
    if len(times) < 2:
        raise TraceError(f"{name}: a trace needs at least two 'timestamp,value' rows, found {len(times)}")
    t = np.asarray(times, dtype=np.float64)
    return Trace(name, t - t[0], np.asarray(rates, dtype=np.float64))


def _rows(reader: Iterator[list[str]], name: str) -> Iterator[list[str]]:
    """The CSV rows, with the csv module's own refusals (a field over its 128 KiB limit, a stray
    quote) as a :class:`TraceError` naming the line rather than a traceback."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise TraceError(
                f"{name}:{getattr(reader, 'line_num', '?')}: not a 'timestamp,value' row: {exc}"
            ) from None


# --- synthetic shapes (unit peak; rescale to the scenario's peak) -----------------------------------


def step_trace(hours: float = 12.0, low: float = 0.2, every_hours: float = 3.0) -> Trace:
    """Flat low traffic that jumps to the peak and back every ``every_hours`` (a batch job, a campaign)."""
    times = [0.0]
    rates = [low]
    t = 0.0
    high = False
    while t < hours * 3600:
        t += every_hours * 3600
        times.extend([t - 60.0, t])  # a one-minute edge
        rates.extend([1.0 if high else low, low if high else 1.0])
        high = not high
    return Trace("synthetic-step", np.asarray(times), np.asarray(rates))


def spike_trace(hours: float = 12.0, base: float = 0.15, every_minutes: float = 47.0) -> Trace:
    """Low traffic with short bursts to the peak: 2 minutes up, 5 minutes at the peak, 2 minutes down."""
    times = [0.0]
    rates = [base]
    t = 10 * 60.0
    while t + 12 * 60 < hours * 3600:
        times.extend([t, t + 120, t + 420, t + 540])
        rates.extend([base, 1.0, 1.0, base])
        t += every_minutes * 60
    times.append(hours * 3600)
    rates.append(base)
    return Trace("synthetic-spike", np.asarray(times), np.asarray(rates))


def diurnal_trace(days: float = 3.0, low: float = 0.1, noise: float = 0.08, seed: int = 7) -> Trace:
    """A daily cycle between ``low`` and the peak, with per-5-minute noise (seeded: deterministic)."""
    rng = np.random.default_rng(seed)
    times = np.arange(0.0, days * 86400 + 1, 300.0)
    phase = 2 * np.pi * (times / 86400.0 - 0.25)
    shape = low + (1 - low) * (0.5 + 0.5 * np.sin(phase)) ** 1.5
    rates = np.clip(shape * (1 + noise * rng.standard_normal(times.size)), 0.0, None)
    return Trace("synthetic-diurnal", times, rates / rates.max())
