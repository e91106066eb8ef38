"""Kubernetes quantities: canonical formatting and full parsing, with hypothesis for the round trip."""

from __future__ import annotations

import contextlib
import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lagscaler.quantity import QuantityError, format_quantity, parse_quantity

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
