"""What the HPA controller knows about one ``HorizontalPodAutoscaler`` (spec) and remembers (state).

The spec mirrors ``autoscaling/v2`` as the API server stores it (after defaulting), restricted to
what matters for External metrics. Two kube-controller-manager flags live here too, because they
change what a given HPA does: ``--horizontal-pod-autoscaler-tolerance`` (``cluster_tolerance``) and
``--horizontal-pod-autoscaler-downscale-stabilization`` (``downscale_stabilization_seconds``).

The state is what the controller keeps in memory per HPA between syncs (recommendations and scale
events, see ``pkg/controller/podautoscaler/horizontal.go``); it is lost when the controller
restarts, which :class:`HpaState` models as the empty state.

Times are seconds on any monotonic clock the caller chooses (a simulator uses trace time).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from lagscaler.core.hpa.served import DESIRED_REPLICAS
from lagscaler.core.quantity import milli_value

MAX_INT32 = 2**31 - 1
MAX_INT64 = 2**63 - 1


class TargetType(enum.StrEnum):
    """``spec.metrics[].external.target.type`` (``Utilization`` does not apply to External metrics)."""

    VALUE = "Value"  # the sum of the items is compared with the target; scaled by ready pods
    AVERAGE_VALUE = "AverageValue"  # the sum divided by status.replicas is compared with the target


class PolicyType(enum.StrEnum):
    """``behavior.scale{Up,Down}.policies[].type``."""

    PODS = "Pods"
    PERCENT = "Percent"


class SelectPolicy(enum.StrEnum):
    """``behavior.scale{Up,Down}.selectPolicy``: which of several rate-limit policies wins."""

    MAX = "Max"  # the policy allowing the biggest change
    MIN = "Min"  # the policy allowing the smallest change
    DISABLED = "Disabled"  # no scaling in this direction at all


@dataclass(frozen=True, slots=True)
class ExternalMetric:
    """One ``type: External`` entry of ``spec.metrics``: a metric name and its target.

    ``target`` is the quantity from the manifest (per pod for ``AverageValue``); the controller
    only ever sees its milli-value.
    """

    target_type: TargetType
    target: float
    name: str = DESIRED_REPLICAS
    target_milli: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_milli", milli_value(self.target))
        if self.target_milli <= 0:
            raise ValueError(f"metric {self.name}: target must be positive, got {self.target!r}")


@dataclass(frozen=True, slots=True)
class HpaScalingPolicy:
    """One rate limit: at most ``value`` pods (or percent) of change per ``period_seconds``."""

    type: PolicyType
    value: int
    period_seconds: int

    def __post_init__(self) -> None:
        # The API server's validation: value > 0, 0 < periodSeconds <= 1800.
        if self.value <= 0:
            raise ValueError(f"scaling policy value must be > 0, got {self.value}")
        if not 0 < self.period_seconds <= 1800:
            raise ValueError(f"scaling policy periodSeconds must be in (0, 1800], got {self.period_seconds}")


@dataclass(frozen=True, slots=True)
class ScalingRules:
    """``behavior.scaleUp`` or ``behavior.scaleDown`` as written; ``None`` fields take the defaults.

    ``tolerance`` exists only where the API server keeps it (``HPAConfigurableTolerance``: alpha
    in 1.33, beta and on by default in 1.35); on other clusters leave it ``None``.
    """

    stabilization_window_seconds: int | None = None
    select_policy: SelectPolicy | None = None
    policies: tuple[HpaScalingPolicy, ...] | None = None
    tolerance: float | None = None

    def __post_init__(self) -> None:
        window = self.stabilization_window_seconds
        if window is not None and not 0 <= window <= 3600:
            raise ValueError(f"stabilizationWindowSeconds must be in [0, 3600], got {window}")
        if self.policies is not None and not self.policies:
            raise ValueError("policies, when given, must hold at least one policy")
        if self.tolerance is not None and not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise ValueError(f"tolerance must be >= 0, got {self.tolerance}")


@dataclass(frozen=True, slots=True)
class ResolvedRules:
    """Scaling rules after API defaulting: nothing is missing any more."""

    stabilization_window_seconds: float
    select_policy: SelectPolicy
    policies: tuple[HpaScalingPolicy, ...]
    tolerance: float | None

    @property
    def longest_period_seconds(self) -> int:
        return max((p.period_seconds for p in self.policies), default=0)


@dataclass(frozen=True, slots=True)
class Behavior:
    """``spec.behavior``. Its mere presence switches the controller to the behavior code path."""

    scale_up: ScalingRules | None = None
    scale_down: ScalingRules | None = None


# pkg/apis/autoscaling/v2/defaults.go: scale up by 4 pods or 100 % per 15 s, whichever is more, no
# stabilization; scale down by up to 100 % per 15 s after the controller's downscale window.
DEFAULT_SCALE_UP = ScalingRules(
    stabilization_window_seconds=0,
    select_policy=SelectPolicy.MAX,
    policies=(
        HpaScalingPolicy(PolicyType.PODS, 4, 15),
        HpaScalingPolicy(PolicyType.PERCENT, 100, 15),
    ),
)
DEFAULT_SCALE_DOWN = ScalingRules(
    stabilization_window_seconds=None,  # filled from the controller flag, as upstream does
    select_policy=SelectPolicy.MAX,
    policies=(HpaScalingPolicy(PolicyType.PERCENT, 100, 15),),
)


def _resolve(given: ScalingRules | None, default: ScalingRules, default_window: float) -> ResolvedRules:
    """Field-by-field defaulting, as ``copyHPAScalingRules`` does (a given list replaces the default)."""
    rules = given or ScalingRules()
    window = rules.stabilization_window_seconds
    if window is None:
        window = default.stabilization_window_seconds
    select = rules.select_policy or default.select_policy or SelectPolicy.MAX
    policies = rules.policies if rules.policies is not None else default.policies
    return ResolvedRules(
        stabilization_window_seconds=float(default_window if window is None else window),
        select_policy=select,
        policies=policies or (),
        tolerance=rules.tolerance,
    )


@dataclass(frozen=True, slots=True)
class HpaSpec:
    """One HorizontalPodAutoscaler with External metrics, plus the two controller flags that shape it."""

    metrics: tuple[ExternalMetric, ...]
    max_replicas: int
    min_replicas: int = 1
    behavior: Behavior | None = None
    cluster_tolerance: float = 0.1
    downscale_stabilization_seconds: float = 300.0
    _resolved: tuple[ResolvedRules, ResolvedRules, Tolerances] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.metrics:
            raise ValueError("an HPA needs at least one metric")
        if self.max_replicas < 1:
            raise ValueError(f"maxReplicas must be >= 1, got {self.max_replicas}")
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError(
                f"minReplicas must be in [0, maxReplicas={self.max_replicas}], got {self.min_replicas}"
            )
        if not (math.isfinite(self.cluster_tolerance) and self.cluster_tolerance >= 0):
            raise ValueError(f"cluster tolerance must be >= 0, got {self.cluster_tolerance}")
        object.__setattr__(self, "_resolved", self.resolved())

    def resolved(self) -> tuple[ResolvedRules, ResolvedRules, Tolerances]:
        """Scale-up rules, scale-down rules and tolerances after defaulting (computed once)."""
        up = _resolve(self.behavior.scale_up if self.behavior else None, DEFAULT_SCALE_UP, 0.0)
        down = _resolve(
            self.behavior.scale_down if self.behavior else None,
            DEFAULT_SCALE_DOWN,
            self.downscale_stabilization_seconds,
        )
        up_tolerance = up.tolerance if self.behavior else None
        down_tolerance = down.tolerance if self.behavior else None
        tolerances = Tolerances(
            scale_down=self.cluster_tolerance if down_tolerance is None else down_tolerance,
            scale_up=self.cluster_tolerance if up_tolerance is None else up_tolerance,
        )
        return up, down, tolerances

    @property
    def scale_up_rules(self) -> ResolvedRules:
        return self._resolved[0]

    @property
    def scale_down_rules(self) -> ResolvedRules:
        return self._resolved[1]

    @property
    def tolerances(self) -> Tolerances:
        """The dead band around a usage ratio of 1: per-HPA where set, else the cluster's."""
        return self._resolved[2]


