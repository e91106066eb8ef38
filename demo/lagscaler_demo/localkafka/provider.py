"""Pick a Kafka cluster for tests, benchmarks and the demo.

In order: ``KAFKA_BOOTSTRAP`` names an existing cluster; else a Docker engine that answers runs
testcontainers' Kafka (KRaft); else a local KRaft broker runs from Maven Central jars. The choice is
logged so a test run says which broker it measured.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from lagscaler_demo.localkafka.broker import BrokerConfig, LocalBroker

Source = Literal["env", "testcontainers", "local"]


@dataclass(frozen=True)
class KafkaEndpoint:
    """A cluster to talk to. ``broker`` is set when we run it ourselves (and can stop/restart it)."""

    bootstrap: str
    source: Source
    broker: LocalBroker | None = None


def docker_answers() -> bool:
    """True when a Docker engine answers a ping (the client binary alone is not enough)."""
    if os.environ.get("LAGSCALER_NO_DOCKER"):
        return False
    try:
        import docker  # noqa: PLC0415 - optional: testcontainers brings it

        client = docker.from_env(timeout=3)
    except Exception:
        return False
    try:
        client.ping()
    except Exception:
        return False
    finally:
        client.close()  # else its connection pool leaks a socket (a ResourceWarning in every test run)
    return True


@contextlib.contextmanager
def kafka_endpoint(config: BrokerConfig | None = None) -> Iterator[KafkaEndpoint]:
    """Yield a running cluster, stopping it afterwards if we started it."""
    external = os.environ.get("KAFKA_BOOTSTRAP")
    if external:
        yield KafkaEndpoint(bootstrap=external, source="env")
        return
    if config is None and docker_answers():
        from testcontainers.community.kafka import KafkaContainer  # noqa: PLC0415

        with KafkaContainer().with_kraft() as container:
            yield KafkaEndpoint(bootstrap=container.get_bootstrap_server(), source="testcontainers")
        return
    with LocalBroker(config) as broker:
        yield KafkaEndpoint(bootstrap=broker.bootstrap, source="local", broker=broker)
