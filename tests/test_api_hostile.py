"""What an unauthenticated outsider can do to the HTTPS port: hold connections open, flood the log.

Each test runs the real listener on loopback with short limits, opens hostile connections the way a
slowloris or a scanner would (no handshake, a handshake and then silence, half a request, garbage),
and meanwhile calls the API as the aggregator does: the real client must keep getting answers, and
the hostile connections must be closed by the server, not by the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from lagscaler_demo.harness import LocalCluster, aggregator_headers
from structlog.typing import EventDict
from support import eventually

from lagscaler.edges.api import MetricsCache, RunningApi, running_api
from lagscaler.edges.api.connections import ConnectionLimits
from lagscaler.edges.observability import ServiceMetrics

GV = "/apis/external.metrics.k8s.io/v1beta1"


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


class Hostile:
    """Connections that never finish a request."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def open(self, count: int, *, tls: bool, send: bytes = b"") -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        for _ in range(count):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", self.port, ssl=context if tls else None
            )
            if send:
                writer.write(send)
                await writer.drain()
            self.streams.append((reader, writer))

    async def closed_by_server(self) -> int:
        """How many of the connections the server has closed (end of stream or reset)."""
        closed = 0
        for reader, _ in self.streams:
            try:
                data = await asyncio.wait_for(reader.read(65536), 0.01)
            except TimeoutError:
                continue
            except (ConnectionError, ssl.SSLError):
                closed += 1
                continue
            closed += data == b"" or reader.at_eof()
        return closed

    async def close(self) -> None:
        for _, writer in self.streams:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def _running(
    tmp_path: Path, limits: ConnectionLimits, metrics: ServiceMetrics
) -> AsyncIterator[tuple[RunningApi, LocalCluster]]:
    async with LocalCluster(tmp_path) as cluster:
        settings = replace(
            cluster.settings(authorization_always_allow=True), metrics_bind_address="127.0.0.1"
        )
        async with running_api(settings, MetricsCache(), metrics=metrics, limits=limits) as api:
            yield api, cluster


@contextlib.asynccontextmanager
async def _api(
    tmp_path: Path, limits: ConnectionLimits, metrics: ServiceMetrics
) -> AsyncIterator[tuple[str, LocalCluster]]:
    async with _running(tmp_path, limits, metrics) as (api, cluster):
        yield api.url, cluster


async def _real_client_answered(url: str, cluster: LocalCluster) -> int:
    """One request on a fresh connection, as a new aggregator connection would make it."""
    connector = aiohttp.TCPConnector(ssl=cluster.client_context(cluster.front_proxy), force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session,
        session.get(url + GV, headers=aggregator_headers()) as response,
    ):
        return response.status


