"""lagscaler under a real Prometheus: every dashboard query and template variable, and the alert rules.

Two ``serve`` replicas on the session's real broker are scraped every second by Debian's Prometheus
twice: by a plain static job, and as the Prometheus Operator scrapes the chart's ServiceMonitor (its
generated relabelling reproduced by :mod:`promharness`). The chart's PrometheusRule is loaded as rendered,
with every ``for`` set to 1 s. The scenario: a lagging workload whose lag keeps moving, with one
consumer-group member that consumes nothing; a policy edit that raises the decision; a policy file that
is broken; a stale period (the broker frozen with SIGSTOP: it keeps its sockets and answers nothing); and
at the end both scaling loops stopped while the API and metrics endpoints keep serving.

Then each panel's queries are evaluated through Prometheus's HTTP API as Grafana would send them, per
replica and over both, under both jobs, and compared by legend with what the processes themselves
recorded (their registries, their decisions, the Kafka request counts, what the HPA-like poller got).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaProducer
from lagscaler_demo.harness import LocalCluster
from lagscaler_demo.localkafka import KafkaEndpoint, LocalBroker, free_port
from lagscaler_demo.seed import join_group
from promharness import LABEL_VALUES, Pod, Prometheus, interpolate, running_prometheus
from promharness import service_monitor_scrape_config as operator_jobs
from support import eventually
from test_chart import CHART, NAMESPACE, one, render, with_values
from test_service import Client, cluster, policy_yaml, seed_lagging_group, serve_settings

from lagscaler.edges.observability import REASON_CODES, SAMPLE_ERROR_REASONS
from lagscaler.service.run import RunningService, running_service

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

__all__ = ["cluster"]  # the fixture, shared with test_service

SLO = 15.0  # maxLagSeconds: the seeded lag passes it during the scenario
STALE_AFTER = 2.0  # fallback.maxAgeSeconds
RATE_INTERVAL = "4s"  # Grafana's $__rate_interval for a 1 s scrape interval: 4 × the interval
PLAIN_JOB = "lagscaler"
METRIC_ROUTE = "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}"
PROMTOOL_TESTS = Path(__file__).parent / "promtool"
DASHBOARD = json.loads((CHART / "dashboards" / "lagscaler.json").read_text())


@dataclass
class Replica:
    service: RunningService
    client: Client
    address: str
    statuses: list[tuple[float, int]] = field(default_factory=list)  # what the HPA-like poller got

    def value(self, name: str, **labels: str) -> float:
        found = self.service.metrics.registry.get_sample_value(name, labels)
        assert found is not None, (name, labels)
        return found

    def workload(self, name: str, **labels: str) -> float:
        return self.value(name, workload_namespace="shop", workload="orders", **labels)


@dataclass
class Moments:
    """When the scenario's phases happened (Unix seconds)."""

    start: float = 0.0  # before the services started
    first: float = 0.0  # both jobs have scraped both replicas
    healthy: float = 0.0  # decision raised by the policy edit, broken file in place, Kafka fine
    freeze: float = 0.0
    thaw: float = 0.0
    stall: float = 0.0  # scaling loops stopped
    end: float = 0.0


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m[1], ""), template)


