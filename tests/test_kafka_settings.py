"""Connection settings: validation with one-line errors, and secrets that never show up in a repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from lagscaler.edges.kafka import (
    KafkaConfigError,
    KafkaSettings,
    SaslMechanism,
    SaslSettings,
    Secret,
    SecurityProtocol,
    TlsSettings,
)

PASSWORD = "s3cr3t-never-printed"


def test_secret_repr_names_the_source_never_the_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "password"
    path.write_text(PASSWORD + "\n")
    monkeypatch.setenv("LAGSCALER_TEST_PW", PASSWORD)
    for secret in (Secret.from_file(path), Secret.from_env("LAGSCALER_TEST_PW"), Secret.of(PASSWORD)):
        assert secret.reveal() == PASSWORD  # a trailing newline in the file is not part of it
        assert PASSWORD not in repr(secret)
        assert PASSWORD not in str(secret)
    settings = KafkaSettings(
        bootstrap=("127.0.0.1:9093",),
        security_protocol=SecurityProtocol.SASL_PLAINTEXT,
        sasl=SaslSettings(SaslMechanism.SCRAM_SHA_512, "alice", Secret.of(PASSWORD)),
    )
    assert PASSWORD not in repr(settings)
    assert settings.client_options()["sasl_plain_password"] == PASSWORD


def test_missing_secret_sources_name_the_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAGSCALER_NOPE", raising=False)
    with pytest.raises(KafkaConfigError, match="environment variable LAGSCALER_NOPE"):
        Secret.from_env("LAGSCALER_NOPE").reveal()
    with pytest.raises(KafkaConfigError, match="cannot read secret file"):
        Secret.from_file(tmp_path / "missing").reveal()
    binary = tmp_path / "binary"
    binary.write_bytes(b"s3cr\xe9t")  # Latin-1, say: refused without quoting a byte of it
    with pytest.raises(KafkaConfigError) as caught:
        Secret.from_file(binary).reveal()
    assert str(caught.value) == f"secret file {binary} is not UTF-8 text"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bootstrap": ""}, "no bootstrap server"),
        ({"bootstrap": "localhost"}, "is not HOST:PORT"),
        ({"bootstrap": "a:1,b:99999"}, "'b:99999' is not HOST:PORT"),
        ({"bootstrap": "a:1", "request_timeout": 0}, "request timeout must be positive"),
        (
            {"bootstrap": "a:1", "request_timeout": 1e300},
            "request timeout must be at most 3600 s, got 1e\\+300",
        ),
        ({"bootstrap": "a:1", "security_protocol": "SASL_SSL"}, "needs SASL settings"),
        (
            {"bootstrap": "a:1", "sasl": SaslSettings(SaslMechanism.PLAIN, "u", Secret.of("p"))},
            "SASL settings given but the security protocol is PLAINTEXT",
        ),
        ({"bootstrap": "a:1", "tls": TlsSettings()}, "TLS settings given"),
    ],
)
def test_invalid_settings_are_one_line_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(KafkaConfigError, match=message):
        KafkaSettings(**kwargs)  # type: ignore[arg-type]


def test_bootstrap_list_is_parsed() -> None:
    assert KafkaSettings(bootstrap="a:1, b:2").bootstrap == ("a:1", "b:2")  # type: ignore[arg-type]


def test_tls_files_must_exist(tmp_path: Path) -> None:
    with pytest.raises(KafkaConfigError, match=r"CA file .* does not exist"):
        TlsSettings(cafile=tmp_path / "nope.pem")
    with pytest.raises(KafkaConfigError, match="needs --ssl-certfile"):
        TlsSettings(keyfile=tmp_path / "key.pem")


def test_unusable_ca_file_is_reported_by_name(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(KafkaConfigError, match="cannot load TLS CA file"):
        TlsSettings(cafile=bad).context()
