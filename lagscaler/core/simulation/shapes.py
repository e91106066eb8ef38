"""Traffic shapes the shared traces lack, generated from a seed (pure, deterministic).

The shared traces are smooth-ish daily curves at 5- or 30-minute resolution; a decision engine
tuned on them alone meets none of these, which real consumers do meet:

* :func:`batch_bursts` -- a batch job every ``period`` seconds that pours a burst into the topic,
  often over before a scale-up ordered at its start could land;
* :func:`staircase` -- load that climbs and descends in flat steps (a rollout, a backfill in waves);
* :func:`flash_crowd` -- a sudden jump to the peak that decays over tens of minutes;
* :func:`quiet_night` -- a day with a long, nearly idle night broken by short spikes.

Every generator takes a ``seed`` and its shape parameters, so a *family* of variants can be drawn:
:func:`shape_family` gives the variants used for tuning (``held_out=False``) and a disjoint set of
seeds, periods and amplitudes for checking that what was tuned carries over (``held_out=True``).
All traces have unit peak; rescale them to the scenario's peak rate.
"""

from __future__ import annotations

import numpy as np

from lagscaler.core.engine.sizing import FloatArray
from lagscaler.core.simulation.trace import Trace

EDGE_SECONDS = 5.0
"""How long a sharp edge takes (a trace is piecewise linear; a zero-width edge is not representable)."""


def _noisy(rates: FloatArray, noise: float, rng: np.random.Generator) -> FloatArray:
    """Multiplicative noise per point, clipped at zero, renormalised to unit peak."""
    noisy = np.clip(rates * (1.0 + noise * rng.standard_normal(rates.size)), 0.0, None)
    peak = float(noisy.max())
    return noisy / peak if peak > 0 else noisy


def _trace(
    name: str, times: list[float], rates: list[float], noise: float, rng: np.random.Generator
) -> Trace:
    t = np.asarray(times, dtype=np.float64)
    keep = np.concatenate(([True], np.diff(t) > 0))  # drop coincident points (edges at the same instant)
    return Trace(name, t[keep] - t[0], _noisy(np.asarray(rates, dtype=np.float64)[keep], noise, rng))


def batch_bursts(
    *,
    seed: int,
    hours: float = 12.0,
    period: float = 3600.0,
    burst_seconds: float = 90.0,
    base: float = 0.1,
    jitter: float = 0.02,
    noise: float = 0.05,
) -> Trace:
    """A low ``base`` with a burst to the peak every ``period`` seconds, lasting ``burst_seconds``.

    Bursts keep to the clock, as a scheduled job does: each starts within ``jitter × period`` of its
    slot. Between bursts the base wanders by ``noise``.
    """
    rng = np.random.default_rng(seed)
    times, rates = [0.0], [base]
    phase = period * float(rng.uniform(0.2, 0.8))
    end = hours * 3600.0
    for slot in range(int(hours * 3600.0 / period) + 1):
        start = phase + slot * period + jitter * period * float(rng.uniform(-1.0, 1.0))
        if start <= times[-1] or start + burst_seconds + 2 * EDGE_SECONDS >= end:
            continue
        up = start + EDGE_SECONDS
        times += [start, up, up + burst_seconds, up + burst_seconds + EDGE_SECONDS]
        rates += [base, 1.0, 1.0, base]
    times.append(end)
    rates.append(base)
    # Points every 5 minutes in the quiet stretches carry the base's noise.
    quiet = np.arange(0.0, end, 300.0)
    merged = sorted(zip([*times, *quiet.tolist()], [*rates, *([np.nan] * quiet.size)], strict=True))
    t = np.asarray([m[0] for m in merged])
    r = np.asarray([m[1] for m in merged])
    known = ~np.isnan(r)
    r = np.where(known, r, np.interp(t, t[known], r[known]))
    return _trace(f"bursts-{period:g}s-{burst_seconds:g}s-s{seed}", t.tolist(), r.tolist(), noise, rng)


def staircase(
    *,
    seed: int,
    hours: float = 12.0,
    steps: int = 5,
    hold: float = 1800.0,
    low: float = 0.1,
    noise: float = 0.03,
) -> Trace:
    """Flat steps from ``low`` to the peak and back down, each held ``hold`` seconds (± 30 %)."""
    rng = np.random.default_rng(seed)
    levels = np.linspace(low, 1.0, steps)
    ladder = [*levels.tolist(), *levels[-2::-1].tolist()]
    times, rates = [0.0], [float(ladder[0])]
    t = 0.0
    end = hours * 3600.0
    i = 0
    while t < end:
        t += hold * float(rng.uniform(0.7, 1.3))
        nxt = ladder[(i + 1) % len(ladder)]
        times += [t, t + EDGE_SECONDS * 6]  # a 30 s edge: a deployment, not a switch
        rates += [ladder[i % len(ladder)], nxt]
        t += EDGE_SECONDS * 6
        i += 1
    return _trace(f"staircase-{steps}x{hold:g}s-s{seed}", times, rates, noise, rng)


