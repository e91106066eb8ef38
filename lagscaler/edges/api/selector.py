"""Kubernetes label selectors (``k8s.io/apimachinery/pkg/labels``), parsed and matched like the apiserver.

The HPA sends ``metric.selector`` as ``labelSelector=<string>``; a client can send anything, so this
parser must accept exactly what Kubernetes accepts and refuse the rest with a message that names the
problem (it becomes the ``message`` of a 400 ``Status``).

Grammar (comma-separated requirements, whitespace between tokens ignored)::

    requirement := ["!"] KEY
                 | KEY ("=" | "==" | "!=") [VALUE]
                 | KEY ("in" | "notin") "(" [VALUE] ("," [VALUE])* ")"
                 | KEY (">" | "<") INTEGER

``KEY`` is a qualified name (optional DNS-subdomain prefix and ``/``, then at most 63 characters of
``[A-Za-z0-9._-]`` starting and ending alphanumeric); ``VALUE`` is empty or the same at most 63
characters. ``in``/``notin`` may be used as values. Like Kubernetes, ``x in ()`` means ``x in ("")``
and empty list entries mean the empty value; ``!=`` and ``notin`` match objects without the key.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Operator", "Requirement", "Selector", "SelectorError", "parse_selector"]


class SelectorError(ValueError):
    """A label selector Kubernetes would refuse; the message says where and why."""


class Operator(enum.StrEnum):
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"
    EQUALS = "="
    DOUBLE_EQUALS = "=="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    GREATER_THAN = "gt"
    LESS_THAN = "lt"


_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_NAME_RE = re.compile(_NAME)
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN_RE = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
_INTEGER_RE = re.compile(r"[+-]?[0-9]+")
_INT64 = (-(2**63), 2**63 - 1)
_MAX_NAME = 63
_MAX_PREFIX = 253


def validate_label_key(key: str) -> str | None:
    """Why ``key`` is not a valid label key, or ``None`` (``IsQualifiedName``)."""
    parts = key.split("/")
    if len(parts) > 2:
        return f"invalid label key {key!r}: at most one '/' (an optional DNS subdomain prefix, then a name)"
    if len(parts) == 2:
        prefix, name = parts
        if not prefix:
            return f"invalid label key {key!r}: prefix part must be non-empty"
        if len(prefix) > _MAX_PREFIX:
            return f"invalid label key {key!r}: prefix part must be no more than {_MAX_PREFIX} characters"
        if not _DNS_SUBDOMAIN_RE.fullmatch(prefix):
            return (
                f"invalid label key {key!r}: prefix part must be a lowercase DNS subdomain "
                "(e.g. 'example.com')"
            )
    else:
        name = parts[0]
    if not name:
        return f"invalid label key {key!r}: name part must be non-empty"
    if len(name) > _MAX_NAME:
        return f"invalid label key {key!r}: name part must be no more than {_MAX_NAME} characters"
    if not _NAME_RE.fullmatch(name):
        return (
            f"invalid label key {key!r}: name part must consist of alphanumeric characters, '-', '_' "
            "or '.', and must start and end with an alphanumeric character"
        )
    return None


def validate_label_value(value: str) -> str | None:
    """Why ``value`` is not a valid label value, or ``None`` (``IsValidLabelValue``)."""
    if len(value) > _MAX_NAME:
        return f"invalid label value {value!r}: must be no more than {_MAX_NAME} characters"
    if value and not _NAME_RE.fullmatch(value):
        return (
            f"invalid label value {value!r}: must be empty or consist of alphanumeric characters, '-', "
            "'_' or '.', and must start and end with an alphanumeric character"
        )
    return None


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        match self.operator:
            case Operator.EXISTS:
                return value is not None
            case Operator.DOES_NOT_EXIST:
                return value is None
            case Operator.EQUALS | Operator.DOUBLE_EQUALS | Operator.IN:
                return value is not None and value in self.values
            case Operator.NOT_EQUALS | Operator.NOT_IN:
                return value is None or value not in self.values
            case Operator.GREATER_THAN | Operator.LESS_THAN:
                if value is None or not _INTEGER_RE.fullmatch(value):
                    return False
                (bound,) = self.values
                if self.operator is Operator.GREATER_THAN:
                    return int(value) > int(bound)
                return int(value) < int(bound)
        return False  # pragma: no cover - the match above is exhaustive

    def __str__(self) -> str:
        ordered = sorted(self.values)
        match self.operator:
            case Operator.EXISTS:
                return self.key
            case Operator.DOES_NOT_EXIST:
                return f"!{self.key}"
            case Operator.IN | Operator.NOT_IN:
                return f"{self.key} {self.operator.value} ({','.join(ordered)})"
            case Operator.GREATER_THAN:
                return f"{self.key}>{ordered[0]}"
            case Operator.LESS_THAN:
                return f"{self.key}<{ordered[0]}"
        return f"{self.key}{self.operator.value}{ordered[0]}"


@dataclass(frozen=True, slots=True)
class Selector:
    """All requirements must match (AND). The empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(requirement.matches(labels) for requirement in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(requirement) for requirement in self.requirements)


