"""Batched admin requests for lag sampling, on top of aiokafka's client and connections.

Cost is the point: a cycle over hundreds of groups must cost a handful of requests, not one per
group. So committed offsets for every group a coordinator owns go in one OffsetFetch (v8+,
KIP-709), group descriptions in one DescribeGroups per coordinator, end offsets in one ListOffsets
per partition leader, and unknown coordinators are found with one batched FindCoordinator (v4+).
Older brokers get the per-group/per-key versions of the same requests automatically.

Errors are handled where they can be: NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS /
COORDINATOR_NOT_AVAILABLE (and an unreachable coordinator) forget the cached coordinator, find it
again and retry just those groups; a moved or missing partition leader refreshes metadata and
retries just those partitions. Group-level error codes are read and reported per group — unlike
aiokafka's ``list_consumer_group_offsets``, which ignores them and returns an empty result.
Everything else is returned per group / per partition, or raised as a one-line :class:`KafkaError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError as AIOKafkaError
from aiokafka.errors import NodeNotReadyError, RequestTimedOutError
from aiokafka.protocol.group import MemberAssignment

from lagscaler.edges.kafka import errors as codes
from lagscaler.edges.kafka.errors import KafkaRequestFailed, KafkaUnavailable, error_name
from lagscaler.edges.kafka.protocol import (
    DELETE_GROUPS,
    DESCRIBE_GROUPS,
    EARLIEST_TIMESTAMP,
    FIND_COORDINATOR,
    LATEST_TIMESTAMP,
    LIST_GROUPS,
    LIST_OFFSETS,
    METADATA,
    OFFSET_FETCH,
    OFFSET_FETCH_FIRST_BATCHED,
    READ_UNCOMMITTED,
    Api,
    Body,
    Response,
    UnsupportedApiVersion,
    WireRequest,
)
from lagscaler.edges.kafka.settings import KafkaSettings
from lagscaler.edges.kafka.stats import RequestStats

T = TypeVar("T")
TopicPartition = tuple[str, int]

GROUP_KEY_TYPE = 0
CONSUMER_PROTOCOL = "consumer"


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListedGroup:
    """One group as ListGroups reports it. ``state``/``group_type`` need ListGroups v4/v5."""

    group_id: str
    protocol_type: str
    state: str | None = None
    group_type: str | None = None

    @property
    def is_consumer_group(self) -> bool:
        """Consumer groups (classic or KIP-848) — what ``kafka-consumer-groups --all-groups`` lists.

        An empty protocol type is a group that only ever committed offsets (no member joined).
        """
        return self.protocol_type in (CONSUMER_PROTOCOL, "") and self.group_type in (
            None,
            "classic",
            "consumer",
        )


@dataclass(frozen=True, slots=True)
class GroupMember:
    member_id: str
    client_id: str
    client_host: str
    group_instance_id: str | None = None
    assignment: tuple[TopicPartition, ...] = ()


@dataclass(frozen=True, slots=True)
class GroupDescription:
    """DescribeGroups' view of a group. ``found`` is false for a group the coordinator does not know."""

    group_id: str
    state: str
    protocol_type: str
    protocol: str
    members: tuple[GroupMember, ...] = ()
    found: bool = True

    def owners(self) -> dict[TopicPartition, GroupMember]:
        """Which member holds each partition, from the consumer protocol assignments."""
        return {tp: m for m in self.members for tp in m.assignment}


