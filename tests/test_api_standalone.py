"""``python -m lagscaler.edges.api``: the API alone, serving fixed values (for trials and benchmarks)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from lagscaler_demo.harness import LocalCluster, aggregator_headers


async def test_standalone_serves_values_and_stops_on_sigterm(tmp_path: Path) -> None:
    values = tmp_path / "values.json"
    values.write_text(
        json.dumps(
            [
                {
                    "namespace": "shop",
                    "name": "orders",
                    "values": [{"metric": "lagscaler_lag_seconds", "value": 1.25}],
                }
            ]
        )
    )
    cluster = LocalCluster(tmp_path / "pki")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lagscaler.edges.api",
        "--workloads",
        str(values),
        "--bind-address",
        "127.0.0.1",
        "--secure-port",
        "0",
        "--metrics-port",
        "-1",
        "--tls-cert-file",
        str(cluster.serving_cert_file),
        "--tls-private-key-file",
        str(cluster.serving_key_file),
        "--requestheader-client-ca-file",
        str(cluster.front_proxy_ca_file),
        "--authorization-always-allow",
        "--log-format",
        "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert line.startswith("serving https://127.0.0.1:"), line
        url = line.split()[1]
        connector = aiohttp.TCPConnector(ssl=cluster.client_context(cluster.front_proxy))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(
                url + "/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/lagscaler_lag_seconds",
                headers=aggregator_headers(),
            ) as response,
        ):
            body = await response.json()
        assert response.status == 200
        assert body["items"][0]["value"] == "1250m"
        assert body["items"][0]["metricLabels"] == {"lagscaler.io/workload": "orders"}
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0
    assert b"--authorization-always-allow" in stderr  # the loud warning


@pytest.mark.parametrize(
    "content",
    [None, b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000],
    ids=["missing", "not-utf-8", "nested-too-deep"],
)
async def test_standalone_bad_input_is_one_line(tmp_path: Path, content: bytes | None) -> None:
    workloads = tmp_path / "workloads.json"
    if content is not None:
        workloads.write_bytes(content)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lagscaler.edges.api",
        "--workloads",
        str(workloads),
        "--secure-port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    (line,) = stderr.decode().strip().splitlines()
    assert line.startswith("lagscaler: error: --workloads")