class Board:
    """The dashboard's panels evaluated as Grafana would, for one job and one choice of replicas."""

    def __init__(self, prom: Prometheus, job: str, replicas: list[Replica], moments: Moments) -> None:
        self.prom = prom
        self.job = job
        self.replicas = replicas
        self.at = moments
        self.variables = {
            "job": [job],
            "instance": [r.address for r in replicas],
            "namespace": ["shop"],
            "workload": ["orders"],
        }

    def _expr(self, target: dict[str, Any], range_seconds: float) -> str:
        return interpolate(
            target["expr"], self.variables, range_seconds=range_seconds, rate_interval=RATE_INTERVAL
        )

    async def instant(
        self, panel: dict[str, Any], at: float, range_seconds: float | None = None
    ) -> dict[str, float]:
        """Legend → value at ``at`` (``$__range`` ends there; by default it starts with the scenario)."""
        seconds = range_seconds if range_seconds is not None else at - self.at.start
        shown: dict[str, float] = {}
        for target in panel["targets"]:
            for series in await self.prom.query(self._expr(target, seconds), at):
                key = legend(target["legendFormat"], series.labels)
                assert key not in shown, f"two series share the legend {key!r}"
                shown[key] = series.value
        return shown

    async def over(self, panel: dict[str, Any], start: float, end: float) -> dict[str, list[float]]:
        """Legend → values over [start, end] at 1 s steps."""
        shown: dict[str, list[float]] = {}
        for target in panel["targets"]:
            for series in await self.prom.query_range(self._expr(target, end - start), start, end):
                key = legend(target["legendFormat"], series.labels)
                assert key not in shown, f"two series share the legend {key!r}"
                shown[key] = [v for _, v in series.values]
        return shown

    async def samples(
        self, metric: str, replica: Replica, since: float, **labels: str
    ) -> list[tuple[float, float]]:
        """The raw samples Prometheus stored for one series of ``replica`` in this job, since ``since``."""
        matchers = "".join(f', {k}="{v}"' for k, v in labels.items())
        selector = f'{metric}{{job="{self.job}", instance="{replica.address}"{matchers}}}'
        (series,) = await self.prom.query(f"{selector}[{math.ceil(self.at.end - since)}s]", self.at.end)
        return series.values

    def most(self, name: str) -> float:
        return max(r.workload(name) for r in self.replicas)


def close(got: dict[str, float], expected: dict[str, float]) -> None:
    assert set(got) == set(expected), f"series {sorted(got)} != expected {sorted(expected)}"
    for key, value in expected.items():
        assert math.isclose(got[key], value, rel_tol=1e-9, abs_tol=1e-9), f"{key}: {got[key]} != {value}"


W = "shop/orders"
Check = Callable[[Board, dict[str, Any]], Awaitable[None]]
CHECKS: dict[str, Check] = {}


def check(title: str) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        CHECKS[title] = fn
        return fn

    return register


@check("Lag as a share of the SLO (now)")
async def _lag_share(b: Board, panel: dict[str, Any]) -> None:
    got = await b.instant(panel, b.at.end)
    close(got, {W: b.most("lagscaler_workload_lag_seconds") / SLO})
    assert got[W] > 1  # the seeded lag has outgrown the SLO by the end


@check("Time within the SLO (selected range)")
async def _time_within(b: Board, panel: dict[str, Any]) -> None:
    whole = await b.instant(panel, b.at.end)
    assert set(whole) == {W}
    assert 0 < whole[W] < 1, whole  # within the SLO at first, over it at the end
    close(await b.instant(panel, b.at.first + 3, range_seconds=3), {W: 1.0})
    close(await b.instant(panel, b.at.end, range_seconds=3), {W: 0.0})


@check("Lag in seconds vs SLO")
async def _lag_vs_slo(b: Board, panel: dict[str, Any]) -> None:
    close(
        await b.instant(panel, b.at.end),
        {f"{W} lag": b.most("lagscaler_workload_lag_seconds"), f"{W} SLO": SLO},
    )


@check("Replicas: decided vs running")
async def _decided_running(b: Board, panel: dict[str, Any]) -> None:
    decided = max(r.service.loop.decisions["shop/orders"].desired_replicas for r in b.replicas)
    assert decided >= 3  # minReplicas after the edit
    close(await b.instant(panel, b.at.end), {f"{W} decided": decided, f"{W} running": 1.0})


@check("Decided minus running")
async def _gap(b: Board, panel: dict[str, Any]) -> None:
    gap = b.most("lagscaler_decision_replicas") - b.most("lagscaler_workload_replicas")
    close(await b.instant(panel, b.at.end), {W: gap})


@check("Reason codes")
async def _reasons(b: Board, panel: dict[str, Any]) -> None:
    reasons = {code for r in b.replicas for code in r.service.loop.decisions["shop/orders"].reasons}
    assert reasons <= set(REASON_CODES)
    close(await b.instant(panel, b.at.end), {f"{W} {code}": 1.0 for code in reasons})


