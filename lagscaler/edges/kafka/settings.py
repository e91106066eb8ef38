"""How to reach a Kafka cluster: addresses, timeouts, TLS and SASL, as one typed, validated value.

Secrets (the SASL password, a client key's passphrase) are never held in a form that can leak into a
log line: a :class:`Secret` names where the value lives (a file, an environment variable, or — for
programmatic use — an inline value) and its ``repr`` never shows the value. The value is read when a
connection is made, so a rotated Kubernetes secret file is picked up on the next reconnect.
"""

from __future__ import annotations

import enum
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lagscaler.errors import UserError


class KafkaConfigError(UserError):
    """The connection settings are incomplete or contradictory."""


class SecurityProtocol(enum.StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"

    @property
    def uses_tls(self) -> bool:
        return self in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL)

    @property
    def uses_sasl(self) -> bool:
        return self in (SecurityProtocol.SASL_PLAINTEXT, SecurityProtocol.SASL_SSL)


class SaslMechanism(enum.StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


@dataclass(frozen=True)
class Secret:
    """A secret value known by where it lives; ``repr`` and ``str`` never reveal it.

    Exactly one of ``file``, ``env`` or ``inline`` is set. :meth:`reveal` reads it (and raises a
    :class:`KafkaConfigError` naming the *source*, never the value, when it cannot).
    """

    file: Path | None = None
    env: str | None = None
    inline: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        given = sum(x is not None for x in (self.file, self.env, self.inline))
        if given != 1:
            raise KafkaConfigError(
                "a secret needs exactly one source: a file, an environment variable or a value"
            )

    @classmethod
    def from_file(cls, path: str | Path) -> Secret:
        return cls(file=Path(path))

    @classmethod
    def from_env(cls, name: str) -> Secret:
        return cls(env=name)

    @classmethod
    def of(cls, value: str) -> Secret:
        return cls(inline=value)

    @property
    def source(self) -> str:
        """Where the value comes from, safe to show to a user."""
        if self.file is not None:
            return f"file {self.file}"
        if self.env is not None:
            return f"environment variable {self.env}"
        return "an inline value"

    def reveal(self) -> str:
        if self.inline is not None:
            return self.inline
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise KafkaConfigError(f"environment variable {self.env} (a secret) is not set")
            return value
        assert self.file is not None
        try:
            # A trailing newline is how editors and `kubectl create secret --from-file` leave files.
            return self.file.read_text().rstrip("\r\n")
        except OSError as exc:
            raise KafkaConfigError(f"cannot read secret file {self.file}: {exc.strerror}") from None
        except UnicodeDecodeError:  # never quote it: the decoder's message shows the secret's bytes
            raise KafkaConfigError(f"secret file {self.file} is not UTF-8 text") from None

    def __repr__(self) -> str:
        return f"Secret(<{self.source}>)"

    __str__ = __repr__


@dataclass(frozen=True)
class TlsSettings:
    """TLS to the brokers: whom to trust, and optionally who we are (mutual TLS)."""

    cafile: Path | None = None  # None: the system trust store
    certfile: Path | None = None
    keyfile: Path | None = None
    key_password: Secret | None = None
    check_hostname: bool = True

    def __post_init__(self) -> None:
        if self.keyfile is not None and self.certfile is None:
            raise KafkaConfigError("--ssl-keyfile needs --ssl-certfile (the client certificate)")
        for label, path in (("CA", self.cafile), ("certificate", self.certfile), ("key", self.keyfile)):
            if path is not None and not path.is_file():
                raise KafkaConfigError(f"TLS {label} file {path} does not exist")

    def context(self) -> ssl.SSLContext:
        """A client-side SSL context; errors name the file at fault."""
        try:
            ctx = ssl.create_default_context(cafile=str(self.cafile) if self.cafile else None)
        except (ssl.SSLError, OSError) as exc:
            raise KafkaConfigError(f"cannot load TLS CA file {self.cafile}: {exc}") from None
        ctx.check_hostname = self.check_hostname
        if self.certfile is not None:
            password = self.key_password.reveal() if self.key_password else None
            try:
                ctx.load_cert_chain(
                    str(self.certfile), str(self.keyfile) if self.keyfile else None, password=password
                )
            except (ssl.SSLError, OSError) as exc:
                raise KafkaConfigError(
                    f"cannot load TLS client certificate {self.certfile} / key {self.keyfile}: {exc}"
                ) from None
        return ctx


@dataclass(frozen=True)
class SaslSettings:
    """SASL authentication with a username and a password (PLAIN or SCRAM)."""

    mechanism: SaslMechanism
    username: str
    password: Secret

    def __post_init__(self) -> None:
        if not self.username:
            raise KafkaConfigError("SASL needs a username (--sasl-username)")


def parse_bootstrap(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``host:port[,host:port...]`` → a tuple of validated addresses."""
    items = value.split(",") if isinstance(value, str) else list(value)
    servers = tuple(s.strip() for s in items if s.strip())
    if not servers:
        raise KafkaConfigError("no bootstrap server given (expected HOST:PORT)")
    for server in servers:
        host, sep, port = server.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise KafkaConfigError(f"bootstrap server {server!r} is not HOST:PORT")
    return servers


MAX_REQUEST_TIMEOUT = 3600.0
"""Longest bound on one request, in seconds. Requests carry it as 32-bit milliseconds (ListOffsets'
``timeout_ms``, the clients' ``request_timeout_ms``): past 2,147,483 s no request can even be encoded
(``--timeout 1e300`` ended ``lagscaler lag`` in a struct error), and an hour is far past any answer."""


@dataclass(frozen=True)
class KafkaSettings:
    """Everything needed to talk to one Kafka cluster.

    ``request_timeout`` (seconds) bounds every single request, connection set-up included; callers
    bound whole operations on top of it.
    """

    bootstrap: tuple[str, ...]
    client_id: str = "lagscaler"
    request_timeout: float = 10.0
    security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    tls: TlsSettings | None = None
    sasl: SaslSettings | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "bootstrap", parse_bootstrap(self.bootstrap))
        object.__setattr__(self, "security_protocol", SecurityProtocol(self.security_protocol))
        if not self.request_timeout > 0:
            raise KafkaConfigError(f"request timeout must be positive, got {self.request_timeout}")
        if not self.request_timeout <= MAX_REQUEST_TIMEOUT:
            raise KafkaConfigError(
                f"request timeout must be at most {MAX_REQUEST_TIMEOUT:g} s, got {self.request_timeout:g}"
            )
        if self.security_protocol.uses_sasl and self.sasl is None:
            raise KafkaConfigError(
                f"security protocol {self.security_protocol} needs SASL settings "
                "(--sasl-mechanism, --sasl-username, --sasl-password-file or LAGSCALER_SASL_PASSWORD)"
            )
        if not self.security_protocol.uses_sasl and self.sasl is not None:
            raise KafkaConfigError(
                f"SASL settings given but the security protocol is {self.security_protocol}; "
                "use SASL_PLAINTEXT or SASL_SSL"
            )
        if not self.security_protocol.uses_tls and self.tls is not None:
            raise KafkaConfigError(
                f"TLS settings given but the security protocol is {self.security_protocol}; "
                "use SSL or SASL_SSL"
            )

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's client; secrets are revealed here and nowhere else."""
        options: dict[str, Any] = {
            "bootstrap_servers": list(self.bootstrap),
            "client_id": self.client_id,
            "request_timeout_ms": int(self.request_timeout * 1000),
            "security_protocol": str(self.security_protocol),
        }
        if self.security_protocol.uses_tls:
            options["ssl_context"] = (self.tls or TlsSettings()).context()
        if self.sasl is not None:
            options["sasl_mechanism"] = str(self.sasl.mechanism)
            options["sasl_plain_username"] = self.sasl.username
            options["sasl_plain_password"] = self.sasl.password.reveal()
        return options
