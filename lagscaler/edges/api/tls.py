"""The serving TLS context: certificate from files (reloaded on change), client CAs from authentication.

The listening socket keeps one *base* ``SSLContext`` for its lifetime. Its SNI callback, which
OpenSSL runs for every ClientHello (with or without a server name), swaps in the *current* context
built from the newest certificate and client CAs, so new handshakes use new files while open
connections keep theirs. The base context requests client certificates (``CERT_OPTIONAL``) whatever
the current one says, because OpenSSL keeps the verify mode of the context a connection started
with; consequently a client certificate from a CA we do not trust is always refused in the
handshake, even when no client CA is configured.

Without ``--tls-cert-file`` a self-signed certificate is generated for local use, with a loud warning:
the aggregator would have to skip verification (``insecureSkipTLSVerify``) to talk to it.
"""

from __future__ import annotations

import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from lagscaler.edges.kube import self_signed_server
from lagscaler.edges.observability import ServiceMetrics
from lagscaler.errors import UserError
from lagscaler.logs import get_logger

__all__ = ["ServingCertificate", "ServingTLS"]

_log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ServingCertificate:
    cert_file: Path
    key_file: Path
    self_signed: bool = False


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


class ServingTLS:
    """Owns the server's SSL contexts; call :meth:`reload_if_changed` periodically."""

    def __init__(
        self,
        cert_file: Path | None,
        key_file: Path | None,
        client_cas: Callable[[], tuple[x509.Certificate, ...]],
        *,
        self_signed_hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
        metrics: ServiceMetrics | None = None,
    ) -> None:
        if (cert_file is None) != (key_file is None):
            raise UserError("--tls-cert-file and --tls-private-key-file must be given together")
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if cert_file is None or key_file is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="lagscaler-tls-")
            pair = self_signed_server(*self_signed_hosts)
            cert_file, key_file = pair.write(Path(self._tmp.name), "self-signed")
            _log.warning(
                "!!! NO --tls-cert-file GIVEN: SERVING A SELF-SIGNED CERTIFICATE. FOR LOCAL USE ONLY !!!",
                hosts=list(self_signed_hosts),
                why="the Kubernetes aggregator cannot verify it",
                fix="give --tls-cert-file/--tls-private-key-file (e.g. from cert-manager) in a cluster",
            )
            self.serving = ServingCertificate(cert_file, key_file, self_signed=True)
        else:
            self.serving = ServingCertificate(cert_file, key_file)
        self._client_cas = client_cas
        self._metrics = metrics
        self._stamps = (_stamp(self.serving.cert_file), _stamp(self.serving.key_file))
        try:
            self._current = self._build()
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise UserError(
                f"cannot load TLS certificate {self.serving.cert_file}: {_describe(exc)}"
            ) from exc
        self.base = self._new_context()
        self._load(self.base)
        self.base.sni_callback = self._select
        self.reloads = 0

    def _new_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.options |= ssl.OP_NO_COMPRESSION
        context.set_alpn_protocols(["http/1.1"])
        context.verify_mode = ssl.CERT_OPTIONAL
        return context

    def _load(self, context: ssl.SSLContext) -> None:
        context.load_cert_chain(self.serving.cert_file, self.serving.key_file)
        cas = self._client_cas()
        if cas:
            pem = "".join(ca.public_bytes(serialization.Encoding.PEM).decode() for ca in cas)
            context.load_verify_locations(cadata=pem)

    def _build(self) -> ssl.SSLContext:
        context = self._new_context()
        self._load(context)
        return context

    def _select(self, connection: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        connection.context = self._current

    @property
    def current(self) -> ssl.SSLContext:
        return self._current

    def rebuild(self, why: str) -> bool:
        """Build a new current context now (new client CAs or new files); keep the old one on error."""
        try:
            context = self._build()
        except (OSError, ssl.SSLError, ValueError) as exc:
            _log.error("keeping the previous TLS configuration", why=why, problem=_describe(exc))
            if self._metrics is not None:
                self._metrics.tls_reloads.labels("error").inc()
            return False
        self._current = context
        self.reloads += 1
        if self._metrics is not None:
            self._metrics.tls_reloads.labels("ok").inc()
        _log.info("TLS configuration reloaded", why=why)
        return True

    def reload_if_changed(self) -> bool:
        """Reload when the certificate or key file changed on disk (mtime, size or inode)."""
        stamps = (_stamp(self.serving.cert_file), _stamp(self.serving.key_file))
        if stamps == self._stamps:
            return False
        self._stamps = stamps
        return self.rebuild(f"{self.serving.cert_file} changed")

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
