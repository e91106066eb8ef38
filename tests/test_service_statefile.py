"""The engine's state file: what a restart keeps, and what a damaged file does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_engine import obs as engine_obs
from test_engine import policies as engine_policies
from test_engine import situation

from lagscaler.core.engine import EngineState, Observation, ObservationBatch, PolicyArrays, decide
from lagscaler.core.engine.reload import carry_over
from lagscaler.core.policy.model import Capacity, KafkaSource, ScaleTargetRef, ScalingPolicy
from lagscaler.service.statefile import (
    _FLOAT_RANGES,
    _INT_MINIMUM,
    FORMAT,
    StateFileError,
    load_state,
    save_state,
)


def policy(name: str) -> ScalingPolicy:
    return ScalingPolicy(
        name=name,
        namespace="shop",
        target=ScaleTargetRef(name),
        kafka=KafkaSource(name),
        max_lag_seconds=30.0,
        capacity=Capacity(per_replica=1000.0),
        max_replicas=12,
    )


def run(params: PolicyArrays, state: EngineState, start: float, end: float, rate: float) -> EngineState:
    """Feed every workload ``rate`` msg/s on 6 replicas from ``start`` to ``end``, every 15 s."""
    for at in np.arange(start, end, 15.0):
        batch = ObservationBatch.stack(
            [
                Observation(
                    at=float(at), replicas=6, members=6, partitions=12, arrival_rate=rate, consume_rate=rate
                )
                for _ in range(params.size)
            ]
        )
        _, state = decide(params, state, batch)
    return state


def round_trip(
    tmp_path: Path, keys: Sequence[str], state: EngineState
) -> tuple[tuple[str, ...], EngineState]:
    """Save ``state`` to a file and load it back, as a stop and a start of the service do."""
    path = tmp_path / "engine.npz"
    save_state(path, keys, state)
    loaded = load_state(path)
    assert loaded is not None
    assert [f.name for f in tmp_path.iterdir()] == ["engine.npz"]  # no temporary file left behind
    return loaded


def assert_same(a: EngineState, b: EngineState) -> None:
    for item in fields(EngineState):
        left, right = getattr(a, item.name), getattr(b, item.name)
        assert left.dtype == right.dtype, item.name
        np.testing.assert_array_equal(left, right, err_msg=item.name)


def test_a_saved_state_loads_back_unchanged(tmp_path: Path) -> None:
    params = PolicyArrays.from_policies([policy("a"), policy("b")])
    state = run(params, EngineState.initial(params), 0.0, 600.0, 4000.0)
    keys, restored = round_trip(tmp_path, params.keys, state)
    assert keys == tuple(params.keys)
    assert_same(restored, state)


def test_no_file_yet_means_start_fresh(tmp_path: Path) -> None:
    assert load_state(tmp_path / "missing.npz") is None


def first_scale_down(params: PolicyArrays, state: EngineState, start: float, rate: float) -> float:
    """When the engine first decides to go below 6 replicas, fed ``rate`` msg/s from ``start``."""
    for at in np.arange(start, start + 1800.0, 15.0):
        quiet = Observation(
            at=float(at), replicas=6, members=6, partitions=12, arrival_rate=rate, consume_rate=rate
        )
        decisions, state = decide(params, state, ObservationBatch.stack([quiet]))
        if decisions[0].desired_replicas < 6:
            return float(at)
    return np.inf


def test_a_restart_with_the_state_does_not_restart_the_scale_down_dwell(tmp_path: Path) -> None:
    # Traffic falls from 4000 to 500 msg/s at t = 600 and lagscaler restarts at t = 800. A fresh
    # engine counts its first observation as a change and waits a whole window (300 s) from the
    # restart; restored, it already saw 200 s of the window and scales down as if never restarted.
    params = PolicyArrays.from_policies([policy("a")])
    state = run(params, EngineState.initial(params), 0.0, 600.0, 4000.0)
    state = run(params, state, 600.0, 800.0, 500.0)
    restored = carry_over(*round_trip(tmp_path, params.keys, state), params)
    assert restored.capacity[0] == state.capacity[0]
    never_restarted = first_scale_down(params, state, 800.0, 500.0)
    fresh = first_scale_down(params, EngineState.initial(params), 800.0, 500.0)
    kept = first_scale_down(params, restored, 800.0, 500.0)
    assert kept == never_restarted
    assert fresh >= 800.0 + 300.0 > kept


def test_a_workload_added_or_removed_while_down_is_matched_by_name(tmp_path: Path) -> None:
    before = PolicyArrays.from_policies([policy("a"), policy("b")])
    state = run(before, EngineState.initial(before), 0.0, 600.0, 4000.0)
    after = PolicyArrays.from_policies([policy("b"), policy("c")])
    carried = carry_over(*round_trip(tmp_path, before.keys, state), after)
    assert carried.initialized[0]  # b kept its row
    assert carried.level[0] == state.level[1]
    assert not carried.initialized[1]  # c starts fresh


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_bytes(b"not a zip"), "unreadable state file"),
        (lambda p: p.write_bytes(p.read_bytes()[:200]), "unreadable state file"),
        (lambda p: np.savez(p.open("wb"), level=np.zeros(2)), "not a lagscaler state file"),
    ],
)
def test_a_damaged_file_is_refused_with_its_name_and_the_problem(
    tmp_path: Path, damage: object, message: str
) -> None:
    params = PolicyArrays.from_policies([policy("a"), policy("b")])
    path = tmp_path / "engine.npz"
    save_state(path, params.keys, EngineState.initial(params))
    damage(path)  # type: ignore[operator]
    with pytest.raises(StateFileError, match=message) as caught:
        load_state(path)
    assert str(path) in str(caught.value)


def test_a_file_with_a_wrong_shape_names_the_field(tmp_path: Path) -> None:
    params = PolicyArrays.from_policies([policy("a")])
    state = EngineState.initial(params)
    path = tmp_path / "engine.npz"
    save_state(path, ["shop/a", "shop/b"], state)  # two keys, one row
    with pytest.raises(StateFileError, match="'initialized' has shape"):
        load_state(path)


def test_a_file_of_the_previous_format_is_refused_naming_both_formats(tmp_path: Path) -> None:
    """Format 2 had no learned scale-down life (``down_life``): such a file is refused, not misread
    (the service then moves it aside and starts fresh, README "Restarts")."""
    params = PolicyArrays.from_policies([policy("a")])
    path = tmp_path / "engine.npz"
    save_state(path, params.keys, EngineState.initial(params))
    with np.load(path) as data:
        columns = {name: data[name] for name in data.files if name != "down_life"}
    columns["__format__"] = np.asarray(2)
    with path.open("wb") as out:
        np.savez(out, **columns)
    with pytest.raises(StateFileError, match="state file format 2, this lagscaler reads 3") as caught:
        load_state(path)
    assert str(path) in str(caught.value)


# Any array numpy can save without pickling, in any shape: what a file from another version, a
# half-restored backup or a stray npz could hold under each name the loader reads.
_ARRAYS = hnp.arrays(
    dtype=st.sampled_from(["i8", "u1", "f8", "b1", "<U3", "c16"]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3),
)
_NAMES = ["__format__", "__keys__", *(item.name for item in fields(EngineState))]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    columns=st.dictionaries(st.sampled_from(_NAMES), _ARRAYS, max_size=len(_NAMES)),
    valid_header=st.booleans(),
)
def test_any_npz_is_loaded_or_refused_with_a_state_file_error(
    tmp_path: Path, columns: dict[str, np.ndarray], valid_header: bool
) -> None:
    """Never another exception: the loop treats a StateFileError as "move it aside, start fresh",
    and anything else would stop the service at every start (a crash loop)."""
    if valid_header:
        columns |= {"__format__": np.asarray(FORMAT), "__keys__": np.asarray(["shop/a"])}
    path = tmp_path / "any.npz"
    with path.open("wb") as out:
        np.savez(out, **columns)
    try:
        loaded = load_state(path)
    except StateFileError as exc:
        problem = str(exc)
    else:
        assert loaded is not None
        keys, state = loaded
        assert all(getattr(state, item.name).shape[:1] == (len(keys),) for item in fields(EngineState))
        return
    assert str(path) in problem


# --- values: a file of the right shapes and types can still be poison ------------------------------


def test_every_float_and_count_column_has_a_legal_range() -> None:
    """A column added to the engine's state without a range here would load unchecked."""
    ranged = set(_FLOAT_RANGES) | set(_INT_MINIMUM)
    unchecked = {
        item.name
        for item in fields(EngineState)
        if getattr(EngineState.initial(PolicyArrays.from_policies(())), item.name).dtype.kind == "f"
    } - ranged
    assert unchecked == set()


