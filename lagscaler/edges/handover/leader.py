"""Leader election: only one controller acts on a workload's generations at a time (``docs/handover.md`` §6).

:class:`Leadership` is the interface; :class:`FileLeadership` implements it with ``flock(2)`` for one
machine, :class:`lagscaler.edges.handover.lease.LeaseLeadership` with a Kubernetes Lease for a cluster.

Each acquisition yields a *term* higher than every earlier one; the controller writes it into every
record, and workers ignore records of a lower term than one they have seen, so a leader that lost its
leadership without knowing it (a paused process under a Lease) cannot overrule its successor.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from pathlib import Path
from typing import Protocol

__all__ = ["DEFAULT_LEASE_NAME", "FileLeadership", "Leadership"]

DEFAULT_LEASE_NAME = "lagscaler-handover"  # the Kubernetes Lease (lagscaler.edges.handover.lease) by default


class Leadership(Protocol):
    async def acquire(self) -> int:
        """Wait until this process leads; returns its term (higher than any term before it)."""
        ...

    def is_leader(self) -> bool:
        """Whether this process still leads (checked before every action)."""
        ...

    async def release(self) -> None:
        """Stop leading (another process may acquire at once)."""
        ...


class FileLeadership:
    """``flock`` on ``path``: the kernel releases it when the holder exits, even by SIGKILL.

    The file holds the last term as text; the holder increments it under the lock, so terms only grow,
    across processes and restarts. Polls every ``poll`` seconds while another process holds it.
    """

    def __init__(self, path: Path, *, poll: float = 0.2) -> None:
        self.path = path
        self.poll = poll
        self._fd: int | None = None
        self.term = 0

    def _try(self) -> tuple[int, int] | None:
        """One non-blocking attempt: the locked descriptor and the new term, or None if another holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            raw = os.pread(fd, 64, 0).decode(errors="replace").strip()
            term = (int(raw) if raw.isdigit() else 0) + 1
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{term}\n".encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd, term

    async def acquire(self) -> int:
        if self._fd is not None:
            return self.term
        while True:
            # In a thread for the fsync. Cancelled meanwhile (serve stopping), the thread still runs
            # to the end and may take the lock: the callback lets go of it, or this process would hold
            # the lock in nobody's name and lock out every other controller until it exits.
            attempt = asyncio.ensure_future(asyncio.to_thread(self._try))
            try:
                won = await asyncio.shield(attempt)
            except asyncio.CancelledError:
                attempt.add_done_callback(_unlock_if_won)
                raise
            if won is not None:
                self._fd, self.term = won
                return self.term
            await asyncio.sleep(self.poll)

    def is_leader(self) -> bool:
        return self._fd is not None

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _unlock_if_won(attempt: asyncio.Future[tuple[int, int] | None]) -> None:
    """Let go of a lock that an abandoned attempt took."""
    if attempt.cancelled() or attempt.exception() is not None:
        return
    won = attempt.result()
    if won is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(won[0], fcntl.LOCK_UN)
        os.close(won[0])
