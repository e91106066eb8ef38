"""Serving TLS: certificate files reloaded for new handshakes, bad files ignored, self-signed fallback."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from lagscaler_demo.harness import LocalCluster
from structlog.typing import EventDict
from support import eventually

from lagscaler.edges.api import MetricsCache, running_api
from lagscaler.edges.observability import ServiceMetrics
from lagscaler.errors import UserError


async def _served_certificate(port: int, context: ssl.SSLContext) -> x509.Certificate:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        return x509.load_der_x509_certificate(ssl_object.getpeercert(binary_form=True))
    finally:
        writer.close()
        await writer.wait_closed()
        del reader


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def test_new_certificate_files_are_used_for_new_handshakes(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path) as cluster:
        metrics = ServiceMetrics()
        async with running_api(cluster.settings(), MetricsCache(), metrics=metrics) as api:
            context = cluster.client_context()
            first = await _served_certificate(_port(api.url), context)
            assert (
                first.serial_number
                == x509.load_pem_x509_certificate(cluster.serving_cert_file.read_bytes()).serial_number
            )

            renewed = cluster.cluster_ca.issue_server("127.0.0.1", "localhost")
            renewed.write(tmp_path, "serving")  # same paths, new content (as cert-manager does)

            async def renewed_served() -> None:
                served = await _served_certificate(_port(api.url), context)
                assert served.serial_number == renewed.cert.serial_number

            await eventually(renewed_served, within=10, what="the renewed certificate to be served")
            assert api.tls.reloads >= 1

            cluster.serving_cert_file.write_text(
                "not a certificate"
            )  # a broken write keeps the last good one
            await eventually(
                lambda: metrics.registry.get_sample_value(
                    "lagscaler_tls_reloads_total", {"outcome": "error"}
                ),
                within=20,
                what="the broken file to be noticed",
            )
            still = await _served_certificate(_port(api.url), context)
            assert still.serial_number == renewed.cert.serial_number


async def test_without_certificate_files_a_self_signed_one_is_served_loudly(
    tmp_path: Path, logs: list[EventDict]
) -> None:
    async with LocalCluster(tmp_path) as cluster:
        settings = cluster.settings(tls_cert_file=None, tls_private_key_file=None)
        async with running_api(settings, MetricsCache()) as api:
            assert api.tls.serving.self_signed
            context = ssl.create_default_context(cafile=str(api.tls.serving.cert_file))
            served = await _served_certificate(_port(api.url), context)
            assert served.issuer == served.subject
            strict = ssl.create_default_context()
            with pytest.raises(ssl.SSLCertVerificationError):
                await _served_certificate(_port(api.url), strict)
    [loud] = [e for e in logs if "SELF-SIGNED" in e["event"]]
    assert "LOCAL USE ONLY" in loud["event"]
    assert loud["log_level"] == "warning"
    assert loud["hosts"] == list(settings.self_signed_hosts)


async def test_unreadable_certificate_is_a_user_error(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path) as cluster:
        (tmp_path / "garbage.crt").write_text("garbage")
        settings = cluster.settings(tls_cert_file=tmp_path / "garbage.crt")
        with pytest.raises(UserError, match="cannot load TLS certificate"):
            async with running_api(settings, MetricsCache()):
                pass
