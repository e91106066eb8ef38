"""Simulator speed and memory: the README's ``lagscaler simulate`` example, now and before this change.

Runs the README's example (``policies/clickstream.yaml``, peak 20k msg/s, every baseline: lagscaler,
keda, hpa-rate, static, the oracle and the fluid bound, the CLI's default model with 5 s commits) on
the first ``--days`` of the longest shared trace (nyc_taxi, 215 days), each run in a child process of
its own, as ``lagscaler simulate`` runs it: with the CLI's worker pool (``simulation_pool``: the
baselines in a second process) where the tree has one. It reports wall time, the CPU time of every
process of the run (``wait4``'s ``ru_utime + ru_stime``: the child and the workers it reaped,
interpreter start-up and trace parsing included), and the peak resident memory of the largest one
(``ru_maxrss``).

The baseline is the whole ``lagscaler`` package at commit ``--baseline`` (default ``BASELINE``, main
before the two-process simulator), taken with ``git archive`` into a temporary
directory that the child puts first on its path, and run the same way on the same trace in the same
run. Speed work must not change a result: the script compares both runs' results exactly (every
replica-hour, SLO miss, max and p99 lag and scale event, as floats), says whether they are
identical, and prints the ones that differ (after a change to the decisions themselves, the ratio
compares different work).

Memory flat in the trace's length: the current simulator runs on ``--short`` days as well.

    .venv/bin/python bench/simulator_speed.py [--days 30] [--short 7] [--baseline COMMIT] [--skip-baseline]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
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
COMMIT_INTERVAL = 5.0  # the CLI's default model
BASELINE = "54e1450"  # main before the two-process simulator and the memoized sizing (issue 9)


def baseline_package(commit: str, into: Path) -> Path:
    """The ``lagscaler`` package at ``commit``, unpacked under ``into`` (a directory for ``PYTHONPATH``)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit, "lagscaler"],
        check=True,
        capture_output=True,
    ).stdout
    path = into / "tree.tar"
    path.write_bytes(archive)
    with tarfile.open(path) as tar:
        tar.extractall(into, filter="data")
    return into


def child(days: float) -> None:
    """Run one simulation in this process and print what it found as JSON on the last line."""
    import lagscaler
    from lagscaler.core.policy import load_policy_file
    from lagscaler.core.simulation.compare import compare
    from lagscaler.core.simulation.model import Scenario
    from lagscaler.core.simulation.trace import parse_trace

    policy = load_policy_file(POLICY)
    scenario = Scenario.from_policy(policy, commit_interval_seconds=COMMIT_INTERVAL)
    started, cpu = time.perf_counter(), time.process_time()
    trace = parse_trace(TRACE.read_text(encoding="utf-8"), TRACE.stem).truncated(days * 86400).rescaled(PEAK)
    try:
        from lagscaler.cli.simulate import simulation_pool  # not in every tree
    except ImportError:  # a tree from before the worker pool: one process
        result = compare(trace, policy, scenario)
    else:
        with simulation_pool() as pool:
            result = compare(trace, policy, scenario, pool=pool)
    out: dict[str, Any] = {
        "package": str(Path(lagscaler.__file__).parent),
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


def measure(days: float, path: Path | None) -> dict[str, Any]:
    """One child run: its JSON plus its peak RSS in MB (``ru_maxrss`` is in KiB on Linux)."""
    env = dict(os.environ)
    if path is not None:
        # Ahead of site-packages, so ahead of the editable install's finder too.
        env["PYTHONPATH"] = f"{path}{os.pathsep}{env.get('PYTHONPATH', '')}"
    argv = [sys.executable, __file__, "--child", "--days", str(days)]
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{days:g} days ({path or 'current'}) failed with exit code {process.returncode}")
    found: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    expected = path / "lagscaler" if path is not None else ROOT / "lagscaler"
    if Path(found["package"]).resolve() != expected.resolve():
        raise SystemExit(f"the child ran {found['package']}, not {expected}")
    found["rss_mb"] = usage.ru_maxrss / 1024
    found["cpu_all"] = usage.ru_utime + usage.ru_stime
    return found


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--short", type=float, default=7.0, help="a shorter run, to show memory is flat")
    parser.add_argument(
        "--baseline", default=BASELINE, help=f"the commit to compare with (default {BASELINE})"
    )
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.days)
        return 0

    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="lagscaler-bench-") as work:
        path = None if args.skip_baseline else baseline_package(args.baseline, Path(work))
        runs: list[tuple[str, float, Path | None]] = [
            (f"current, {args.short:g} days", args.short, None),
            (f"current, {args.days:g} days", args.days, None),
        ]
        if path is not None:
            runs.insert(1, (f"baseline {args.baseline}, {args.days:g} days", args.days, path))
        for label, days, where in runs:
            found = measure(days, where)
            rows[label] = found
            print(
                f"{label:32} wall {found['wall']:7.1f} s, CPU {found['cpu_all']:7.1f} s "
                f"(this process {found['cpu']:7.1f} s), peak RSS {found['rss_mb']:6.0f} MB",
                flush=True,
            )
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    current = rows[f"current, {args.days:g} days"]
    for name, values in current["policies"].items():
        print(
            f"  {name:10} replica-h {values[0]:9.1f}  SLO miss {100 * values[1]:5.2f} %  events {values[4]}"
        )
    if not args.skip_baseline:
        baseline = rows[f"baseline {args.baseline}, {args.days:g} days"]
        same = (baseline["policies"], baseline["fluid"]) == (current["policies"], current["fluid"])
        print(
            f"\n{args.days:g} days, every baseline: {baseline['wall']:.1f} s -> {current['wall']:.1f} s "
            f"wall ({baseline['wall'] / current['wall']:.2f}x), CPU {baseline['cpu_all']:.1f} s -> "
            f"{current['cpu_all']:.1f} s ({baseline['cpu_all'] / current['cpu_all']:.2f}x), "
            f"peak RSS {baseline['rss_mb']:.0f} -> {current['rss_mb']:.0f} MB; "
            f"results {'identical' if same else 'DIFFER'}"
        )
        if not same:
            # Decision logic changed since the baseline: the ratio then compares different work.
            for name, values in baseline["policies"].items():
                if current["policies"].get(name) != values:
                    print(f"  {name}: baseline {values}, current {current['policies'].get(name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
