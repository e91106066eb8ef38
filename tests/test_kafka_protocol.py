"""The wire layer: the fast response decoder agrees with aiokafka's on every schema version we speak."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import pytest
from aiokafka.protocol.types import (
    Array,
    Boolean,
    Bytes,
    CompactArray,
    CompactBytes,
    CompactString,
    Int8,
    Int16,
    Int32,
    Int64,
    Schema,
    String,
    TaggedFields,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from lagscaler.edges.kafka.decoding import TAGS, compile_reader, decode
from lagscaler.edges.kafka.protocol import (
    DELETE_GROUPS,
    DESCRIBE_GROUPS,
    FIND_COORDINATOR,
    LIST_GROUPS,
    LIST_OFFSETS,
    METADATA,
    OFFSET_FETCH,
    Api,
    UnsupportedApiVersion,
)

APIS = [FIND_COORDINATOR, LIST_GROUPS, DESCRIBE_GROUPS, OFFSET_FETCH, LIST_OFFSETS, METADATA, DELETE_GROUPS]
SCHEMAS = [
    pytest.param(api, v, id=f"{api.name}-v{v}")
    for api in APIS
    for v in range(api.min_version, api.max_version + 1)
]


def values_for(kind: Any) -> st.SearchStrategy[Any]:
    """Wire values (nested tuples and lists, as aiokafka encodes them) for any schema."""
    if isinstance(kind, Schema):
        return st.tuples(*(values_for(f) for f in kind.fields))
    if isinstance(kind, Array):  # CompactArray too
        return st.one_of(st.none(), st.lists(values_for(kind.array_of), max_size=3))
    if isinstance(kind, String):  # CompactString too
        return st.one_of(st.none(), st.text(max_size=8))
    bounds = {Int8: 7, Int16: 15, Int32: 31, Int64: 63}
    if kind in bounds:
        return st.integers(-(2 ** bounds[kind]), 2 ** bounds[kind] - 1)
    if kind is Boolean:
        return st.booleans()
    if kind in (Bytes, CompactBytes):
        return st.one_of(st.none(), st.binary(max_size=8))
    if kind is TaggedFields:
        return st.just({})
    raise TypeError(kind)


def reference(kind: Any, value: Any) -> Any:
    """aiokafka's decoded tuples → the name → value dicts our decoder produces."""
    if isinstance(kind, Schema):
        return {
            n: reference(k, v) for n, k, v in zip(kind.names, kind.fields, value, strict=True) if n != TAGS
        }
    if isinstance(kind, Array) and value is not None:
        return [reference(kind.array_of, item) for item in value]
    return value


@pytest.mark.parametrize(("api", "version"), SCHEMAS)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_fast_decoder_agrees_with_aiokafka(api: Api, version: int, data: st.DataObject) -> None:
    _, response = api.schema(version)
    values = data.draw(values_for(response))
    wire = response.encode(values)
    expected = reference(response, response.decode(BytesIO(wire)))
    assert decode(compile_reader(response), wire) == expected


def test_tagged_fields_with_content_are_skipped_by_their_size() -> None:
    schema = Schema(("a", Int32), (TAGS, TaggedFields), ("b", CompactString("utf-8")))
    # a=7; two tagged fields (tag 1: 3 bytes, tag 5: 0 bytes); b="hi"
    wire = b"\x00\x00\x00\x07" + b"\x02" + b"\x01\x03xyz" + b"\x05\x00" + b"\x03hi"
    assert decode(compile_reader(schema), wire) == {"a": 7, "b": "hi"}


def test_truncated_responses_are_errors_not_garbage() -> None:
    schema = Schema(("items", CompactArray(Schema(("name", CompactString("utf-8")), ("n", Int64)))))
    wire = schema.encode([[("abc", 5), ("de", 6)]])
    for cut in range(len(wire)):
        with pytest.raises(ValueError, match="malformed Kafka response"):
            decode(compile_reader(schema), wire[:cut])


def test_version_choice_follows_what_the_broker_speaks() -> None:
    assert OFFSET_FETCH.pick({9: (1, 9)}) == 9
    assert OFFSET_FETCH.pick({9: (1, 9)}, cap=7) == 7
    assert LIST_OFFSETS.pick({2: (1, 20)}) == LIST_OFFSETS.max_version
    with pytest.raises(UnsupportedApiVersion, match="OffsetFetch: we speak v2-v9, the broker not at all"):
        OFFSET_FETCH.pick({})
    with pytest.raises(UnsupportedApiVersion, match="the broker v10-v12"):
        OFFSET_FETCH.pick({9: (10, 12)})
