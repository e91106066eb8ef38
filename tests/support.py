"""Helpers shared by the tests (``from support import eventually``; pytest puts ``tests/`` on the path).

:func:`eventually` is the one way a test waits for something: it polls a condition until it holds
and fails with what it last saw. A bare ``sleep`` is not a synchronisation: on a busy machine it is
either too short (flaky) or too long (slow). The bound ``within`` only keeps a broken test from
hanging; it is generous on purpose and never a performance claim.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

__all__ = ["BILLION_LAUGHS", "eventually"]

T = TypeVar("T")


async def eventually(
    check: Callable[[], T | Awaitable[T]],
    *,
    within: float = 30.0,
    every: float = 0.05,
    what: str | None = None,
) -> T:
    """Call ``check`` (sync or async) until it holds, and return what it returned.

    A check either asserts (it holds once it returns without :class:`AssertionError`, e.g. returning
    ``None``) or is a predicate (it holds once it returns a truthy value). Exceptions other than
    ``AssertionError`` are not retried: they are bugs, not "not yet".
    """
    deadline = time.monotonic() + within
    last: object = None
    while True:
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
        except AssertionError as exc:
            last = exc
        else:
            if result is None or result:
                return result  # type: ignore[return-value]
            last = result
        if time.monotonic() > deadline:
            if isinstance(last, AssertionError):
                raise AssertionError(f"waited {within}s for {what or 'the condition'}: {last}") from last
            pytest.fail(f"waited {within}s for {what or 'the condition'}; last: {last!r}")
        await asyncio.sleep(every)


# Nine levels of nine aliases: 9**9 (387 million) strings once expanded, from 324 bytes of YAML: the
# classic "billion laughs". Expanded, it takes minutes and gigabytes; a policy loader must refuse it.
BILLION_LAUGHS = "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n" + "".join(
    f"{name}: &{name} [{','.join([f'*{previous}'] * 9)}]\n"
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True)
)
