"""What the engine decided for each workload, and why."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from lagscaler.core.engine.sizing import FloatArray, IntArray


class Reason(enum.IntFlag):
    """Reason codes; several may apply to one decision. Their names are what users see."""

    SCALE_UP = enum.auto()
    SCALE_DOWN = enum.auto()
    HOLD = enum.auto()
    ARRIVAL = enum.auto()  # the forecast arrival rate at target utilisation sets the need
    BACKLOG = enum.auto()  # draining the backlog back within the SLO sets the need
    SEASONAL_FLOOR = enum.auto()  # the seasonal forecast raised the need
    DWELL = enum.auto()  # a scale-down would be possible but the dwell after the last change is not over
    NOT_WORTH_IT = enum.auto()  # a scale-down would not save more than its rebalance costs
    ERROR_BUDGET = enum.auto()  # a scale-down whose rebalance breaks the SLO waits until the budget allows it
    LAG_GROWING = enum.auto()  # no scale-down while lag grows or is above half the SLO
    STEP_LIMITED = enum.auto()  # the policy's step limit cut the move short
    AT_MIN = enum.auto()
    AT_MAX = enum.auto()
    AT_PARTITIONS = enum.auto()  # more replicas than partitions would idle
    STUCK_PARTITIONS = enum.auto()  # some partitions are STALL/STOP: ignored for sizing
    INEFFECTIVE_SCALE_UP = enum.auto()  # the last scale-up did not raise throughput: no further scale-up
    STALE = enum.auto()  # no fresh data: the last decision holds
    WARMING_UP = enum.auto()  # not enough history yet (no rates): the current count holds
    SURGE = enum.auto()  # arrivals outrun the group: sized for their rate, at its slope, when capacity lands
    RECURRING_BURST = enum.auto()  # a burst that recurs on a learned period is due: sized for it ahead

    def codes(self) -> tuple[str, ...]:
        """The set flags' names, in declaration order."""
        return tuple(r.name for r in Reason if r in self and r.name is not None)


@dataclass(frozen=True, slots=True)
class Decision:
    """One workload's decision with the parts that explain it.

    Rates are messages per second. ``required_rate`` is what the group must process (forecast
    arrival at target utilisation, or arrival plus ``drain_rate`` when behind);
    ``restore_seconds`` is how long a moved partition is unavailable after a rebalance (0 when
    stateless) and ``rebalance_price`` the replica-seconds a scale-down must save to be worth it.
    ``next_scale_down_at`` is the earliest Unix time at which a scale-down may happen.
    """

    key: str
    desired_replicas: int
    current_replicas: int
    forecast_arrival_rate: float
    capacity_per_replica: float
    required_rate: float
    drain_rate: float
    restore_seconds: float
    rebalance_price: float
    stuck_partitions: int
    next_scale_down_at: float
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Decisions:
    """The decisions of one cycle for W workloads, as arrays of shape ``(W,)``."""

    keys: tuple[str, ...]
    desired: IntArray
    current: IntArray
    forecast_arrival_rate: FloatArray
    capacity_per_replica: FloatArray
    required_rate: FloatArray
    drain_rate: FloatArray
    restore_seconds: FloatArray
    rebalance_price: FloatArray
    stuck_partitions: IntArray
    next_scale_down_at: FloatArray
    reasons: IntArray

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> Decision:
        return Decision(
            key=self.keys[index],
            desired_replicas=int(self.desired[index]),
            current_replicas=int(self.current[index]),
            forecast_arrival_rate=float(self.forecast_arrival_rate[index]),
            capacity_per_replica=float(self.capacity_per_replica[index]),
            required_rate=float(self.required_rate[index]),
            drain_rate=float(self.drain_rate[index]),
            restore_seconds=float(self.restore_seconds[index]),
            rebalance_price=float(self.rebalance_price[index]),
            stuck_partitions=int(self.stuck_partitions[index]),
            next_scale_down_at=float(self.next_scale_down_at[index]),
            reasons=Reason(int(self.reasons[index])).codes(),
        )

    def by_key(self) -> dict[str, Decision]:
        return {key: self[i] for i, key in enumerate(self.keys)}