@check("Scale events (selected range)")
async def _scale_events(b: Board, panel: dict[str, Any]) -> None:
    """Changes of the decision Prometheus saw: from its first sample of each counter to the end."""
    expected = {}
    for direction in ("up", "down"):
        counts = []
        for r in b.replicas:
            first = await b.samples("lagscaler_decision_changes_total", r, b.at.start, direction=direction)
            counts.append(r.workload("lagscaler_decision_changes_total", direction=direction) - first[0][1])
        expected[f"{W} {direction}"] = max(counts)
    assert expected[f"{W} up"] >= 1  # the minReplicas edit, at least
    close(await b.instant(panel, b.at.end), expected)


@check("Replicas disagree")
async def _disagree(b: Board, panel: dict[str, Any]) -> None:
    decisions = [r.workload("lagscaler_decision_replicas") for r in b.replicas]
    close(await b.instant(panel, b.at.end), {W: max(decisions) - min(decisions)})


@check("Arrival rate vs capacity")
async def _load(b: Board, panel: dict[str, Any]) -> None:
    capacity = max(
        r.workload("lagscaler_workload_capacity_per_replica") * r.workload("lagscaler_workload_replicas")
        for r in b.replicas
    )
    close(
        await b.instant(panel, b.at.end),
        {
            f"{W} arrival": b.most("lagscaler_workload_arrival_rate"),
            f"{W} forecast": b.most("lagscaler_workload_forecast_rate"),
            f"{W} capacity": capacity,
        },
    )


@check("Lag (messages)")
async def _lag_messages(b: Board, panel: dict[str, Any]) -> None:
    got = await b.instant(panel, b.at.end)
    close(got, {W: b.most("lagscaler_workload_lag_messages")})
    assert got[W] > 600  # the seeded 600 and what the producer added since


@check("Stuck partitions (STALL/STOP)")
async def _stuck(b: Board, panel: dict[str, Any]) -> None:
    close(await b.instant(panel, b.at.end), {W: b.most("lagscaler_workload_stuck_partitions")})


@check("lagscaler replicas reporting")
async def _reporting(b: Board, panel: dict[str, Any]) -> None:
    close(await b.instant(panel, b.at.end), {"replicas": float(len(b.replicas))})


@check("Data age per lagscaler replica")
async def _age(b: Board, panel: dict[str, Any]) -> None:
    """Measured at scrape time: it keeps growing while the loops are stopped, past the fallback's age."""
    got = await b.instant(panel, b.at.end)
    assert set(got) == {f"{r.address} {W}" for r in b.replicas} | {f"{W} stale after"}
    assert got.pop(f"{W} stale after") == STALE_AFTER
    assert all(age > STALE_AFTER for age in got.values()), got
    for r in b.replicas:
        raw = await b.samples("lagscaler_cache_age_seconds", r, b.at.stall)
        stalled = [v for t, v in raw if t > b.at.stall + 1]
        assert len(stalled) >= 2, raw
        assert all(a < z for a, z in itertools.pairwise(stalled)), stalled


@check("Sample cycle errors (per second)")
async def _sample_errors(b: Board, panel: dict[str, Any]) -> None:
    zeros = {f"{r.address} {reason}": 0.0 for r in b.replicas for reason in SAMPLE_ERROR_REASONS}
    close(await b.instant(panel, b.at.healthy), zeros)  # 0, not "no data"
    close(await b.instant(panel, b.at.end), zeros)
    during = await b.over(panel, b.at.freeze, b.at.thaw + 4)
    for r in b.replicas:
        worst = max(max(during[f"{r.address} {reason}"]) for reason in ("timeout", "unreachable"))
        assert worst > 0, (r.address, during)


@check("Sample cycle duration")
async def _cycle_duration(b: Board, panel: dict[str, Any]) -> None:
    got = await b.instant(panel, b.at.healthy)
    assert set(got) == {f"{r.address} {q}" for r in b.replicas for q in ("p50", "p99")}
    assert all(0 < v <= 1.5 for v in got.values()), got  # within the cycle timeout (bucket bounds)


@check("Kafka requests (per second)")
async def _kafka_requests(b: Board, panel: dict[str, Any]) -> None:
    got = await b.instant(panel, b.at.healthy)
    steady = {"DescribeGroups", "OffsetFetch", "ListOffsets"}  # every cycle asks these
    assert steady <= set(got), got
    assert all(got[api] > 0 for api in steady), got
    sent = {api for r in b.replicas for api in r.service.loop.sampler.stats.requests}
    assert set(got) == sent
    assert all(v == 0 for v in (await b.instant(panel, b.at.end)).values())  # the loops have stopped


