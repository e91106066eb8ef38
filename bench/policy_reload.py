"""Cost of checking a policy directory for changes: content digests against a stat per file.

The watcher decides "changed" from a digest of each file's bytes (a stat misses same-size edits
within one mtime tick). This measures, on the same directory in one run, one unchanged
:meth:`PolicyWatcher.refresh` (list, read + hash every file, nothing parsed) against the listing
plus one ``os.stat`` per file that the previous (inode, size, mtime) check cost.

Usage: ``.venv/bin/python bench/policy_reload.py [--files 50 500] [--repeats 200]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from engine_speed import timed  # the bench scripts' median timer (run as a script: bench/ is on the path)

from lagscaler.core.policy.loader import policy_files
from lagscaler.service.policies import PolicyWatcher

POLICY = Path(__file__).resolve().parent.parent / "policies" / "clickstream.yaml"


def stat_only(directory: Path) -> None:
    for path in policy_files(directory):
        os.stat(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[50, 500])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    text = POLICY.read_text()
    for count in args.files:
        with tempfile.TemporaryDirectory() as name:
            directory = Path(name)
            for i in range(count):
                policy = text.replace("name: clickstream\n", f"name: clickstream-{i}\n", 1)
                policy = policy.replace("group: clickstream-ingest", f"group: clickstream-ingest-{i}")
                policy = policy.replace("name: clickstream-ingest", f"name: clickstream-ingest-{i}")
                (directory / f"p{i:04d}.yaml").write_text(policy)
            watcher = PolicyWatcher(directory)
            loaded = watcher.refresh()
            assert len(loaded.policies) == count, loaded.error_lines[:3]
            size = sum(p.stat().st_size for p in directory.iterdir())
            digest = timed(watcher.refresh, args.repeats)
            stats = timed(lambda d=directory: stat_only(d), args.repeats)  # type: ignore[misc]
            print(
                f"{count} files ({size / 1024:.0f} KiB): unchanged refresh {digest * 1e3:.2f} ms "
                f"(digests) vs {stats * 1e3:.2f} ms (stat per file) -> {digest / stats:.1f}x, "
                f"medians of {args.repeats}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