@pytest.mark.parametrize(
    ("column", "poison"),
    [("level", np.nan), ("capacity", -np.inf), ("capacity", 0.0), ("trend", 1e300), ("down_life", -np.inf)],
)
def test_a_file_with_an_illegal_value_is_refused_naming_the_column(
    tmp_path: Path, column: str, poison: float
) -> None:
    params = PolicyArrays.from_policies([policy("a")])
    state = run(params, EngineState.initial(params), 0.0, 600.0, 4000.0)
    poisoned = getattr(state, column).copy()
    poisoned[0] = poison
    path = tmp_path / "engine.npz"
    save_state(path, params.keys, replace(state, **{column: poisoned}))
    with pytest.raises(StateFileError, match=f"'{column}' holds") as caught:
        load_state(path)
    assert str(path) in str(caught.value)


def _poison(shape: tuple[int, ...], dtype: np.dtype[Any]) -> st.SearchStrategy[np.ndarray[Any, Any] | None]:
    """A column left as the engine wrote it (None), or replaced by arbitrary values of its type."""
    elements = st.floats() if dtype.kind == "f" else st.integers(-(2**63), 2**63 - 1)
    if dtype.kind == "b":
        elements = st.booleans()
    return st.none() | hnp.arrays(dtype=dtype, shape=shape, elements=elements)