@check("Kafka request failures (share)")
async def _kafka_failures(b: Board, panel: dict[str, Any]) -> None:
    healthy = await b.instant(panel, b.at.healthy)
    steady = {"DescribeGroups", "OffsetFetch", "ListOffsets"}
    assert all(healthy[api] == 0 for api in steady), healthy  # 0, not "no data"
    assert all(v == 0 or math.isnan(v) for v in healthy.values()), healthy  # NaN: no request of that API
    during = await b.over(panel, b.at.freeze, b.at.thaw + 4)
    assert max(v for values in during.values() for v in values if not math.isnan(v)) > 0, during


@check("API responses by status code (per second)")
async def _api_codes(b: Board, panel: dict[str, Any]) -> None:
    healthy = await b.instant(panel, b.at.healthy)
    assert set(healthy) == {"200"}, healthy
    assert healthy["200"] > 0
    during = await b.over(panel, b.at.freeze, b.at.thaw + 4)
    assert max(during["503"]) > 0, during  # stale data, fallback action error


@check("API errors (4xx/5xx) by route (per second)")
async def _api_errors(b: Board, panel: dict[str, Any]) -> None:
    assert await b.instant(panel, b.at.healthy) == {}  # the panel shows its noValue, 0
    during = await b.over(panel, b.at.freeze, b.at.thaw + 4)
    assert set(during) == {f"503 {METRIC_ROUTE}"}, during
    assert max(during[f"503 {METRIC_ROUTE}"]) > 0


@check("API latency")
async def _api_latency(b: Board, panel: dict[str, Any]) -> None:
    got = await b.instant(panel, b.at.healthy)
    assert set(got) == {f"p99 {METRIC_ROUTE}", "p50 all"}, got
    assert all(0 < v < 2.5 for v in got.values()), got  # within the buckets


@check("API authentication and authorization failures (per second)")
async def _auth_failures(b: Board, panel: dict[str, Any]) -> None:
    # The poller is the aggregator, allowed: nothing was refused (noValue shows 0).
    assert await b.instant(panel, b.at.healthy) == {}
    assert await b.over(panel, b.at.start, b.at.end) == {}


@check("Invalid policy files")
async def _policy_errors(b: Board, panel: dict[str, Any]) -> None:
    close(await b.instant(panel, b.at.first), {r.address: 0.0 for r in b.replicas})
    close(await b.instant(panel, b.at.end), {r.address: 1.0 for r in b.replicas})


@check("Policy reloads (selected range)")
async def _policy_reloads(b: Board, panel: dict[str, Any]) -> None:
    """The edit (ok) and the broken file (partial), as Prometheus saw them from its first sample."""
    expected = {}
    for r in b.replicas:
        for outcome in ("ok", "partial"):
            first = await b.samples("lagscaler_policy_reloads_total", r, b.at.start, outcome=outcome)
            count = r.value("lagscaler_policy_reloads_total", outcome=outcome) - first[0][1]
            assert count == 1, (r.address, outcome, first)
            expected[f"{r.address} {outcome}"] = count
    close(await b.instant(panel, b.at.end), expected)


def panels() -> list[dict[str, Any]]:
    return [p for p in DASHBOARD["panels"] if p.get("targets")]


# ------------------------------------------------------------------------------------------ the scenario


@dataclass
class Scene:
    prom: Prometheus
    broker: LocalBroker
    replicas: list[Replica]
    jobs: tuple[str, str]
    at: Moments
    bootstrap: str
    topic: str
    policies: Path
    background: list[asyncio.Task[None]] = field(default_factory=list)
    stop_producing: asyncio.Event = field(default_factory=asyncio.Event)
    stop_polling: asyncio.Event = field(default_factory=asyncio.Event)

    async def everywhere(self, query: str, expected: float) -> None:
        """``query`` (with JOB for the job's name) gives ``expected`` under both jobs now."""
        now = time.time()
        for job in self.jobs:
            result = await self.prom.query(query.replace("JOB", job), now)
            assert len(result) == 1, (job, query, result)
            assert result[0].value == expected, (job, query, result)

    async def firing(self, alert: str, by: tuple[str, ...], expected: set[tuple[str, ...]]) -> None:
        """``alert`` fires under both jobs with exactly the ``expected`` values of the ``by`` labels."""
        firing = await self.prom.firing(alert, time.time())
        for job in self.jobs:
            got = {tuple(f.get(k, "") for k in by) for f in firing if f["job"] == job}
            assert got == expected, (alert, job, got)

    async def shutdown(self) -> None:
        self.stop_producing.set()
        self.stop_polling.set()
        await asyncio.gather(*self.background, return_exceptions=True)


