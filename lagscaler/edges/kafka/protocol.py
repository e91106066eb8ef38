"""The admin requests aiokafka lacks, written on aiokafka's protocol layer.

aiokafka 0.14 speaks OffsetFetch only up to v3 (one group per request), has no ListOffsets admin
call and no batched FindCoordinator (``aiokafka/admin/client.py``:
``AIOKafkaAdminClient.list_consumer_group_offsets`` takes one group). Each API here is described
once, as a function
from a version to its request and response :class:`Schema`, following the field/version tables of
Kafka's own message specs (``clients/src/main/resources/common/message/*.json``): a field exists
in a version range, strings/arrays/bytes become *compact* and every struct gains tagged fields in
flexible versions. The types (``CompactArray``, ``CompactString``, ``TaggedFields``...) and the
request/response headers are aiokafka's; so is the connection that sends them.

Responses are decoded by :mod:`lagscaler.edges.kafka.decoding` from the same schemas, with compiled
readers (aiokafka's field-by-field decoder was most of a 10,000-partition cycle).

A :class:`WireRequest` is handed to ``AIOKafkaClient.send``. Its ``prepare(versions)`` is the hook
aiokafka's connection calls with the API versions that broker advertised (ApiVersions, negotiated
per connection), so the version is chosen per broker, at send time, as the highest both sides
speak — or :class:`UnsupportedApiVersion` is raised before anything goes on the wire.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from aiokafka.protocol.api import RequestHeader_v1, RequestHeader_v2, ResponseHeader_v0, ResponseHeader_v1
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

from lagscaler.edges.kafka.decoding import TAGS, Reader, compile_reader, decode

_TAGS = TAGS

Body = dict[str, Any]


class UnsupportedApiVersion(Exception):
    """The broker speaks none of the versions of an API that we implement."""

    def __init__(self, api: str, ours: tuple[int, int], theirs: tuple[int, int] | None) -> None:
        spoken = "not at all" if theirs is None else f"v{theirs[0]}-v{theirs[1]}"
        super().__init__(f"{api}: we speak v{ours[0]}-v{ours[1]}, the broker {spoken}")
        self.api = api


class _Dialect:
    """Field types for one version: classic or flexible (KIP-482) encoding."""

    def __init__(self, flexible: bool) -> None:
        self.flexible = flexible

    def string(self) -> Any:
        return CompactString("utf-8") if self.flexible else String("utf-8")

    def bytes(self) -> Any:
        return CompactBytes if self.flexible else Bytes

    def array(self, item: Any) -> Any:
        return CompactArray(item) if self.flexible else Array(item)

    def struct(self, *fields: tuple[str, Any] | None) -> Schema:
        present = [f for f in fields if f is not None]
        if self.flexible:
            present.append((_TAGS, TaggedFields))
        return Schema(*present)


def _when(condition: bool, name: str, kind: Any) -> tuple[str, Any] | None:
    return (name, kind) if condition else None


@dataclass(frozen=True)
class Api:
    """One Kafka API: its key, the version range we implement, where it turns flexible, its schemas."""

    name: str
    key: int
    min_version: int
    max_version: int
    first_flexible: int
    schemas: Callable[[int, _Dialect], tuple[Schema, Schema]]

    def pick(self, versions: Mapping[int, tuple[int, int]], cap: int | None = None) -> int:
        """The highest version both we and the broker speak (optionally capped)."""
        theirs = versions.get(self.key)
        top = self.max_version if cap is None else min(cap, self.max_version)
        if theirs is not None:
            version = min(top, theirs[1])
            if version >= max(self.min_version, theirs[0]):
                return version
        raise UnsupportedApiVersion(self.name, (self.min_version, top), theirs)

    def schema(self, version: int) -> tuple[Schema, Schema]:
        return self.schemas(version, _Dialect(version >= self.first_flexible))


# --- the APIs -------------------------------------------------------------------------------------


def _find_coordinator(v: int, d: _Dialect) -> tuple[Schema, Schema]:
    request = d.struct(
        _when(v <= 3, "key", d.string()),
        ("key_type", Int8),
        _when(v >= 4, "coordinator_keys", d.array(d.string())),
    )
    coordinator = d.struct(
        ("key", d.string()),
        ("node_id", Int32),
        ("host", d.string()),
        ("port", Int32),
        ("error_code", Int16),
        ("error_message", d.string()),
    )
    response = d.struct(
        ("throttle_time_ms", Int32),
        _when(v <= 3, "error_code", Int16),
        _when(v <= 3, "error_message", d.string()),
        _when(v <= 3, "node_id", Int32),
        _when(v <= 3, "host", d.string()),
        _when(v <= 3, "port", Int32),
        _when(v >= 4, "coordinators", d.array(coordinator)),
    )
    return request, response


FIND_COORDINATOR = Api("FindCoordinator", 10, 1, 6, 3, _find_coordinator)


def _list_groups(v: int, d: _Dialect) -> tuple[Schema, Schema]:
    request = d.struct(
        _when(v >= 4, "states_filter", d.array(d.string())),
        _when(v >= 5, "types_filter", d.array(d.string())),
    )
    group = d.struct(
        ("group_id", d.string()),
        ("protocol_type", d.string()),
        _when(v >= 4, "group_state", d.string()),
        _when(v >= 5, "group_type", d.string()),
    )
    response = d.struct(("throttle_time_ms", Int32), ("error_code", Int16), ("groups", d.array(group)))
    return request, response


LIST_GROUPS = Api("ListGroups", 16, 1, 5, 3, _list_groups)


def _describe_groups(v: int, d: _Dialect) -> tuple[Schema, Schema]:
    request = d.struct(
        ("groups", d.array(d.string())),
        _when(v >= 3, "include_authorized_operations", Boolean),
    )
    member = d.struct(
        ("member_id", d.string()),
        _when(v >= 4, "group_instance_id", d.string()),
        ("client_id", d.string()),
        ("client_host", d.string()),
        ("member_metadata", d.bytes()),
        ("member_assignment", d.bytes()),
    )
    group = d.struct(
        ("error_code", Int16),
        _when(v >= 6, "error_message", d.string()),
        ("group_id", d.string()),
        ("group_state", d.string()),
        ("protocol_type", d.string()),
        ("protocol_data", d.string()),
        ("members", d.array(member)),
        _when(v >= 3, "authorized_operations", Int32),
    )
    response = d.struct(("throttle_time_ms", Int32), ("groups", d.array(group)))
    return request, response


DESCRIBE_GROUPS = Api("DescribeGroups", 15, 1, 6, 5, _describe_groups)


def _delete_groups(v: int, d: _Dialect) -> tuple[Schema, Schema]:
    request = d.struct(("groups_names", d.array(d.string())))
    result = d.struct(("group_id", d.string()), ("error_code", Int16))
    response = d.struct(("throttle_time_ms", Int32), ("results", d.array(result)))
    return request, response


DELETE_GROUPS = Api("DeleteGroups", 42, 0, 2, 2, _delete_groups)


def _offset_fetch(v: int, d: _Dialect) -> tuple[Schema, Schema]:
    topic_request = d.struct(("name", d.string()), ("partition_indexes", d.array(Int32)))
    group_request = d.struct(
        ("group_id", d.string()),
        _when(v >= 9, "member_id", d.string()),
        _when(v >= 9, "member_epoch", Int32),
        ("topics", d.array(topic_request)),
    )
    request = d.struct(
        _when(v <= 7, "group_id", d.string()),
        _when(v <= 7, "topics", d.array(topic_request)),
        _when(v >= 8, "groups", d.array(group_request)),
        _when(v >= 7, "require_stable", Boolean),
    )
    partition = d.struct(
        ("partition_index", Int32),
        ("committed_offset", Int64),
        _when(v >= 5, "committed_leader_epoch", Int32),
        ("metadata", d.string()),
        ("error_code", Int16),
    )
    topic = d.struct(("name", d.string()), ("partitions", d.array(partition)))
    group = d.struct(("group_id", d.string()), ("topics", d.array(topic)), ("error_code", Int16))
    response = d.struct(
        _when(v >= 3, "throttle_time_ms", Int32),
        _when(v <= 7, "topics", d.array(topic)),
        _when(2 <= v <= 7, "error_code", Int16),
        _when(v >= 8, "groups", d.array(group)),
    )
    return request, response


# v10 (topic ids) is marked unstable in Kafka 4.1 and not advertised; v8 is the first multi-group one.
OFFSET_FETCH = Api("OffsetFetch", 9, 2, 9, 6, _offset_fetch)
OFFSET_FETCH_FIRST_BATCHED = 8


def _list_offsets(v: int, d: _Dialect) -> tuple[Schema, Schema]:
    partition_request = d.struct(
        ("partition_index", Int32),
        _when(v >= 4, "current_leader_epoch", Int32),
        ("timestamp", Int64),
    )
    topic_request = d.struct(("name", d.string()), ("partitions", d.array(partition_request)))
    request = d.struct(
        ("replica_id", Int32),
        _when(v >= 2, "isolation_level", Int8),
        ("topics", d.array(topic_request)),
        _when(v >= 10, "timeout_ms", Int32),
    )
    partition = d.struct(
        ("partition_index", Int32),
        ("error_code", Int16),
        ("timestamp", Int64),
        ("offset", Int64),
        _when(v >= 4, "leader_epoch", Int32),
    )
    topic = d.struct(("name", d.string()), ("partitions", d.array(partition)))
    response = d.struct(_when(v >= 2, "throttle_time_ms", Int32), ("topics", d.array(topic)))
    return request, response


LIST_OFFSETS = Api("ListOffsets", 2, 1, 10, 6, _list_offsets)
LATEST_TIMESTAMP = -1  # ListOffsets: the high watermark (what kafka-consumer-groups calls LOG-END-OFFSET)
EARLIEST_TIMESTAMP = (
    -2
)  # ListOffsets: the log start offset (moves when retention or DeleteRecords removes records)
READ_UNCOMMITTED = 0


def _metadata(v: int, d: _Dialect) -> tuple[Schema, Schema]:
    topic_request = d.struct(("name", d.string()))
    request = d.struct(
        ("topics", d.array(topic_request)),
        ("allow_auto_topic_creation", Boolean),
        _when(8 <= v <= 10, "include_cluster_authorized_operations", Boolean),
        _when(v >= 8, "include_topic_authorized_operations", Boolean),
    )
    broker = d.struct(("node_id", Int32), ("host", d.string()), ("port", Int32), ("rack", d.string()))
    partition = d.struct(
        ("error_code", Int16),
        ("partition_index", Int32),
        ("leader_id", Int32),
        _when(v >= 7, "leader_epoch", Int32),
        ("replica_nodes", d.array(Int32)),
        ("isr_nodes", d.array(Int32)),
        _when(v >= 5, "offline_replicas", d.array(Int32)),
    )
    topic = d.struct(
        ("error_code", Int16),
        ("name", d.string()),
        ("is_internal", Boolean),
        ("partitions", d.array(partition)),
        _when(v >= 8, "topic_authorized_operations", Int32),
    )
    response = d.struct(
        ("throttle_time_ms", Int32),
        ("brokers", d.array(broker)),
        ("cluster_id", d.string()),
        ("controller_id", Int32),
        ("topics", d.array(topic)),
        _when(8 <= v <= 10, "cluster_authorized_operations", Int32),
    )
    return request, response


# Metadata v10+ adds topic ids (a uuid type aiokafka's layer lacks); v9 is flexible and enough here.
METADATA = Api("Metadata", 3, 4, 9, 9, _metadata)


# --- encoding -------------------------------------------------------------------------------------


def _to_wire(schema: Schema, body: Mapping[str, Any]) -> list[Any]:
    values: list[Any] = []
    for name, kind in zip(schema.names, schema.fields, strict=True):
        if name == _TAGS:
            values.append({})
            continue
        value = body[name]
        if isinstance(kind, Schema):
            values.append(_to_wire(kind, value))
        elif isinstance(kind, Array) and isinstance(kind.array_of, Schema) and value is not None:
            values.append([_to_wire(kind.array_of, item) for item in value])
        else:
            values.append(value)
    return values


@dataclass(frozen=True)
class Response:
    """A decoded response: its API, the version the broker answered with, and the fields by name."""

    api: Api
    version: int
    body: Body


class _ResponseDecoder:
    """What aiokafka's connection calls ``RESPONSE_TYPE.decode`` on (with the header already read)."""

    def __init__(self, api: Api, version: int, schema: Schema) -> None:
        self._api, self._version = api, version
        self._reader = _reader(api.key, version, schema)

    def decode(self, data: BytesIO | bytes) -> Response:
        if isinstance(data, bytes):
            buffer, position = data, 0
        else:
            buffer, position = data.getvalue(), data.tell()
        return Response(self._api, self._version, decode(self._reader, buffer, position))


