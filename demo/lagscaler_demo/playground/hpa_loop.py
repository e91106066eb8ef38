"""A local HPA controller: polls the external metrics API like kube-controller-manager and scales a pool.

Every sync period (15 s by default, as ``--horizontal-pod-autoscaler-sync-period``) :class:`LocalHpa`
does what the controller does for an HPA with External metrics:

1. for each metric of the :class:`~lagscaler.core.hpa.HpaSpec`, ``GET
   /apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}?labelSelector=...`` over HTTPS, as
   the aggregator forwards the controller's request: the front-proxy client certificate plus
   ``X-Remote-User``/``X-Remote-Group`` naming the controller's service account
   (:class:`ClientIdentity`);
2. reads the items' quantities with the API's own parser and hands them to
   :func:`lagscaler.core.hpa.step` (which sums them as milli-values, as the controller does); an HTTP
   error, an unreadable answer or an empty list is a metric error, and the HPA freezes;
3. runs the sync with the controller's memory (:class:`~lagscaler.core.hpa.HpaState`), ``spec.replicas``,
   ``status.replicas`` and the ready count read from the :class:`ScaleTarget`, and writes the new
   ``spec.replicas`` with :meth:`ScaleTarget.scale_to` when the sync rescales.

Each sync is recorded in :attr:`LocalHpa.timeline` (:class:`HpaSync`) for tests and the demo.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Protocol
from urllib.parse import quote

import aiohttp

from lagscaler.core.hpa import (
    WORKLOAD_LABEL,
    ExternalMetric,
    HpaSpec,
    HpaState,
    MetricError,
    MetricReading,
    step,
)
from lagscaler.core.policy import ScalingPolicy, hpa_spec_for
from lagscaler.core.quantity import QuantityError, parse_quantity
from lagscaler.edges.api.app import GROUP_VERSION
from lagscaler.errors import UserError
from lagscaler.logs import get_logger
from lagscaler_demo.harness import HPA_USER, LocalCluster, aggregator_headers

__all__ = ["ClientIdentity", "HpaLoopSettings", "HpaSync", "LocalHpa", "ScaleTarget"]

log = get_logger(__name__)


class ScaleTarget(Protocol):
    """What the HPA reads from and writes to its scale target (a Deployment's scale subresource)."""

    @property
    def replicas(self) -> int:
        """``spec.replicas``."""

    @property
    def status_replicas(self) -> int:
        """``status.replicas``: pods that exist and are not terminating."""

    @property
    def ready(self) -> int:
        """Pods that are ready."""

    async def scale_to(self, replicas: int) -> None:
        """Write ``spec.replicas``."""


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """Who the loop is on the wire: the aggregator, proxying a request of the HPA controller.

    ``ca_file`` verifies the API's serving certificate; ``cert_file``/``key_file`` are the
    front-proxy client certificate; ``user``/``groups`` go into ``X-Remote-User``/``X-Remote-Group``.
    """

    ca_file: Path
    cert_file: Path
    key_file: Path
    user: str = HPA_USER
    groups: tuple[str, ...] = ("system:authenticated",)

    @classmethod
    def from_cluster(cls, cluster: LocalCluster) -> ClientIdentity:
        """The identity a :class:`~lagscaler_demo.harness.LocalCluster`'s aggregator would use."""
        return cls(cluster.cluster_ca_file, cluster.front_proxy.cert_file, cluster.front_proxy.key_file)

    def ssl_context(self) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file))
            context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise UserError(f"HPA loop client TLS: {exc}") from exc
        return context

    def headers(self) -> list[tuple[str, str]]:
        return [*aggregator_headers(self.user, self.groups), ("Accept", "application/json, */*")]