async def paced(stop: asyncio.Event, every: float) -> AsyncIterator[None]:
    """Yield every ``every`` seconds until ``stop`` is set, and return as soon as it is.

    This is a load's pace (a producer's rate, the HPA's polling), not a synchronisation: what the
    scenario waits for, it waits for with ``eventually``.
    """
    while not stop.is_set():
        yield
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


async def produce_steadily(bootstrap: str, topic: str, stop: asyncio.Event) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        async for _ in paced(stop, 0.25):
            batch = [await producer.send(topic, b"x" * 16, partition=p) for p in range(4) for _ in range(10)]
            await asyncio.gather(*batch)
    finally:
        await producer.stop()


async def poll_like_the_hpa(replica: Replica, stop: asyncio.Event) -> None:
    async for _ in paced(stop, 0.2):
        status, _ = await replica.client.metric("lagscaler_desired_replicas", "orders")
        replica.statuses.append((time.time(), status))


async def run_scenario(scene: Scene) -> None:
    at, replicas, addresses = scene.at, scene.replicas, {(r.address,) for r in scene.replicas}
    workload = {("shop", "orders")}
    per_workload = ("workload_namespace", "workload")

    # Both jobs scrape both replicas before anything moves (the counters' first samples are the baseline).
    await eventually(lambda: scene.everywhere('count(lagscaler_decision_replicas{job="JOB"})', 2))
    at.first = time.time()
    scene.background.append(
        asyncio.create_task(produce_steadily(scene.bootstrap, scene.topic, scene.stop_producing))
    )
    scene.background += [asyncio.create_task(poll_like_the_hpa(r, scene.stop_polling)) for r in replicas]

    # A policy edit raises the decision; then a broken file joins the directory.
    policy = scene.policies / "orders.yaml"
    policy.write_text(policy.read_text().replace('"minReplicas": 1', '"minReplicas": 3'))
    await eventually(lambda: scene.everywhere('count(lagscaler_decision_replicas{job="JOB"} >= 3)', 2))
    (scene.policies / "broken.yaml").write_text(
        "apiVersion: lagscaler.io/v1\nkind: ScalingPolicy\nspec: [broken\n"
    )
    await eventually(lambda: scene.everywhere('sum(lagscaler_policy_errors{job="JOB"})', 2))
    await eventually(lambda: scene.firing("LagscalerPolicyInvalid", (), {()}))
    at.healthy = time.time()
    for alert in ("LagscalerDataStale", "LagscalerSampleErrors"):
        await scene.firing(alert, ("instance",), set())
    scene.stop_producing.set()

    # The broker stops answering: each replica serves 503 once its data is older than maxAgeSeconds.
    at.freeze = time.time()
    scene.broker.pause()
    try:

        async def stale() -> None:
            for r in replicas:
                assert any(status == 503 for t, status in r.statuses if t > at.freeze), r.address
            await scene.firing("LagscalerDataStale", ("instance",), addresses)
            await scene.firing("LagscalerSampleErrors", ("instance",), addresses)

        await eventually(stale, within=20)
    finally:
        scene.broker.resume()
    at.thaw = time.time()

    async def fresh() -> None:
        for r in replicas:
            assert any(status == 200 for t, status in r.statuses if t > at.thaw), r.address
        await scene.everywhere(
            'count(lagscaler_cache_age_seconds{job="JOB"} < lagscaler_workload_stale_after_seconds)', 2
        )

    await eventually(fresh)
    # One alert per workload, not per replica: the rules aggregate over lagscaler's replicas.
    await eventually(lambda: scene.firing("LagscalerLagOverSLO", per_workload, workload), within=60)
    await scene.firing("LagscalerDecisionNotCarriedOut", per_workload, workload)  # decided ≥ 3, 1 member

    # The scaling loops stop (as a hung cycle would) while the API and /metrics keep serving.
    scene.stop_polling.set()
    await asyncio.gather(*scene.background, return_exceptions=True)
    loops = [t for t in asyncio.all_tasks() if t.get_name() == "lagscaler-scaling-loop"]
    assert len(loops) == 2
    at.stall = time.time()
    for task in loops:
        task.cancel()
    await asyncio.gather(*loops, return_exceptions=True)

    async def aged() -> None:
        await scene.everywhere(f'count(timestamp(lagscaler_build_info{{job="JOB"}}) > {at.stall + 3:.3f})', 2)
        await scene.firing("LagscalerDataStale", ("instance",), addresses)

    await eventually(aged)
    at.end = time.time()