@dataclass(frozen=True, slots=True)
class Tolerances:
    """A usage ratio in ``[1 - scale_down, 1 + scale_up]`` (both ends included) changes nothing."""

    scale_down: float
    scale_up: float

    def within(self, ratio: float) -> bool:
        # NaN (0/0 from zero pods and zero usage) is never within, as in Go.
        return (1.0 - self.scale_down) <= ratio <= (1.0 + self.scale_up)


@dataclass(frozen=True, slots=True)
class Recommendation:
    """An unstabilized replica recommendation and when it was made."""

    replicas: int
    time: float


@dataclass(frozen=True, slots=True)
class ScaleEvent:
    """A scale the controller made (``change`` is the absolute number of replicas added or removed)."""

    change: int
    time: float
    outdated: bool = False


@dataclass(frozen=True, slots=True)
class HpaState:
    """What the controller remembers about one HPA between syncs.

    ``recommendations`` is ``None`` until the first sync, which records the current replica count
    as if it had been recommended then (``recordInitialRecommendation``): that is why a fresh HPA,
    or every HPA after a controller restart, does not scale down during its first window.
    """

    recommendations: tuple[Recommendation, ...] | None = None
    scale_up_events: tuple[ScaleEvent, ...] = ()
    scale_down_events: tuple[ScaleEvent, ...] = ()


class MetricError:
    """A failed read of one metric (the adapter answered an error, or returned no items)."""

    __slots__ = ("message",)

    def __init__(self, message: str = "unable to get external metric") -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"MetricError({self.message!r})"


# One reading per metric in spec order: a single item's value, the values of all items the
# adapter returned (they are summed), or the error the read ended with.
MetricReading = float | int | tuple[float, ...] | list[float] | MetricError


@dataclass(frozen=True, slots=True)
class StepResult:
    """The outcome of one sync.

    ``replicas`` is the target's ``spec.replicas`` after the sync (unchanged unless ``rescaled``).
    ``proposal`` is what the metrics asked for before stabilization, rate limits and clamping
    (``None`` when the metrics were not consulted). ``reason`` names what decided the outcome, with
    the controller's own condition reasons (``ScaleDownStabilized``, ``ScaleUpLimit``,
    ``TooManyReplicas``, ``FailedGetExternalMetric``, ``ScalingDisabled``, ...).
    """

    state: HpaState
    replicas: int
    rescaled: bool
    reason: str
    proposal: int | None = None
    metric_errors: tuple[str, ...] = field(default=())
