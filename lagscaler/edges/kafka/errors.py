"""What can go wrong talking to Kafka, in terms a caller can act on.

Kafka error codes that the admin handles itself (re-resolve the coordinator, refresh metadata and
retry) never escape; what escapes is either "the cluster (or a broker) cannot be reached" or "the
cluster refused" — both one-line :class:`UserError`\\ s, so the CLI shows them without a traceback.
"""

from __future__ import annotations

from aiokafka import errors as _aiokafka_errors

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
GROUP_AUTHORIZATION_FAILED = 30
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


__all__ = [
    "COORDINATOR_RETRIABLE",
    "GROUP_ID_NOT_FOUND",
    "LEADER_RETRIABLE",
    "NOT_COORDINATOR",
    "UNKNOWN_TOPIC_OR_PARTITION",
    "KafkaError",
    "KafkaRequestFailed",
    "KafkaUnavailable",
    "error_name",
]
