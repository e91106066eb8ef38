"""The engine as the service runs it: every sample interval, while the HPA acts at its own sync.

Found end to end on the real broker: the engine decided a scale-down, then on the next cycle (the
replicas not changed yet) saw the dwell it had just started and went back to "hold", so the HPA only
saw the scale-down if one of its syncs fell inside that one sample interval. A decision must stay
decided until it is carried out, or until the load says otherwise.
"""

from __future__ import annotations

import numpy as np

from lagscaler.core.engine import Decisions, EngineState, Observation, ObservationBatch, PolicyArrays, decide
from lagscaler.core.policy.model import Capacity, KafkaSource, ScaleDown, ScaleTargetRef, ScalingPolicy

INTERVAL = 1.0  # the service samples every second; the HPA syncs every 15 s


def policy(scale_down: ScaleDown) -> ScalingPolicy:
    return ScalingPolicy(
        name="orders",
        namespace="shop",
        target=ScaleTargetRef("orders"),
        kafka=KafkaSource("orders"),
        max_lag_seconds=30.0,
        capacity=Capacity(per_replica=1000.0),
        max_replicas=24,
        scale_down=scale_down,
    )


def obs(at: float, *, replicas: int, arrival: float, **fields: float) -> Observation:
    values: dict[str, float] = {"consume_rate": arrival, **fields}
    return Observation(
        at=at, replicas=replicas, members=replicas, partitions=24, arrival_rate=arrival, **values
    )


def until_scale_down(
    p: ScalingPolicy, replicas: int, arrival: float
) -> tuple[PolicyArrays, EngineState, float, int]:
    params = PolicyArrays.from_policies([p])
    state = EngineState.initial(params)
    for t in np.arange(0.0, 3600.0, INTERVAL):
        decisions, state = decide(
            params, state, ObservationBatch.stack([obs(t, replicas=replicas, arrival=arrival)])
        )
        if decisions[0].desired_replicas < replicas:
            return params, state, float(t), decisions[0].desired_replicas
    raise AssertionError("no scale-down within an hour of a tenth of the capacity")


def test_a_scale_down_stays_decided_until_the_replicas_follow() -> None:
    p = policy(scale_down=ScaleDown(stabilization_seconds=60.0))
    params, state, t, target = until_scale_down(p, 12, 1000.0)
    decisions: Decisions | None = None
    for later in np.arange(t + INTERVAL, t + 15.0, INTERVAL):  # the HPA has not synced yet: still 12
        decisions, state = decide(
            params, state, ObservationBatch.stack([obs(later, replicas=12, arrival=1000.0)])
        )
        assert decisions[0].desired_replicas == target, decisions[0]
    # The HPA acts; the next decision starts from the new count and holds it.
    decisions, state = decide(
        params, state, ObservationBatch.stack([obs(t + 15.0, replicas=target, arrival=1000.0)])
    )
    assert decisions[0].desired_replicas == target


def test_a_pending_scale_down_is_dropped_when_lag_grows_and_raised_when_load_returns() -> None:
    p = policy(scale_down=ScaleDown(stabilization_seconds=60.0))
    params, state, t, target = until_scale_down(p, 12, 1000.0)
    growing = obs(t + 1.0, replicas=12, arrival=1000.0, lag=20000.0, lag_seconds=20.0, consume_rate=800.0)
    decisions, _ = decide(params, state, ObservationBatch.stack([growing]))
    assert decisions[0].desired_replicas == 12

    decisions = None
    for later in np.arange(t + 1.0, t + 120.0, INTERVAL):  # the load comes back before the HPA acted
        decisions, state = decide(
            params, state, ObservationBatch.stack([obs(later, replicas=12, arrival=6000.0)])
        )
    assert decisions is not None
    assert target < decisions[0].desired_replicas <= 12


def test_a_withdrawn_scale_down_does_not_start_the_dwell_the_next_one_waits_for() -> None:
    # Found on the real broker: a pending scale-down withdrawn for a sample (lag grew); if the
    # decision itself had started the stabilization dwell, the next chance would come a whole window
    # later, and a few unlucky samples against the HPA's sync kept the group at its peak for minutes.
    p = policy(scale_down=ScaleDown(stabilization_seconds=60.0))
    params, state, t, target = until_scale_down(p, 12, 1000.0)
    growing = obs(t + 1.0, replicas=12, arrival=1000.0, lag=8000.0, lag_seconds=8.0, consume_rate=900.0)
    decisions, state = decide(params, state, ObservationBatch.stack([growing]))
    assert decisions[0].desired_replicas == 12  # withdrawn: a backlog grew
    decisions, state = decide(
        params, state, ObservationBatch.stack([obs(t + 2.0, replicas=12, arrival=1000.0)])
    )
    assert decisions[0].desired_replicas == target  # decided again at once: the group never shrank
    # Once the group has shrunk, the dwell (its rebalance's stall, then one SLO to catch up) runs
    # from then, not from the decision.
    decisions, state = decide(
        params, state, ObservationBatch.stack([obs(t + 15.0, replicas=target, arrival=1000.0)])
    )
    assert decisions[0].next_scale_down_at == t + 15.0 + p.rebalance_stall_seconds + p.max_lag_seconds


def jittery(
    at: float, *, replicas: int, arrival: float, previous_lag: float, rng: np.random.Generator
) -> Observation:
    """A live sample of a group that keeps up: lag is what the last offset commit left behind.

    Consumers commit about once a second, so lag holds between 0.2 and 1.6 seconds of arrivals and
    moves up or down with every commit; the consume rate read from committed offsets moves with it.
    """
    behind = float(rng.uniform(0.2, 1.6))
    lag = arrival * behind
    consumed = arrival + (previous_lag - lag) / INTERVAL
    return obs(at, replicas=replicas, arrival=arrival, lag=lag, lag_seconds=behind, consume_rate=consumed)


def test_commit_batch_jitter_neither_delays_nor_flips_a_scale_down() -> None:
    # Found live: lag ticking up with each commit read as "lag is growing", so the engine flipped
    # between scale-down and hold every second and the HPA acted one or two syncs late.
    p = policy(scale_down=ScaleDown(stabilization_seconds=60.0))
    params = PolicyArrays.from_policies([p])
    state = EngineState.initial(params)
    rng = np.random.default_rng(9)
    lag = 0.0
    desired: list[int] = []
    for t in np.arange(0.0, 300.0, INTERVAL):  # replicas stay at 12: the HPA has not acted yet
        o = jittery(float(t), replicas=12, arrival=1000.0, previous_lag=lag, rng=rng)
        lag = o.lag
        decisions, state = decide(params, state, ObservationBatch.stack([o]))
        desired.append(decisions[0].desired_replicas)
    first = next(i for i, d in enumerate(desired) if d < 12)
    # As soon as without jitter (the stabilization window after the first sample), and then for good.
    assert first <= 61 / INTERVAL
    assert set(desired[first:]) == {desired[first]}, desired[first:]
