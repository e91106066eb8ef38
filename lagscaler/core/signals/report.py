"""How a :class:`Snapshot` is shown: the JSON contract of ``lagscaler lag`` and its table.

The JSON shape is a contract other tools build on, so its keys, their order and their types are
fixed here and nowhere else::

    {"sampled_at": "<RFC3339>",
     "groups": [{"group": str, "state": str, "members": int, "total_lag": int,
       "partitions": [{"topic": str, "partition": int, "committed": int|null, "end": int,
                       "lag": int|null, "lag_seconds": float|null, "produce_rate": float|null,
                       "consume_rate": float|null, "status": "OK"|"WARN"|"STALL"|"STOP"|"REWIND"|"UNKNOWN",
                       "owner": str|null}]}]}

The table starts with the six columns of ``kafka-consumer-groups --describe`` (same names, ``-`` for
"none"), so it reads the same to people used to Kafka's tool, then adds what lagscaler knows more.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from lagscaler.core.signals.model import GroupSample, PartitionSample, Snapshot

TABLE_COLUMNS = (
    "GROUP",
    "TOPIC",
    "PARTITION",
    "CURRENT-OFFSET",
    "LOG-END-OFFSET",
    "LAG",
    "LAG-SECONDS",
    "PRODUCE/S",
    "CONSUME/S",
    "STATUS",
    "CONSUMER-ID",
    "HOST",
    "CLIENT-ID",
)


def rfc3339(unix_seconds: float) -> str:
    """UTC, millisecond precision, ``Z`` suffix: ``2026-01-31T12:00:00.123Z``."""
    moment = dt.datetime.fromtimestamp(unix_seconds, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def partition_json(p: PartitionSample) -> dict[str, Any]:
    return {
        "topic": p.topic,
        "partition": p.partition,
        "committed": p.committed,
        "end": p.end,
        "lag": p.lag,
        "lag_seconds": _rounded(p.lag_seconds),
        "produce_rate": _rounded(p.produce_rate),
        "consume_rate": _rounded(p.consume_rate),
        "status": p.status.value,
        "owner": p.owner,
    }


def group_json(g: GroupSample) -> dict[str, Any]:
    return {
        "group": g.group,
        "state": g.state,
        "members": g.members,
        "total_lag": g.total_lag,
        "partitions": [partition_json(p) for p in g.partitions],
    }


def snapshot_json(snapshot: Snapshot) -> dict[str, Any]:
    """The JSON contract, as plain Python (``json.dumps`` keeps the key order)."""
    return {"sampled_at": rfc3339(snapshot.sampled_at), "groups": [group_json(g) for g in snapshot.groups]}


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def _seconds(p: PartitionSample) -> str:
    if p.lag_seconds is None:
        return "-"
    return f"{'>=' if p.lag_seconds_lower_bound else ''}{p.lag_seconds:.1f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render_table(snapshot: Snapshot) -> str:
    """One aligned table for all groups, then one summary line per group (state, members, total lag).

    A lag in seconds prefixed ``>=`` is a lower bound: the committed offset is older than the
    sampler's history.
    """
    rows: list[tuple[str, ...]] = [TABLE_COLUMNS]
    for g in snapshot.groups:
        for p in g.partitions:
            rows.append(
                (
                    g.group,
                    p.topic,
                    str(p.partition),
                    _cell(p.committed),
                    str(p.end),
                    _cell(p.lag),
                    _seconds(p),
                    _rate(p.produce_rate),
                    _rate(p.consume_rate),
                    p.status.value,
                    _cell(p.owner),
                    _cell(p.owner_host),
                    _cell(p.owner_client_id),
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.append("")
    for g in snapshot.groups:
        lines.append(_summary(g))
    if snapshot.stale:
        lines.append(f"(stale: the last sample failed: {snapshot.error})")
    return "\n".join(lines)


def _summary(g: GroupSample) -> str:
    if not g.found:
        return f"Consumer group '{g.group}' does not exist."
    members = "no active members" if g.members == 0 else f"{g.members} member{'s' if g.members != 1 else ''}"
    text = f"Consumer group '{g.group}': {g.state}, {members}, total lag {g.total_lag}"
    unread = sum(1 for p in g.partitions if p.committed is None)
    if unread:
        text += f" ({unread} partition{'s' if unread != 1 else ''} without a committed offset, not counted)"
    if g.stale:
        text += f" [stale: {g.error}]"
    for warning in g.warnings:
        text += f"; {warning}"
    return text + "."
