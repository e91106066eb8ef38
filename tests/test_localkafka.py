"""The broker harness itself: what every Kafka test stands on."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from lagscaler_demo.localkafka import (
    BrokerConfig,
    BrokerError,
    KafkaDistribution,
    KafkaEndpoint,
    LocalBroker,
    parse_describe,
)
from lagscaler_demo.localkafka.broker import new_cluster_id
from lagscaler_demo.localkafka.distribution import _pom

pytestmark = pytest.mark.kafka


async def test_session_broker_accepts_topics_and_messages(kafka: KafkaEndpoint, unique: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(unique, num_partitions=3, replication_factor=1)])
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
        await producer.start()
        try:
            meta = await producer.send_and_wait(unique, b"x", partition=2)
        finally:
            await producer.stop()
        assert (meta.topic, meta.partition, meta.offset) == (unique, 2, 0)
    finally:
        await admin.close()


@pytest.mark.slow
def test_restart_keeps_ports_and_data(unique: str) -> None:
    from lagscaler_demo.localkafka.broker import run_coroutine_sync

    async def produce(bootstrap: str) -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        topics = await admin.list_topics()
        if unique not in topics:
            await admin.create_topics([NewTopic(unique, num_partitions=1, replication_factor=1)])
        await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            return (await producer.send_and_wait(unique, b"x")).offset
        finally:
            await producer.stop()

    with LocalBroker() as broker:
        bootstrap = broker.bootstrap
        assert run_coroutine_sync(produce(bootstrap)) == 0
        broker.kill()
        assert not broker.running
        broker.start()
        assert broker.bootstrap == bootstrap
        assert run_coroutine_sync(produce(bootstrap)) == 1  # the first message survived the crash
    assert not broker.workdir.exists()


def test_start_failure_reports_log_tail(tmp_path: Path) -> None:
    broken = BrokerConfig(extra_properties={"process.roles": "nonsense"}, start_timeout=20)
    with pytest.raises(BrokerError, match=r"(?s)formatting Kafka storage failed|exited during start-up"):
        LocalBroker(broken, workdir=tmp_path).start()


def test_pom_names_the_logging_backend_the_kafka_pom_omits() -> None:
    pom = _pom("broker", "4.1.1")
    assert "<artifactId>kafka_2.13</artifactId><version>4.1.1</version>" in pom
    assert "log4j-slf4j-impl" in pom
    assert "log4j-core" in pom


def test_distribution_is_cached_once(tmp_path: Path) -> None:
    dist = KafkaDistribution(root=tmp_path)
    libs = dist.libs("broker")
    libs.mkdir(parents=True)
    (libs / "marker.jar").write_text("")
    assert dist.ensure("broker") == libs  # present: no Maven run


def test_parse_describe_reads_kafkas_table() -> None:
    out = """
Consumer group 'g1' has no active members.

GROUP           TOPIC           PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG             CONSUMER-ID     HOST            CLIENT-ID
g1              t1              2          10              12              2               -               -               -
g1              t1              0          -               5               -               -               -               -
"""
    assert parse_describe(out) == {("g1", "t1", 2): (10, 12, 2), ("g1", "t1", 0): (None, 5, None)}


def test_random_cluster_ids_never_look_like_an_option_to_kafka_storage() -> None:
    # One random base64url id in 64 starts with "-", and `kafka-storage format -t -abc...` then fails
    # with "expected one argument": a broker start that failed one run in 64.
    ids = [new_cluster_id() for _ in range(2000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(i) == 22 for i in ids)
    assert len(set(ids)) == len(ids)