_ONE_ROW = EngineState.initial(PolicyArrays.from_policies([policy("a")]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    p=engine_policies,
    replaced=st.fixed_dictionaries(
        {
            item.name: _poison(getattr(_ONE_ROW, item.name).shape, getattr(_ONE_ROW, item.name).dtype)
            for item in fields(EngineState)
        }
    ),
    rate=st.floats(0.0, 60_000.0),
    replicas=st.integers(0, 30),
)
def test_a_loaded_state_is_refused_or_decides_within_min_and_max(
    tmp_path: Path,
    p: ScalingPolicy,
    replaced: dict[str, np.ndarray[Any, Any] | None],
    rate: float,
    replicas: int,
) -> None:
    """Arbitrary values in any column: refused (the service moves the file aside and starts fresh), or
    the first decision on it is a count within the policy's bounds, as a fresh state's is."""
    params = PolicyArrays.from_policies([p])
    state = situation(p, replicas, rate, 0.0)
    state = replace(state, **{name: column for name, column in replaced.items() if column is not None})
    path = tmp_path / "engine.npz"
    save_state(path, params.keys, state)
    try:
        loaded = load_state(path)
    except StateFileError:
        return
    assert loaded is not None
    restored = carry_over(*loaded, params)
    observed = engine_obs(900.0, replicas=replicas, arrival=rate, lag=0.0, lag_seconds=0.0)
    decision = decide(params, restored, ObservationBatch.stack([observed]))[0][0]
    assert p.min_replicas <= decision.desired_replicas <= p.max_replicas
    for value in (decision.forecast_arrival_rate, decision.capacity_per_replica, decision.required_rate):
        assert np.isfinite(value)
