"""Leader election with a ``coordination.k8s.io/v1`` Lease (``docs/handover.md`` §6).

:class:`LeaseLeadership` implements :class:`~lagscaler.edges.handover.leader.Leadership` for several
``lagscaler serve`` replicas in a cluster, the way client-go's ``leaderelection`` package does
(kubernetes ``staging/src/k8s.io/client-go/tools/leaderelection/leaderelection.go``,
``tryAcquireOrRenew``), with one difference: every acquisition counts as a transition, so the term it
returns (``spec.leaseTransitions + 1``) is higher than every term before it, whoever held it.

* **Acquire**: a Lease that does not exist is created; one held by another identity is taken once it
  has not changed for its ``leaseDurationSeconds`` *as seen from here* (the holder's clock is never
  compared with ours: what counts is how long this process has watched the same ``resourceVersion``).
  Every write carries the ``resourceVersion`` it read, so two candidates cannot both win.
* **Renew** every ``retry_period``; a leader that has not renewed successfully for ``renew_deadline``
  (shorter than the lease duration) stops leading on its own, before anyone else may take over.
* **Release** (a clean stop): the holder is cleared, so the next candidate takes over at once.

A leader that was paused past its deadline may still write a record or two before it notices; the
term is what makes that harmless (workers and the next leader ignore records of a lower term).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from lagscaler.edges.handover.leader import DEFAULT_LEASE_NAME
from lagscaler.logs import get_logger

__all__ = ["DEFAULT_LEASE_NAME", "LeaseLeadership", "LeaseSettings"]

_log = get_logger("lagscaler.edges.handover.lease")


def _micro_time(now: dt.datetime) -> str:
    """A MicroTime as the API server parses it (RFC 3339, six fractional digits, UTC)."""
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    """Unique per process: the host (in a pod, the pod name) and a random part, as client-go's users do."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    """Timings in seconds, client-go's defaults (15 / 10 / 2).

    ``lease_duration``: how long a candidate waits, from when it last saw the Lease change, before it
    takes the Lease over (a whole number: the API field is in seconds). ``renew_deadline``: how long the
    leader goes on leading without a successful renewal; shorter than the duration, so it stops before
    anyone else may start. ``retry_period``: between renewals, and between a candidate's attempts.
    """

    lease_duration: int = 15
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not (isinstance(self.lease_duration, int) and self.lease_duration >= 1):
            raise ValueError(
                f"the lease duration is a whole number of seconds >= 1, got {self.lease_duration}"
            )
        if not (math.isfinite(self.renew_deadline) and 0 < self.renew_deadline < self.lease_duration):
            raise ValueError(
                "the renew deadline must be > 0 and shorter than the lease duration"
                f" ({self.lease_duration} s), got {self.renew_deadline}"
            )
        if not (math.isfinite(self.retry_period) and 0 < self.retry_period < self.renew_deadline):
            raise ValueError(
                f"the retry period must be > 0 and shorter than the renew deadline, got {self.retry_period}"
            )


class LeaseLeadership:
    """Leads while holding Lease ``namespace/name``; ``api`` is owned by the caller."""

    def __init__(
        self,
        api: k8s.ApiClient,
        namespace: str,
        name: str = DEFAULT_LEASE_NAME,
        *,
        identity: str | None = None,
        settings: LeaseSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.settings = settings or LeaseSettings()
        self._log = _log.bind(lease=f"{namespace}/{name}", identity=self.identity)
        self._coordination = k8s.CoordinationV1Api(api)
        self._clock = clock
        self._wall = wall
        self.term = 0
        self._held = False
        self._renewed_at = -math.inf  # when the last successful write was *sent* (monotonic)
        self._lease: Any = None  # the Lease as our last write left it
        self._observed: tuple[str | None, float] = (None, 0.0)  # (resourceVersion, first seen at)
        self._renewer: asyncio.Task[None] | None = None

    # --- the interface ------------------------------------------------------------------------------

    async def acquire(self) -> int:
        if self.is_leader():
            return self.term
        await self._stop_renewing()
        self._held = False
        said = None
        while True:
            try:
                term = await self._try_acquire()
            except (ApiException, OSError, TimeoutError) as exc:  # the API server is away: keep trying
                term, problem = None, _problem(exc)
                if problem != said:  # once per distinct problem, not every retry period
                    self._log.warning("lease not readable", problem=problem)
                    said = problem
            if term is not None:
                self.term = term
                self._held = True
                self._renewer = asyncio.create_task(self._renew_forever(), name=f"lease-{self.name}")
                self._log.info("lease acquired", term=term)
                return term
            await asyncio.sleep(self.settings.retry_period)

    def is_leader(self) -> bool:
        return self._held and self._clock() - self._renewed_at < self.settings.renew_deadline

    async def release(self) -> None:
        await self._stop_renewing()
        held, self._held = self._held, False
        if not held:
            return
        with contextlib.suppress(ApiException, OSError, TimeoutError):
            lease = await self._coordination.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity == self.identity:
                now = _micro_time(self._wall())
                body = self._body(lease, holder=None, transitions=lease.spec.lease_transitions or 0, now=now)
                body["spec"]["leaseDurationSeconds"] = 1
                await self._replace(body)
                self._log.info("lease released", term=self.term)

    # --- acquiring ----------------------------------------------------------------------------------

    async def _try_acquire(self) -> int | None:
        sent = self._clock()
        now = _micro_time(self._wall())
        try:
            lease = await self._coordination.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            return await self._create(sent, now)
        version = lease.metadata.resource_version
        if version != self._observed[0]:
            self._observed = (version, sent)
        holder = lease.spec.holder_identity or ""
        duration = lease.spec.lease_duration_seconds or self.settings.lease_duration
        if holder and holder != self.identity and sent - self._observed[1] < duration:
            return None  # held, and renewed within its duration as far as we have watched
        transitions = (lease.spec.lease_transitions or 0) + 1
        body = self._body(lease, holder=self.identity, transitions=transitions, now=now)
        body["spec"]["acquireTime"] = now
        try:
            written = await self._replace(body)
        except ApiException as exc:
            if exc.status == 409:  # someone else wrote first
                return None
            raise
        self._wrote(written, sent)
        return transitions + 1

    async def _create(self, sent: float, now: str) -> int | None:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.settings.lease_duration,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }
        try:
            written = await self._coordination.create_namespaced_lease(self.namespace, _json(body))
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise
        self._wrote(written, sent)
        return 1

    def _body(self, lease: Any, *, holder: str | None, transitions: int, now: str) -> dict[str, Any]:
        spec = lease.spec
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": lease.metadata.resource_version,
            },
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": self.settings.lease_duration,
                "acquireTime": _micro_time(spec.acquire_time) if spec.acquire_time else now,
                "renewTime": now,
                "leaseTransitions": transitions,
            },
        }

    async def _replace(self, body: dict[str, Any]) -> Any:
        """Write the Lease; 409 Conflict if its ``resourceVersion`` moved since ``body`` was read."""
        return await self._coordination.replace_namespaced_lease(self.name, self.namespace, _json(body))

    def _wrote(self, lease: Any, sent: float) -> None:
        self._lease = lease
        self._observed = (lease.metadata.resource_version, sent)
        self._renewed_at = sent

    # --- renewing -----------------------------------------------------------------------------------

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.retry_period)
            sent = self._clock()
            try:
                kept = await self._renew(sent)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the API server is away: try again until the deadline
                self._log.warning("lease renewal failed", problem=_problem(exc), term=self.term)
                kept = True
            if not kept or not self.is_leader():
                self._held = False
                self._log.warning(
                    "lease lost",
                    term=self.term,
                    reason="another holder wrote it" if not kept else "not renewed within the deadline",
                )
                return

    async def _renew(self, sent: float) -> bool:
        """Write a new ``renewTime`` over our own last write; False if anyone else wrote since."""
        lease = self._lease
        body = self._body(
            lease,
            holder=self.identity,
            transitions=lease.spec.lease_transitions or 0,
            now=_micro_time(self._wall()),
        )
        try:
            written = await self._replace(body)
        except ApiException as exc:
            if exc.status == 409:  # written by another holder (or our own write whose answer was lost)
                return False
            raise
        self._wrote(written, sent)
        return True

    async def _stop_renewing(self) -> None:
        task, self._renewer = self._renewer, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _json(body: dict[str, Any]) -> Any:
    """A request body as JSON: the client sends a dict as it is, and MicroTimes keep the API's format."""
    return body


def _problem(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"
