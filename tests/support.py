"""Helpers shared by the tests (``from support import eventually``; pytest puts ``tests/`` on the path).

:func:`eventually` is the one way a test waits for something: it polls a condition until it holds
and fails with what it last saw. A bare ``sleep`` is not a synchronisation: on a busy machine it is
either too short (flaky) or too long (slow). The bound ``within`` only keeps a broken test from
hanging; it is generous on purpose and never a performance claim.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest

if TYPE_CHECKING:
    from lagscaler.edges.api import ApiSettings

__all__ = [
    "BILLION_LAUGHS",
    "REPO",
    "REQUIRE_TOOLS",
    "eventually",
    "goclient",
    "need_tool",
    "open_api_settings",
]

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
REQUIRE_TOOLS = "LAGSCALER_REQUIRE_TOOLS"  # .ci/run sets it: a missing tool fails there, never skips


async def eventually(
    check: Callable[[], T | Awaitable[T]],
    *,
    within: float = 30.0,
    every: float = 0.1,
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


def need_tool(found: bool, message: str) -> None:
    """Skip a test whose outside tool (kubectl, go) is missing; in CI (``$LAGSCALER_REQUIRE_TOOLS``) fail.

    A check that silently skips in CI is a check nobody runs: ``make test-deps`` installs the tools,
    and CI must prove it did.
    """
    if found:
        return
    if os.environ.get(REQUIRE_TOOLS):
        pytest.fail(f"{message}; ${REQUIRE_TOOLS} is set, so this check must run")
    pytest.skip(message)


@cache
def goclient() -> Path:
    """The Go program of ``tests/goclient`` (apimachinery and the HPA's client), built once and cached."""
    need_tool(
        shutil.which("go") is not None or Path("/usr/local/go/bin/go").exists(),
        "go is not installed (https://go.dev/doc/install; Debian: apt-get install golang)",
    )
    result = subprocess.run(
        [sys.executable, "-m", "tests.goclient.build"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip())


def open_api_settings() -> ApiSettings:
    """An API on a free loopback port that lets every request in: for tests of something else."""
    from lagscaler.edges.api import ApiSettings

    return ApiSettings(
        bind_address="127.0.0.1",
        secure_port=0,
        metrics_port=-1,
        authentication_skip_lookup=True,
        authorization_always_allow=True,
    )
