"""The engine's memory on disk, so that a restart does not make lagscaler forget what it learned.

A fresh engine knows nothing: it re-learns each workload's true capacity from the prior, and it
treats its first observation as a change, so no scale-down happens for a whole stabilization
window (hours, for a stateful workload whose every rebalance breaks the SLO). ``--state-file``
keeps the :class:`~lagscaler.core.engine.EngineState` rows, keyed by ``namespace/name``, in one ``.npz``
file; the loop restores them at start (through :func:`~lagscaler.core.engine.reload.carry_over`, as a
policy reload does) and writes the file again every ``save_every`` seconds and at shutdown.

The file is written to a temporary name and renamed over the old one, so a crash mid-write leaves
the previous version. Times in it are wall-clock seconds, as the engine's are.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from lagscaler.core.engine import EngineState, PolicyArrays
from lagscaler.errors import UserError

FORMAT = 3
"""Bumped when the layout changes; a file of another format is refused, not misread."""

_KEYS = "__keys__"
_FORMAT = "__format__"


class StateFileError(UserError):
    """The state file exists but is not one this version can read; the message names the problem."""


_SECONDS = 1e11
"""Beyond any Unix time or duration the engine meets (year 5138): larger is damage, not history."""
_RATE = 1e12
"""Messages per second beyond any Kafka cluster (a large one moves ~1e7); larger is damage."""
_MESSAGES = 1e19
"""Above int64's range, which Kafka offsets (hence lag) live in."""

# The legal values of each float column of :class:`EngineState` (see the comments there): a closed
# range, plus the infinity :meth:`EngineState.initial` uses as "none" in that column. Shapes and
# types alone let a file of NaN, -inf or 1e300 through, and such a state sends the first decisions
# to the partition count (a NaN or infinite rate sizes for "infinitely much"). Every state the
# engine's own tests produce lies within these ranges.
_FLOAT_RANGES: dict[str, tuple[float, float, float | None]] = {
    "at": (-_SECONDS, _SECONDS, None),
    "level": (0.0, _RATE, None),
    "trend": (-_RATE, _RATE, None),
    "trend_fast": (-_RATE, _RATE, None),
    "last_rate": (0.0, _RATE, None),
    "capacity": (1e-9, _RATE, None),  # the prior is at least 1e-9 (params.py): a rate of 0 sizes for infinity
    "capacity_weight": (0.0, _SECONDS, None),
    "membership_changed_at": (-_SECONDS, _SECONDS, -np.inf),
    "scaled_up_at": (-_SECONDS, _SECONDS, -np.inf),
    "scaled_down_at": (-_SECONDS, _SECONDS, -np.inf),
    "lag_prev": (0.0, _MESSAGES, None),
    "up_consume_before": (0.0, _RATE, None),
    "up_expected_gain": (0.0, _RATE, None),
    "ineffective_until": (-_SECONDS, _SECONDS, -np.inf),
    "down_window_value": (0.0, _RATE, None),
    "up_window_value": (0.0, _MESSAGES, None),  # replica counts
    "season": (0.0, _RATE, None),
    "season_since": (-_SECONDS, _SECONDS, np.inf),
    "burst_onsets": (-_SECONDS, _SECONDS, -np.inf),
    "burst_peaks": (0.0, _RATE, None),
    "burst_widths": (0.0, _SECONDS, np.inf),
    "burst_base": (0.0, _RATE, None),
    "burst_next": (-_SECONDS, _SECONDS, np.inf),
    "burst_jitter": (0.0, _SECONDS, None),
    "burst_rate": (0.0, _RATE, None),
    "down_life": (0.0, _SECONDS, np.inf),
}
_INT_MINIMUM = {"members_seen": 0, "desired": 0}  # counts; window bucket ids may be any integer


def _value_problem(name: str, column: np.ndarray[Any, Any]) -> str | None:
    """What is illegal in ``column`` of :class:`EngineState` (None: nothing)."""
    if name in _INT_MINIMUM and column.size and int(column.min()) < _INT_MINIMUM[name]:
        return f"{name!r} holds {int(column.min())}, below {_INT_MINIMUM[name]}"
    if name not in _FLOAT_RANGES:
        return None
    low, high, none = _FLOAT_RANGES[name]
    legal = (column >= low) & (column <= high)  # NaN is never legal
    if none is not None:
        legal |= column == none
    if legal.all():
        return None
    bad = float(column[~legal].ravel()[0])
    allowed = f"[{low:g}, {high:g}]" + (f" or {none:g}" if none is not None else "")
    return f"{name!r} holds {bad:g}, outside {allowed}"


def save_state(path: Path, keys: Sequence[str], state: EngineState) -> None:
    """Write ``state`` (rows in the order of ``keys``) to ``path`` atomically."""
    columns = {item.name: np.asarray(getattr(state, item.name)) for item in fields(EngineState)}
    columns[_FORMAT] = np.asarray(FORMAT)
    columns[_KEYS] = np.asarray(list(keys), dtype=np.str_)
    # A temporary name of its own: a periodic save still running in its thread when the shutdown
    # save starts must not write into the same file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            # numpy's stubs check ``**kwds`` against ``allow_pickle: bool``; every value is an array.
            savez: Any = np.savez
            savez(out, **columns)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_state(path: Path) -> tuple[tuple[str, ...], EngineState] | None:
    """The keys and state saved in ``path``, or None when there is no file yet.

    Raises :class:`StateFileError` naming the file and what is wrong with it.
    """
    if not path.exists():
        return None
    template = EngineState.initial(PolicyArrays.from_policies(()))
    try:
        with np.load(path, allow_pickle=False) as data:
            if _FORMAT not in data.files or _KEYS not in data.files:
                raise StateFileError(f"{path}: not a lagscaler state file (no format or keys)")
            marker = data[_FORMAT]  # one integer; anything else is no format this version wrote
            version = int(marker) if marker.shape == () and marker.dtype.kind in "iu" else "unknown"
            if version != FORMAT:
                raise StateFileError(f"{path}: state file format {version}, this lagscaler reads {FORMAT}")
            names = data[_KEYS]
            if names.ndim != 1 or names.dtype.kind != "U":
                raise StateFileError(f"{path}: the workload keys are not a list of names")
            keys = tuple(str(k) for k in names.tolist())
            columns = {}
            for item in fields(EngineState):
                if item.name not in data.files:
                    raise StateFileError(f"{path}: state file has no {item.name!r}")
                column = data[item.name]
                expected = getattr(template, item.name)
                shape = (len(keys), *expected.shape[1:])
                if column.shape != shape:
                    raise StateFileError(f"{path}: {item.name!r} has shape {column.shape}, expected {shape}")
                if column.dtype.kind != expected.dtype.kind:
                    raise StateFileError(
                        f"{path}: {item.name!r} holds {column.dtype}, expected {expected.dtype}"
                    )
                columns[item.name] = column.astype(expected.dtype, copy=True)
                problem = _value_problem(item.name, columns[item.name])
                if problem is not None:
                    raise StateFileError(f"{path}: {problem}")
    except StateFileError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise StateFileError(f"{path}: unreadable state file: {exc}") from exc
    if len(set(keys)) != len(keys):
        raise StateFileError(f"{path}: a workload appears twice in the state file")
    return keys, EngineState(**columns)
