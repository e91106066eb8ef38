"""TLS (with client certificates) and SASL PLAIN / SCRAM-SHA-256 / SCRAM-SHA-512 against a real broker.

One broker for the module, with three extra listeners: SSL (client certificate required),
SASL_PLAINTEXT and SASL_SSL (PLAIN and both SCRAMs enabled). Certificates come from a throwaway
CA made with ``trustme``; the broker reads PEM key and trust stores. Data is seeded over the
PLAINTEXT listener and then sampled through each secured one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from lagscaler_demo.localkafka import BrokerConfig, LocalBroker, run_coroutine_sync
from lagscaler_demo.seed import commit, create_topics, produce
from structlog.typing import EventDict
from support import eventually

from lagscaler.edges.kafka import (
    KafkaSettings,
    SaslMechanism,
    SaslSettings,
    Secret,
    SecurityProtocol,
    TlsSettings,
)
from lagscaler.edges.sampler import SampleFailed, Sampler, SamplerSettings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

USER, PASSWORD = "alice", "alice-pw-4f1d9"
PLAIN = "org.apache.kafka.common.security.plain.PlainLoginModule required"
SCRAM = "org.apache.kafka.common.security.scram.ScramLoginModule required;"


def pkcs8(key_pem: bytes) -> bytes:
    """Kafka's PEM key store wants PKCS#8 keys; trustme writes the traditional EC format."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True)
class SecureBroker:
    broker: LocalBroker
    ca: Path
    client_cert: Path
    client_key: Path

    def address(self, listener: str) -> tuple[str, ...]:
        return (self.broker.address(listener),)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    pki = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("lagscaler-client")
    (pki / "ca.pem").write_bytes(ca.cert_pem.bytes())
    (pki / "server.pem").write_bytes(
        pkcs8(server.private_key_pem.bytes()) + b"".join(c.bytes() for c in server.cert_chain_pems)
    )
    (pki / "client.pem").write_bytes(b"".join(c.bytes() for c in client.cert_chain_pems))
    (pki / "client.key").write_bytes(client.private_key_pem.bytes())

    properties = {
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(pki / "server.pem"),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(pki / "ca.pem"),
        "listener.name.ssl.ssl.client.auth": "required",
        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
    }
    for listener in ("sasl_plaintext", "sasl_ssl"):
        properties[f"listener.name.{listener}.plain.sasl.jaas.config"] = f'{PLAIN} user_{USER}="{PASSWORD}";'
        properties[f"listener.name.{listener}.scram-sha-256.sasl.jaas.config"] = SCRAM
        properties[f"listener.name.{listener}.scram-sha-512.sasl.jaas.config"] = SCRAM
    config = BrokerConfig(
        extra_listeners={"SSL": "SSL", "SASL_PLAINTEXT": "SASL_PLAINTEXT", "SASL_SSL": "SASL_SSL"},
        extra_properties=properties,
        format_args=(
            "--add-scram",
            f"SCRAM-SHA-256=[name={USER},password={PASSWORD}]",
            "--add-scram",
            f"SCRAM-SHA-512=[name={USER},password={PASSWORD}]",
        ),
    )
    with LocalBroker(config) as broker:
        yield SecureBroker(broker, pki / "ca.pem", pki / "client.pem", pki / "client.key")


@pytest.fixture(scope="module")
def seeded(secure: SecureBroker) -> tuple[str, str]:
    topic, group = "secured-topic", "secured-group"
    plaintext = secure.broker.bootstrap

    async def seed() -> None:
        await create_topics(plaintext, {topic: 2})
        await produce(plaintext, {(topic, 0): 9, (topic, 1): 3})
        await commit(plaintext, group, {(topic, 0): 2, (topic, 1): 3})

    run_coroutine_sync(seed())
    return topic, group


async def lag_through(settings: KafkaSettings, group: str) -> int:
    async with Sampler(settings, SamplerSettings(groups=(group,))) as sampler:
        snapshot = await sampler.sample()
    return snapshot.groups[0].total_lag


async def test_mutual_tls(secure: SecureBroker, seeded: tuple[str, str]) -> None:
    tls = TlsSettings(cafile=secure.ca, certfile=secure.client_cert, keyfile=secure.client_key)
    settings = KafkaSettings(bootstrap=secure.address("SSL"), security_protocol=SecurityProtocol.SSL, tls=tls)
    assert await lag_through(settings, seeded[1]) == 7


