"""Settings of the external metrics API server, with the flag names k8s.io/apiserver users know.

:class:`ApiSettings` is what :func:`lagscaler.edges.api.server.build_api` takes. :class:`ApiOptions` is its
command-line face, defined once for ``lagscaler serve`` (flags, environment, config file) and the
standalone runner: :func:`add_api_arguments` adds its flags, :func:`api_settings_from_args` reads them.
"""

from __future__ import annotations

import argparse
import ipaddress
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pydantic import Field

from lagscaler.errors import UserError
from lagscaler.options import Names, Options, UserPath, add_flags

__all__ = ["ApiOptions", "ApiSettings", "add_api_arguments", "api_settings_from_args"]


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


def _meta(metavar: str) -> Any:
    return Field(json_schema_extra={"metavar": metavar})


class ApiOptions(Options):
    """The k8s.io/apiserver-style flags of :class:`ApiSettings`; ``None`` is "not given" (its default)."""

    bind_address: str | None = None
    """Address to serve HTTPS on (default 0.0.0.0)."""
    secure_port: int | None = None
    """HTTPS port (default 6443)."""
    tls_cert_file: UserPath | None = None
    """Serving certificate (PEM, reloaded on change)."""
    tls_private_key_file: UserPath | None = None
    """Serving key (PEM, reloaded on change)."""
    client_ca_file: UserPath | None = None
    """CA bundle for x509 client certificates (user=CN, groups=O)."""
    requestheader_client_ca_file: UserPath | None = None
    """Front-proxy CA bundle (kube-apiserver's)."""
    requestheader_allowed_names: Names | None = None
    """Comma-separated CNs allowed to front-proxy (empty: any CN the front-proxy CA signed)."""
    requestheader_username_headers: Names | None = None
    """Default X-Remote-User."""
    requestheader_uid_headers: Names | None = None
    """Default X-Remote-Uid."""
    requestheader_group_headers: Names | None = None
    """Default X-Remote-Group."""
    requestheader_extra_headers_prefix: Names | None = None
    """Default X-Remote-Extra-."""
    authentication_kubeconfig: UserPath | None = None
    """Kubeconfig for TokenReview and the ConfigMap lookup."""
    authorization_kubeconfig: UserPath | None = None
    """Kubeconfig for SubjectAccessReview."""
    authentication_skip_lookup: bool | None = None
    """Do not read kube-system/extension-apiserver-authentication."""
    authentication_token_webhook_cache_ttl: float | None = None
    """Seconds (default 10)."""
    authorization_webhook_cache_authorized_ttl: float | None = None
    """Seconds (default 10)."""
    authorization_webhook_cache_unauthorized_ttl: float | None = None
    """Seconds (default 10)."""
    authorization_always_allow: bool | None = None
    """LOCAL USE ONLY: allow every authenticated request without SubjectAccessReview."""
    metrics_bind_address: str | None = None
    """Address of the plain-HTTP /metrics endpoint (default 0.0.0.0)."""
    metrics_port: int | None = None
    """Port of the plain-HTTP /metrics endpoint (default 9090, -1: off)."""


def add_api_arguments(parser: argparse.ArgumentParser, *, given_only: bool = False) -> None:
    """The flags of :class:`ApiOptions` (defaults come from :class:`ApiSettings`)."""
    add_flags(parser.add_argument_group("external metrics API (HTTPS)"), ApiOptions, given_only=given_only)


def api_settings_from_args(
    args: argparse.Namespace | ApiOptions, base: ApiSettings | None = None
) -> ApiSettings:
    """``base`` (defaults, or a config file's values) overridden by every flag that was given."""
    values: dict[str, Any] = {}
    base = base or ApiSettings()
    for item in fields(ApiSettings):
        given = getattr(args, item.name, None)
        values[item.name] = getattr(base, item.name) if given is None else given
    return ApiSettings(**values)
