"""A simulation's results as text (pure): the comparison table."""

from __future__ import annotations

from lagscaler.core.simulation.model import SimulationResult

COLUMNS = (
    ("policy", "{:<10}"),
    ("replica-h", "{:>10.1f}"),
    ("x fluid", "{:>7.2f}"),
    ("SLO miss %", "{:>10.2f}"),
    ("by stalls %", "{:>11.2f}"),
    ("max lag s", "{:>9.1f}"),
    ("p99 lag s", "{:>9.1f}"),
    ("scale events", "{:>12d}"),
    ("stall s", "{:>8.0f}"),
)


def table(result: SimulationResult) -> str:
    """The comparison table, one row per policy, with the facts of the run above it."""
    s = result.scenario
    hours = result.duration_seconds / 3600
    head = (
        f"trace {result.trace}: {hours:.1f} h, peak {result.peak_arrival_rate:.0f} msg/s; "
        f"{s.partitions} partitions, {s.capacity_per_replica:g} msg/s per replica, "
        f"SLO {s.max_lag_seconds:g} s, start-up {s.startup_seconds:g} s, "
        f"stall {s.rebalance_stall_seconds:g} s, restore {s.restore_seconds:g} s, "
        f"commit every {s.commit_interval_seconds:g} s, HPA sync {s.sync_period_seconds:g} s on "
        f"{s.metric_delay_seconds:g} s old data, step {s.step_seconds:g} s"
    )
    width = max(10, *(len(p.name) for p in result.policies))  # a longer name widens the first column
    header = "  ".join(
        f"{name:<{width}}" if i == 0 else f"{name:>{len(fmt.format(0) if 'd' in fmt else fmt.format(0.0))}}"
        for i, (name, fmt) in enumerate(COLUMNS)
    )
    lines = [head, header]
    fluid = result.fluid_bound_replica_hours
    for p in result.policies:
        values = (
            p.name,
            p.replica_hours,
            p.replica_hours / fluid if fluid > 0 else float("nan"),
            100 * p.slo_violation_fraction,
            100 * p.stall_violation_fraction,
            p.max_lag_seconds,
            p.p99_lag_seconds,
            p.scale_events,
            p.stall_seconds,
        )
        cells = [
            f"{p.name:<{width}}",
            *(fmt.format(v) for (_, fmt), v in zip(COLUMNS[1:], values[1:], strict=True)),
        ]
        lines.append("  ".join(cells))
    lines.append(f"{'fluid bound':<{width}}  {fluid:>10.1f}  (total messages / per-replica capacity)")
    lines.append(
        "SLO miss: time the worst partition was behind by more than the SLO; by stalls: the part the same "
        "replica schedule would not have had without rebalance stalls and restores."
        + (
            " lagscaler-handover: mode handover, no rebalances; its stall s are cut-over pauses."
            if any(p.cutovers is not None for p in result.policies)
            else ""
        )
    )
    return "\n".join(lines)
