"""The composition path the service uses: delegated_auth + create_app + serve_https, and the 500 net."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from aiohttp import web
from lagscaler_demo.harness import LocalCluster, aggregator_headers
from structlog.typing import EventDict

from lagscaler.edges.api import (
    HealthChecks,
    MetricsCache,
    ServingTLS,
    create_app,
    delegated_auth,
    serve_https,
)
from lagscaler.edges.observability import ServiceMetrics


async def _boom(_: web.Request) -> web.Response:
    raise RuntimeError("a bug, not bad input")


async def test_unexpected_exceptions_become_a_logged_status_500(
    tmp_path: Path, logs: list[EventDict]
) -> None:
    metrics = ServiceMetrics()
    async with LocalCluster(tmp_path) as cluster:
        settings = cluster.settings(authorization_always_allow=True)
        async with delegated_auth(settings, metrics) as auth:
            app = create_app(
                MetricsCache(),
                auth.authenticator,
                auth.authorizer,
                HealthChecks(),
                metrics,
                lifetimes=auth.lifetimes,
            )
            app.router.add_get("/apis/boom", _boom)
            tls = ServingTLS(
                settings.tls_cert_file, settings.tls_private_key_file, auth.source.trusted_client_cas
            )
            try:
                async with serve_https(app, settings, tls) as endpoints:
                    connector = aiohttp.TCPConnector(ssl=cluster.client_context(cluster.front_proxy))
                    url = f"https://127.0.0.1:{endpoints.https_port}/apis/boom"
                    async with (
                        aiohttp.ClientSession(connector=connector) as session,
                        session.get(url, headers=aggregator_headers()) as response,
                    ):
                        body = await response.json()
            finally:
                tls.close()
    assert response.status == 500
    assert body["kind"] == "Status"
    assert body["reason"] == "InternalError"
    assert "a bug" not in body["message"]  # details stay in the log, not in the answer
    [logged] = [e for e in logs if e["event"] == "internal error answering a request"]
    assert (logged["log_level"], logged["method"], logged["path"]) == ("error", "GET", "/apis/boom")
    assert logged["exc_info"] is True  # the traceback goes to the log
    assert metrics.registry.get_sample_value("lagscaler_api_internal_errors_total") == 1
