"""``lagscaler simulate``: replay a traffic trace against lagscaler and the baselines."""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import signal
import stat
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import BinaryIO

from lagscaler.cli._types import positive
from lagscaler.core.policy import load_policy_file
from lagscaler.core.simulation.compare import HANDOVER, POLICIES, compare, default_policies, parse_policies
from lagscaler.core.simulation.model import Scenario, SimulationResult
from lagscaler.core.simulation.report import table
from lagscaler.core.simulation.simulator import Progress, steps_in
from lagscaler.core.simulation.trace import Trace, TraceError, parse_trace
from lagscaler.errors import UserError

LONG_RUN_STEPS = 200_000  # above this a progress bar is shown even when stderr is not a terminal
DEFAULT_COMMIT_INTERVAL = 5.0  # Kafka consumer's auto.commit.interval.ms default (5000)
PLOT_POINTS = 1000  # buckets per series in the report: about one per pixel of the plot's width
MAX_PARTITIONS = 100_000  # far more than a topic has; the simulator holds arrays of this size per policy
MAX_TRACE_BYTES = 64 * 1024 * 1024
"""The largest trace file ``simulate`` reads unless ``--max-trace-bytes`` says otherwise: millions of rows
(a year at one row every 15 s is about 40 MB), 180 times the largest shared trace. Parsing holds two
Python floats per row, so memory grows with the file: a mistaken path (a disk image, a log) is refused
from its size, before a byte of it is read, rather than swapping the machine."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="replay a traffic trace against lagscaler and the baselines",
        description=(
            "Replay a 'timestamp,value' trace as the arrival rate into a simulated consumer group and "
            "compare lagscaler with KEDA's defaults, a plain HPA on msg/s, a static peak-sized group and "
            "a foresight oracle. Every policy acts through the same HPA model, except lagscaler in mode "
            "handover (a mode: handover policy, or --baselines ...,handover), which runs generations."
        ),
    )
    parser.add_argument("--trace", required=True, type=Path, help="CSV with 'timestamp,value' rows")
    parser.add_argument(
        "--max-trace-bytes",
        type=positive(int),
        default=MAX_TRACE_BYTES,
        metavar="BYTES",
        help=f"refuse a trace file larger than this before reading it (default {MAX_TRACE_BYTES}: 64 MiB)",
    )
    parser.add_argument("--policy", required=True, type=Path, help="the ScalingPolicy file to simulate")
    parser.add_argument(
        "--peak-rate", type=positive(float), help="rescale the trace so its peak is this many msg/s"
    )
    parser.add_argument(
        "--baselines",
        action="append",
        metavar="NAMES",
        help=(
            f"comma-separated policies to run (default: all of {', '.join(POLICIES)}, and {HANDOVER}"
            " for a mode: handover policy); lagscaler runs in mode hpa, handover in mode handover"
        ),
    )
    parser.add_argument("--report", type=Path, metavar="DIR", help="write a PNG plot and the table here")
    parser.add_argument("--output", choices=("table", "json"), default="table")
    parser.add_argument(
        "--partitions",
        type=positive(int),
        help="partitions of the topic (default: the policy's maxReplicas)",
    )
    parser.add_argument(
        "--metric-delay",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="age of the data each HPA acts on (default 15)",
    )
    parser.add_argument(
        "--commit-interval",
        type=float,
        default=DEFAULT_COMMIT_INTERVAL,
        metavar="SECONDS",
        help="how often each consumer commits its offsets; what every policy reads lags by up to this "
        f"much (default {DEFAULT_COMMIT_INTERVAL:g}: Kafka's auto.commit.interval.ms; 0: continuously)",
    )
    parser.add_argument(
        "--step",
        type=positive(float),
        default=5.0,
        metavar="SECONDS",
        help="simulation step: the resolution of arrivals and of the lag and replica accounting "
        "(default 5); start-ups, stalls and HPA syncs happen at their exact times whatever the step",
    )
    parser.add_argument("--hours", type=positive(float), help="simulate only the first HOURS of the trace")
    parser.add_argument(
        "--state-bytes",
        type=positive(float),
        metavar="BYTES",
        help="state size of a stateful policy that measures it from a changelog topic (or to override it)",
    )
    parser.set_defaults(handler=_run)


def _read_trace(path: Path, limit: int) -> Trace:
    """Parse the trace at ``path``, refusing one larger than ``limit`` bytes before reading it.

    A regular file's size is checked first; its lines are then streamed into the parser, never the
    whole file held at once. One whose size is not known in advance (a pipe, ``<(zcat trace.gz)``) is
    counted as it is read and refused once past the limit.
    """
    try:
        with path.open("rb") as file:
            info = os.fstat(file.fileno())
            if stat.S_ISREG(info.st_mode) and info.st_size > limit:
                raise _too_large(path, f"{info.st_size} bytes", limit)
            return parse_trace(_bounded_lines(file, path, limit), str(path))
    except OSError as exc:
        raise TraceError(f"cannot read trace {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise TraceError(f"{path}: not a text CSV file") from None


def _bounded_lines(file: BinaryIO, path: Path, limit: int) -> Iterator[str]:
    """The lines of ``file``, refused with a :class:`TraceError` past ``limit`` bytes; at most
    ``limit + 1`` bytes are read, even from a file without a single newline."""
    left = limit
    while line := file.readline(left + 1):
        left -= len(line)
        if left < 0:
            raise _too_large(path, f"more than {limit} bytes", limit)
        yield line.decode("utf-8")  # a line at a time: a newline never falls inside a UTF-8 sequence


def _too_large(path: Path, size: str, limit: int) -> TraceError:
    return TraceError(
        f"trace {path} is {size}, over the limit of {limit} bytes: check that it is the trace meant,"
        " or raise the limit with --max-trace-bytes"
    )


@contextmanager
def _progress(steps: float, step_seconds: float) -> Iterator[Progress | None]:
    """A tqdm bar on stderr, in simulated hours, for interactive or long runs; nothing otherwise.

    The bar's clock starts when stepping starts (``progress(0, n)``), not when it is created: the
    set-up before the first step would otherwise count as the time the first steps took, and the
    first estimate of the time left would be off by orders of magnitude.
    """
    if not (sys.stderr.isatty() or steps >= LONG_RUN_STEPS):
        yield None
        return
    from tqdm import tqdm  # noqa: PLC0415 - imported only when a bar is shown (it is slow to import)

    hours = step_seconds / 3600.0
    bar = tqdm(
        total=round(steps * hours, 1),
        unit="h",
        desc="simulated",
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} h [{elapsed}<{remaining}]",
        file=sys.stderr,
        mininterval=0.5 if sys.stderr.isatty() else 30,
    )
    shown = 0.0

    def update(done: int, total: int) -> None:
        nonlocal shown
        if done == 0:
            bar.reset(total=round(total * hours, 1))
            shown = 0.0
            return
        now = round(done * hours, 3)
        bar.update(now - shown)
        shown = now

    try:
        yield update
    finally:
        bar.close()


def _run(args: argparse.Namespace) -> int:
    chosen = parse_policies(args.baselines) if args.baselines else None
    policy = load_policy_file(args.policy)
    policies = chosen if chosen is not None else default_policies(policy)
    if args.state_bytes is not None:
        if policy.stateful is None:
            raise UserError(f"--state-bytes: {args.policy} is not a stateful policy")
        policy = replace(policy, stateful=replace(policy.stateful, state_bytes=args.state_bytes))
    trace = _read_trace(args.trace, args.max_trace_bytes)
    if args.hours is not None:  # cut first, so --peak-rate is the peak of what is simulated
        trace = trace.truncated(args.hours * 3600)
    if args.peak_rate is not None:
        trace = trace.rescaled(args.peak_rate)
    for flag, value in (("--metric-delay", args.metric_delay), ("--commit-interval", args.commit_interval)):
        if not (math.isfinite(value) and value >= 0):
            raise UserError(f"{flag} must be a number of seconds >= 0, got {value:g}")
    partitions = args.partitions if args.partitions is not None else policy.max_replicas
    if partitions > MAX_PARTITIONS:  # the simulator holds several arrays of this size per policy
        given = "--partitions" if args.partitions is not None else f"the policy's maxReplicas ({args.policy})"
        raise UserError(f"{given}: at most {MAX_PARTITIONS} partitions can be simulated, got {partitions}")
    scenario = Scenario.from_policy(
        policy,
        partitions=args.partitions,
        metric_delay_seconds=args.metric_delay,
        step_seconds=args.step,
        commit_interval_seconds=args.commit_interval,
    )
    if args.report is not None:
        _require_matplotlib()
    with (
        _progress(steps_in(trace, scenario.step_seconds), scenario.step_seconds) as progress,
        simulation_pool() as pool,
    ):
        result = compare(trace, policy, scenario, policies, progress=progress, points=PLOT_POINTS, pool=pool)
    text = table(result)
    if args.report is not None:
        _write_report(args.report, result, text)
    if args.output == "json":
        print(json.dumps(result.as_json(), indent=2, sort_keys=False))
    else:
        print(text)
    return 0


@contextmanager
def simulation_pool() -> Iterator[Executor | None]:
    """One worker process for the baselines, so a comparison uses two cores, when there are two.

    Started with ``spawn`` (a fresh interpreter: nothing of this process, its threads included, is
    copied into it); the simulator gives the same result with it or without it.
    """
    if len(os.sched_getaffinity(0)) < 2:
        yield None
        return
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    # SIGTERM's default action ends this process at once and leaves the worker stepping its lanes to
    # the trace's end; as an exception it takes the same way out as Ctrl-C.
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if on_main_thread else None
    try:
        yield pool
    except BaseException:
        # Interrupted or failed here: the worker would otherwise step its lanes to the trace's end
        # before the pool could shut down (its only children are the pool's workers).
        for worker in multiprocessing.active_children():
            worker.terminate()
        raise
    finally:
        pool.shutdown(cancel_futures=True)
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401, PLC0415 - optional extra: only checking that it is there
    except ImportError:
        raise UserError(
            "--report needs matplotlib: pip install 'lagscaler[report]' (or drop --report)"
        ) from None


LAGSCALER_COLOR = "#1d4ed8"
BASELINE_COLORS = {
    "lagscaler-handover": "#0891b2",
    "keda": "#f59e0b",
    "hpa-rate": "#059669",
    "static": "#6b7280",
    "oracle": "#c026d3",
}


def _span(seconds: float) -> str:
    """A bucket's length for an axis label: ``5 s``, ``3 min``, ``2.5 h``."""
    if seconds < 120:
        return f"{seconds:g} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


