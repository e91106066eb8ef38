"""API latency at a constant arrival rate over TLS, against a bare aiohttp handler in the same run.

    .venv/bin/python bench/api_latency.py [--rate 500] [--seconds 20] [--rounds 2]

The server side runs in this process: the full lagscaler app (TLS with client-certificate
verification, front-proxy authentication, a SubjectAccessReview answered by the loopback
kube-apiserver stand-in and then cached, selector parsing, cache lookup, JSON) and a bare aiohttp
handler returning a fixed body of the same size behind the *same* TLS setup. The load generator
is a separate process: open loop, request *i* is due at ``t0 + i/rate`` whatever happened before,
latency is measured from that due time (so a stall is charged to every request it delays), and
connections are kept alive like the aggregator's. Rounds alternate bare/full to share any drift.
Targets: p99 ≤ 5 ms, p99 ≤ 2× bare, 0 errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

PATH = "/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/lagscaler_desired_replicas"
QUERY = "labelSelector=lagscaler.io%2Fworkload%3Dorders"


# ------------------------------------------------------------------------------- load generator


class _Connection:
    """One kept-alive TLS connection speaking just enough HTTP/1.1 (cheaper than a full client)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return status


async def _generate(args: argparse.Namespace) -> dict[str, Any]:
    import ssl

    context = ssl.create_default_context(cafile=args.ca)
    context.load_cert_chain(args.cert, args.key)
    host, port = args.url.removeprefix("https://").rsplit(":", 1)
    request = (
        f"GET {PATH}?{QUERY} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json\r\n"
        f"X-Remote-User: {args.user}\r\nX-Remote-Group: system:authenticated\r\n\r\n"
    ).encode()
    latencies: list[float] = []
    lateness: list[float] = []
    errors: dict[str, int] = {}

    async def connect() -> _Connection:
        reader, writer = await asyncio.open_connection(
            host, int(port), ssl=context, server_hostname="localhost"
        )
        return _Connection(reader, writer)

    # a fixed pool of kept-alive connections, opened before the clock starts (the aggregator keeps its
    # connections open too); a due request waits for a free one, and that wait counts as latency
    pool: asyncio.Queue[_Connection] = asyncio.Queue()
    for _ in range(args.connections):
        pool.put_nowait(await connect())

    async def one(due: float, record: bool) -> None:
        conn = await pool.get()
        started = time.perf_counter()
        try:
            status = await asyncio.wait_for(conn.exchange(request), 10)
            problem = f"HTTP {status}" if status != 200 else ""
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
            problem = type(exc).__name__
            conn.writer.close()
            conn = await connect()
        done = time.perf_counter()
        pool.put_nowait(conn)
        if not record:
            return
        if problem:
            errors[problem] = errors.get(problem, 0) + 1
        else:
            latencies.append(done - due)
            lateness.append(started - due)

    warmup = int(args.rate * args.warmup)
    total = warmup + int(args.rate * args.seconds)
    tasks: list[asyncio.Task[None]] = []
    t0 = time.perf_counter() + 0.05
    for i in range(total):
        due = t0 + i / args.rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due, i >= warmup)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        pool.get_nowait().writer.close()
    return {"latencies": latencies, "lateness": lateness, "errors": errors}


# ----------------------------------------------------------------------------------- the servers


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def _run_generator(url: str, cluster: Any, args: argparse.Namespace) -> dict[str, Any]:
    from lagscaler_demo.harness import HPA_USER

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--generate",
        "--url",
        url,
        "--ca",
        str(cluster.cluster_ca_file),
        "--cert",
        str(cluster.front_proxy.cert_file),
        "--key",
        str(cluster.front_proxy.key_file),
        "--user",
        HPA_USER,
        "--rate",
        str(args.rate),
        "--seconds",
        str(args.seconds),
        "--warmup",
        str(args.warmup),
        "--connections",
        str(args.connections),
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"load generator failed with exit code {process.returncode}")
    result: dict[str, Any] = json.loads(stdout)
    return result


