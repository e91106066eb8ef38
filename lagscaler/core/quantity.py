"""Kubernetes resource quantities (``k8s.io/apimachinery/pkg/api/resource``) without floats.

The one quantity parser and formatter of lagscaler, pure and shared by every layer: the API writes
metric values with :func:`format_quantity`, the HPA model reads them with :func:`milli_value`, and
policy files give sizes such as ``50Mi`` that :func:`parse_quantity` reads.

The HPA reads ``value`` with ``Quantity.MilliValue()``; a value it cannot parse is an error that
freezes scaling, so what we emit must be exactly the canonical form Kubernetes itself writes, and
what we read (tests, the local HPA loop) must accept every form Kubernetes accepts.
``tests/test_quantity.py`` holds all three functions to upstream's ``resource.ParseQuantity``,
``Quantity.String`` and ``Quantity.MilliValue`` (apimachinery ``pkg/api/resource/quantity.go``)
through the Go program in ``tests/goclient``.

Canonical form (what :func:`format_quantity` writes, ``DecimalSI``): an integer mantissa and the
largest suffix that loses no precision, with the exponent a multiple of three: ``1.5`` → ``"1500m"``,
``23000`` → ``"23k"``, ``1500`` → ``"1500"``, ``0`` → ``"0"``. Values are held to nano precision
like Kubernetes: more precise values are rounded *away from zero* (Kubernetes rounds up so that a
tiny request never becomes zero).

The parser accepts the full grammar (signs, ``1.``, ``.5``, every ``DecimalSI`` and ``BinarySI``
suffix, ``e``/``E`` exponents) and returns an exact :class:`~decimal.Decimal`.
"""

from __future__ import annotations

import decimal
import math
import re
from decimal import Decimal

__all__ = ["QuantityError", "format_quantity", "milli_value", "parse_quantity"]


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity, or a number that cannot be one (NaN, infinity)."""


_DECIMAL_SUFFIXES: dict[int, str] = {-9: "n", -6: "u", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T"}
_DECIMAL_SUFFIXES |= {15: "P", 18: "E"}
_SUFFIX_EXPONENT: dict[str, int] = {suffix: exponent for exponent, suffix in _DECIMAL_SUFFIXES.items()}
_BINARY_SUFFIX_POWER: dict[str, int] = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_MAX_EXPONENT = 18  # "E" is the largest decimal suffix; larger values get a longer mantissa
_NANO = Decimal("1e-9")
# Large enough for any exponent we accept: the context never rounds behind our back.
_EXACT = decimal.Context(
    prec=1000, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN, traps=[decimal.InvalidOperation]
)

_QUANTITY = re.compile(
    r"(?P<sign>[+-]?)"
    r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?P<suffix>[numkMGTPE]|[KMGTPE]i|[eE][+-]?[0-9]+)?"
)
# Exponents beyond this are not quantities anyone means; refusing them keeps parsing cheap.
_EXPONENT_LIMIT = 100


def _to_decimal(value: Decimal | int | float) -> Decimal:
    if isinstance(value, bool):
        raise QuantityError(f"not a number: {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QuantityError(f"a quantity must be finite, got {value!r}")
        return Decimal(repr(value))  # the shortest decimal that round-trips: 0.1 is 0.1, not 0.1000…05
    if isinstance(value, int):
        return Decimal(value)
    if not value.is_finite():
        raise QuantityError(f"a quantity must be finite, got {value!r}")
    return value


def _round_to_nano(value: Decimal) -> Decimal:
    """Kubernetes' rule: keep nano precision, round anything finer away from zero."""
    if value.is_zero():
        return Decimal(0)
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    if exponent >= -9:
        return value
    return value.quantize(_NANO, rounding=decimal.ROUND_UP, context=_EXACT)


def format_quantity(value: Decimal | int | float) -> str:
    """The canonical ``DecimalSI`` string Kubernetes would write for ``value``."""
    amount = _round_to_nano(_to_decimal(value))
    if amount.is_zero():
        return "0"
    sign, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)
    mantissa = int("".join(map(str, digits)))
    while mantissa % 10 == 0:  # move every factor of ten into the exponent …
        mantissa //= 10
        exponent += 1
    while exponent % 3 != 0:  # … then back until the exponent has a suffix
        mantissa *= 10
        exponent -= 1
    if exponent > _MAX_EXPONENT:
        mantissa *= 10 ** (exponent - _MAX_EXPONENT)
        exponent = _MAX_EXPONENT
    return f"{'-' if sign else ''}{mantissa}{_DECIMAL_SUFFIXES[exponent]}"


def parse_quantity(text: str) -> Decimal:
    """Parse any Kubernetes quantity string into an exact value (rounded away from zero to nanos)."""
    if not isinstance(text, str):
        raise QuantityError(f"a quantity must be a string, got {type(text).__name__}")
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise QuantityError(
            f"{text!r} is not a Kubernetes quantity (expected e.g. 1500m, 23k, 1.5, 2Ki, 1e3)"
        )
    number = match["number"]
    if number.endswith("."):
        number += "0"
    if number.startswith("."):
        number = "0" + number
    amount = Decimal(number)
    suffix = match["suffix"] or ""
    if suffix in _BINARY_SUFFIX_POWER:
        amount = _EXACT.multiply(amount, Decimal(2 ** _BINARY_SUFFIX_POWER[suffix]))
    elif suffix in _SUFFIX_EXPONENT:
        amount = amount.scaleb(_SUFFIX_EXPONENT[suffix], context=_EXACT)
    else:
        exponent = int(suffix[1:])
        if abs(exponent) > _EXPONENT_LIMIT:
            raise QuantityError(f"{text!r}: exponent {exponent} is out of range (±{_EXPONENT_LIMIT})")
        amount = amount.scaleb(exponent, context=_EXACT)
    if match["sign"] == "-":
        amount = amount.copy_negate()  # exact, unlike unary minus (which rounds to the context)
    return _round_to_nano(amount)


def milli_value(quantity: Decimal | int | float | str) -> int:
    """``resource.Quantity.MilliValue()``: the value in thousandths, rounded up (towards +infinity).

    The HPA controller does all External metric arithmetic on milli-values, so a served ``17.0005``
    counts as ``17001m``. Floats are read through their shortest decimal representation (what an
    adapter writes on the wire), never through their binary expansion, so ``0.1`` is ``100m``;
    strings are any quantity :func:`parse_quantity` reads (``1500m``, ``2Ki``, ``1e3``).
    """
    value = parse_quantity(quantity) if isinstance(quantity, str) else _round_to_nano(_to_decimal(quantity))
    return int(value.scaleb(3, context=_EXACT).to_integral_value(rounding=decimal.ROUND_CEILING))