@dataclass(frozen=True, slots=True)
class CommittedOffsets:
    """A group's committed offsets (partitions without a commit are absent)."""

    group_id: str
    offsets: Mapping[TopicPartition, int]
    partition_errors: Mapping[TopicPartition, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GroupResults(Generic[T]):
    """Per-group outcome of a coordinator-routed request: a value, or an error that retrying did not fix."""

    values: dict[str, T] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Broker:
    node_id: int
    host: str
    port: int


@dataclass(frozen=True)
class ClusterLayout:
    """Metadata for the topics asked about: partition → leader (−1: none), and what is missing."""

    brokers: Mapping[int, Broker]
    topics: Mapping[str, Mapping[int, int]]
    missing: frozenset[str] = frozenset()  # UNKNOWN_TOPIC_OR_PARTITION: deleted, or never existed
    unavailable: Mapping[str, str] = field(default_factory=dict)  # topic → error name

    def partitions(self, topics: Iterable[str] | None = None) -> Iterator[TopicPartition]:
        for topic in self.topics if topics is None else topics:
            for partition in sorted(self.topics.get(topic, ())):
                yield topic, partition


@dataclass(frozen=True)
class EndOffsets:
    """High watermarks by partition; ``missing`` partitions no longer exist, ``errors`` could not be read."""

    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    missing: set[TopicPartition] = field(default_factory=set)
    errors: dict[TopicPartition, str] = field(default_factory=dict)


class _Retry:
    """A per-group outcome meaning: the coordinator moved or is loading; find it again."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def decode_assignment(data: bytes | None) -> tuple[TopicPartition, ...]:
    """A consumer-protocol member assignment (version, [topic, [partition]], user data) → partitions.

    Versions 0-3 share this prefix; later fields are ignored. Undecodable data (another protocol
    under the "consumer" name) yields no partitions rather than an error.
    """
    if not data:
        return ()
    try:
        decoded = MemberAssignment.decode(data)
    except (ValueError, EOFError, TypeError):
        return ()
    return tuple((topic, int(p)) for topic, partitions in decoded.assignment or () for p in partitions)


def _chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


@contextlib.contextmanager
def capture_client_errors() -> Iterator[list[str]]:
    """aiokafka logs why a connection failed (TLS, SASL, refused) but raises a generic error.

    Collect its warnings while bootstrapping so the one-line error can say what actually went wrong.
    """
    seen: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = _Collect(level=logging.WARNING)
    logger = logging.getLogger("aiokafka")
    level = logger.level
    if logger.getEffectiveLevel() > logging.WARNING:  # quieted (the CLI does): still create the records
        logger.setLevel(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _route_by_leader(
    partitions: Iterable[TopicPartition], layout: ClusterLayout
) -> tuple[dict[int, list[TopicPartition]], dict[TopicPartition, str], set[TopicPartition]]:
    """Group partitions by their leader in ``layout``, for one ListOffsets per leader.

    Returns the partitions by leader; those to retry after a metadata refresh, with the reason
    (no leader elected yet, or no metadata for their topic); and those that do not exist (the
    topic is gone, or has fewer partitions), which are reported rather than retried.
    """
    by_leader: dict[int, list[TopicPartition]] = defaultdict(list)
    waiting: dict[TopicPartition, str] = {}
    missing: set[TopicPartition] = set()
    for tp in partitions:
        topic, partition = tp
        leader = layout.topics.get(topic, {}).get(partition)
        if leader is None:
            if topic in layout.missing or topic in layout.topics:
                missing.add(tp)
            else:
                waiting[tp] = layout.unavailable.get(topic, "no metadata")
        elif leader < 0:
            waiting[tp] = "LEADER_NOT_AVAILABLE"
        else:
            by_leader[leader].append(tp)
    return by_leader, waiting, missing


# --- the admin ----------------------------------------------------------------------------------


class KafkaAdmin:
    """The batched admin calls the sampler needs, with request counting and bounded concurrency.

    Use as ``async with KafkaAdmin(settings) as admin:``. ``concurrency`` bounds requests in
    flight; each request is bounded by ``settings.request_timeout``. ``version_caps`` limits the
    version used per API name (for interop with brokers that misbehave at a version, and to test the
    pre-KIP-709 path against a current broker).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        concurrency: int = 8,
        retries: int = 4,
        retry_backoff: float = 0.1,
        max_groups_per_request: int = 500,
        stats: RequestStats | None = None,
        version_caps: Mapping[str, int] | None = None,
    ) -> None:
        if concurrency < 1 or retries < 0 or max_groups_per_request < 1:
            raise ValueError("concurrency and max_groups_per_request must be ≥ 1, retries ≥ 0")
        self.settings = settings
        self.stats = stats or RequestStats()
        self._concurrency = concurrency
        self._retries = retries
        self._backoff = retry_backoff
        self._chunk = max_groups_per_request
        self._caps = dict(version_caps or {})
        self._client: Any = None
        self._slots: asyncio.Semaphore | None = None
        self._coordinators: dict[str, int] = {}
        self._unbatched_nodes: set[int] = set()  # brokers without OffsetFetch v8
        # (leader, ListOffsets timestamp) → (partitions asked, encoded request by version)
        self._encoded_offsets: dict[tuple[int, int], tuple[tuple[TopicPartition, ...], dict[int, bytes]]] = {}

    # -- lifetime ------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._client is not None

    async def start(self) -> None:
        """Connect to a bootstrap server and learn the brokers; :class:`KafkaUnavailable` if none answers."""
        if self._client is not None:
            return
        options = self.settings.client_options()
        client = AIOKafkaClient(**options)
        self.stats.sent("Metadata")  # bootstrap asks for the broker list
        try:
            with capture_client_errors() as seen:
                async with asyncio.timeout(self.settings.request_timeout * len(self.settings.bootstrap) + 1):
                    await client.bootstrap()
        except asyncio.CancelledError:  # the cycle's deadline: no answer came
            self.stats.failed("Metadata")
            await client.close()
            raise
        except (AIOKafkaError, OSError, TimeoutError) as exc:
            self.stats.failed("Metadata")
            await client.close()
            reason = seen[-1] if seen else (str(exc) or type(exc).__name__)
            if isinstance(exc, TimeoutError):
                reason = f"no answer within {self.settings.request_timeout:g}s"
            raise KafkaUnavailable(
                f"cannot reach Kafka at {','.join(self.settings.bootstrap)}: {reason}"
            ) from None
        self.stats.answered("Metadata")
        self._client = client
        self._slots = asyncio.Semaphore(self._concurrency)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def __aenter__(self) -> KafkaAdmin:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- sending -------------------------------------------------------------------------------

    def _request(
        self,
        api: Api,
        body: Callable[[int], Mapping[str, Any]],
        *,
        min_version: int | None = None,
        cap: int | None = None,
        encoded: dict[int, bytes] | None = None,
    ) -> WireRequest:
        caps = [c for c in (cap, self._caps.get(api.name)) if c is not None]
        limit = min(caps) if caps else None
        return WireRequest(api, body, min_version=min_version, cap=limit, encoded=encoded)

    def broker_ids(self) -> list[int]:
        if self._client is None:
            raise KafkaUnavailable("the Kafka admin is not started")
        return sorted(b.nodeId for b in self._client.cluster.brokers())

    async def send(self, node_id: int, request: WireRequest) -> Response:
        """Send one request to one broker, counted and bounded; connection trouble → KafkaUnavailable."""
        if self._client is None or self._slots is None:
            raise KafkaUnavailable("the Kafka admin is not started")
        name = request.api.name
        async with self._slots:
            self.stats.sent(name)  # counted once it leaves the queue, so each one gets an outcome
            try:
                async with asyncio.timeout(self.settings.request_timeout + 1):
                    response = await self._client.send(node_id, request)
            except UnsupportedApiVersion:
                self.stats.requests[name] -= 1  # refused before anything went on the wire
                raise
            except asyncio.CancelledError:  # the cycle's deadline: no answer came
                self.stats.failed(name)
                raise
            except (AIOKafkaError, OSError, TimeoutError) as exc:
                self.stats.failed(name)
                where = f"Kafka broker {node_id} ({self._address(node_id)})"
                if isinstance(exc, NodeNotReadyError):
                    message = f"cannot connect to {where}"
                elif isinstance(exc, TimeoutError | RequestTimedOutError):
                    message = f"{where} did not answer {name} within {self.settings.request_timeout:g}s"
                else:
                    message = f"{where} failed during {name}: {str(exc) or type(exc).__name__}"
                raise KafkaUnavailable(message) from None
            self.stats.answered(name)
        assert isinstance(response, Response)
        return response

    def _address(self, node_id: int) -> str:
        broker = self._client.cluster.broker_metadata(node_id) if self._client is not None else None
        return "unknown address" if broker is None else f"{broker.host}:{broker.port}"

    async def _send_any(self, request_factory: Callable[[], WireRequest]) -> Response:
        """Send to any broker, trying the next one if a broker does not answer."""
        nodes = self.broker_ids()
        random.shuffle(nodes)
        last: KafkaUnavailable | None = None
        for node in nodes:
            try:
                return await self.send(node, request_factory())
            except KafkaUnavailable as exc:
                last = exc
        raise last or KafkaUnavailable("no Kafka broker is known")

    async def _ensure_known(self, node_ids: Iterable[int]) -> None:
        """Make sure aiokafka knows how to reach these brokers (a new broker appeared in metadata)."""
        assert self._client is not None
        if any(self._client.cluster.broker_metadata(n) is None for n in node_ids if n >= 0):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.request_timeout):
                    await self._client.force_metadata_update()

    async def _pause(self, attempt: int) -> None:
        await asyncio.sleep(min(self._backoff * 2**attempt, 1.0))

    # -- groups --------------------------------------------------------------------------------

    async def list_groups(self) -> list[ListedGroup]:
        """ListGroups on every broker (each lists the groups it coordinates)."""

        async def one(node: int) -> list[ListedGroup]:
            for attempt in range(self._retries + 1):
                request = self._request(LIST_GROUPS, lambda v: {"states_filter": [], "types_filter": []})
                response = await self.send(node, request)
                code = response.body["error_code"]
                if code == codes.NONE:
                    return [
                        ListedGroup(
                            g["group_id"], g["protocol_type"] or "", g.get("group_state"), g.get("group_type")
                        )
                        for g in response.body["groups"]
                    ]
                if code not in codes.COORDINATOR_RETRIABLE:
                    raise KafkaRequestFailed(f"broker {node} refused to list groups: {error_name(code)}")
                await self._pause(attempt)
            raise KafkaUnavailable(f"broker {node} could not list groups: {error_name(code)}")

        listed = await asyncio.gather(*(one(n) for n in self.broker_ids()))
        unique: dict[str, ListedGroup] = {}
        for groups in listed:
            for g in groups:
                unique.setdefault(g.group_id, g)
        return sorted(unique.values(), key=lambda g: g.group_id)

    def forget_coordinator(self, group: str) -> None:
        self._coordinators.pop(group, None)

    def cached_coordinator(self, group: str) -> int | None:
        return self._coordinators.get(group)

    def pin_coordinator(self, group: str, node_id: int) -> None:
        """Set the cached coordinator (a stale cache entry is how a coordinator move looks to us)."""
        self._coordinators[group] = node_id

    async def find_coordinators(self, groups: Collection[str]) -> GroupResults[int]:
        """Coordinator node per group, from the cache or one batched FindCoordinator (v4+)."""
        result: GroupResults[int] = GroupResults()
        pending = [g for g in dict.fromkeys(groups) if g not in self._coordinators]
        result.values.update({g: self._coordinators[g] for g in groups if g in self._coordinators})
        reasons: dict[str, str] = {}
        for attempt in range(self._retries + 1):
            if not pending:
                break
            if attempt:
                await self._pause(attempt)
            found: dict[str, tuple[int, int]] = {}  # group → (node, error code)
            for chunk in _chunks(pending, self._chunk):
                found.update(await self._find_batch(chunk))
            retry: list[str] = []
            for group in pending:
                node, code = found.get(group, (-1, codes.COORDINATOR_NOT_AVAILABLE))
                if code == codes.NONE:
                    self._coordinators[group] = node
                    result.values[group] = node
                elif code in codes.COORDINATOR_RETRIABLE:
                    retry.append(group)
                    reasons[group] = error_name(code)
                    self.stats.retried("FindCoordinator", error_name(code))
                else:
                    result.errors[group] = f"cannot find the coordinator of group {group}: {error_name(code)}"
            pending = retry
        for group in pending:
            result.errors[group] = f"no coordinator for group {group}: {reasons.get(group, 'unknown')}"
        await self._ensure_known(result.values.values())
        return result

    async def _find_batch(self, keys: list[str]) -> dict[str, tuple[int, int]]:
        """One FindCoordinator v4+ for many keys; per-key requests for brokers before Kafka 2.8."""

        def batched() -> WireRequest:
            return self._request(
                FIND_COORDINATOR,
                lambda v: {"key_type": GROUP_KEY_TYPE, "coordinator_keys": keys},
                min_version=4,
            )

        try:
            response = await self._send_any(batched)
        except UnsupportedApiVersion:
            found: dict[str, tuple[int, int]] = {}
            for key in keys:

                def single(key: str = key) -> WireRequest:
                    return self._request(
                        FIND_COORDINATOR, lambda v: {"key": key, "key_type": GROUP_KEY_TYPE}, cap=3
                    )

                body = (await self._send_any(single)).body
                found[key] = (body["node_id"], body["error_code"])
            return found
        return {c["key"]: (c["node_id"], c["error_code"]) for c in response.body["coordinators"]}

    async def _by_coordinator(
        self,
        groups: Collection[str],
        call: Callable[[int, list[str]], Awaitable[dict[str, T | _Retry | str]]],
        what: str,
    ) -> GroupResults[T]:
        """Route groups to their coordinators, one batched call each; re-resolve and retry moved groups.

        ``call`` returns, per group, a value, a :class:`_Retry` (the coordinator moved or is
        loading), or an error string. A coordinator that does not answer counts as moved.
        """
        result: GroupResults[T] = GroupResults()
        pending = list(dict.fromkeys(groups))
        reasons: dict[str, str] = {}
        for attempt in range(self._retries + 1):
            if not pending:
                break
            if attempt:
                await self._pause(attempt)
            batches = await self._coordinator_batches(pending, result)
            outcomes = await asyncio.gather(
                *(call(node, chunk) for node, chunk in batches), return_exceptions=True
            )
            retry: list[str] = []
            for (_node, chunk), outcome in zip(batches, outcomes, strict=True):
                retry.extend(self._sort_group_outcomes(chunk, outcome, what, result, reasons))
            pending = retry
        if pending and not result.values and len(pending) == len(set(groups)):
            raise KafkaUnavailable(f"{what}: no coordinator answered ({reasons[pending[0]]})")
        for group in pending:
            result.errors[group] = f"{what} for group {group} failed: {reasons[group]}"
        return result

    async def _coordinator_batches(
        self, groups: list[str], result: GroupResults[T]
    ) -> list[tuple[int, list[str]]]:
        """Split ``groups`` into (coordinator, chunk) batches, one request each.

        Groups whose coordinator cannot be found get their error in ``result`` and no batch: there
        is nobody to ask. Chunks keep each request under ``max_groups_per_request``.
        """
        coordinators = await self.find_coordinators(groups)
        result.errors.update(coordinators.errors)
        by_node: dict[int, list[str]] = defaultdict(list)
        for group in groups:
            if group in coordinators.values:
                by_node[coordinators.values[group]].append(group)
        return [(node, chunk) for node, gs in by_node.items() for chunk in _chunks(gs, self._chunk)]

    def _sort_group_outcomes(
        self,
        chunk: list[str],
        outcome: Mapping[str, T | _Retry | str] | BaseException,
        what: str,
        result: GroupResults[T],
        reasons: dict[str, str],
    ) -> list[str]:
        """File one batch's answer into ``result``; return the groups to ask again.

        A coordinator that did not answer, or answered that it moved or is loading, is forgotten so
        the next attempt finds the current one; ``reasons`` keeps why, for the error if retries run
        out. Any other exception is a bug or a refusal, not a moved coordinator, so it propagates.
        """
        if isinstance(outcome, KafkaUnavailable):
            for group in chunk:
                self.forget_coordinator(group)
                reasons[group] = str(outcome)
            self.stats.retried(what, "COORDINATOR_UNREACHABLE", len(chunk))
            return list(chunk)
        if isinstance(outcome, BaseException):
            raise outcome
        retry: list[str] = []
        for group in chunk:
            value = outcome.get(group, _Retry("missing from the response"))
            if isinstance(value, _Retry):
                self.forget_coordinator(group)
                reasons[group] = value.reason
                retry.append(group)
                self.stats.retried(what, value.reason)
            elif isinstance(value, str):
                result.errors[group] = value
            else:
                result.values[group] = value
        return retry

    async def describe_groups(self, groups: Collection[str]) -> GroupResults[GroupDescription]:
        """State, protocol and members (assignments decoded) per group: one DescribeGroups per coordinator."""

        async def call(node: int, chunk: list[str]) -> dict[str, GroupDescription | _Retry | str]:
            request = self._request(
                DESCRIBE_GROUPS, lambda v: {"groups": chunk, "include_authorized_operations": False}
            )
            response = await self.send(node, request)
            out: dict[str, GroupDescription | _Retry | str] = {}
            for g in response.body["groups"]:
                code = g["error_code"]
                if code in codes.COORDINATOR_RETRIABLE:
                    out[g["group_id"]] = _Retry(error_name(code))
                elif code == codes.GROUP_ID_NOT_FOUND:
                    out[g["group_id"]] = GroupDescription(g["group_id"], "Dead", "", "", found=False)
                elif code != codes.NONE:
                    message = g.get("error_message") or error_name(code)
                    out[g["group_id"]] = f"cannot describe group {g['group_id']}: {message}"
                else:
                    out[g["group_id"]] = _description(g)
            return out

        return await self._by_coordinator(groups, call, "DescribeGroups")

    async def fetch_committed(self, groups: Collection[str]) -> GroupResults[CommittedOffsets]:
        """Committed offsets of every partition per group: one OffsetFetch v8+ per coordinator (KIP-709).

        Brokers without v8 (before Kafka 3.0) get one OffsetFetch per group instead.
        """

        async def batched(node: int, chunk: list[str]) -> dict[str, CommittedOffsets | _Retry | str]:
            request = self._request(
                OFFSET_FETCH,
                lambda v: {
                    "groups": [
                        {"group_id": g, "member_id": None, "member_epoch": -1, "topics": None} for g in chunk
                    ],
                    "require_stable": False,
                },
                min_version=OFFSET_FETCH_FIRST_BATCHED,
            )
            response = await self.send(node, request)
            return {
                g["group_id"]: _offsets(g["group_id"], g["error_code"], g["topics"])
                for g in response.body["groups"]
            }

        async def single(node: int, group: str) -> CommittedOffsets | _Retry | str:
            request = self._request(
                OFFSET_FETCH,
                lambda v: {"group_id": group, "topics": None, "require_stable": False},
                cap=OFFSET_FETCH_FIRST_BATCHED - 1,
            )
            response = await self.send(node, request)
            return _offsets(group, response.body["error_code"], response.body["topics"])

        async def call(node: int, chunk: list[str]) -> dict[str, CommittedOffsets | _Retry | str]:
            if node not in self._unbatched_nodes:
                try:
                    return await batched(node, chunk)
                except UnsupportedApiVersion:
                    self._unbatched_nodes.add(node)
            singles = await asyncio.gather(*(single(node, g) for g in chunk))
            return dict(zip(chunk, singles, strict=True))

        return await self._by_coordinator(groups, call, "OffsetFetch")

    async def delete_groups(self, groups: Collection[str]) -> GroupResults[bool]:
        """Delete groups (they must have no members): one DeleteGroups per coordinator.

        Not used by sampling; the demo, tests and benchmarks use it to clean up what they seeded.
        """

        async def call(node: int, chunk: list[str]) -> dict[str, bool | _Retry | str]:
            response = await self.send(node, self._request(DELETE_GROUPS, lambda v: {"groups_names": chunk}))
            out: dict[str, bool | _Retry | str] = {}
            for r in response.body["results"]:
                code = r["error_code"]
                if code in codes.COORDINATOR_RETRIABLE:
                    out[r["group_id"]] = _Retry(error_name(code))
                elif code in (codes.NONE, codes.GROUP_ID_NOT_FOUND):
                    out[r["group_id"]] = code == codes.NONE
                else:
                    out[r["group_id"]] = f"cannot delete group {r['group_id']}: {error_name(code)}"
            return out

        return await self._by_coordinator(groups, call, "DeleteGroups")

    # -- topics and offsets --------------------------------------------------------------------

    async def metadata(self, topics: Collection[str] | None) -> ClusterLayout:
        """Partitions and leaders of ``topics`` (``None``: all topics) in one Metadata request."""
        wanted = None if topics is None else sorted(set(topics))
        response = await self._send_any(
            lambda: self._request(
                METADATA,
                lambda v: {
                    "topics": None if wanted is None else [{"name": t} for t in wanted],
                    "allow_auto_topic_creation": False,
                    "include_cluster_authorized_operations": False,
                    "include_topic_authorized_operations": False,
                },
            )
        )
        body = response.body
        brokers = {b["node_id"]: Broker(b["node_id"], b["host"], b["port"]) for b in body["brokers"]}
        layout: dict[str, dict[int, int]] = {}
        missing: set[str] = set()
        unavailable: dict[str, str] = {}
        for t in body["topics"]:
            code = t["error_code"]
            if code == codes.NONE:
                layout[t["name"]] = {
                    p["partition_index"]: (p["leader_id"] if p["error_code"] == codes.NONE else -1)
                    for p in t["partitions"]
                }
            elif code == codes.UNKNOWN_TOPIC_OR_PARTITION:
                missing.add(t["name"])
            else:
                unavailable[t["name"]] = error_name(code)
        await self._ensure_known(brokers)
        return ClusterLayout(brokers, layout, frozenset(missing), unavailable)

    async def list_end_offsets(
        self, partitions: Iterable[TopicPartition], layout: ClusterLayout
    ) -> EndOffsets:
        """Latest offsets (high watermarks, read_uncommitted): one ListOffsets per partition leader.

        Partitions whose leader moved are retried after a metadata refresh; partitions of deleted
        topics end up in ``missing``; what still fails ends up in ``errors``.
        """
        return await self._list_offsets_at(partitions, layout, LATEST_TIMESTAMP)

    async def list_start_offsets(
        self, partitions: Iterable[TopicPartition], layout: ClusterLayout
    ) -> EndOffsets:
        """Log start offsets (the first offset still stored): one ListOffsets per partition leader.

        A separate request from :meth:`list_end_offsets` because a broker answers a partition
        asked twice in one ListOffsets with INVALID_REQUEST (Kafka 4.1 ``KafkaApis.handleListOffsetRequest``,
        ``duplicatePartitions``). Same retries and result shape as :meth:`list_end_offsets`.
        """
        return await self._list_offsets_at(partitions, layout, EARLIEST_TIMESTAMP)

    async def _list_offsets_at(
        self, partitions: Iterable[TopicPartition], layout: ClusterLayout, timestamp: int
    ) -> EndOffsets:
        result = EndOffsets()
        pending = list(dict.fromkeys(partitions))
        reasons: dict[TopicPartition, str] = {}
        unreachable: set[TopicPartition] = set()  # the leader did not answer (last attempt)
        for attempt in range(self._retries + 1):
            if not pending:
                break
            if attempt:
                await self._pause(attempt)
                layout = await self.metadata({t for t, _ in pending})
            by_leader, waiting, missing = _route_by_leader(pending, layout)
            result.missing.update(missing)
            reasons.update(waiting)
            retry, unreachable = await self._ask_leaders(by_leader, result, reasons, timestamp)
            pending = [*waiting, *retry]
        if pending and not result.offsets and unreachable.issuperset(pending):
            raise KafkaUnavailable(f"ListOffsets: no partition leader answered ({reasons[pending[0]]})")
        for tp in pending:
            result.errors[tp] = reasons[tp]
        return result

    async def _ask_leaders(
        self,
        by_leader: Mapping[int, list[TopicPartition]],
        result: EndOffsets,
        reasons: dict[TopicPartition, str],
        timestamp: int,
    ) -> tuple[list[TopicPartition], set[TopicPartition]]:
        """One ListOffsets per leader, all at once; file the answers into ``result``.

        Returns the partitions to ask again and, separately, those whose leader did not answer:
        when every partition left is of that kind, Kafka itself is unreachable rather than a
        partition being in trouble, and the caller raises instead of reporting per partition.
        """
        leaders = list(by_leader)
        outcomes = await asyncio.gather(
            *(self._list_offsets(node, by_leader[node], timestamp) for node in leaders),
            return_exceptions=True,
        )
        retry: list[TopicPartition] = []
        unreachable: set[TopicPartition] = set()
        for node, outcome in zip(leaders, outcomes, strict=True):
            asked = by_leader[node]
            if isinstance(outcome, KafkaUnavailable):
                for tp in asked:
                    reasons[tp] = str(outcome)
                unreachable.update(asked)
                retry.extend(asked)
                self.stats.retried("ListOffsets", "LEADER_UNREACHABLE", len(asked))
                continue
            if isinstance(outcome, BaseException):
                raise outcome
            retry.extend(self._sort_end_offsets(asked, outcome, result, reasons))
        return retry, unreachable

    def _sort_end_offsets(
        self,
        asked: list[TopicPartition],
        answer: Mapping[TopicPartition, tuple[int, int]],
        result: EndOffsets,
        reasons: dict[TopicPartition, str],
    ) -> list[TopicPartition]:
        """File one leader's ListOffsets answer into ``result``; return the partitions to ask again.

        A moved leader (or one missing from the answer) is retried after a metadata refresh; a
        partition the broker does not know is reported missing, not failed, because its topic was
        deleted or shrunk; any other code is final for this cycle.
        """
        retry: list[TopicPartition] = []
        for tp, (code, offset) in answer.items():
            if code == codes.NONE:
                result.offsets[tp] = offset
            elif code == codes.UNKNOWN_TOPIC_OR_PARTITION:
                result.missing.add(tp)
            elif code in codes.LEADER_RETRIABLE:
                reasons[tp] = error_name(code)
                retry.append(tp)
                self.stats.retried("ListOffsets", error_name(code))
            else:
                result.errors[tp] = error_name(code)
        for tp in asked:
            if tp not in answer:
                reasons[tp] = "missing from the response"
                retry.append(tp)
        return retry

    async def _list_offsets(
        self, node: int, partitions: list[TopicPartition], timestamp: int
    ) -> dict[TopicPartition, tuple[int, int]]:
        by_topic: dict[str, list[int]] = defaultdict(list)
        for topic, partition in partitions:
            by_topic[topic].append(partition)
        timeout_ms = int(self.settings.request_timeout * 1000)

        def body(version: int) -> Body:
            return {
                "replica_id": -1,
                "isolation_level": READ_UNCOMMITTED,
                "timeout_ms": timeout_ms,
                "topics": [
                    {
                        "name": topic,
                        "partitions": [
                            {"partition_index": p, "current_leader_epoch": -1, "timestamp": timestamp}
                            for p in ps
                        ],
                    }
                    for topic, ps in by_topic.items()
                ],
            }

        # The same partitions are asked for every cycle: encode that request once per leader.
        key = tuple(partitions)
        cached = self._encoded_offsets.get((node, timestamp))
        if cached is None or cached[0] != key:
            cached = (key, {})
            self._encoded_offsets[(node, timestamp)] = cached
        response = await self.send(node, self._request(LIST_OFFSETS, body, encoded=cached[1]))
        return {
            (t["name"], p["partition_index"]): (p["error_code"], p["offset"])
            for t in response.body["topics"]
            for p in t["partitions"]
        }


