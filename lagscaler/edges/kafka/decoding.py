"""Fast decoding of responses described by aiokafka ``Schema`` objects.

aiokafka decodes field by field from a ``BytesIO`` into nested tuples; for a 10,000-partition
OffsetFetch or ListOffsets response that is most of a sampler cycle. Here each schema is compiled
once into a tree of small readers working on ``bytes`` with precompiled ``struct`` unpackers, that
build the name → value dicts directly. The schemas, and therefore the wire format, are still
aiokafka's types (``Int32``, ``CompactString``, ``CompactArray``, ``TaggedFields``...); a property test
checks that this decoder and aiokafka's agree on every response schema the admin uses.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

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

Reader = Callable[[bytes, int], tuple[Any, int]]

TAGS = "_tagged_fields"


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 28:
            raise ValueError("unsigned varint longer than 5 bytes")


def _fixed(fmt: str) -> Reader:
    unpack = struct.Struct(fmt).unpack_from
    size = struct.calcsize(fmt)

    def read(buf: bytes, pos: int) -> tuple[Any, int]:
        return unpack(buf, pos)[0], pos + size

    return read


def _take(buf: bytes, pos: int, length: int) -> bytes:
    end = pos + length
    if end > len(buf):
        raise ValueError("buffer underrun")
    return buf[pos:end]


def _string(buf: bytes, pos: int) -> tuple[str | None, int]:
    (length,) = _INT16(buf, pos)
    pos += 2
    if length < 0:
        return None, pos
    return _take(buf, pos, length).decode("utf-8"), pos + length


def _compact_string(buf: bytes, pos: int) -> tuple[str | None, int]:
    length, pos = _uvarint(buf, pos)
    if length == 0:
        return None, pos
    return _take(buf, pos, length - 1).decode("utf-8"), pos + length - 1


def _bytes(buf: bytes, pos: int) -> tuple[bytes | None, int]:
    (length,) = _INT32(buf, pos)
    pos += 4
    if length < 0:
        return None, pos
    return _take(buf, pos, length), pos + length


def _compact_bytes(buf: bytes, pos: int) -> tuple[bytes | None, int]:
    length, pos = _uvarint(buf, pos)
    if length == 0:
        return None, pos
    return _take(buf, pos, length - 1), pos + length - 1


def _tagged_fields(buf: bytes, pos: int) -> tuple[dict[int, bytes], int]:
    """Tagged fields are skipped (none of the fields we read are tagged), but their sizes are honoured."""
    count, pos = _uvarint(buf, pos)
    for _ in range(count):
        _tag, pos = _uvarint(buf, pos)
        size, pos = _uvarint(buf, pos)
        _take(buf, pos, size)
        pos += size
    return {}, pos


_INT16 = struct.Struct(">h").unpack_from
_INT32 = struct.Struct(">i").unpack_from

_PRIMITIVES: dict[Any, Reader] = {
    Int8: _fixed(">b"),
    Int16: _fixed(">h"),
    Int32: _fixed(">i"),
    Int64: _fixed(">q"),
    Boolean: _fixed(">?"),
    Bytes: _bytes,
    CompactBytes: _compact_bytes,
    TaggedFields: _tagged_fields,
}


def _array(item: Reader, compact: bool) -> Reader:
    def read(buf: bytes, pos: int) -> tuple[list[Any] | None, int]:
        if compact:
            count, pos = _uvarint(buf, pos)
            count -= 1
        else:
            (count,) = _INT32(buf, pos)
            pos += 4
        if count < 0:
            return None, pos
        items: list[Any] = []
        append = items.append
        for _ in range(count):
            value, pos = item(buf, pos)
            append(value)
        return items, pos

    return read


def _struct(schema: Schema) -> Reader:
    fields = [
        (None if name == TAGS else name, compile_reader(kind))
        for name, kind in zip(schema.names, schema.fields, strict=True)
    ]

    def read(buf: bytes, pos: int) -> tuple[dict[str, Any], int]:
        out: dict[str, Any] = {}
        for name, reader in fields:
            value, pos = reader(buf, pos)
            if name is not None:
                out[name] = value
        return out, pos

    return read


def compile_reader(kind: Any) -> Reader:
    """A reader for one aiokafka type (a primitive class, a String/Array instance, or a Schema)."""
    if isinstance(kind, Schema):
        return _struct(kind)
    if isinstance(kind, CompactArray):  # before Array: it is a subclass
        return _array(compile_reader(kind.array_of), compact=True)
    if isinstance(kind, Array):
        return _array(compile_reader(kind.array_of), compact=False)
    if isinstance(kind, CompactString):  # before String: it is a subclass
        return _compact_string
    if isinstance(kind, String):
        return _string
    reader = _PRIMITIVES.get(kind)
    if reader is None:
        raise TypeError(f"no fast reader for {kind!r}")
    return reader


def decode(reader: Reader, buf: bytes, pos: int = 0) -> dict[str, Any]:
    """Decode one message from ``buf[pos:]``; truncated or malformed input is a ValueError."""
    try:
        value, _ = reader(buf, pos)
    except (struct.error, IndexError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise ValueError(f"malformed Kafka response: {exc}") from None
    assert isinstance(value, dict)
    return value
