"""Simulator speed and memory: the README's ``lagscaler simulate`` example, now and before this change.

Runs the README's example (``policies/clickstream.yaml``, peak 20k msg/s, every baseline: lagscaler,
keda, hpa-rate, static, the oracle and the fluid bound) on the first ``--days`` of the longest shared
trace (nyc_taxi, 215 days), each run in a child process of its own, and reports wall time, CPU time
and the child's peak resident memory (``wait4``'s ``ru_maxrss``).

The baseline is the simulator at commit ``BASELINE`` (the last one before the streaming simulator),
taken from ``git show`` into a temporary package and run the same way on the same trace in the same
run, with the same engine and HPA model: only the simulator differs. Both run the baseline's model
(offsets committed continuously), so their results must agree; the script prints both tables' rows
and says whether they do. The current simulator's default model (a 5 s commit interval) is timed too.

Memory flat in the trace's length: every implementation runs on ``--short`` days as well.

    .venv/bin/python bench/simulator_speed.py [--days 30] [--short 7] [--skip-baseline]
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The shared traces sit beside the repository (/work/shared beside /work/main), or two levels up
# from a worktree under /work/wt/.
TRACE = next(
    (
        p
        for p in (d / "shared" / "traces" / "nyc_taxi.csv" for d in (ROOT.parent, ROOT.parent.parent))
        if p.exists()
    ),
    ROOT.parent / "shared" / "traces" / "nyc_taxi.csv",
)
POLICY = ROOT / "policies" / "clickstream.yaml"
PEAK = 20_000.0
BASELINE = "3063fff"  # main before the streaming simulator
BASELINE_PACKAGE = "baseline_simulation"
MODULES = ("__init__", "compare", "controllers", "model", "report", "simulator", "trace")


def baseline_package(into: Path) -> Path:
    """``lagscaler/core/simulation`` at ``BASELINE`` as the package ``baseline_simulation`` under ``into``."""
    package = into / BASELINE_PACKAGE
    package.mkdir()
    for name in MODULES:
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{BASELINE}:lagscaler/core/simulation/{name}.py"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        (package / f"{name}.py").write_text(source.replace("lagscaler.core.simulation", BASELINE_PACKAGE))
    return into


def child(which: str, days: float, commit: float) -> None:
    """Run one simulation in this process and print what it found as JSON on the last line."""
    from lagscaler.core.policy import load_policy_file

    package = BASELINE_PACKAGE if which == "baseline" else "lagscaler.core.simulation"
    compare = importlib.import_module(f"{package}.compare").compare
    scenario_type = importlib.import_module(f"{package}.model").Scenario
    parse_trace = importlib.import_module(f"{package}.trace").parse_trace
    policy = load_policy_file(POLICY)
    extra = {} if which == "baseline" else {"commit_interval_seconds": commit}
    scenario = scenario_type.from_policy(policy, **extra)
    started, cpu = time.perf_counter(), time.process_time()
    trace = parse_trace(TRACE.read_text(encoding="utf-8"), TRACE.stem).truncated(days * 86400).rescaled(PEAK)
    result = compare(trace, policy, scenario)
    out: dict[str, Any] = {
        "wall": time.perf_counter() - started,
        "cpu": time.process_time() - cpu,
        "fluid": result.fluid_bound_replica_hours,
        "policies": {
            p.name: [
                p.replica_hours,
                p.slo_violation_fraction,
                p.max_lag_seconds,
                p.p99_lag_seconds,
                p.scale_events,
            ]
            for p in result.policies
        },
    }
    print(json.dumps(out))


def measure(which: str, days: float, commit: float, path: Path | None) -> dict[str, Any]:
    """One child run: its JSON plus its peak RSS in MB (``ru_maxrss`` is in KiB on Linux)."""
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = f"{path}{os.pathsep}{env.get('PYTHONPATH', '')}"
    argv = [sys.executable, __file__, "--child", which, "--days", str(days), "--commit", str(commit)]
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{which} ({days:g} days) failed with exit code {process.returncode}")
    found: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    found["rss_mb"] = usage.ru_maxrss / 1024
    return found


def agree(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Same replica-hours, SLO misses and scale events; max lag to float32 precision (the baseline kept
    its lag series as float32); p99 within its histogram bin (0.12 %)."""
    for name, (hours, slo, worst, p99, events) in a["policies"].items():
        other = b["policies"][name]
        same = (
            math.isclose(hours, other[0], rel_tol=1e-9)
            and math.isclose(slo, other[1], rel_tol=1e-9, abs_tol=1e-12)
            and math.isclose(worst, other[2], rel_tol=1e-6, abs_tol=1e-6)
            and math.isclose(p99, other[3], rel_tol=0.0015, abs_tol=1e-3)
            and events == other[4]
        )
        if not same:
            print(f"  {name} differs: {[hours, slo, worst, p99, events]} against {other}")
            return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--short", type=float, default=7.0, help="a shorter run, to show memory is flat")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--child", choices=("baseline", "current"), help=argparse.SUPPRESS)
    parser.add_argument("--commit", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.days, args.commit)
        return 0

    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    rows: list[tuple[str, float, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="lagscaler-bench-") as work:
        path = None if args.skip_baseline else baseline_package(Path(work))
        runs = [("current", args.short, 0.0), ("current", args.days, 0.0), ("current", args.days, 5.0)]
        if path is not None:
            runs = [("baseline", args.short, 0.0), ("baseline", args.days, 0.0), *runs]
        for which, days, commit in runs:
            found = measure(which, days, commit, path)
            label = f"{which}{'' if which == 'baseline' else f', commit {commit:g} s'}"
            rows.append((label, days, found))
            print(
                f"{label:24} {days:5g} days: wall {found['wall']:7.1f} s, CPU {found['cpu']:7.1f} s, "
                f"peak RSS {found['rss_mb']:6.0f} MB",
                flush=True,
            )
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    by = {(label, days): found for label, days, found in rows}
    current = by[("current, commit 0 s", args.days)]
    for name, values in current["policies"].items():
        print(
            f"  {name:10} replica-h {values[0]:9.1f}  SLO miss {100 * values[1]:5.2f} %  events {values[4]}"
        )
    if ("baseline", args.days) in by:
        baseline = by[("baseline", args.days)]
        print(
            f"\n{args.days:g} days, every baseline: {baseline['wall']:.1f} s -> {current['wall']:.1f} s wall "
            f"({baseline['wall'] / current['wall']:.2f}x), CPU {baseline['cpu'] / current['cpu']:.2f}x, "
            f"peak RSS {baseline['rss_mb']:.0f} -> {current['rss_mb']:.0f} MB; "
            f"results {'identical' if agree(current, baseline) else 'DIFFER'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
