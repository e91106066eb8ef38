"""Where a worker consumes, who it is, and how: :class:`WorkerConfig`, usually read from the environment.

A handover backend starts each worker with its identity in ``LAGSCALER_HANDOVER_*`` variables
(``docs/handover.md`` §7), so the application itself takes no flags for it; outside handover mode the
same application runs as an ordinary consumer group member from ``LAGSCALER_GROUP``.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lagscaler.core.handover.protocol import DEFAULT_CONTROL_TOPIC
from lagscaler.edges.handover.backend import WORKER_ENV
from lagscaler.errors import UserError

__all__ = ["ENV", "HandoverIdentity", "WorkerConfig"]

ENV = WORKER_ENV  # the variables :meth:`WorkerConfig.from_env` reads (docs/handover.md §7)


@dataclass(frozen=True, slots=True)
class HandoverIdentity:
    """Which workload and generation a worker belongs to, and where the control channel is."""

    workload: str
    generation: int
    control_topic: str = DEFAULT_CONTROL_TOPIC

    def __post_init__(self) -> None:
        if not self.workload:
            raise UserError("a handover worker needs its workload (namespace/name)")
        if self.generation < 1:
            raise UserError(f"a handover generation is >= 1, got {self.generation}")


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """One worker's settings. Times are seconds.

    ``max_batch``: records per fetch handed to the handler (a fence waits for at most one batch with a
    batch handler, one record with a per-record handler). ``commit_interval``: how often processed
    offsets are committed while serving (also the most a crashed worker's successor reprocesses); the
    first records processed on a partition the worker took are committed at once, whatever it is.
    ``control_timeout``: a handover worker that has not heard from the control topic for this long stops
    processing by itself, since it could not be told to fence. ``metadata_max_age_ms``: how often the
    consumer re-reads its topics' metadata; a partition added to a topic is consumed once the group
    leader has seen it (and the group has rebalanced), so this bounds how long a new partition waits
    for a consumer. aiokafka's own default, five minutes, would leave it unconsumed that long.
    ``max_poll_interval_ms``: a worker whose handler (or warm-up hook) has not returned for this long
    leaves its group, as any Kafka consumer that stops polling does, so its partitions move on without
    it; aiokafka's default, five minutes.
    ``client_options``: extra aiokafka client keywords (TLS, SASL), for every client the worker opens.
    """

    bootstrap: tuple[str, ...]
    group: str
    topics: tuple[str, ...]
    worker: str
    handover: HandoverIdentity | None = None
    max_batch: int = 500
    commit_interval: float = 1.0
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 1_000
    control_timeout: float = 15.0
    metadata_max_age_ms: int = 10_000
    max_poll_interval_ms: int = 300_000
    watch_path: Path | None = None
    client_options: Mapping[str, object] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.topics, str) or isinstance(self.bootstrap, str):
            raise UserError("worker topics and bootstrap servers are tuples of strings, not one string")
        if not self.bootstrap:
            raise UserError("a worker needs at least one bootstrap server")
        if not self.topics:
            raise UserError("a worker needs at least one topic")
        if not self.group:
            raise UserError("a worker needs a consumer group")
        if self.max_batch < 1:
            raise UserError(f"max batch must be >= 1 record, got {self.max_batch}")
        for name in ("commit_interval", "control_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise UserError(f"{name.replace('_', ' ')} must be > 0 seconds, got {value}")
        if self.metadata_max_age_ms < 1:
            raise UserError(f"metadata max age must be >= 1 ms, got {self.metadata_max_age_ms}")
        if self.max_poll_interval_ms < 1:
            raise UserError(f"max poll interval must be >= 1 ms, got {self.max_poll_interval_ms}")
        if not 0 < self.heartbeat_interval_ms < self.session_timeout_ms:
            raise UserError("the heartbeat interval must be positive and shorter than the session timeout")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> WorkerConfig:
        """Read the identity a backend gives a worker; ``overrides`` set the other fields.

        With ``LAGSCALER_HANDOVER_WORKLOAD`` set the worker takes part in handovers; without it, it is a
        member of ``LAGSCALER_GROUP`` consuming ``LAGSCALER_TOPICS``.
        """
        env = os.environ if env is None else env

        def need(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                raise UserError(f"${name} is not set: the worker cannot tell where to consume")
            return value

        def listed(text: str) -> tuple[str, ...]:
            return tuple(part.strip() for part in text.split(",") if part.strip())

        bootstrap = listed(need(ENV["bootstrap"]))
        workload = env.get(ENV["workload"], "").strip()
        watch = env.get(ENV["watch_path"], "").strip()
        handover = None
        if workload:
            raw = need(ENV["generation"])
            try:
                generation = int(raw)
            except ValueError:
                raise UserError(f"${ENV['generation']} must be an integer, got {raw!r}") from None
            handover = HandoverIdentity(
                workload, generation, env.get(ENV["control_topic"], "").strip() or DEFAULT_CONTROL_TOPIC
            )
            group, topics = need(ENV["group"]), listed(need(ENV["topics"]))
        else:
            group, topics = need("LAGSCALER_GROUP"), listed(need("LAGSCALER_TOPICS"))
        worker = env.get(ENV["worker"], "").strip() or f"{socket.gethostname()}-{os.getpid()}"
        fields: dict[str, object] = {
            "bootstrap": bootstrap,
            "group": group,
            "topics": topics,
            "worker": worker,
            "handover": handover,
            "watch_path": Path(watch) if watch else None,
            **overrides,
        }
        return cls(**fields)  # type: ignore[arg-type]

    def client_kwargs(self) -> dict[str, object]:
        return {"bootstrap_servers": list(self.bootstrap), **(self.client_options or {})}
