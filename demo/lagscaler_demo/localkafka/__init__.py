"""A real Kafka broker without Docker: jars from Maven Central, a single-node KRaft process on loopback.

The test suite, the benchmarks and ``lagscaler demo`` all run against a real broker from here.
"""

from lagscaler_demo.localkafka.broker import (
    BrokerConfig,
    BrokerError,
    LocalBroker,
    free_port,
    run_coroutine_sync,
)
from lagscaler_demo.localkafka.distribution import KafkaDistribution, cache_root
from lagscaler_demo.localkafka.provider import KafkaEndpoint, kafka_endpoint
from lagscaler_demo.localkafka.tools import KafkaTools, parse_describe

__all__ = [
    "BrokerConfig",
    "BrokerError",
    "KafkaDistribution",
    "KafkaEndpoint",
    "KafkaTools",
    "LocalBroker",
    "cache_root",
    "free_port",
    "kafka_endpoint",
    "parse_describe",
    "run_coroutine_sync",
]
