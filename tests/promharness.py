"""A real Prometheus for the tests, the Prometheus Operator's scrape config for the chart's ServiceMonitor,
and Grafana's variable interpolation for the dashboard's queries.

Prometheus and promtool are Debian's ``prometheus`` package (2.42), found on the PATH or where ``make
test-deps`` unpacks it (``~/.cache/lagscaler/prometheus``); a test that needs them is skipped with that
hint when they are absent.

The Operator cannot run without a Kubernetes API, so :func:`service_monitor_scrape_config` writes the
scrape job it would generate for a ServiceMonitor endpoint, rule for rule (prometheus-operator
``pkg/prometheus/promcfg.go``, ``generateServiceMonitorConfig``), over a static target that carries
the ``__meta_kubernetes_*`` labels its Kubernetes service discovery would attach. Only the discovery
is a stand-in; the relabelling and ``honor_labels`` are Prometheus's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from lagscaler_demo.localkafka import cache_root, free_port
from support import eventually


def binary(name: str) -> str:
    """``prometheus`` or ``promtool``: on the PATH, or unpacked by ``make test-deps``; else skip the test."""
    path = shutil.which(name) or shutil.which(name, path=str(cache_root() / "prometheus" / "usr" / "bin"))
    if path is None:
        pytest.skip(f"{name} not found (make test-deps unpacks Debian's prometheus package)")
    return path


# ----------------------------------------------------------------------------- the Operator's scrape job


@dataclass(frozen=True)
class Pod:
    """One endpoint of the metrics Service as Kubernetes service discovery would report it."""

    name: str
    address: str  # host:port that Prometheus scrapes


# ServiceMonitor endpoint fields this model turns into scrape config; any other field fails the test, so
# the chart cannot gain a setting the test silently ignores.
_ENDPOINT_FIELDS = {"port", "interval", "path", "scheme", "honorLabels", "relabelings", "metricRelabelings"}


def _sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _relabel(rule: Mapping[str, Any]) -> dict[str, Any]:
    """A ServiceMonitor RelabelConfig (camelCase) as Prometheus relabel_config (snake_case)."""
    names = {"sourceLabels": "source_labels", "targetLabel": "target_label"}
    return {names.get(k, k): v for k, v in rule.items()}


def service_monitor_scrape_config(
    monitor: Mapping[str, Any],
    service: Mapping[str, Any],
    pods: Sequence[Pod],
    *,
    container: str,
    scrape_interval: str,
) -> list[dict[str, Any]]:
    """The scrape jobs the Operator generates for ``monitor`` selecting ``service`` with ``pods`` behind it.

    ``scrape_interval`` replaces the endpoint's interval (the tests scrape every second).
    """
    namespace = monitor["metadata"]["namespace"]
    assert service["metadata"]["namespace"] == namespace, (
        "the ServiceMonitor selects Services in its namespace"
    )
    jobs = []
    for index, endpoint in enumerate(monitor["spec"]["endpoints"]):
        unknown = set(endpoint) - _ENDPOINT_FIELDS
        assert not unknown, f"the Operator model in tests/promharness.py does not handle {sorted(unknown)}"
        port = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
        meta = {
            "__meta_kubernetes_namespace": namespace,
            "__meta_kubernetes_service_name": service["metadata"]["name"],
            "__meta_kubernetes_endpoint_port_name": port["name"],
            "__meta_kubernetes_endpoint_address_target_kind": "Pod",
            "__meta_kubernetes_pod_container_name": container,
            "__meta_kubernetes_pod_phase": "Running",
        }
        for key, value in service["metadata"].get("labels", {}).items():
            meta[f"__meta_kubernetes_service_label_{_sanitize(key)}"] = value
            meta[f"__meta_kubernetes_service_labelpresent_{_sanitize(key)}"] = "true"
        relabel: list[dict[str, Any]] = [
            {"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"},
        ]
        for key, value in sorted(monitor["spec"]["selector"].get("matchLabels", {}).items()):
            relabel.append(
                {
                    "action": "keep",
                    "source_labels": [
                        f"__meta_kubernetes_service_label_{_sanitize(key)}",
                        f"__meta_kubernetes_service_labelpresent_{_sanitize(key)}",
                    ],
                    "regex": f"({value});true",
                }
            )
        assert not monitor["spec"]["selector"].get("matchExpressions"), "not modelled"
        target_kind = [
            "__meta_kubernetes_endpoint_address_target_kind",
            "__meta_kubernetes_endpoint_address_target_name",
        ]
        relabel += [
            {
                "action": "keep",
                "source_labels": ["__meta_kubernetes_endpoint_port_name"],
                "regex": endpoint["port"],
            },
            {
                "source_labels": target_kind,
                "separator": ";",
                "regex": "Node;(.*)",
                "replacement": "${1}",
                "target_label": "node",
            },
            {
                "source_labels": target_kind,
                "separator": ";",
                "regex": "Pod;(.*)",
                "replacement": "${1}",
                "target_label": "pod",
            },
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
            {
                "action": "drop",
                "source_labels": ["__meta_kubernetes_pod_phase"],
                "regex": "(Failed|Succeeded)",
            },
            {
                "source_labels": ["__meta_kubernetes_service_name"],
                "target_label": "job",
                "replacement": "${1}",
            },
            {"target_label": "endpoint", "replacement": endpoint["port"]},
            *(_relabel(r) for r in endpoint.get("relabelings", [])),
        ]
        job: dict[str, Any] = {
            "job_name": f"serviceMonitor/{namespace}/{monitor['metadata']['name']}/{index}",
            "honor_labels": bool(endpoint.get("honorLabels", False)),
            "static_configs": [
                {
                    "targets": [pod.address],
                    "labels": {
                        **meta,
                        "__meta_kubernetes_pod_name": pod.name,
                        "__meta_kubernetes_endpoint_address_target_name": pod.name,
                    },
                }
                for pod in pods
            ],
            "scrape_interval": scrape_interval,
            "relabel_configs": relabel,
        }
        if "path" in endpoint:
            job["metrics_path"] = endpoint["path"]
        if "scheme" in endpoint:
            job["scheme"] = endpoint["scheme"]
        if endpoint.get("metricRelabelings"):
            job["metric_relabel_configs"] = [_relabel(r) for r in endpoint["metricRelabelings"]]
        jobs.append(job)
    return jobs


# ------------------------------------------------------------------------------------------ Prometheus


class PrometheusError(AssertionError):
    pass


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    values: list[tuple[float, float]]  # (time, value); one point for an instant query

    @property
    def value(self) -> float:
        assert len(self.values) == 1, self.values
        return self.values[0][1]


class Prometheus:
    """A Prometheus server on a loopback port, with its data in ``workdir``."""

    def __init__(
        self, workdir: Path, config: Mapping[str, Any], rules: Mapping[str, Any] | None = None
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        config = dict(config)
        if rules is not None:
            (workdir / "rules.yaml").write_text(yaml.safe_dump(dict(rules)))
            config["rule_files"] = [str(workdir / "rules.yaml")]
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self._process: subprocess.Popen[bytes] | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def log(self) -> str:
        try:
            return (self.workdir / "prometheus.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    async def __aenter__(self) -> Prometheus:
        try:
            return await self._start()
        except BaseException:
            await self.__aexit__()
            raise

    def _launch(self) -> subprocess.Popen[bytes]:
        config = self.workdir / "prometheus.yml"
        check = subprocess.run(
            [binary("promtool"), "check", "config", str(config)], capture_output=True, text=True, check=False
        )
        if check.returncode != 0:
            raise PrometheusError(f"promtool check config: {check.stdout}{check.stderr}")
        with open(self.workdir / "prometheus.log", "wb") as log:
            return subprocess.Popen(
                [
                    binary("prometheus"),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    async def _start(self) -> Prometheus:
        process = self._process = await asyncio.to_thread(self._launch)
        session = self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        await eventually(
            lambda: self._ready(process, session), within=60, what="prometheus to answer /-/ready"
        )
        return self

    async def _ready(self, process: subprocess.Popen[bytes], session: aiohttp.ClientSession) -> bool:
        """Ready once ``/-/ready`` answers 200; a process that exited is an error, not "not yet"."""
        if process.poll() is not None:
            raise PrometheusError(f"prometheus exited ({process.returncode}):\n{self.log}")
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(self.url + "/-/ready") as response:
                return response.status == 200
        return False

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                await asyncio.to_thread(process.wait, 20)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)

    async def _get(self, path: str, params: Sequence[tuple[str, str]]) -> Any:
        assert self._session is not None
        async with self._session.get(self.url + path, params=list(params)) as response:
            body = await response.json()
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {dict(params)}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    async def query(self, expr: str, at: float) -> list[Series]:
        data = await self._get("/api/v1/query", [("query", expr), ("time", f"{at:.3f}")])
        kind, result = data["resultType"], data["result"]
        if kind == "scalar":
            return [Series({}, [(float(result[0]), float(result[1]))])]
        if kind == "matrix":  # a range vector selector: the raw samples
            return [Series(r["metric"], [(float(t), float(v)) for t, v in r["values"]]) for r in result]
        return [Series(r["metric"], [(float(r["value"][0]), float(r["value"][1]))]) for r in result]

    async def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> list[Series]:
        params = [("query", expr), ("start", f"{start:.3f}"), ("end", f"{end:.3f}"), ("step", f"{step:g}")]
        data = await self._get("/api/v1/query_range", params)
        return [Series(r["metric"], [(float(t), float(v)) for t, v in r["values"]]) for r in data["result"]]

    async def label_values(self, label: str, match: str, start: float, end: float) -> list[str]:
        """What Grafana's ``label_values(match, label)`` offers (it asks this endpoint the same way)."""
        params = [("match[]", match), ("start", f"{start:.3f}"), ("end", f"{end:.3f}")]
        values: list[str] = await self._get(f"/api/v1/label/{label}/values", params)
        return values

    async def series(self, match: str, start: float, end: float) -> list[dict[str, str]]:
        params = [("match[]", match), ("start", f"{start:.3f}"), ("end", f"{end:.3f}")]
        found: list[dict[str, str]] = await self._get("/api/v1/series", params)
        return found

    async def firing(self, alert: str, at: float) -> list[dict[str, str]]:
        """Label sets of ``alert`` firing at ``at`` (Prometheus's ``ALERTS`` series)."""
        result = await self.query(f'ALERTS{{alertname="{alert}", alertstate="firing"}}', at)
        return [s.labels for s in result]