async def test_tls_without_the_required_client_certificate_is_refused(
    secure: SecureBroker, seeded: tuple[str, str]
) -> None:
    settings = KafkaSettings(
        bootstrap=secure.address("SSL"),
        security_protocol=SecurityProtocol.SSL,
        tls=TlsSettings(cafile=secure.ca),
        request_timeout=3.0,
    )
    with pytest.raises(SampleFailed, match="cannot reach Kafka"):
        await lag_through(settings, seeded[1])


@pytest.mark.parametrize("mechanism", list(SaslMechanism))
async def test_sasl_mechanisms_with_the_password_from_a_file(
    secure: SecureBroker, seeded: tuple[str, str], mechanism: SaslMechanism, tmp_path: Path
) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    settings = KafkaSettings(
        bootstrap=secure.address("SASL_PLAINTEXT"),
        security_protocol=SecurityProtocol.SASL_PLAINTEXT,
        sasl=SaslSettings(mechanism, USER, Secret.from_file(password_file)),
    )
    assert await lag_through(settings, seeded[1]) == 7


async def test_sasl_over_tls_with_the_password_from_the_environment(
    secure: SecureBroker, seeded: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAGSCALER_TEST_SASL_PASSWORD", PASSWORD)
    settings = KafkaSettings(
        bootstrap=secure.address("SASL_SSL"),
        security_protocol=SecurityProtocol.SASL_SSL,
        tls=TlsSettings(cafile=secure.ca),
        sasl=SaslSettings(SaslMechanism.SCRAM_SHA_512, USER, Secret.from_env("LAGSCALER_TEST_SASL_PASSWORD")),
    )
    assert await lag_through(settings, seeded[1]) == 7


async def test_wrong_password_is_a_one_line_error_that_never_shows_a_password(
    secure: SecureBroker, seeded: tuple[str, str], caplog: pytest.LogCaptureFixture, logs: list[EventDict]
) -> None:
    """Nowhere: not in the error, not in lagscaler's events (``logs``), not in aiokafka's (``caplog``)."""
    wrong = "wrong-pw-83c2"
    settings = KafkaSettings(
        bootstrap=secure.address("SASL_PLAINTEXT"),
        security_protocol=SecurityProtocol.SASL_PLAINTEXT,
        sasl=SaslSettings(SaslMechanism.SCRAM_SHA_256, USER, Secret.of(wrong)),
        request_timeout=3.0,
    )
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SampleFailed) as caught:
        await lag_through(settings, seeded[1])
    message = str(caught.value)
    assert "\n" not in message
    assert "uthentication" in message  # the broker's reason reaches the user
    assert any(e["event"] == "sample cycle failed" for e in logs)  # the failure was logged, redacted
    for text in (message, caplog.text, repr(logs), repr(settings)):
        assert wrong not in text
        assert PASSWORD not in text


async def test_a_handover_controller_that_does_not_trust_the_broker_says_which_flag_to_fix(
    secure: SecureBroker, tmp_path: Path, logs: list[EventDict]
) -> None:
    """An untrusted broker certificate is no outage to wait out: every attempt to reach the control
    topic is an ERROR naming --ssl-cafile, not an 'unreachable' warning."""
    from lagscaler.edges.handover import HandoverSettings
    from lagscaler.service.handover import LocalHandover, local_runner

    settings = KafkaSettings(
        bootstrap=secure.address("SSL"),
        security_protocol=SecurityProtocol.SSL,
        tls=TlsSettings(),  # the system's CAs: not the throwaway one that signed the broker's certificate
        request_timeout=3.0,
    )
    runner = local_runner(settings, LocalHandover(tmp_path, settings=HandoverSettings(control_topic="ctl")))
    entering = asyncio.ensure_future(runner.__aenter__())
    try:

        def refused() -> None:
            attempts = [e for e in logs if "handover control topic" in e["event"]]
            assert attempts, logs
            assert attempts[0]["event"] == "handover control topic refused; retrying", attempts[0]
            assert attempts[0]["log_level"] == "error"
            assert "--ssl-cafile" in attempts[0]["fix"]

        await eventually(refused, within=30, what="the refusal, named")
        assert not entering.done()
    finally:
        entering.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await entering