def _write_report(directory: Path, result: SimulationResult, text: str) -> None:
    """``simulation.png`` (arrivals, worst lag against the SLO, replicas), ``table.txt`` and ``result.json``.

    The series are already reduced to about one bucket per pixel (lag: the worst step of each
    bucket, so no spike is lost; replicas and arrivals: means, so cost reads true); lagscaler is
    drawn last, on top of the baselines, so it is never hidden under them.
    """
    import matplotlib  # noqa: PLC0415 - optional extra ('report'), imported only for --report

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after choosing the headless backend

    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create report directory {directory}: {exc.strerror or exc}") from None
    s = result.scenario
    in_days = result.duration_seconds > 72 * 3600
    x = result.times / (86400.0 if in_days else 3600.0)
    bucketed = result.bucket_seconds > s.step_seconds
    per = f" per {_span(result.bucket_seconds)}" if bucketed else ""
    fig, (arrival, lag, replicas) = plt.subplots(
        3, 1, figsize=(12, 9), sharex=True, gridspec_kw={"height_ratios": [1.0, 1.4, 1.4]}
    )
    arrival.plot(x, result.arrival_rate, color="black", linewidth=0.8, drawstyle="steps-post")
    arrival.set_ylabel(f"arrival msg/s\n(mean{per})" if bucketed else "arrival msg/s")
    names = [n for n in result.replicas if n != "lagscaler"]
    if "lagscaler" in result.replicas:
        names.append("lagscaler")  # last: drawn on top
    for order, name in enumerate(names):
        mine = name == "lagscaler"
        style = {
            "color": LAGSCALER_COLOR if mine else BASELINE_COLORS.get(name, f"C{order}"),
            "linewidth": 1.7 if mine else 0.9,
            "alpha": 1.0 if mine else 0.8,
            "zorder": 10 if mine else 2 + order,
            "label": name,
            "drawstyle": "steps-post",
        }
        lag.plot(x, result.lag_seconds[name], **style)
        replicas.plot(x, result.replicas[name], **style)
    slo = s.max_lag_seconds
    lag.axhline(slo, color="red", linestyle="--", linewidth=1.0, zorder=20)
    lag.annotate(
        f"SLO {slo:g} s",
        xy=(0.0, slo),
        xycoords=("axes fraction", "data"),
        xytext=(4, 3),
        textcoords="offset points",
        color="red",
        fontsize="small",
        zorder=21,
    )
    worst = max((float(v.max(initial=0.0)) for v in result.lag_seconds.values()), default=0.0)
    if worst > 3 * slo:  # someone fell far behind: log above the SLO keeps both ends readable
        lag.set_yscale("symlog", linthresh=max(slo, 1.0))
    else:
        lag.set_ylim(0.0, 1.2 * max(worst, slo))
    lag.set_ylabel(f"worst lag s\n(max{per})" if bucketed else "worst lag s")
    replicas.set_ylabel(f"replicas\n(mean{per})" if bucketed else "replicas")
    replicas.set_xlabel("days" if in_days else "hours")
    handles, labels = replicas.get_legend_handles_labels()
    replicas.legend(handles[::-1], labels[::-1], loc="upper right", fontsize="small")  # lagscaler first
    for axis in (arrival, lag, replicas):
        axis.grid(True, linewidth=0.3, alpha=0.5)
    fig.suptitle(
        f"lagscaler simulate: {Path(result.trace).name}, {result.duration_seconds / 3600:.0f} h, "
        f"{s.partitions} partitions, SLO {slo:g} s"
    )
    fig.tight_layout()
    try:
        fig.savefig(directory / "simulation.png", dpi=110)
        (directory / "table.txt").write_text(text + "\n", encoding="utf-8")
        (directory / "result.json").write_text(
            json.dumps(result.as_json(), indent=2) + "\n", encoding="utf-8"
        )
    except OSError as exc:
        raise UserError(f"cannot write the report into {directory}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