async def evaluate(scene: Scene, operator_job: str, pods: list[Pod]) -> list[str]:
    """Every template variable and panel, per job and choice of replicas; returns the problems found."""
    return [
        *await _variables_problems(scene),
        *await _operator_label_problems(scene, operator_job, pods),
        *await _promtool_series_problems(scene, operator_job),
        *await _request_count_problems(scene),
        *await _panel_problems(scene),
    ]


async def _variables_problems(scene: Scene) -> list[str]:
    """Each template variable offers exactly the values an operator must be able to pick."""
    prom, at = scene.prom, scene.at
    problems: list[str] = []
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"] if v["type"] == "query"}
    assert list(variables) == ["job", "instance", "namespace", "workload"]

    async def offered(name: str, job: str) -> set[str]:
        match = LABEL_VALUES.match(variables[name]["query"])
        assert match, variables[name]["query"]
        chosen = {"job": [job], "instance": [r.address for r in scene.replicas], "namespace": ["shop"]}
        selector = interpolate(match["match"], chosen, range_seconds=0, rate_interval=RATE_INTERVAL)
        return set(await prom.label_values(match["label"], selector, at.start, at.end))

    assert await offered("job", "") >= set(scene.jobs)
    for job in scene.jobs:
        for name, expected in (
            ("instance", {r.address for r in scene.replicas}),
            ("namespace", {"shop"}),  # the workloads' namespace, never the lagscaler pod's
            ("workload", {"orders"}),
        ):
            got = await offered(name, job)
            if got != expected:
                problems.append(f"{job}: variable {name} offers {sorted(got)}, expected {sorted(expected)}")
    return problems


async def _operator_label_problems(scene: Scene, operator_job: str, pods: list[Pod]) -> list[str]:
    """The Operator's target labels describe the lagscaler pod and rename nothing of lagscaler's."""
    prom, at = scene.prom, scene.at
    for labels in await prom.series(f'{{job="{operator_job}", __name__=~"lagscaler_.*"}}', at.start, at.end):
        renamed = [k for k in labels if k.startswith("exported_")]
        if renamed or labels.get("namespace") != NAMESPACE or labels.get("pod") not in {p.name for p in pods}:
            return [f"{operator_job}: series {labels}"]
    return []


async def _promtool_series_problems(scene: Scene, operator_job: str) -> list[str]:
    """The promtool unit tests (tests/promtool) feed the rules series labelled exactly as these are."""
    prom, at = scene.prom, scene.at
    problems: list[str] = []
    for test in sorted(PROMTOOL_TESTS.glob("*_test.yaml")):
        for group in yaml.safe_load(test.read_text())["tests"]:
            for given in group["input_series"]:
                name, labels = re.fullmatch(r"(\w+)\{(.*)\}", given["series"]).groups()
                names = set(re.findall(r"(\w+)=", labels))
                real = await prom.series(f'{name}{{job="{operator_job}"}}', at.start, at.end)
                if not real or any(set(r) - {"__name__"} != names for r in real):
                    problems.append(f"{test.name}: {name} labelled {sorted(names)}, real: {real[:1]}")
    return problems