@dataclass(frozen=True, slots=True)
class HpaLoopSettings:
    """Where the API is, which items the HPA selects, and how often it syncs."""

    url: str  # https://host:port of the API (what the APIService points at)
    namespace: str  # the HPA's namespace
    selector: str  # the metric's selector as a label selector string, e.g. lagscaler.io/workload=orders
    identity: ClientIdentity
    sync_period_seconds: float = 15.0
    request_timeout_seconds: float = 5.0

    def __post_init__(self) -> None:
        if not self.url.startswith("https://"):
            raise UserError(f"the HPA loop talks HTTPS only; got API URL {self.url!r}")
        if not (math.isfinite(self.sync_period_seconds) and self.sync_period_seconds > 0):
            raise UserError(f"sync period must be > 0 seconds, got {self.sync_period_seconds}")
        if not (math.isfinite(self.request_timeout_seconds) and self.request_timeout_seconds > 0):
            raise UserError(f"request timeout must be > 0 seconds, got {self.request_timeout_seconds}")

    @classmethod
    def for_policy(
        cls,
        policy: ScalingPolicy,
        *,
        url: str,
        identity: ClientIdentity,
        sync_period_seconds: float | None = None,
    ) -> HpaLoopSettings:
        """The HPA of lagscaler's manifest for ``policy``: namespace, workload selector, sync period."""
        return cls(
            url=url,
            namespace=policy.namespace,
            selector=f"{WORKLOAD_LABEL}={policy.name}",
            identity=identity,
            sync_period_seconds=sync_period_seconds or policy.hpa.sync_period_seconds,
        )

    def metric_url(self, metric: str) -> str:
        path = f"/apis/{GROUP_VERSION}/namespaces/{quote(self.namespace, safe='')}/{quote(metric, safe='')}"
        return self.url.rstrip("/") + path


@dataclass(frozen=True, slots=True)
class HpaSync:
    """One sync: when, what the metrics said, what the HPA decided and why.

    ``at`` is seconds on the loop's clock since the loop was created; ``value`` the sum of the first
    metric's items (``None`` when reading it failed); ``reason`` the controller's condition reason
    (``DesiredWithinRange``, ``ScaleUpLimit``, ``FailedGetExternalMetric``, ...).
    """

    at: float
    value: float | None
    values: tuple[float | None, ...]
    replicas_before: int
    replicas: int
    rescaled: bool
    reason: str
    proposal: int | None
    status_replicas: int
    ready: int
    errors: tuple[str, ...] = ()


def _status_message(body: bytes) -> str:
    """The ``message`` of a Kubernetes ``Status`` body, or the start of whatever came instead."""
    try:
        document = json.loads(body)
        if isinstance(document, dict) and isinstance(document.get("message"), str):
            return str(document["message"])
    except ValueError:
        pass
    return body[:200].decode(errors="replace")


