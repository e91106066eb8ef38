"""Build etcd, kube-apiserver, kube-controller-manager and kube-scheduler once per version; cache them.

``python -m tests.controlplane.build`` (run by ``make test-deps``, so CI builds them before the tests)
prints the directory (under ``~/.cache/lagscaler/kube``) that holds the binaries. A cold build takes ~15
minutes on two cores, so it prints a line per step; a warm run finds the cached directory and builds
nothing. kube-scheduler shares all but 6 of its 1,401 packages with the other two Kubernetes binaries
(``go list -deps``), so it adds about a minute to a cold build; a directory built before it was added
gets it built into place, the others untouched.

The recipe: a wrapper Go module that requires ``k8s.io/kubernetes`` and ``go.etcd.io/etcd/server/v3`` and
repeats every ``k8s.io/X => ./staging/...`` replace of Kubernetes' own go.mod as ``k8s.io/X => k8s.io/X
v0.<minor>.<patch>`` (a module's replace directives apply only in the main module, so the wrapper must say
them again). ``go``, ``godebug`` and the version ldflags copy what Kubernetes' go.mod and
``hack/lib/version.sh`` (kubernetes v1.35.4) set. Modules come from the Go module proxy.

Concurrent runs (two checkouts, CI and a developer) take an exclusive lock and install by renaming a
finished directory into place, so nobody sees half a tree.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KUBERNETES = "v1.35.4"
ETCD = "v3.6.5"  # the version kubernetes v1.35.4's go.mod pins
GO_DIRECTIVE = "1.25.0"  # k8s.io/kubernetes v1.35.4 go.mod: `go 1.25.0`, `godebug default=go1.25`
GODEBUG_DEFAULT = "go1.25"
BINARIES = {
    "etcd": "go.etcd.io/etcd/server/v3",
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
    # Only for the tests that need a real PodScheduled=False/Unschedulable (cluster.running_scheduler).
    "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
}
_RECIPE_VERSION = "1"  # bump when the way the binaries are built changes

try:  # run as `python -m tests.controlplane.build`
    from tests.goclient.build import cache_root, go_binary
except ImportError:  # imported by pytest, which puts tests/ itself on the path
    from goclient.build import cache_root, go_binary


def _say(message: str) -> None:
    print(f"controlplane build: {message}", flush=True)


def install_dir(go: str) -> Path:
    """Where this recipe's binaries live: one directory per (versions, Go toolchain, recipe)."""
    version = subprocess.run([go, "version"], capture_output=True, text=True, check=True).stdout
    digest = hashlib.sha256(f"{KUBERNETES} {ETCD} {_RECIPE_VERSION} {version}".encode()).hexdigest()[:12]
    return cache_root("kube") / f"kubernetes-{KUBERNETES}-etcd-{ETCD}-{digest}"


def installed() -> Path | None:
    """The cached binaries' directory if a complete build is there (no build, no network)."""
    go = go_binary()
    if go is None:
        return None
    target = install_dir(go)
    return target if all((target / name).is_file() for name in BINARIES) else None


def _run(go: str, args: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run([go, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"go {' '.join(args)} failed:\n{result.stdout[-4000:]}{result.stderr[-4000:]}")
    return result.stdout


def _staging_replaces(go: str, cwd: Path, env: dict[str, str]) -> list[str]:
    """Kubernetes' own ``k8s.io/X => ./staging/...`` replaces, as ``k8s.io/X`` module paths."""
    info = json.loads(_run(go, ["mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES}"], cwd, env))
    gomod = Path(info["GoMod"]).read_text()
    modules = re.findall(r"^\s*(k8s\.io/\S+)\s+=>\s+\./staging/", gomod, flags=re.MULTILINE)
    if not modules:
        raise RuntimeError(f"no staging replaces found in {info['GoMod']}")
    return sorted(set(modules))


def _write_module(go: str, work: Path, env: dict[str, str]) -> None:
    (work / "go.mod").write_text(f"module wrapper\n\ngo {GO_DIRECTIVE}\n")
    staging = _staging_replaces(go, work, env)
    minor = "v0." + KUBERNETES.removeprefix("v1.")
    lines = [
        "module wrapper",
        "",
        f"go {GO_DIRECTIVE}",
        "",
        f"godebug default={GODEBUG_DEFAULT}",
        "",
        "require (",
        f"\tk8s.io/kubernetes {KUBERNETES}",
        f"\tgo.etcd.io/etcd/server/v3 {ETCD}",
        ")",
        "",
        "replace (",
        *(f"\t{module} => {module} {minor}" for module in staging),
        ")",
        "",
    ]
    (work / "go.mod").write_text("\n".join(lines))
    imports = "\n".join(f'\t_ "{package}"' for package in BINARIES.values())
    (work / "tools.go").write_text(f"//go:build tools\n\npackage wrapper\n\nimport (\n{imports}\n)\n")


def _ldflags() -> str:
    major, minor = KUBERNETES.removeprefix("v").split(".")[:2]
    prefix = "k8s.io/component-base/version"
    return (
        f"-s -w -X {prefix}.gitVersion={KUBERNETES} -X {prefix}.gitMajor={major} "
        f"-X {prefix}.gitMinor={minor} -X {prefix}.gitTreeState=clean"
    )


def build() -> Path:
    """The directory holding the binaries, building them (or the ones it lacks) first if needed."""
    go = go_binary()
    if go is None:
        raise RuntimeError("go is not installed (needed to build the Kubernetes control plane)")
    target = install_dir(go)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(f"another build holds {target.parent / '.lock'}; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if installed() is not None:
            return target
        _build_into(go, target)
    return target


def _build_into(go: str, target: Path) -> None:
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod -buildvcs=false"}
    started = time.monotonic()
    missing = {n: p for n, p in BINARIES.items() if not (target / n).is_file()}
    with tempfile.TemporaryDirectory(prefix="build-", dir=target.parent) as scratch:
        work = Path(scratch) / "module"
        out = Path(scratch) / "bin"
        work.mkdir()
        out.mkdir()
        _say(
            f"building {', '.join(missing)} (kubernetes {KUBERNETES}, etcd {ETCD}) from the Go module proxy"
            " (cold: ~15 min)"
        )
        _write_module(go, work, env)
        _say("resolving modules (go mod tidy)")
        _run(go, ["mod", "tidy"], work, env)
        for name, package in missing.items():
            _say(f"compiling {name} ({time.monotonic() - started:.0f}s so far)")
            _run(
                go, ["build", "-trimpath", "-ldflags", _ldflags(), "-o", str(out / name), package], work, env
            )
        if target.is_dir():  # an older build that lacks some: each one renamed into place
            for name in missing:
                (out / name).rename(target / name)
        else:
            (out / "go.mod").write_text((work / "go.mod").read_text())  # what was built, for the curious
            out.rename(target)
    _say(f"done in {time.monotonic() - started:.0f}s: {target}")


def main() -> int:
    try:
        print(build())
    except RuntimeError as exc:
        print(f"controlplane build: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