async def _bench(args: argparse.Namespace) -> int:
    from lagscaler_demo.harness import HPA_USER, LocalCluster

    from lagscaler.core.hpa.served import DESIRED_REPLICAS, GROUP_LABEL, WORKLOAD_LABEL
    from lagscaler.edges.api import MetricsCache, MetricValue, WorkloadMetrics, running_api
    from lagscaler.edges.api.server import serve_https
    from lagscaler.edges.api.tls import ServingTLS
    from lagscaler.edges.observability import ServiceMetrics

    cache = MetricsCache()
    labels = {WORKLOAD_LABEL: "orders", GROUP_LABEL: "orders-consumers"}
    others = [
        WorkloadMetrics(
            "shop", f"w{i}", time.time(), (MetricValue(DESIRED_REPLICAS, i, {WORKLOAD_LABEL: f"w{i}"}),), 1e9
        )
        for i in range(20)
    ]
    cache.publish(
        [
            WorkloadMetrics(
                "shop", "orders", time.time(), (MetricValue(DESIRED_REPLICAS, 3.5, labels),), 1e9
            ),
            *others,
        ]
    )
    with tempfile.TemporaryDirectory(prefix="lagscaler-bench-") as tmp:
        async with LocalCluster(Path(tmp)) as cluster:
            cluster.standin.allow(HPA_USER, verbs=["list"], resources=[DESIRED_REPLICAS])
            metrics = ServiceMetrics()
            settings = cluster.settings(metrics_port=-1)
            async with running_api(settings, cache, metrics=metrics) as full:
                # the bare handler: same certificate, same client-CA verification, a body of the same size
                async with (
                    aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(ssl=cluster.client_context(cluster.front_proxy))
                    ) as probe,
                    probe.get(f"{full.url}{PATH}?{QUERY}", headers={"X-Remote-User": HPA_USER}) as response,
                ):
                    body = await response.read()
                    assert response.status == 200, body

                async def bare_handler(_: web.Request) -> web.Response:
                    return web.Response(body=body, content_type="application/json")

                bare_app = web.Application()
                bare_app.router.add_get(PATH, bare_handler)
                tls = ServingTLS(
                    settings.tls_cert_file,
                    settings.tls_private_key_file,
                    full.auth.source.trusted_client_cas,
                )
                async with serve_https(bare_app, settings, tls) as bare_endpoints:
                    bare_url = f"https://127.0.0.1:{bare_endpoints.https_port}"
                    results: dict[str, dict[str, Any]] = {
                        name: {"latencies": [], "lateness": [], "errors": {}, "cpu": 0.0, "requests": 0}
                        for name in ("bare", "full")
                    }
                    for round_number in range(args.rounds):
                        for name, url in (("bare", bare_url), ("full", full.url)):
                            cpu_before = time.process_time()
                            out = await _run_generator(url, cluster, args)
                            bucket = results[name]
                            # server CPU per request: this process only serves while the generator runs
                            bucket["cpu"] += time.process_time() - cpu_before
                            bucket["requests"] += int(args.rate * (args.seconds + args.warmup))
                            bucket["latencies"].extend(out["latencies"])
                            bucket["lateness"].extend(out["lateness"])
                            errors = bucket["errors"]
                            for key, count in out["errors"].items():
                                errors[key] = errors.get(key, 0) + count
                            print(
                                f"round {round_number + 1} {name}: {len(out['latencies'])} ok, "
                                f"{sum(out['errors'].values())} errors",
                                file=sys.stderr,
                            )
                tls.close()
            sar_calls = len(cluster.standin.access_reviews)
    return _report(results, args, sar_calls)


def _report(results: dict[str, dict[str, Any]], args: argparse.Namespace, sar_calls: int) -> int:
    rows = {}
    for name, bucket in results.items():
        latencies = [x * 1000 for x in bucket["latencies"]]
        lateness = [x * 1000 for x in bucket["lateness"]]
        rows[name] = {
            "n": len(latencies),
            "errors": sum(bucket["errors"].values()),
            "p50": _percentile(latencies, 0.50),
            "p99": _percentile(latencies, 0.99),
            "p999": _percentile(latencies, 0.999),
            "mean": statistics.fmean(latencies),
            "late_p99": _percentile(lateness, 0.99),
            "cpu_us": 1e6 * bucket["cpu"] / max(1, bucket["requests"]),
        }
    print(
        f"open loop, {args.rate:g} requests/s, {args.seconds:g} s x {args.rounds} rounds per target, "
        f"{args.connections} TLS connections with the front-proxy certificate"
    )
    print(
        f"{'target':8}{'requests':>10}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}{'mean ms':>9}"
        f"{'send-lag p99':>14}{'server CPU/req':>16}"
    )
    for name, row in rows.items():
        print(
            f"{name:8}{row['n']:>10}{row['errors']:>8}{row['p50']:>9.2f}{row['p99']:>9.2f}"
            f"{row['p999']:>10.2f}{row['mean']:>9.2f}{row['late_p99']:>14.2f}{row['cpu_us']:>13.0f} us"
        )
    ratio50 = rows["full"]["p50"] / rows["bare"]["p50"]
    ratio99 = rows["full"]["p99"] / rows["bare"]["p99"]
    ratio_cpu = rows["full"]["cpu_us"] / rows["bare"]["cpu_us"]
    print(
        f"full/bare: p50 {ratio50:.2f}x, p99 {ratio99:.2f}x, server CPU {ratio_cpu:.2f}x; "
        f"SubjectAccessReviews sent: {sar_calls}"
    )
    ok = (
        rows["full"]["p99"] <= 5.0
        and ratio99 <= 2.0
        and rows["full"]["errors"] == 0
        and rows["bare"]["errors"] == 0
    )
    print("targets (p99 <= 5 ms, <= 2x bare, 0 errors):", "MET" if ok else "NOT MET")
    print(f"niceness {os.nice(0)}, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for name, bucket in results.items():
        if bucket["errors"]:
            print(f"{name} errors: {bucket['errors']}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second (default 500)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per round and target")
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="unmeasured seconds at the start of each round"
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternating bare/full rounds")
    parser.add_argument("--connections", type=int, default=16, help="kept-alive TLS connections (default 16)")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness for server and generator (negative needs root): on a shared machine this stands in "
        "for the CPU request a pod would have",
    )
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--ca", help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--user", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rate <= 0 or args.seconds <= 0 or args.rounds < 1:
        parser.error("--rate and --seconds must be positive, --rounds at least 1")
    if args.nice and not args.generate:
        os.nice(args.nice)  # the generator inherits it
    if args.generate:
        print(json.dumps(asyncio.run(_generate(args))))
        return 0
    return asyncio.run(_bench(args))


if __name__ == "__main__":
    sys.exit(main())