def _description(g: Body) -> GroupDescription:
    consumer = g["protocol_type"] == CONSUMER_PROTOCOL
    members = tuple(
        GroupMember(
            member_id=m["member_id"],
            client_id=m["client_id"],
            client_host=m["client_host"],
            group_instance_id=m.get("group_instance_id"),
            assignment=decode_assignment(m["member_assignment"]) if consumer else (),
        )
        for m in g["members"]
    )
    return GroupDescription(
        group_id=g["group_id"],
        state=g["group_state"],
        protocol_type=g["protocol_type"],
        protocol=g["protocol_data"],
        members=members,
        found=g["group_state"] != "Dead",
    )


def _offsets(group: str, code: int, topics: list[Body] | None) -> CommittedOffsets | _Retry | str:
    if code in codes.COORDINATOR_RETRIABLE:
        return _Retry(error_name(code))
    if code == codes.GROUP_ID_NOT_FOUND:
        return CommittedOffsets(group, {})
    if code != codes.NONE:
        return f"cannot fetch committed offsets of group {group}: {error_name(code)}"
    offsets: dict[TopicPartition, int] = {}
    errors: dict[TopicPartition, str] = {}
    for t in topics or ():
        for p in t["partitions"]:
            tp = (t["name"], p["partition_index"])
            if p["error_code"] in codes.COORDINATOR_RETRIABLE:
                return _Retry(error_name(p["error_code"]))
            if p["error_code"] != codes.NONE:
                if p["error_code"] != codes.UNKNOWN_TOPIC_OR_PARTITION:
                    errors[tp] = error_name(p["error_code"])
            elif p["committed_offset"] >= 0:
                offsets[tp] = p["committed_offset"]
    return CommittedOffsets(group, offsets, errors)


__all__ = [
    "Broker",
    "ClusterLayout",
    "CommittedOffsets",
    "EndOffsets",
    "GroupDescription",
    "GroupMember",
    "GroupResults",
    "KafkaAdmin",
    "ListedGroup",
    "TopicPartition",
    "decode_assignment",
]