def flash_crowd(
    *,
    seed: int,
    hours: float = 12.0,
    crowds: int = 3,
    base: float = 0.15,
    decay_seconds: float = 1200.0,
    rise_seconds: float = 30.0,
    noise: float = 0.05,
) -> Trace:
    """A ``base`` load with ``crowds`` sudden jumps to the peak, each decaying with ``decay_seconds``."""
    rng = np.random.default_rng(seed)
    end = hours * 3600.0
    t = np.arange(0.0, end + 1.0, 60.0)
    starts = np.sort(rng.uniform(0.05 * end, 0.9 * end, crowds))
    # Sharp edges need points at each crowd's start and top.
    all_t = np.unique(np.concatenate([t, starts, starts + rise_seconds]))
    after = all_t[:, None] - starts[None, :]
    ramp = np.clip(after / rise_seconds, 0.0, 1.0)
    decay = np.exp(-np.maximum(after - rise_seconds, 0) / decay_seconds)
    crowd = np.where(after >= 0, ramp * decay, 0.0).max(axis=1)
    rates = base + (1.0 - base) * crowd
    return _trace(f"flash-{crowds}x{decay_seconds:g}s-s{seed}", all_t.tolist(), rates.tolist(), noise, rng)


def quiet_night(
    *,
    seed: int,
    days: float = 1.0,
    night_level: float = 0.02,
    spikes: int = 6,
    spike_height: float = 0.6,
    spike_seconds: float = 240.0,
    noise: float = 0.05,
) -> Trace:
    """Busy days, a long night near ``night_level``, and ``spikes`` short spikes per night."""
    rng = np.random.default_rng(seed)
    end = days * 86400.0
    t = np.arange(0.0, end + 1.0, 300.0)
    hour = (t / 3600.0) % 24
    # Day from 07:00 to 23:00 shaped as a sine bump; night flat.
    day = np.clip(np.sin(np.pi * (hour - 7.0) / 16.0), 0.0, None) ** 1.2
    rates = night_level + (1.0 - night_level) * day
    times, values = t.tolist(), rates.tolist()
    for d in range(int(np.ceil(days))):
        for s in rng.uniform(0.0, 7.0 * 3600.0, spikes):
            start = d * 86400.0 + float(s)
            if start + spike_seconds + 2 * EDGE_SECONDS >= end:
                continue
            times += [
                start,
                start + EDGE_SECONDS,
                start + EDGE_SECONDS + spike_seconds,
                start + spike_seconds + 2 * EDGE_SECONDS,
            ]
            values += [night_level, spike_height, spike_height, night_level]
    order = np.argsort(times, kind="stable")
    return _trace(
        f"night-{spikes}x{spike_seconds:g}s-s{seed}",
        np.asarray(times)[order].tolist(),
        np.asarray(values)[order].tolist(),
        noise,
        rng,
    )


def shape_family(*, held_out: bool, hours: float = 24.0) -> list[Trace]:
    """One variant of each shape: the tuning set, or a held-out set with other seeds and parameters.

    The held-out set changes every seed and moves every period, duration and amplitude, so that
    what is tuned on one set is checked on traffic it has not seen.
    """
    if not held_out:
        return [
            batch_bursts(seed=1, hours=hours, period=3600.0, burst_seconds=90.0),
            staircase(seed=2, hours=hours, steps=5, hold=1800.0),
            flash_crowd(seed=3, hours=hours, crowds=3, decay_seconds=1200.0),
            quiet_night(seed=4, days=max(hours / 24.0, 1.0), spikes=6),
        ]
    return [
        batch_bursts(seed=11, hours=hours, period=2700.0, burst_seconds=150.0, base=0.05),
        batch_bursts(seed=12, hours=hours, period=5400.0, burst_seconds=45.0, base=0.2),
        staircase(seed=13, hours=hours, steps=4, hold=2400.0, low=0.2),
        flash_crowd(seed=14, hours=hours, crowds=4, decay_seconds=600.0, rise_seconds=10.0),
        quiet_night(seed=15, days=max(hours / 24.0, 1.0), night_level=0.05, spikes=10, spike_seconds=120.0),
    ]
