"""``lagscaler serve`` assembled: policies, sampler, engine loop, cache and the HTTPS API.

:func:`running_service` is an async context manager so the same composition serves the CLI, the
local demo and the end-to-end tests; leaving it stops the loop, the API and the Kafka client, in
that order, and leaves no task behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from lagscaler.edges.api import ApiSettings, CheckResult, HealthChecks, MetricsCache, RunningApi, running_api
from lagscaler.edges.kafka import KafkaSettings
from lagscaler.edges.observability import ServiceMetrics
from lagscaler.edges.sampler import MAX_HISTORY, Sampler, SamplerSettings
from lagscaler.errors import UserError
from lagscaler.logs import get_logger
from lagscaler.service.handover import HandoverBackend, running_handover
from lagscaler.service.loop import LoopSettings, ScalingLoop
from lagscaler.service.policies import PolicyWatcher

log = get_logger("lagscaler.service")


@dataclass(frozen=True)
class ServeSettings:
    """Everything ``lagscaler serve`` needs, validated before anything starts."""

    kafka: KafkaSettings
    policy_dir: Path
    api: ApiSettings = field(default_factory=ApiSettings)
    interval: float = 10.0
    history: int = 120
    cycle_timeout: float | None = None  # default: the interval, at least 5 s
    state_file: Path | None = None  # the engine's learned state, kept across restarts
    handover: HandoverBackend | None = None  # run mode: handover policies (local processes or Deployments)

    def __post_init__(self) -> None:
        if not self.interval > 0:
            raise UserError(f"--sample-interval must be positive, got {self.interval:g}")
        if self.history < 2:
            raise UserError(f"--history must keep at least 2 samples, got {self.history}")
        if self.history > MAX_HISTORY:  # here, not when the first policy loads and the sampler starts
            raise UserError(f"--history must keep at most {MAX_HISTORY} samples, got {self.history}")
        if self.state_file is not None and (not self.state_file.name or self.state_file.is_dir()):
            # A directory (the volume's mount point, say) would be taken for an unreadable state file
            # and moved aside; an empty value (a template that rendered nothing) has no name at all.
            raise UserError(
                f"--state-file must name a file, got {str(self.state_file)!r}"
                + (": a directory; name a file in it" if self.state_file.is_dir() else "")
            )

    def sampler_settings(self, groups: tuple[str, ...]) -> SamplerSettings:
        timeout = self.cycle_timeout if self.cycle_timeout is not None else max(5.0, self.interval)
        return SamplerSettings(
            groups=groups,
            all_groups=not groups,  # no policy yet: the loop does not sample until one loads
            interval=self.interval,
            history=self.history,
            cycle_timeout=timeout,
        )


@dataclass(frozen=True, slots=True)
class RunningService:
    api: RunningApi
    loop: ScalingLoop
    cache: MetricsCache
    metrics: ServiceMetrics


@contextlib.asynccontextmanager
async def running_service(
    settings: ServeSettings, metrics: ServiceMetrics | None = None
) -> AsyncIterator[RunningService]:
    metrics = metrics or ServiceMetrics()
    watcher = PolicyWatcher(settings.policy_dir)
    initial = await watcher.reload()
    for line in initial.error_lines:
        log.error("policy problem", problem=line)
    cache = MetricsCache()
    groups = tuple(dict.fromkeys(p.kafka.group for p in initial.policies))
    async with contextlib.AsyncExitStack() as stack:
        sampler = await stack.enter_async_context(Sampler(settings.kafka, settings.sampler_settings(groups)))
        runner = None
        if settings.handover is not None:
            runner = await stack.enter_async_context(running_handover(settings.kafka, settings.handover))
        loop = ScalingLoop(
            sampler,
            watcher,
            cache,
            metrics,
            settings=LoopSettings(interval=settings.interval, state_file=settings.state_file),
            handover=runner,
            handover_backend=settings.handover,
        )
        readiness = HealthChecks()
        readiness.add("policies", loop.policies_ready)
        readiness.add("sampler", loop.sampler_ready)
        task = asyncio.create_task(loop.run(), name="lagscaler-scaling-loop")

        def loop_alive() -> CheckResult:
            if task.done():
                return CheckResult(False, "the scaling loop has stopped")
            return CheckResult(True, f"{loop.cycles} cycles")

        liveness = HealthChecks()
        liveness.add("scaling-loop", loop_alive)
        try:
            async with running_api(
                settings.api, cache, readiness=readiness, liveness=liveness, metrics=metrics
            ) as api:
                yield RunningService(api, loop, cache, metrics)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def serve_forever(settings: ServeSettings, stop: asyncio.Event) -> None:
    """Run the service until ``stop`` is set (SIGTERM/SIGINT in the CLI).

    ``stop`` also ends a start that has not finished: with handovers, starting waits for the control
    topic for as long as Kafka is down, and a SIGTERM meanwhile went unheard until the kubelet's
    SIGKILL. A started service is left in order (its exit is never cancelled half-way).
    """
    started = asyncio.Event()

    async def serve() -> None:
        async with running_service(settings) as service:
            started.set()
            log.info(
                "lagscaler serving",
                api=service.api.url,
                metrics=service.api.metrics_url,
                policies=len(service.loop.watcher.current.policies),
                interval=settings.interval,
            )
            await stop.wait()

    serving = asyncio.create_task(serve(), name="lagscaler-serve")
    stopped = asyncio.create_task(stop.wait(), name="lagscaler-stop")
    try:
        await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not serving.done() and not started.is_set():
            log.info("stopping before the service started")
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
        else:
            await serving  # its own exit, or its failure
    finally:
        stopped.cancel()
        if not serving.done():  # serve_forever itself cancelled
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
    log.info("lagscaler stopped")
