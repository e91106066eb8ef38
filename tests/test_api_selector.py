"""The label selector parser: Kubernetes' grammar and validation, matching semantics, and fuzzing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lagscaler.edges.api.selector import Operator, Requirement, Selector, SelectorError, parse_selector

NAME = st.from_regex(r"\A[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?\Z")
PREFIX = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?){0,2}\Z")
KEYS = st.one_of(NAME, st.builds(lambda p, n: f"{p}/{n}", PREFIX, NAME)).filter(
    lambda k: k not in ("in", "notin")
)
VALUES = st.one_of(st.just(""), NAME)
SPACE = st.sampled_from(["", " ", "  ", "\t"])


@st.composite
def requirements(draw: st.DrawFn) -> tuple[str, Requirement]:
    """A requirement and one of the many ways to write it."""
    key = draw(KEYS)
    op = draw(st.sampled_from(list(Operator)))
    s = lambda: draw(SPACE)  # noqa: E731 - a tiny helper keeps the spellings readable
    match op:
        case Operator.EXISTS:
            return f"{s()}{key}{s()}", Requirement(key, op)
        case Operator.DOES_NOT_EXIST:
            return f"{s()}!{s()}{key}{s()}", Requirement(key, op)
        case Operator.IN | Operator.NOT_IN:
            values = draw(st.lists(NAME, min_size=1, max_size=4))
            inner = f"{s()},{s()}".join(values)
            return f"{key} {op.value}{s()}({s()}{inner}{s()}){s()}", Requirement(key, op, frozenset(values))
        case Operator.GREATER_THAN | Operator.LESS_THAN:
            bound = str(draw(st.integers(min_value=0, max_value=10**6)))
            symbol = ">" if op is Operator.GREATER_THAN else "<"
            return f"{key}{s()}{symbol}{s()}{bound}", Requirement(key, op, frozenset({bound}))
    value = draw(VALUES)
    return f"{key}{s()}{op.value}{s()}{value}{s()}", Requirement(key, op, frozenset({value}))


@given(st.lists(requirements(), max_size=5))
def test_valid_selectors_parse_to_their_requirements(items: list[tuple[str, Requirement]]) -> None:
    text = ",".join(spelling for spelling, _ in items)
    parsed = parse_selector(text)
    assert sorted(parsed.requirements, key=str) == sorted((r for _, r in items), key=str)
    assert parse_selector(str(parsed)) == parsed  # the canonical string parses back to the same


LABELS = st.dictionaries(
    st.sampled_from(["a", "b", "example.com/c"]), st.sampled_from(["", "x", "y", "1", "20"])
)


@given(st.lists(requirements(), max_size=3), LABELS)
def test_matching_is_the_conjunction_of_requirements(
    items: list[tuple[str, Requirement]], labels: dict[str, str]
) -> None:
    parsed = parse_selector(",".join(spelling for spelling, _ in items))
    assert parsed.matches(labels) == all(r.matches(labels) for _, r in items)


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("a=x", {"a": "x"}, True),
        ("a==x", {"a": "y"}, False),
        ("a!=x", {}, True),  # != matches objects without the key, as in Kubernetes
        ("a notin (x)", {}, True),
        ("a in (x,y)", {}, False),
        ("a", {"a": ""}, True),
        ("!a", {"a": "x"}, False),
        ("a>5", {"a": "20"}, True),
        ("a<5", {"a": "x"}, False),  # not an integer: no match
        ("a in ()", {"a": ""}, True),  # Kubernetes reads "()" as the empty value
        ("a in (x,,y)", {"a": ""}, True),
        ("a=", {"a": ""}, True),
        ("in in (in,notin)", {"in": "notin"}, True),  # keywords are fine as keys and values
        ("", {"anything": "x"}, True),
    ],
)
def test_kubernetes_matching_semantics(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(text).matches(labels) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a b", "expected: in, notin"),
        ("a=b=c", "expected: ',' or end of string"),
        ("!a=b", "must stand alone"),
        ("a in", "expected: '('"),
        ("a in (b", "expected: ',' or ')'"),
        ("a,", "identifier after ','"),
        (",a", "expected: !, identifier"),
        ("a>b", "must be an integer"),
        ("a>", "must be an integer"),
        ("a>-1", "invalid label value"),
        ("-a=b", "name part must consist"),
        ("a/b/c=d", "at most one '/'"),
        ("/a=b", "prefix part must be non-empty"),
        ("Example.com/a=b", "lowercase DNS subdomain"),
        ("a=" + "x" * 64, "no more than 63 characters"),
        ("x" * 64 + "=a", "no more than 63 characters"),
        ("a=b c", "expected: ',' or end of string"),
        ("a=ä", "invalid label value"),
        ("a=(b)", "expected: identifier"),
        ("a in (b c)", "expected: ',' or ')'"),
    ],
)
def test_invalid_selectors_say_why(text: str, message: str) -> None:
    with pytest.raises(SelectorError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_selector(text)


@given(st.text(alphabet=st.sampled_from(list("ab=!(),<> \tin0-./_x")), max_size=40))
def test_selector_soup_parses_or_raises_selector_error(text: str) -> None:
    try:
        selector = parse_selector(text)
    except SelectorError as exc:
        message = str(exc)
        assert message  # every refusal says something
    else:
        assert isinstance(selector, Selector)
        assert parse_selector(str(selector)) == selector


@given(st.text(max_size=60))
def test_arbitrary_text_never_raises_anything_else(text: str) -> None:
    with contextlib.suppress(SelectorError):
        parse_selector(text)
