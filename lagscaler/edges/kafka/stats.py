"""Counts of Kafka requests by API: what the benchmark reports and what the service's metrics export.

The sampler's cost claim ("requests per cycle ≈ coordinators + leaders, not per group") is checked
against these counters, so every request the admin sends goes through :meth:`RequestStats.sent`,
and then through exactly one of :meth:`RequestStats.answered` or :meth:`RequestStats.failed` once
its outcome is known (``lagscaler_kafka_requests_total{outcome}`` counts each request once).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class RequestStats:
    """Requests sent, answered and failed, by API name (``OffsetFetch``, ``ListOffsets``...).

    ``requests`` counts every request put on the wire; ``answers`` and ``failures`` split those whose
    outcome is known (a request still in flight is in neither).

    ``retries`` counts work redone after a recoverable answer, keyed ``"API:REASON"`` (e.g.
    ``"OffsetFetch:NOT_COORDINATOR"``): how often coordinators moved or leaders changed under us.
    """

    requests: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)

    def sent(self, api: str) -> None:
        self.requests[api] += 1

    def answered(self, api: str) -> None:
        self.answers[api] += 1

    def failed(self, api: str) -> None:
        self.failures[api] += 1

    def retried(self, api: str, reason: str, count: int = 1) -> None:
        self.retries[f"{api}:{reason}"] += count

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def snapshot(self) -> Mapping[str, int]:
        """A copy of the per-API request counts (safe to keep while counting goes on)."""
        return dict(self.requests)

    def since(self, before: Mapping[str, int]) -> dict[str, int]:
        """Requests per API sent after ``before`` (an earlier :meth:`snapshot`)."""
        return {api: n - before.get(api, 0) for api, n in self.requests.items() if n - before.get(api, 0)}