async def _request_count_problems(scene: Scene) -> list[str]:
    """Each Kafka request is counted once, under its outcome (a failure was once counted as sent and failed)."""
    problems: list[str] = []
    for job in scene.jobs:
        for r in scene.replicas:
            stats = r.service.loop.sampler.stats
            query = f'sum by (api, outcome) (lagscaler_kafka_requests_total{{job="{job}", instance="{r.address}"}})'
            counted = {
                (s.labels["api"], s.labels["outcome"]): s.value
                for s in await scene.prom.query(query, scene.at.end)
            }
            expected = {(api, "ok"): float(stats.answers[api]) for api in stats.requests}
            expected |= {(api, "failed"): float(stats.failures[api]) for api in stats.requests}
            if counted != expected or sum(counted.values()) != stats.total:
                problems.append(f"{job} {r.address}: Kafka requests {counted}, sent {dict(stats.requests)}")
    return problems


async def _panel_problems(scene: Scene) -> list[str]:
    """Every panel, per job, for each replica alone and for both together."""
    problems: list[str] = []
    for job in scene.jobs:
        for chosen in ([scene.replicas[0]], [scene.replicas[1]], scene.replicas):
            board = Board(scene.prom, job, chosen, scene.at)
            for panel in panels():
                try:
                    await CHECKS[panel["title"]](board, panel)
                except AssertionError as exc:
                    problems.append(f"{job} {[r.address for r in chosen]} {panel['title']!r}: {exc}")
    return problems


@pytest.fixture
def chart() -> list[dict[str, Any]]:
    """The chart with its ServiceMonitor and PrometheusRule, every alert's ``for`` at 1 s."""
    durations = ("dataStaleFor", "lagOverSloFor", "notCarriedOutFor", "sampleErrorsFor", "policyInvalidFor")
    fast = {"enabled": True} | dict.fromkeys(durations, "1s")
    return render(
        with_values(metrics={"port": 9090, "serviceMonitor": {"enabled": True}, "prometheusRule": fast})
    )


async def test_every_dashboard_query_and_alert_on_a_real_prometheus(
    kafka: KafkaEndpoint, cluster: LocalCluster, tmp_path: Path, unique: str, chart: list[dict[str, Any]]
) -> None:
    if kafka.broker is None:
        pytest.skip(
            "the stale period freezes the session's local broker; an external broker cannot be frozen"
        )
    topic, group = f"{unique}-orders", f"{unique}-workers"
    await seed_lagging_group(kafka.bootstrap, topic, group)
    policies = tmp_path / "policies"
    policies.mkdir()
    fallback = {"maxAgeSeconds": STALE_AFTER, "action": "error"}
    (policies / "orders.yaml").write_text(
        policy_yaml("orders", group, topic, maxLagSeconds=SLO, fallback=fallback)
    )

    monitor, service = one(chart, "ServiceMonitor"), one(chart, "Service", "metrics")
    operator_job = service["metadata"]["name"]  # the Operator names the job after the Service
    ports = [free_port(), free_port()]
    pods = [Pod(f"{operator_job}-5d8f9c-{i}", f"127.0.0.1:{port}") for i, port in enumerate(ports)]
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": PLAIN_JOB, "static_configs": [{"targets": [p.address for p in pods]}]},
            *operator_jobs(monitor, service, pods, container="lagscaler", scrape_interval="1s"),
        ],
    }
    base = serve_settings(cluster, kafka.bootstrap, policies)
    settings = [
        replace(
            base, api=cluster.settings(authorization_always_allow=True, metrics_port=port), cycle_timeout=1.5
        )
        for port in ports
    ]
    member = await join_group(kafka.bootstrap, group, [topic])  # one running replica that consumes nothing
    try:
        async with running_prometheus(
            tmp_path / "prometheus", config, one(chart, "PrometheusRule")["spec"]
        ) as prom:
            at = Moments(start=time.time())
            async with running_service(settings[0]) as a, running_service(settings[1]) as b:
                replicas = [
                    Replica(s, Client(cluster, s), p.address) for s, p in zip((a, b), pods, strict=True)
                ]
                scene = Scene(
                    prom,
                    kafka.broker,
                    replicas,
                    (PLAIN_JOB, operator_job),
                    at,
                    kafka.bootstrap,
                    topic,
                    policies,
                )
                try:
                    await run_scenario(scene)
                finally:
                    await scene.shutdown()
                    for r in replicas:
                        await r.client.close()
                problems = await evaluate(scene, operator_job, pods)
    finally:
        await member.stop()
    assert not problems, "\n".join(problems)
