"""Build the Go client once and cache the binary under ``~/.cache/lagscaler/goclient/<hash>/``.

``python -m tests.goclient.build`` (run by ``make setup``, so CI builds it before the tests) prints
the binary's path. The hash covers the sources and the Go version, so an edit rebuilds and an
unchanged tree reuses the binary. Modules come from the Go module proxy.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SOURCE = Path(__file__).resolve().parent
FILES = ("go.mod", "go.sum", "main.go")


def cache_root(tool: str = "goclient") -> Path:
    """``~/.cache/lagscaler/<tool>`` (or under ``$XDG_CACHE_HOME``): where Go-built test tools live."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lagscaler" / tool


def go_binary() -> str | None:
    found = shutil.which("go")
    if found:
        return found
    fallback = Path("/usr/local/go/bin/go")
    return str(fallback) if fallback.exists() else None


def binary_path(go: str) -> Path:
    digest = hashlib.sha256()
    for name in FILES:
        digest.update((SOURCE / name).read_bytes())
    version = subprocess.run([go, "version"], capture_output=True, text=True, check=True).stdout
    digest.update(version.encode())
    return cache_root() / digest.hexdigest()[:16] / "goclient"


def build() -> Path:
    """The cached binary, building it first if needed; ``RuntimeError`` with Go's output on failure."""
    go = go_binary()
    if go is None:
        raise RuntimeError("go is not installed (needed for the external_metrics client check)")
    target = binary_path(go)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # The first build downloads k8s.io modules from the Go module proxy and compiles them: minutes on
    # two cores, so say so instead of going quiet (stderr: stdout is the binary's path).
    print(
        f"building tests/goclient into {target.parent} (first time: Go modules, a few minutes)...",
        file=sys.stderr,
        flush=True,
    )
    started = time.monotonic()
    partial = target.with_suffix(".partial")
    result = subprocess.run(
        [go, "build", "-trimpath", "-o", str(partial), "."],
        cwd=SOURCE,
        capture_output=True,
        text=True,
        env={**os.environ, "CGO_ENABLED": "0"},
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"go build failed:\n{result.stdout}{result.stderr}")
    partial.replace(target)
    print(f"built tests/goclient in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return target


def main() -> int:
    try:
        print(build())
    except RuntimeError as exc:
        print(f"goclient: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
