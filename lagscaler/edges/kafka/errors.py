"""What can go wrong talking to Kafka, in terms a caller can act on.

Kafka error codes that the admin handles itself (re-resolve the coordinator, refresh metadata and
retry) never escape; what escapes is either "the cluster (or a broker) cannot be reached" or "the
cluster refused" — both one-line :class:`UserError`\\ s, so the CLI shows them without a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import errors as _aiokafka_errors

from lagscaler.edges.kafka.settings import KafkaConfigError
from lagscaler.errors import UserError

# The codes the admin acts on (apache/kafka clients/.../protocol/Errors.java).
NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
LEADER_NOT_AVAILABLE = 5
NOT_LEADER_OR_FOLLOWER = 6
REQUEST_TIMED_OUT = 7
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
TOPIC_AUTHORIZATION_FAILED = 29
GROUP_AUTHORIZATION_FAILED = 30
CLUSTER_AUTHORIZATION_FAILED = 31
GROUP_ID_NOT_FOUND = 69
FENCED_LEADER_EPOCH = 74
UNKNOWN_LEADER_EPOCH = 75
OFFSET_NOT_AVAILABLE = 78
UNSTABLE_OFFSET_COMMIT = 88

#: The group's coordinator moved, is starting, or is loading the group: find it again and retry.
COORDINATOR_RETRIABLE = frozenset({COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR})
#: The partition's leader moved or is being elected: refresh metadata and retry.
LEADER_RETRIABLE = frozenset(
    {
        LEADER_NOT_AVAILABLE,
        NOT_LEADER_OR_FOLLOWER,
        FENCED_LEADER_EPOCH,
        UNKNOWN_LEADER_EPOCH,
        OFFSET_NOT_AVAILABLE,
        REQUEST_TIMED_OUT,
    }
)


def error_name(code: int) -> str:
    """Kafka's name for an error code (``NOT_COORDINATOR``), for messages and logs."""
    cls = _aiokafka_errors.for_code(code)
    message = getattr(cls, "message", None)
    return (
        str(message)
        if isinstance(message, str) and cls is not _aiokafka_errors.UnknownError
        else f"ERROR_{code}"
    )


class KafkaError(UserError):
    """Base of the errors the Kafka edge raises."""


class KafkaUnavailable(KafkaError):
    """The cluster, or a broker we need, did not answer in time (down, unreachable, refused)."""


class KafkaRequestFailed(KafkaError):
    """A broker answered with an error that retrying will not fix (authorization, bad request...)."""


# What a broker (or the client, on its behalf) says when retrying cannot help, by aiokafka's class names
# (aiokafka/errors.py, 0.14): they reach us as exceptions, or only as the text aiokafka logs when a
# connection fails (AIOKafkaClient.bootstrap logs the cause, then raises a bare KafkaConnectionError).
_AUTHENTICATION = (
    "SaslAuthenticationFailed",
    "AuthenticationFailed",
    "AuthenticationMethodNotSupported",
    "UnsupportedSaslMechanism",
    "IllegalSaslState",
)
_AUTHORIZATION = (
    "TopicAuthorizationFailed",
    "GroupAuthorizationFailed",
    "ClusterAuthorizationFailed",
    "is not authorized",  # aiokafka's cluster metadata: "Topic %s is not authorized for this client"
)


def refusal(exc: BaseException, messages: Iterable[str] = ()) -> str | None:
    """Why retrying ``exc`` cannot help, and what to change — or None for an outage worth waiting out.

    ``messages``: what aiokafka logged while the attempt ran (:func:`~lagscaler.edges.kafka.admin.
    capture_client_errors`), where the cause of a failed connection is the only place it appears.
    """
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    text = " ".join([*(f"{type(e).__name__}: {e}" for e in chain), *messages])
    if isinstance(exc, KafkaConfigError):
        return "a Kafka setting cannot work (see the problem): fix it; it is read again on every attempt"
    if any(name in text for name in _AUTHENTICATION):
        return (
            "the broker refused lagscaler's credentials (SASL authentication failed): check --sasl-mechanism,"
            " --sasl-username and the password (--sasl-password-file, LAGSCALER_SASL_PASSWORD) against"
            " the broker's SASL listener"
        )
    if isinstance(exc, KafkaRequestFailed) or any(name in text for name in _AUTHORIZATION):
        return (
            "the broker refused lagscaler's principal (authorization failed): grant it Describe, Read and"
            " Write on the control topic (Create too, or create it: 1 partition, cleanup.policy=compact)"
            " and Describe and Read on the workloads' groups"
        )
    if "UnsupportedVersion" in text:
        return "the broker does not support a request lagscaler needs (see the problem): upgrade the broker"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "the broker's TLS certificate is not trusted: --ssl-cafile must name the CA that signed it"
    return None


__all__ = [
    "CLUSTER_AUTHORIZATION_FAILED",
    "COORDINATOR_RETRIABLE",
    "GROUP_ID_NOT_FOUND",
    "LEADER_RETRIABLE",
    "NOT_COORDINATOR",
    "TOPIC_AUTHORIZATION_FAILED",
    "UNKNOWN_TOPIC_OR_PARTITION",
    "KafkaError",
    "KafkaRequestFailed",
    "KafkaUnavailable",
    "error_name",
    "refusal",
]