async def test_connections_that_never_finish_a_request_are_closed(tmp_path: Path) -> None:
    metrics = ServiceMetrics()
    # 2 s: short enough to wait for, long enough for a real client's request to arrive on a busy machine
    limits = ConnectionLimits(header_timeout=2.0, idle_timeout=60.0, max_connections=1000)
    async with _api(tmp_path, limits, metrics) as (url, cluster):
        hostile = Hostile(_port(url))
        try:
            await hostile.open(5, tls=False)  # never starts the TLS handshake
            await hostile.open(5, tls=True)  # handshake, then nothing
            await hostile.open(5, tls=True, send=b"GET /apis HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # half
            for _ in range(5):
                assert await _real_client_answered(url, cluster) == 200

            async def all_closed() -> bool:
                return await hostile.closed_by_server() == 15

            await eventually(all_closed, within=60, what="the server to close every unfinished connection")
        finally:
            await hostile.close()
    # the 10 that finished a handshake were closed by the first-request deadline (the other 5 by the
    # handshake deadline, in asyncio, before any protocol saw them)
    exposition = metrics.exposition().decode()
    assert 'lagscaler_api_connections_closed_total{reason="header-timeout"} 10.0' in exposition


async def test_the_prometheus_port_closes_unfinished_and_idle_connections_too(tmp_path: Path) -> None:
    """The plain-HTTP metrics listener is as reachable as the API (0.0.0.0 by default): connections
    that never finish a request, or idle after one, are closed there as well, and scrapes go on."""
    metrics = ServiceMetrics()
    limits = ConnectionLimits(header_timeout=2.0, idle_timeout=2.0, max_connections=1000)
    async with _running(tmp_path, limits, metrics) as (api, _):
        assert api.metrics_url is not None
        hostile = Hostile(_port(api.metrics_url.removesuffix("/metrics")))
        try:
            await hostile.open(5, tls=False)  # nothing at all
            await hostile.open(5, tls=False, send=b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # half
            await hostile.open(5, tls=False, send=b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")  # then idle
            async with aiohttp.ClientSession() as session:
                for _ in range(3):
                    async with session.get(api.metrics_url) as response:
                        assert response.status == 200

            async def all_closed() -> bool:
                return await hostile.closed_by_server() == 15

            await eventually(
                all_closed, within=60, what="the metrics listener to close every hostile connection"
            )
        finally:
            await hostile.close()


async def test_idle_keep_alive_connections_are_closed(tmp_path: Path) -> None:
    limits = ConnectionLimits(header_timeout=30.0, idle_timeout=0.5, max_connections=1000)
    async with _api(tmp_path, limits, ServiceMetrics()) as (url, cluster):
        context = cluster.client_context(cluster.front_proxy)
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(url), ssl=context)
        try:
            writer.write(f"GET {GV} HTTP/1.1\r\nHost: x\r\nX-Remote-User: u\r\n\r\n".encode())
            await writer.drain()
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
            # the connection stays open for another request, then is closed once idle too long
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                while await asyncio.wait_for(reader.read(65536), 60):
                    pass
            assert reader.at_eof() or writer.is_closing()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
                await writer.wait_closed()


async def test_over_the_connection_cap_the_longest_idle_go_and_real_clients_get_in(tmp_path: Path) -> None:
    metrics = ServiceMetrics()
    limits = ConnectionLimits(header_timeout=600.0, idle_timeout=600.0, max_connections=8)
    async with _api(tmp_path, limits, metrics) as (url, cluster):
        hostile = Hostile(_port(url))
        try:
            await hostile.open(20, tls=True)
            for _ in range(10):
                assert await _real_client_answered(url, cluster) == 200

            async def trimmed() -> bool:
                return await hostile.closed_by_server() >= 20 - limits.max_connections

            await eventually(trimmed, within=60, what="the server to trim connections to its cap")
        finally:
            await hostile.close()
    assert 'lagscaler_api_connections_closed_total{reason="over-limit"}' in metrics.exposition().decode()


async def test_malformed_requests_are_counted_and_logged_briefly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, logs: list[EventDict]
) -> None:
    """``logs``: lagscaler's events; ``caplog``: what aiohttp's own handler logs (stdlib records)."""
    metrics = ServiceMetrics()
    caplog.set_level(logging.DEBUG)
    garbage = b"G\x00T /" + b"A" * 8000 + b" HTTP/1.1\r\n\r\n"
    sent = 40
    async with _api(tmp_path, ConnectionLimits(), metrics) as (url, cluster):
        started = time.monotonic()
        for _ in range(sent):
            hostile = Hostile(_port(url))
            await hostile.open(1, tls=True, send=garbage)
            reader, _ = hostile.streams[0]
            answer = await asyncio.wait_for(reader.read(), 30)
            assert answer.split(b" ", 2)[1] == b"400"
            await hostile.close()
        elapsed = time.monotonic() - started
        assert await _real_client_answered(url, cluster) == 200
    assert f"lagscaler_api_malformed_requests_total {float(sent)}" in metrics.exposition().decode()
    lines = [e for e in logs if e["event"] == "malformed request"]
    assert all(e["log_level"] == "info" and e["status"] == 400 for e in lines)
    assert 1 <= len(lines) <= 1 + math.ceil(elapsed / 10.0)  # at most one line per 10 s
    assert all(len(repr(e)) < 400 for e in lines)  # never the sender's 8 KB
    assert not [e for e in logs if e["log_level"] in ("error", "critical")]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_unauthenticated_requests_are_counted_and_their_log_throttled(
    tmp_path: Path, logs: list[EventDict]
) -> None:
    metrics = ServiceMetrics()
    sent = 40
    async with _api(tmp_path, ConnectionLimits(), metrics) as (url, cluster):
        connector = aiohttp.TCPConnector(ssl=cluster.client_context())
        started = time.monotonic()
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(sent):  # no certificate, no token: anyone can send these
                async with session.get(url + GV + "/" + "x" * 4000) as response:
                    assert response.status == 401
        elapsed = time.monotonic() - started
    assert (
        f'lagscaler_api_auth_failures_total{{reason="anonymous"}} {float(sent)}'
        in metrics.exposition().decode()
    )
    lines = [e for e in logs if e["event"] == "request not authenticated"]
    assert 1 <= len(lines) <= 1 + math.ceil(elapsed / 10.0)
    assert all(len(repr(e)) < 400 for e in lines)


async def test_a_rejected_bearer_token_is_logged_as_rejected_never_as_itself(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, logs: list[EventDict]
) -> None:
    token = "tok-5f1c9e-never-log-me"
    caplog.set_level(logging.DEBUG)
    async with _api(tmp_path, ConnectionLimits(), ServiceMetrics()) as (url, cluster):
        connector = aiohttp.TCPConnector(ssl=cluster.client_context())
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(url + GV, headers={"Authorization": f"Bearer {token}"}) as response,
        ):
            assert response.status == 401
    [line] = [e for e in logs if e["event"] == "request not authenticated"]
    assert (line["reason"], line["detail"]) == ("token", "bearer token rejected")
    assert token not in repr(logs)
    assert token not in caplog.text
