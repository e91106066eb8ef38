"""Settings of the external metrics API server, with the flag names k8s.io/apiserver users know.

:class:`ApiSettings` is what :func:`lagscaler.api.server.build_api` takes; :func:`add_api_arguments`
adds the matching flags to an argparse parser and :func:`api_settings_from_args` reads them back, so
``lagscaler serve`` (and the standalone runner) share one definition.
"""

from __future__ import annotations

import argparse
import ipaddress
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from lagscaler.errors import UserError

__all__ = ["ApiSettings", "add_api_arguments", "api_settings_from_args"]


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """Listen addresses, TLS files, delegated authentication/authorization.

    A ``None`` requestheader/client-CA field means "not given": inside a cluster the value then comes
    from the ConfigMap ``kube-system/extension-apiserver-authentication``.
    """

    bind_address: str = "0.0.0.0"
    secure_port: int = 6443
    tls_cert_file: Path | None = None
    tls_private_key_file: Path | None = None
    client_ca_file: Path | None = None
    requestheader_client_ca_file: Path | None = None
    requestheader_allowed_names: tuple[str, ...] | None = None
    requestheader_username_headers: tuple[str, ...] | None = None
    requestheader_uid_headers: tuple[str, ...] | None = None
    requestheader_group_headers: tuple[str, ...] | None = None
    requestheader_extra_headers_prefix: tuple[str, ...] | None = None
    authentication_kubeconfig: Path | None = None
    authorization_kubeconfig: Path | None = None
    authentication_skip_lookup: bool = False  # never read the ConfigMap
    authentication_token_webhook_cache_ttl: float = 10.0
    authorization_webhook_cache_authorized_ttl: float = 10.0
    authorization_webhook_cache_unauthorized_ttl: float = 10.0
    authorization_always_allow: bool = False  # local runs only: every authenticated request is allowed
    metrics_bind_address: str = "0.0.0.0"
    metrics_port: int = 9090  # plain-HTTP Prometheus endpoint; 0 picks a free port, -1 disables it
    file_check_seconds: float = 5.0  # how often TLS and CA files are checked for changes
    self_signed_hosts: tuple[str, ...] = ("localhost", "127.0.0.1")

    def __post_init__(self) -> None:
        for name in ("bind_address", "metrics_bind_address"):
            value = getattr(self, name)
            try:
                ipaddress.ip_address(value)
            except ValueError:
                flag = "--" + name.replace("_", "-")
                raise UserError(f"{flag} {value!r} is not an IP address") from None
        if not 0 <= self.secure_port <= 65535:
            raise UserError(f"--secure-port {self.secure_port} is not a port (0..65535)")
        if not -1 <= self.metrics_port <= 65535:
            raise UserError(f"--metrics-port {self.metrics_port} is not a port (0..65535, or -1 for none)")
        if (self.tls_cert_file is None) != (self.tls_private_key_file is None):
            raise UserError("--tls-cert-file and --tls-private-key-file must be given together")
        for name in (
            "authentication_token_webhook_cache_ttl",
            "authorization_webhook_cache_authorized_ttl",
            "authorization_webhook_cache_unauthorized_ttl",
        ):
            if getattr(self, name) < 0:
                raise UserError(f"--{name.replace('_', '-')} must not be negative")
        if self.file_check_seconds <= 0:
            raise UserError("the file check interval must be positive")


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _path(text: str) -> Path:
    return Path(text).expanduser()


def add_api_arguments(parser: argparse.ArgumentParser) -> None:
    """The k8s.io/apiserver-style flags of :class:`ApiSettings` (defaults come from the dataclass)."""
    group = parser.add_argument_group("external metrics API (HTTPS)")
    add = group.add_argument
    add("--bind-address", help="address to serve HTTPS on (default 0.0.0.0)")
    add("--secure-port", type=int, help="HTTPS port (default 6443)")
    add("--tls-cert-file", type=_path, help="serving certificate (PEM, reloaded on change)")
    add("--tls-private-key-file", type=_path, help="serving key (PEM, reloaded on change)")
    add("--client-ca-file", type=_path, help="CA bundle for x509 client certificates (user=CN, groups=O)")
    add("--requestheader-client-ca-file", type=_path, help="front-proxy CA bundle (kube-apiserver's)")
    add(
        "--requestheader-allowed-names",
        type=_names,
        help="comma-separated CNs allowed to front-proxy (empty: any CN the front-proxy CA signed)",
    )
    add("--requestheader-username-headers", type=_names, help="default X-Remote-User")
    add("--requestheader-uid-headers", type=_names, help="default X-Remote-Uid")
    add("--requestheader-group-headers", type=_names, help="default X-Remote-Group")
    add("--requestheader-extra-headers-prefix", type=_names, help="default X-Remote-Extra-")
    add("--authentication-kubeconfig", type=_path, help="kubeconfig for TokenReview and the ConfigMap lookup")
    add("--authorization-kubeconfig", type=_path, help="kubeconfig for SubjectAccessReview")
    add(
        "--authentication-skip-lookup",
        action="store_true",
        default=None,
        help="do not read kube-system/extension-apiserver-authentication",
    )
    add("--authentication-token-webhook-cache-ttl", type=float, help="seconds (default 10)")
    add("--authorization-webhook-cache-authorized-ttl", type=float, help="seconds (default 10)")
    add("--authorization-webhook-cache-unauthorized-ttl", type=float, help="seconds (default 10)")
    add(
        "--authorization-always-allow",
        action="store_true",
        default=None,
        help="LOCAL USE ONLY: allow every authenticated request without SubjectAccessReview",
    )
    add("--metrics-bind-address", help="address of the plain-HTTP /metrics endpoint (default 0.0.0.0)")
    add("--metrics-port", type=int, help="port of the plain-HTTP /metrics endpoint (default 9090, -1: off)")


def api_settings_from_args(args: argparse.Namespace, base: ApiSettings | None = None) -> ApiSettings:
    """``base`` (defaults, or a config file's values) overridden by every flag that was given."""
    values: dict[str, Any] = {}
    base = base or ApiSettings()
    for item in fields(ApiSettings):
        given = getattr(args, item.name, None)
        values[item.name] = getattr(base, item.name) if given is None else given
    return ApiSettings(**values)