_READERS: dict[tuple[int, int], Reader] = {}


def _reader(key: int, version: int, schema: Schema) -> Reader:
    """Compiled once per API version: schemas are built per request, readers are not."""
    reader = _READERS.get((key, version))
    if reader is None:
        reader = _READERS[(key, version)] = compile_reader(schema)
    return reader


class _PreparedRequest:
    """One request at one version, shaped like aiokafka's ``RequestStruct``."""

    def __init__(
        self, api: Api, version: int, body: Mapping[str, Any] | None, encoded: bytes | None = None
    ) -> None:
        request_schema, response_schema = api.schema(version)
        self.API_KEY = api.key
        self.API_VERSION = version
        self.FLEXIBLE_VERSION = version >= api.first_flexible
        self.RESPONSE_TYPE = _ResponseDecoder(api, version, response_schema)
        self._name = api.name
        if encoded is None:
            assert body is not None
            encoded = bytes(request_schema.encode(_to_wire(request_schema, body)))
        self._encoded = encoded

    def encode(self) -> bytes:
        return self._encoded

    def build_request_header(self, correlation_id: int, client_id: str) -> Any:
        header = RequestHeader_v2 if self.FLEXIBLE_VERSION else RequestHeader_v1
        return header(self, correlation_id=correlation_id, client_id=client_id)

    def parse_response_header(self, read_buffer: BytesIO | bytes) -> Any:
        header = ResponseHeader_v1 if self.FLEXIBLE_VERSION else ResponseHeader_v0
        return header.decode(read_buffer)

    def __repr__(self) -> str:
        return f"{self._name}Request_v{self.API_VERSION}"