@contextlib.asynccontextmanager
async def running_prometheus(
    workdir: Path, config: Mapping[str, Any], rules: Mapping[str, Any] | None = None
) -> AsyncIterator[Prometheus]:
    prometheus = Prometheus(workdir, config, rules)
    try:
        async with prometheus:
            yield prometheus
    except BaseException:
        print(f"prometheus log tail:\n{prometheus.log}")
        raise


# --------------------------------------------------------------------------- Grafana's interpolation


def grafana_regex(values: Iterable[str]) -> str:
    """A multi-value variable inside ``=~"..."`` as Grafana's Prometheus data source writes it.

    Grafana (public/app/plugins/datasource/prometheus, ``prometheusSpecialRegexEscape``) escapes
    regex metacharacters with a doubled backslash (one for the PromQL string, one for the regex) and
    joins several values as ``(a|b)``.
    """
    escaped = [re.sub(r"([$^*{}\[\]'+?.()|])", r"\\\\\1", v.replace("\\", "\\" * 4)) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def interpolate(
    expr: str, variables: Mapping[str, Iterable[str]], *, range_seconds: float, rate_interval: str
) -> str:
    """``expr`` with the dashboard's variables and Grafana's ``$__range``/``$__rate_interval`` filled in."""
    out = expr.replace("$__rate_interval", rate_interval).replace("$__range", f"{math.ceil(range_seconds)}s")
    for name in sorted(variables, key=len, reverse=True):
        out = out.replace(f"${name}", grafana_regex(variables[name]))
    assert "$" not in out, f"uninterpolated variable in {out!r}"
    return out


LABEL_VALUES = re.compile(r"^label_values\((?P<match>.+),\s*(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)\)$")
