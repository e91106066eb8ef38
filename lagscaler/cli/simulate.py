"""``lagscaler simulate``: replay a traffic trace against lagscaler and the baselines."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from lagscaler.cli._types import positive
from lagscaler.errors import UserError
from lagscaler.policy import load_policy_file
from lagscaler.simulation.compare import POLICIES, compare, parse_policies
from lagscaler.simulation.model import Scenario, SimulationResult
from lagscaler.simulation.report import downsample, table
from lagscaler.simulation.simulator import Progress
from lagscaler.simulation.trace import Trace, TraceError, parse_trace

LONG_RUN_STEPS = 200_000  # above this a progress bar is shown even when stderr is not a terminal


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="replay a traffic trace against lagscaler and the baselines",
        description=(
            "Replay a 'timestamp,value' trace as the arrival rate into a simulated consumer group and "
            "compare lagscaler with KEDA's defaults, a plain HPA on msg/s, a static peak-sized group and "
            "a foresight oracle. Every policy acts through the same HPA model."
        ),
    )
    parser.add_argument("--trace", required=True, type=Path, help="CSV with 'timestamp,value' rows")
    parser.add_argument("--policy", required=True, type=Path, help="the ScalingPolicy file to simulate")
    parser.add_argument(
        "--peak-rate", type=positive(float), help="rescale the trace so its peak is this many msg/s"
    )
    parser.add_argument(
        "--baselines",
        action="append",
        metavar="NAMES",
        help=f"comma-separated policies to run (default: all of {', '.join(POLICIES)})",
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
    parser.add_argument("--hours", type=positive(float), help="simulate only the first HOURS of the trace")
    parser.add_argument(
        "--state-bytes",
        type=positive(float),
        metavar="BYTES",
        help="state size of a stateful policy that measures it from a changelog topic (or to override it)",
    )
    parser.set_defaults(handler=_run)


def _read_trace(path: Path) -> Trace:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TraceError(f"cannot read trace {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise TraceError(f"{path}: not a text CSV file") from None
    return parse_trace(text, str(path))


@contextmanager
def _progress(total_hint: float) -> Iterator[Progress | None]:
    """A tqdm bar on stderr for interactive or long runs; nothing otherwise."""
    if not (sys.stderr.isatty() or total_hint >= LONG_RUN_STEPS):
        yield None
        return
    from tqdm import tqdm  # noqa: PLC0415 - imported only when a bar is shown (it is slow to import)

    bar = tqdm(
        total=int(total_hint), unit="step", file=sys.stderr, mininterval=0.5 if sys.stderr.isatty() else 30
    )

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()


def _run(args: argparse.Namespace) -> int:
    policies = parse_policies(args.baselines)
    policy = load_policy_file(args.policy)
    if args.state_bytes is not None:
        if policy.stateful is None:
            raise UserError(f"--state-bytes: {args.policy} is not a stateful policy")
        policy = replace(policy, stateful=replace(policy.stateful, state_bytes=args.state_bytes))
    trace = _read_trace(args.trace)
    if args.hours is not None:  # cut first, so --peak-rate is the peak of what is simulated
        trace = trace.truncated(args.hours * 3600)
    if args.peak_rate is not None:
        trace = trace.rescaled(args.peak_rate)
    if args.metric_delay < 0:
        raise UserError(f"--metric-delay must be >= 0, got {args.metric_delay}")
    scenario = Scenario.from_policy(
        policy, partitions=args.partitions, metric_delay_seconds=args.metric_delay
    )
    if args.report is not None:
        _require_matplotlib()
    with _progress(trace.duration / scenario.step_seconds) as progress:
        result = compare(trace, policy, scenario, policies, progress=progress)
    text = table(result)
    if args.report is not None:
        _write_report(args.report, result, text)
    if args.output == "json":
        print(json.dumps(result.as_json(), indent=2, sort_keys=False))
    else:
        print(text)
    return 0


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401, PLC0415 - optional extra: only checking that it is there
    except ImportError:
        raise UserError(
            "--report needs matplotlib: pip install 'lagscaler[report]' (or drop --report)"
        ) from None


def _write_report(directory: Path, result: SimulationResult, text: str) -> None:
    import matplotlib  # noqa: PLC0415 - optional extra ('report'), imported only for --report

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after choosing the headless backend

    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create report directory {directory}: {exc.strerror or exc}") from None
    points = 4000
    hours = downsample(result.times, points) / 3600.0
    fig, (arrival, lag, replicas) = plt.subplots(3, 1, figsize=(12, 9), sharex=True)
    arrival.plot(hours, downsample(result.arrival_rate, points), color="black", linewidth=0.8)
    arrival.set_ylabel("arrival msg/s")
    for name in result.lag_seconds:
        lag.plot(hours, downsample(result.lag_seconds[name], points, peak=True), linewidth=0.8, label=name)
        replicas.plot(
            hours,
            downsample(result.replicas[name].astype(float), points, peak=True),
            linewidth=0.8,
            label=name,
        )
    lag.axhline(result.scenario.max_lag_seconds, color="red", linestyle="--", linewidth=0.8, label="SLO")
    lag.set_yscale("symlog", linthresh=max(result.scenario.max_lag_seconds, 1.0))
    lag.set_ylabel("worst lag s")
    replicas.set_ylabel("replicas")
    replicas.set_xlabel("hours")
    lag.legend(loc="upper right", fontsize="small")
    fig.suptitle(f"lagscaler simulate: {Path(result.trace).name}")
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