class WireRequest:
    """A request whose version is chosen when aiokafka's connection prepares it for a broker.

    ``body`` builds the request fields for the chosen version (fields a version lacks are ignored,
    so one builder serves every version). ``chosen`` records the version actually sent.

    ``encoded`` is an optional cache (version → bytes) owned by the caller: a request sent every
    cycle with the same content (ListOffsets for the same 10,000 partitions) is encoded once.
    """

    def __init__(
        self,
        api: Api,
        body: Callable[[int], Mapping[str, Any]],
        *,
        min_version: int | None = None,
        cap: int | None = None,
        encoded: dict[int, bytes] | None = None,
    ) -> None:
        self.api = api
        self._body = body
        self._min = min_version
        self._cap = cap
        self._encoded = encoded
        self.chosen: int | None = None

    def prepare(self, versions: Mapping[int, tuple[int, int]]) -> _PreparedRequest:
        version = self.api.pick(versions, self._cap)
        if self._min is not None and version < self._min:
            raise UnsupportedApiVersion(
                self.api.name, (self._min, self.api.max_version), versions.get(self.api.key)
            )
        self.chosen = version
        if self._encoded is None:
            return _PreparedRequest(self.api, version, self._body(version))
        cached = self._encoded.get(version)
        prepared = _PreparedRequest(self.api, version, None if cached else self._body(version), cached)
        self._encoded[version] = prepared.encode()
        return prepared

    def __repr__(self) -> str:
        return f"WireRequest({self.api.name})"


__all__ = [
    "DELETE_GROUPS",
    "DESCRIBE_GROUPS",
    "EARLIEST_TIMESTAMP",
    "FIND_COORDINATOR",
    "LATEST_TIMESTAMP",
    "LIST_GROUPS",
    "LIST_OFFSETS",
    "METADATA",
    "OFFSET_FETCH",
    "OFFSET_FETCH_FIRST_BATCHED",
    "READ_UNCOMMITTED",
    "Api",
    "Body",
    "Response",
    "UnsupportedApiVersion",
    "WireRequest",
]
