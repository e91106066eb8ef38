"""Kafka edge: connection settings and the admin requests aiokafka lacks, spoken on its protocol layer."""

from lagscaler.kafka.admin import (
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
from lagscaler.kafka.errors import KafkaError, KafkaRequestFailed, KafkaUnavailable
from lagscaler.kafka.settings import (
    KafkaConfigError,
    KafkaSettings,
    SaslMechanism,
    SaslSettings,
    Secret,
    SecurityProtocol,
    TlsSettings,
)
from lagscaler.kafka.stats import RequestStats

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
