"""The k8s.io/apiserver-style flags map onto ApiSettings; bad values are one-line user errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from lagscaler.edges.api import ApiSettings, add_api_arguments, api_settings_from_args
from lagscaler.errors import UserError


def _parse(*argv: str, base: ApiSettings | None = None) -> ApiSettings:
    parser = argparse.ArgumentParser()
    add_api_arguments(parser)
    return api_settings_from_args(parser.parse_args(argv), base)


def test_flags_override_defaults_and_leave_the_rest() -> None:
    settings = _parse(
        "--secure-port",
        "8443",
        "--tls-cert-file",
        "/etc/tls/tls.crt",
        "--tls-private-key-file",
        "/etc/tls/tls.key",
        "--requestheader-client-ca-file",
        "/ca/front-proxy.crt",
        "--requestheader-allowed-names",
        "front-proxy-client, aggregator",
        "--authentication-kubeconfig",
        "/kube/authn",
        "--authorization-always-allow",
        "--metrics-port",
        "9100",
    )
    assert settings.secure_port == 8443
    assert settings.tls_cert_file == Path("/etc/tls/tls.crt")
    assert settings.requestheader_client_ca_file == Path("/ca/front-proxy.crt")
    assert settings.requestheader_allowed_names == ("front-proxy-client", "aggregator")
    assert settings.authentication_kubeconfig == Path("/kube/authn")
    assert settings.authorization_kubeconfig is None
    assert settings.authorization_always_allow is True
    assert settings.metrics_port == 9100
    assert settings.bind_address == "0.0.0.0"
    assert (
        settings.requestheader_username_headers is None
    )  # not given: the ConfigMap (or the default) decides


def test_flags_override_a_base_from_a_config_file() -> None:
    base = ApiSettings(secure_port=7443, metrics_port=9200)
    settings = _parse("--metrics-port", "9300", base=base)
    assert (settings.secure_port, settings.metrics_port) == (7443, 9300)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--secure-port", "70000"], "--secure-port 70000 is not a port"),
        (["--bind-address", "localhost"], "--bind-address 'localhost' is not an IP address"),
        (["--tls-cert-file", "/x.crt"], "must be given together"),
        (["--authorization-webhook-cache-authorized-ttl", "-1"], "must not be negative"),
    ],
)
def test_bad_settings_are_user_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        _parse(*argv)
