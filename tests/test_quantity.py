"""Kubernetes quantities: canonical formatting and full parsing, held to apimachinery itself."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from decimal import Decimal
from typing import Any

import pytest
import support
from hypothesis import given, settings
from hypothesis import strategies as st

from lagscaler.core.quantity import QuantityError, format_quantity, milli_value, parse_quantity

CANONICAL = re.compile(r"-?[1-9][0-9]*([numkMGTPE]?)|0")

# exact decimals with at most nano precision, from tiny to beyond the largest suffix
nano_decimals = st.builds(
    lambda mantissa, exponent: Decimal(mantissa).scaleb(exponent),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.integers(min_value=-9, max_value=12),
)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.5, "1500m"),
        (23000, "23k"),
        (1500, "1500"),
        (0, "0"),
        (-0.0, "0"),
        (0.1, "100m"),
        (0.001, "1m"),
        (0.0015, "1500u"),
        (1e-9, "1n"),
        (123456789, "123456789"),
        (2**63 - 1, "9223372036854775807"),
        (10**18, "1E"),
        (10**21, "1000E"),
        (-2.5, "-2500m"),
        (Decimal("12.000"), "12"),
    ],
)
def test_canonical_examples(value: float | int | Decimal, text: str) -> None:
    assert format_quantity(value) == text


def test_sub_nano_values_round_away_from_zero_like_kubernetes() -> None:
    assert format_quantity(Decimal("1e-10")) == "1n"
    assert format_quantity(Decimal("-1.0000000001")) == "-1000000001n"
    assert parse_quantity("0.1n") == Decimal("1e-9")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1500m", Decimal("1.5")),
        ("23k", Decimal(23000)),
        ("1Ki", Decimal(1024)),
        ("1.5Gi", Decimal(1610612736)),
        ("1e3", Decimal(1000)),
        ("1E-3", Decimal("0.001")),
        ("1.5e+2", Decimal(150)),
        ("1E", Decimal(10**18)),
        (".5", Decimal("0.5")),
        ("1.", Decimal(1)),
        ("+3M", Decimal(3_000_000)),
        ("-100u", Decimal("-0.0001")),
        ("007", Decimal(7)),
        ("2Ei", Decimal(2 * 2**60)),
    ],
)
def test_parse_every_form(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize(
    "text", ["", " 1", "1 ", "1.5.5", "1x", "e3", "1e", "--1", "1Ki5", "1KI", "k", ".", "1e1000"]
)
def test_parse_rejects_malformed(text: str) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(text)


def test_non_finite_numbers_cannot_be_quantities() -> None:
    for value in (float("nan"), float("inf"), Decimal("-Infinity")):
        with pytest.raises(QuantityError):
            format_quantity(value)


@given(nano_decimals)
def test_round_trip_is_exact_for_nano_precision(value: Decimal) -> None:
    text = format_quantity(value)
    assert CANONICAL.fullmatch(text), text
    assert parse_quantity(text) == value


@given(nano_decimals)
def test_canonical_form_uses_the_largest_suffix(value: Decimal) -> None:
    text = format_quantity(value)
    match = CANONICAL.fullmatch(text)
    assert match is not None
    digits = text.lstrip("-").rstrip("numkMGTPE")
    if match.group(1) != "E" and text != "0":
        assert not digits.endswith("000"), text  # otherwise a larger suffix would lose nothing


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15))
def test_floats_format_their_shortest_decimal(value: float) -> None:
    parsed = parse_quantity(format_quantity(value))
    assert abs(parsed - Decimal(repr(value))) <= Decimal("1e-9")  # only sub-nano digits may round (up)


@given(
    st.from_regex(
        r"\A[+-]?([0-9]{1,12}(\.[0-9]{0,10})?|\.[0-9]{1,10})([numkMGTPE]|[KMGTPE]i|[eE][+-]?[0-9]{1,2})?\Z"
    )
)
def test_anything_parsed_formats_canonically_and_reparses_equal(text: str) -> None:
    value = parse_quantity(text)
    canonical = format_quantity(value)
    assert parse_quantity(canonical) == value
    assert format_quantity(parse_quantity(canonical)) == canonical


@given(st.text(max_size=30))
def test_arbitrary_text_parses_or_raises_quantity_error(text: str) -> None:
    with contextlib.suppress(QuantityError):
        parse_quantity(text)


# --- against upstream: apimachinery's own ParseQuantity, String and MilliValue ------------------------
# tests/goclient --quantities answers with k8s.io/apimachinery/pkg/api/resource (the version in
# tests/goclient/go.mod), so these cannot drift from what an API server and the HPA controller do.


def upstream(lines: list[str]) -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(support.goclient()), "--quantities"],
        input="".join(f"{line}\n" for line in lines),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [a["input"] for a in answers] == lines
    return answers


# Values lagscaler can serve: nano precision, within what MilliValue's int64 holds (|v| < 9.2e15).
servable = st.builds(
    lambda mantissa, exponent: Decimal(mantissa).scaleb(exponent),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.integers(min_value=-9, max_value=3),
)


@settings(max_examples=25, deadline=None)
@given(st.lists(servable, min_size=1, max_size=200))
def test_formatting_matches_upstream(values: list[Decimal]) -> None:
    # Go is given the plain decimal; the value it parses and the canonical DecimalSI form it writes
    # for it must be ours exactly.
    for value, answer in zip(values, upstream([format(v, "f") for v in values]), strict=True):
        assert Decimal(answer["exact"]) == value
        assert answer["canonical"] == format_quantity(value), value


@settings(max_examples=25, deadline=None)
@given(st.lists(servable.filter(lambda v: v >= 0), min_size=1, max_size=200))
def test_milli_value_matches_upstream(values: list[Decimal]) -> None:
    # Served values are never negative (apimachinery's int64 path rounds negatives its own way).
    texts = [format_quantity(v) for v in values]
    for text, value, answer in zip(texts, values, upstream(texts), strict=True):
        assert answer["milli"] == milli_value(text) == milli_value(value), text


quantity_like = st.from_regex(
    r"\A[+-]?([0-9]{1,12}(\.[0-9]{0,10})?|\.[0-9]{1,10})([numkMGTPE]|[KMGTPE]i|[eE][+-]?[0-9]{1,2})?\Z"
)
near_misses = st.text(alphabet="0123456789.+-eEinumkKMGTP ", max_size=8)


@settings(max_examples=25, deadline=None)
@given(st.lists(quantity_like | near_misses, min_size=1, max_size=200))
def test_parsing_accepts_and_refuses_what_upstream_does(texts: list[str]) -> None:
    # Differences on purpose, none reachable by a metric value: apimachinery reads text whose number
    # has no digit ("k", ".", "-", "E0") as 0 and takes exponents beyond ±100 (1e999), which we
    # refuse as not meant to be quantities; and beyond int64 it saturates (10Ei), where we stay exact.
    texts = [t for t in texts if re.match(r"[+-]?([0-9]|\.[0-9])", t)]
    for text, answer in zip(texts, upstream(texts), strict=True):
        try:
            ours: Decimal | None = parse_quantity(text)
        except QuantityError as exc:
            if "out of range" in str(exc):
                continue
            ours = None
        if ours is not None and abs(ours) >= 2**63:
            continue
        if answer.get("error"):
            assert ours is None, f"{text!r}: upstream refuses it ({answer['error']}), we read {ours}"
        else:
            assert ours == Decimal(answer["exact"]), f"{text!r}: upstream reads {answer['exact']}"