class LocalHpa:
    """The HPA controller for one HPA, against a real API and a real scale target.

    ``periodic`` runs :meth:`sync_once` every sync period while the context is open (the first sync
    at once); with ``periodic=False`` the caller drives syncs itself, e.g. with a hand-moved
    ``clock`` to test stabilization windows and rate limits without waiting for them.

    Give the target its initial count first (a Deployment's own ``replicas``): at 0 replicas with
    ``minReplicas > 0`` the HPA does nothing (``ScalingDisabled``), as the real one.
    """

    def __init__(
        self,
        spec: HpaSpec,
        target: ScaleTarget,
        settings: HpaLoopSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        periodic: bool = True,
    ) -> None:
        self.spec = spec
        self.target = target
        self.settings = settings
        self.state = HpaState()
        self.timeline: list[HpaSync] = []
        self.failures: list[str] = []  # unexpected errors of periodic syncs (a bug, not a metric error)
        self._clock = clock
        self._origin = clock()
        self._periodic = periodic
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._synced = asyncio.Condition()

    @classmethod
    def for_policy(
        cls,
        policy: ScalingPolicy,
        target: ScaleTarget,
        *,
        url: str,
        identity: ClientIdentity,
        sync_period_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        periodic: bool = True,
    ) -> LocalHpa:
        """The HPA lagscaler recommends for ``policy`` (:func:`~lagscaler.core.policy.hpa_spec_for`)."""
        settings = HpaLoopSettings.for_policy(
            policy, url=url, identity=identity, sync_period_seconds=sync_period_seconds
        )
        return cls(hpa_spec_for(policy), target, settings, clock=clock, periodic=periodic)

    async def __aenter__(self) -> LocalHpa:
        connector = aiohttp.TCPConnector(ssl=self.settings.identity.ssl_context(), limit=4)
        timeout = aiohttp.ClientTimeout(total=self.settings.request_timeout_seconds)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        if self._periodic:
            self._task = asyncio.create_task(self._run(), name="local-hpa")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- one sync ---------------------------------------------------------------------------------

    async def _read(self, metric: ExternalMetric) -> tuple[MetricReading, float | None]:
        """One metric's items as the controller gets them, or the error that freezes the HPA."""
        if self._session is None:
            raise RuntimeError("enter the HPA loop's context before syncing")
        url = self.settings.metric_url(metric.name)
        try:
            async with self._session.get(
                url,
                params={"labelSelector": self.settings.selector},
                headers=self.settings.identity.headers(),
            ) as response:
                body = await response.read()
                if response.status != 200:
                    return MetricError(f"HTTP {response.status}: {_status_message(body)}"), None
            document = json.loads(body)
            quantities: list[Decimal] = [parse_quantity(item["value"]) for item in document["items"]]
        except (aiohttp.ClientError, TimeoutError) as exc:
            return MetricError(f"request failed: {exc!r}"), None
        except (ValueError, KeyError, TypeError, QuantityError) as exc:
            return MetricError(f"unreadable ExternalMetricValueList: {exc}"), None
        if not quantities:
            return (), None  # the controller's "no metrics returned from external metrics API"
        return tuple(float(q) for q in quantities), float(sum(quantities))

    async def sync_once(self) -> HpaSync:
        """Read the metrics, run one HPA sync, scale the target if it says so; returns the record."""
        readings = [await self._read(metric) for metric in self.spec.metrics]
        now = self._clock()
        target = self.target
        before = target.replicas
        status, ready = target.status_replicas, target.ready
        result = step(
            self.spec,
            self.state,
            now,
            before,
            [r for r, _ in readings],
            status_replicas=status,
            ready_pods=ready,
        )
        errors = result.metric_errors
        reason = result.reason
        state = result.state
        if result.rescaled:
            try:
                await target.scale_to(result.replicas)
            except Exception as exc:  # the controller's FailedUpdateScale: no scale event is stored
                log.warning("hpa scale failed", replicas=result.replicas, error=str(exc))
                state = HpaState(
                    state.recommendations, self.state.scale_up_events, self.state.scale_down_events
                )
                reason, errors = "FailedUpdateScale", (*errors, str(exc))
        self.state = state
        replicas = target.replicas
        record = HpaSync(
            at=now - self._origin,
            value=readings[0][1],
            values=tuple(v for _, v in readings),
            replicas_before=before,
            replicas=replicas,
            rescaled=replicas != before,
            reason=reason,
            proposal=result.proposal,
            status_replicas=status,
            ready=ready,
            errors=errors,
        )
        self.timeline.append(record)
        if record.rescaled or errors:
            log.info(
                "hpa sync",
                at=record.at,
                replicas_before=record.replicas_before,
                replicas=record.replicas,
                reason=record.reason,
                errors=list(record.errors),
            )
        async with self._synced:
            self._synced.notify_all()
        return record

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        period = self.settings.sync_period_seconds
        start = loop.time()
        ticks = 0
        while True:
            try:
                await self.sync_once()
            except Exception as exc:  # keep syncing, as the controller does; the failure is kept for tests
                log.exception("hpa sync failed")
                self.failures.append(repr(exc))
            ticks = max(ticks + 1, math.ceil((loop.time() - start) / period))  # skip syncs we overran
            await asyncio.sleep(max(0.0, start + ticks * period - loop.time()))

    async def wait_until(
        self, predicate: Callable[[list[HpaSync]], bool], *, within: float, what: str = "the HPA"
    ) -> None:
        """Wait until ``predicate(timeline)`` holds, re-checked after every sync."""
        try:
            async with asyncio.timeout(within):
                async with self._synced:
                    await self._synced.wait_for(lambda: predicate(self.timeline))
        except TimeoutError:
            last = self.timeline[-1] if self.timeline else None
            raise TimeoutError(f"waited {within:g}s for {what}; last sync: {last}") from None
