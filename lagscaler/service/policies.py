"""The policy directory, watched: hot reload that never loses a working policy to a typo.

Each file is judged on its own. A file that was valid and becomes invalid keeps its last good
version in force, and the problem is reported (log, ``/readyz?verbose``, the
``lagscaler_policy_errors`` gauge) until it is fixed. A file that is deleted removes its policy.
Two files that claim the same workload or the same consumer group would fight over one scale
target: the later one (by file name) is refused.

Polling (once per scaling cycle) rather than inotify because Kubernetes updates a mounted ConfigMap
by swapping a symlink, which inotify on the files themselves does not see, and because a stat of a
few dozen files is cheaper than any watch library. A file counts as changed when its bytes do: each
check reads and hashes every file (bounded by the loader's size limit), because (inode, size,
mtime) misses an edit that keeps the size within one mtime tick (coarse file system clocks, or a
tool that restores mtimes, like ``cp -p`` or ``rsync -t``). Unchanged files are not parsed again.

Reading runs in a worker thread (:meth:`PolicyWatcher.reload`), never on the event loop that serves
the API: whatever lands in the directory, the HPA's requests keep being answered. The loader itself
bounds what a hostile file can cost (size, alias expansion, nesting: see ``lagscaler.core.policy.loader``),
so a bad file is an error line, never a stall, a crash or a restart loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lagscaler.core.policy import ScalingPolicy
from lagscaler.core.policy.loader import (
    MAX_FILE_BYTES,
    PolicyIssue,
    check_policy_file,
    cross_file_issues,
    policy_files,
)
from lagscaler.errors import UserError
from lagscaler.logs import get_logger

Checker = Callable[[Path], tuple[ScalingPolicy | None, list[PolicyIssue]]]

log = get_logger("lagscaler.policies")


@dataclass(frozen=True, slots=True)
class _FileState:
    stamp: bytes  # digest of the bytes of the file the symlink resolves to
    policy: ScalingPolicy | None  # the last good version, kept while the file is invalid
    errors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicySet:
    """The policies in force and the problems of the moment. ``version`` changes when ``policies`` do."""

    policies: tuple[ScalingPolicy, ...] = ()
    errors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # file -> formatted problems
    version: int = 0

    @property
    def error_lines(self) -> tuple[str, ...]:
        return tuple(line for lines in self.errors.values() for line in lines)


def _stamp(path: Path) -> bytes | None:
    """A digest of what the loader would read from ``path`` (``None``: gone or unreadable).

    Read before the file is parsed, so an edit landing in between makes the next check differ and
    read it again, never the reverse. Non-blocking and regular files only: a FIFO swapped in after
    the listing must not hang the reload thread.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # follows the ConfigMap's ..data symlink
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        with os.fdopen(os.dup(fd), "rb") as file:
            head = file.read(MAX_FILE_BYTES + 1)  # the loader reads no more: a huge file is refused
    except OSError:
        return None
    finally:
        os.close(fd)
    digest = hashlib.blake2b(head, digest_size=16)
    digest.update(st.st_size.to_bytes(8, "little"))  # a huge file that grows still changes its error
    return digest.digest()


class PolicyWatcher:
    """Loads a policy directory and reloads what changed on :meth:`reload` (or :meth:`refresh`).

    ``check`` reads one file (the seam tests use to hold a load mid-way); :attr:`current` may be read
    from any thread at any time and is replaced in one assignment.
    """

    def __init__(self, directory: Path, *, check: Checker = check_policy_file) -> None:
        if not directory.is_dir():
            reason = "does not exist" if not directory.exists() else "is not a directory"
            raise UserError(f"policy directory {directory} {reason}")
        self.directory = directory
        self._check = check
        self._files: dict[Path, _FileState] = {}
        self._reloading = asyncio.Lock()
        self.current = PolicySet()
        self.reloads = 0

    async def reload(self) -> PolicySet:
        """:meth:`refresh` in a worker thread, one at a time: the event loop never reads a file."""
        async with self._reloading:
            return await asyncio.to_thread(self.refresh)

    def refresh(self) -> PolicySet:
        """Re-read changed files (blocking: call it from a thread, or use :meth:`reload`)."""
        try:
            present = policy_files(self.directory)
        except OSError as exc:
            # The directory itself vanished (a remount): keep everything, report it.
            problem = f"{self.directory}: cannot list policy directory: {exc.strerror or exc}"
            self.current = PolicySet(
                self.current.policies, {str(self.directory): (problem,)}, self.current.version
            )
            return self.current
        changed = set(self._files) - set(present)
        files: dict[Path, _FileState] = {}
        for path in present:
            stamp = _stamp(path)
            old = self._files.get(path)
            if stamp is not None and old is not None and old.stamp == stamp:
                files[path] = old
                continue
            changed.add(path)
            policy, issues = self._check(path)
            if policy is not None:
                files[path] = _FileState(stamp or b"", policy)
                continue
            if _stamp(path) is None:  # deleted while being read: gone, as if listed a moment later
                continue
            kept = old.policy if old is not None else None
            problems = tuple(str(i) for i in issues)
            if kept is not None:
                problems = (
                    *problems,
                    f"{path}: keeping the last valid version of {kept.key} until this is fixed",
                )
            files[path] = _FileState(stamp or b"", kept, problems)
            log.error("invalid policy file", file=str(path), errors=list(problems))
        self._files = files
        if not changed and self.current.version:
            return self.current
        candidates = [s.policy for s in files.values() if s.policy is not None]
        errors: dict[str, tuple[str, ...]] = {str(p): s.errors for p, s in files.items() if s.errors}
        clashing: set[str] = set()
        for issue in cross_file_issues(candidates):
            clashing.add(issue.file)
            errors[issue.file] = (*errors.get(issue.file, ()), str(issue))
        policies = tuple(p for p in candidates if p.source not in clashing)
        version = self.current.version
        if policies != self.current.policies or not version:
            version += 1
            self.reloads += 1
            log.info("policies loaded", workloads=[p.key for p in policies], errors=len(errors))
        self.current = PolicySet(policies, errors, version)
        return self.current
