"""Health checks for ``/healthz``, ``/livez`` and ``/readyz``, in the apiserver's text format.

A check is a cheap synchronous function returning :class:`CheckResult`; it reads state others keep
(e.g. "policies loaded", "a sample cycle succeeded"), it never does IO. ``detail`` is shown by
``?verbose`` even for a passing check, so a readiness check can report policy files that failed to
load while the last good version keeps serving.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["CheckResult", "HealthChecks"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    detail: str = ""


Check = Callable[[], CheckResult]


def _ping() -> CheckResult:
    return CheckResult(True)


class HealthChecks:
    """A named, ordered list of checks; ``ping`` is always there."""

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {"ping": _ping}

    def add(self, name: str, check: Check) -> None:
        if not name or "/" in name or name in self._checks:
            raise ValueError(f"health check name {name!r} is empty, has '/', or is taken")
        self._checks[name] = check

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._checks)

    def run(self, only: str | None = None, exclude: Iterable[str] = ()) -> list[tuple[str, CheckResult]]:
        """Run the checks (or the one named ``only``); a check that raises counts as failed."""
        excluded = set(exclude)
        results: list[tuple[str, CheckResult]] = []
        for name, check in self._checks.items():
            if (only is not None and name != only) or name in excluded:
                continue
            try:
                result = check()
            except Exception as exc:  # a broken check must fail readiness, not the endpoint
                result = CheckResult(False, f"check raised {type(exc).__name__}: {exc}")
            results.append((name, result))
        return results