# ---------------------------------------------------------------------------------------- lexer


class _Tok(enum.Enum):
    END = "end of string"
    IDENT = "identifier"
    COMMA = "','"
    OPEN = "'('"
    CLOSE = "')'"
    NOT = "'!'"
    EQ = "'='"
    DEQ = "'=='"
    NEQ = "'!='"
    GT = "'>'"
    LT = "'<'"
    IN = "'in'"
    NOTIN = "'notin'"


_SPECIAL = frozenset("=!(),><")
_WHITESPACE = frozenset(" \t\r\n")
_SYMBOLS = {
    ")": _Tok.CLOSE,
    ",": _Tok.COMMA,
    "!": _Tok.NOT,
    "==": _Tok.DEQ,
    "=": _Tok.EQ,
    ">": _Tok.GT,
    "<": _Tok.LT,
    "!=": _Tok.NEQ,
    "(": _Tok.OPEN,
}
_KEYWORDS = {"in": _Tok.IN, "notin": _Tok.NOTIN}


def _lex(text: str) -> list[tuple[_Tok, str]]:
    tokens: list[tuple[_Tok, str]] = []
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos] in _WHITESPACE:
            pos += 1
        if pos >= end:
            tokens.append((_Tok.END, ""))
            return tokens
        if text[pos] in _SPECIAL:
            # the longest run of special characters that is still a symbol: "!=" but "!" then "("
            start, best = pos, None
            probe = pos
            while probe < end and text[probe] in _SPECIAL:
                probe += 1
                symbol = _SYMBOLS.get(text[start:probe])
                if symbol is not None:
                    best = (symbol, probe)
                elif best is not None:
                    break
            if best is None:
                raise SelectorError(f"unexpected {text[start:probe]!r} at position {start}")
            tokens.append((best[0], text[start : best[1]]))
            pos = best[1]
            continue
        start = pos
        while pos < end and text[pos] not in _SPECIAL and text[pos] not in _WHITESPACE:
            pos += 1
        word = text[start:pos]
        tokens.append((_KEYWORDS.get(word, _Tok.IDENT), word))


