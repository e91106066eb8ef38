"""Kafka edge: connection settings and the admin requests aiokafka lacks, spoken on its protocol layer.

Exports resolve lazily (PEP 562), so code that only needs the settings — the command line
building its flags — does not pay for importing aiokafka.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lagscaler.edges.kafka.admin import (
        ClusterLayout,
        CommittedOffsets,
        EndOffsets,
        GroupDescription,
        GroupMember,
        GroupResults,
        KafkaAdmin,
        ListedGroup,
        TopicPartition,
    )
    from lagscaler.edges.kafka.errors import KafkaError, KafkaRequestFailed, KafkaUnavailable
    from lagscaler.edges.kafka.settings import (
        KafkaConfigError,
        KafkaSettings,
        SaslMechanism,
        SaslSettings,
        Secret,
        SecurityProtocol,
        TlsSettings,
    )
    from lagscaler.edges.kafka.stats import RequestStats

_HOMES = {
    "lagscaler.edges.kafka.admin": [
        "ClusterLayout", "CommittedOffsets", "EndOffsets", "GroupDescription", "GroupMember",
        "GroupResults", "KafkaAdmin", "ListedGroup", "TopicPartition",
    ],
    "lagscaler.edges.kafka.errors": ["KafkaError", "KafkaRequestFailed", "KafkaUnavailable"],
    "lagscaler.edges.kafka.settings": [
        "KafkaConfigError", "KafkaSettings", "SaslMechanism", "SaslSettings", "Secret",
        "SecurityProtocol", "TlsSettings",
    ],
    "lagscaler.edges.kafka.stats": ["RequestStats"],
}  # fmt: skip
_HOME = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'lagscaler.edges.kafka' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)


__all__ = [
    "ClusterLayout",
    "CommittedOffsets",
    "EndOffsets",
    "GroupDescription",
    "GroupMember",
    "GroupResults",
    "KafkaAdmin",
    "KafkaConfigError",
    "KafkaError",
    "KafkaRequestFailed",
    "KafkaSettings",
    "KafkaUnavailable",
    "ListedGroup",
    "RequestStats",
    "SaslMechanism",
    "SaslSettings",
    "Secret",
    "SecurityProtocol",
    "TlsSettings",
    "TopicPartition",
]