# --------------------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, text: str) -> None:
        self._tokens = _lex(text)
        self._pos = 0

    def _peek(self, *, as_value: bool = True) -> tuple[_Tok, str]:
        tok, lit = self._tokens[self._pos]
        if as_value and tok in (_Tok.IN, _Tok.NOTIN):
            tok = _Tok.IDENT  # "in" and "notin" are fine as keys and values
        return tok, lit

    def _take(self, *, as_value: bool = True) -> tuple[_Tok, str]:
        item = self._peek(as_value=as_value)
        self._pos += 1
        return item

    def parse(self) -> Selector:
        requirements: list[Requirement] = []
        tok, lit = self._peek()
        if tok is _Tok.END:
            return Selector()
        while True:
            if tok not in (_Tok.IDENT, _Tok.NOT):
                raise SelectorError(f"found {lit or tok.value!r}, expected: !, identifier, or end of string")
            requirements.append(self._requirement())
            tok, lit = self._take()
            if tok is _Tok.END:
                break
            if tok is not _Tok.COMMA:
                raise SelectorError(f"found {lit!r}, expected: ',' or end of string")
            tok, lit = self._peek()
            if tok not in (_Tok.IDENT, _Tok.NOT):
                raise SelectorError(f"found {lit or tok.value!r}, expected: identifier after ','")
        requirements.sort(key=lambda r: r.key)  # deterministic, as Kubernetes sorts by key
        return Selector(tuple(requirements))

    def _requirement(self) -> Requirement:
        negated = False
        tok, lit = self._take()
        if tok is _Tok.NOT:
            negated = True
            tok, lit = self._take()
        if tok is not _Tok.IDENT:
            raise SelectorError(f"found {lit or tok.value!r}, expected: identifier")
        key = lit
        if (problem := validate_label_key(key)) is not None:
            raise SelectorError(problem)
        following, _ = self._peek()
        if following in (_Tok.END, _Tok.COMMA):
            return Requirement(key, Operator.DOES_NOT_EXIST if negated else Operator.EXISTS)
        if negated:
            raise SelectorError(f"'!{key}' must stand alone: '!' cannot be combined with an operator")
        op_tok, op_lit = self._take(as_value=False)
        operator = {
            _Tok.EQ: Operator.EQUALS,
            _Tok.DEQ: Operator.DOUBLE_EQUALS,
            _Tok.NEQ: Operator.NOT_EQUALS,
            _Tok.IN: Operator.IN,
            _Tok.NOTIN: Operator.NOT_IN,
            _Tok.GT: Operator.GREATER_THAN,
            _Tok.LT: Operator.LESS_THAN,
        }.get(op_tok)
        if operator is None:
            raise SelectorError(f"found {op_lit or op_tok.value!r}, expected: in, notin, =, ==, !=, gt, lt")
        values = self._set_values() if operator in (Operator.IN, Operator.NOT_IN) else self._exact_value()
        if operator in (Operator.GREATER_THAN, Operator.LESS_THAN):
            (bound,) = values
            if not _INTEGER_RE.fullmatch(bound) or not _INT64[0] <= int(bound) <= _INT64[1]:
                raise SelectorError(f"for 'gt', 'lt' operators the value must be an integer, got {bound!r}")
        for value in values:
            if (problem := validate_label_value(value)) is not None:
                raise SelectorError(f"{problem} (for key {key!r})")
        return Requirement(key, operator, frozenset(values))

    def _exact_value(self) -> set[str]:
        tok, _ = self._peek()
        if tok in (_Tok.END, _Tok.COMMA):
            return {""}
        tok, lit = self._take()
        if tok is not _Tok.IDENT:
            raise SelectorError(f"found {lit or tok.value!r}, expected: identifier")
        return {lit}

    def _set_values(self) -> set[str]:
        tok, lit = self._take()
        if tok is not _Tok.OPEN:
            raise SelectorError(f"found {lit or tok.value!r}, expected: '('")
        tok, lit = self._peek()
        if tok is _Tok.CLOSE:
            self._take()
            return {""}
        if tok not in (_Tok.IDENT, _Tok.COMMA):
            raise SelectorError(f"found {lit or tok.value!r}, expected: ',', ')' or identifier")
        values: set[str] = set()
        while True:
            tok, lit = self._take()
            if tok is _Tok.IDENT:
                values.add(lit)
                following, following_lit = self._peek()
                if following is _Tok.COMMA:
                    continue
                if following is _Tok.CLOSE:
                    break
                raise SelectorError(f"found {following_lit or following.value!r}, expected: ',' or ')'")
            if tok is _Tok.COMMA:
                if not values:
                    values.add("")  # "(,a)": the empty value before the comma
                following, _ = self._peek()
                if following in (_Tok.CLOSE, _Tok.COMMA):
                    values.add("")  # "(a,)" and "(a,,b)"
                if following is _Tok.CLOSE:
                    break
                continue
            raise SelectorError(f"found {lit or tok.value!r}, expected: ',', or identifier")
        self._take()  # the closing parenthesis
        return values


def parse_selector(text: str) -> Selector:
    """Parse a label selector string; :class:`SelectorError` says what is wrong with a bad one."""
    return _Parser(text).parse()
