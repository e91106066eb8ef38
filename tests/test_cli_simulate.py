"""``lagscaler simulate`` end to end: a policy file and a CSV in, a table, JSON or a report out."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import Future
from pathlib import Path

import pytest
from support import eventually

from lagscaler.cli import main
from lagscaler.cli.simulate import simulation_pool

POLICY = """\
apiVersion: lagscaler.io/v1
kind: ScalingPolicy
metadata:
  name: orders
  namespace: shop
spec:
  scaleTargetRef:
    name: orders
  kafka:
    group: orders
  maxLagSeconds: 30
  maxReplicas: 12
  capacity:
    perReplica: 1000
  targetUtilization: 0.85
"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    policy = tmp_path / "orders.yaml"
    policy.write_text(POLICY)
    trace = tmp_path / "trace.csv"
    rows = ["timestamp,value"]
    for minute in range(0, 121, 5):  # two hours: quiet, a burst, quiet
        rows.append(
            f"2024-01-01 {minute // 60:02d}:{minute % 60:02d}:00,{900 if 40 <= minute <= 70 else 150}"
        )
    trace.write_text("\n".join(rows) + "\n")
    return policy, trace


def test_json_output_has_the_documented_shape(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    policy, trace = files
    code = main(
        [
            "simulate",
            "--trace",
            str(trace),
            "--policy",
            str(policy),
            "--peak-rate",
            "9000",
            "--output",
            "json",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["policies"]) == {"lagscaler", "keda", "hpa-rate", "static", "oracle"}
    for numbers in out["policies"].values():
        assert set(numbers) == {
            "replica_hours",
            "slo_violation_fraction",
            "max_lag_seconds",
            "p99_lag_seconds",
            "scale_events",
            "stall_seconds",
        }
        for key in (
            "replica_hours",
            "slo_violation_fraction",
            "max_lag_seconds",
            "p99_lag_seconds",
            "stall_seconds",
        ):
            assert isinstance(numbers[key], float)
        assert isinstance(numbers["scale_events"], int)
    assert set(out["details"]["keda"]) == {"stall_violation_fraction", "rebalances"}
    assert out["fluid_bound_replica_hours"] > 0


def test_table_output_and_a_report_directory(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy, trace = files
    report = tmp_path / "report"
    args = ["simulate", "--trace", str(trace), "--policy", str(policy), "--peak-rate", "9000"]
    assert main([*args, "--baselines", "keda,static", "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "keda" in out
    assert "static" in out
    assert "hpa-rate" not in out
    assert (report / "simulation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "fluid bound" in (report / "table.txt").read_text()
    assert set(json.loads((report / "result.json").read_text())["policies"]) == {"keda", "static"}


@pytest.mark.parametrize(
    "case",
    [
        (["--baselines", "keda,nope"], None, None, "unknown baseline 'nope'"),
        (
            [],
            "timestamp,value\n2024-01-01 00:00:00,x\n2024-01-01 00:05:00,1\n",
            None,
            "trace.csv:2: value 'x'",
        ),
        ([], None, POLICY.replace("  maxLagSeconds: 30\n", ""), "maxLagSeconds"),
        (["--peak-rate", "-3"], None, None, "--peak-rate"),
        (["--commit-interval", "-1"], None, None, "--commit-interval must be a number of seconds >= 0"),
        (["--commit-interval", "nan"], None, None, "--commit-interval must be a number of seconds >= 0"),
        (["--step", "0"], None, None, "--step"),
        (["--step", "inf"], None, None, "--step: must be a finite number, got inf"),
        (["--hours", "inf"], None, None, "--hours: must be a finite number"),
        # arrays of this size would not fit in memory: refused, not a numpy traceback
        (["--partitions", "99999999999"], None, None, "--partitions: at most 100000 partitions"),
        ([], None, POLICY.replace("maxReplicas: 12", "maxReplicas: 2000000"), "at most 100000 partitions"),
        # numbers the simulator's arithmetic cannot carry: named, not an overflow deep inside it
        (
            [],
            "timestamp,value\n2024-01-01 00:00:00,100\n2024-01-01 00:05:00,1.7e308\n",
            None,
            "trace.csv:3: value '1.7e308' is above 1e+12 messages/s",
        ),
        (["--peak-rate", "1e308"], None, None, "--peak-rate: at most 1e+12 messages per second"),
        (
            [],
            None,
            POLICY + "  hpa:\n    syncPeriodSeconds: 1.0e+300\n",
            "spec.hpa.syncPeriodSeconds: must be <= 31622400 (366 days",
        ),
        # a span or a step count nobody can wait for: refused at once, naming the limit
        (
            [],
            "timestamp,value\n0,100\n1e18,200\n",
            None,
            "trace.csv: the trace spans 1e+18 s (1.15741e+13 days); at most 31622400 s (366 days)",
        ),
        (["--step", "0.000001"], None, None, "is 7200000000 steps; at most 10000000 can be simulated"),
        ([], "timestamp,value\n0,100\nnan,200\n", None, "trace.csv:3: timestamp 'nan' must be a finite"),
        # the csv module's own refusal (a field over 128 KiB): a line named, not a traceback
        ([], "timestamp,value\n" + "1" * 200_000 + ",5\n", None, "trace.csv:2: not a 'timestamp,value' row"),
        (["--max-trace-bytes", "0"], None, None, "--max-trace-bytes: must be positive"),
        ([], "timestamp,value\n0,100\n1e308,1\n-1e308,2\n", None, "does not come after the previous one"),
        (["--metric-delay", "1e300"], None, None, "metric_delay_seconds must be >= 0 and at most 1e+09"),
        (
            [],
            None,
            POLICY
            + "  stateful:\n    restoreBytesPerSecond: 1000000\n    changelogTopic: orders-changelog\n",
            "needs stateful.stateBytes",
        ),
    ],
)
def test_bad_input_is_one_error_line(
    files: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    case: tuple[list[str], str | None, str | None, str],
) -> None:
    extra, trace_text, policy_text, message = case
    policy, trace = files
    if trace_text is not None:
        trace.write_text(trace_text)
    if policy_text is not None:
        policy.write_text(policy_text)
    code = main(["simulate", "--trace", str(trace), "--policy", str(policy), *extra])
    err = capsys.readouterr().err
    assert code != 0
    assert err.startswith("lagscaler: error: ")
    assert message in err
    assert err.count("\n") == 1


def test_state_bytes_makes_a_changelog_measured_policy_simulable(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    policy, trace = files
    policy.write_text(
        POLICY + "  stateful:\n    restoreBytesPerSecond: 1000000\n    changelogTopic: orders-changelog\n"
    )
    args = ["simulate", "--trace", str(trace), "--policy", str(policy), "--baselines", "static"]
    assert main([*args, "--state-bytes", "720000000"]) == 0
    assert "restore 60 s" in capsys.readouterr().out  # 720 MB over 12 partitions at 1 MB/s


def test_hours_cuts_a_trace_too_long_to_simulate_whole(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    policy, trace = files
    trace.write_text("timestamp,value\n0,100\n3600,300\n1e18,200\n")
    args = ["simulate", "--trace", str(trace), "--policy", str(policy), "--baselines", "static"]
    assert main(args) != 0
    assert "cut it with --hours" in capsys.readouterr().err
    assert main([*args, "--hours", "2", "--output", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["duration_hours"] == 2


def test_a_missing_trace_file_is_named(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    policy, trace = files
    assert main(["simulate", "--trace", str(trace) + ".missing", "--policy", str(policy)]) != 0
    assert "cannot read trace" in capsys.readouterr().err


def test_a_trace_file_over_the_size_limit_is_refused_before_it_is_read(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A 10 GB file given as the trace (a wrong path, a disk image) was read whole into memory, then
    parsed into a list of every row: refused now from its size alone, naming the file, its size, the
    limit and the flag that raises it. (Sparse: it takes no disk, and reading it would take minutes.)"""
    policy, trace = files
    huge = trace.with_name("huge.csv")
    with huge.open("wb") as file:
        file.truncate(10 * 1024**3)
    code = main(["simulate", "--trace", str(huge), "--policy", str(policy)])
    err = capsys.readouterr().err
    assert code != 0
    assert err == (
        f"lagscaler: error: trace {huge} is 10737418240 bytes, over the limit of 67108864 bytes: check that"
        " it is the trace meant, or raise the limit with --max-trace-bytes\n"
    )


def test_max_trace_bytes_moves_the_limit(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    policy, trace = files
    size = trace.stat().st_size
    args = ["simulate", "--trace", str(trace), "--policy", str(policy), "--baselines", "static"]
    assert main([*args, "--max-trace-bytes", str(size - 1)]) != 0
    assert f"is {size} bytes, over the limit of {size - 1} bytes" in capsys.readouterr().err
    assert main([*args, "--max-trace-bytes", str(size), "--output", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["duration_hours"] == 2


def test_a_trace_of_unknown_size_is_read_only_up_to_the_limit(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A device or a pipe has no size to check first: /dev/zero (endless, not one newline) is read up
    to the limit and refused, not read until memory runs out."""
    policy, _ = files
    code = main(["simulate", "--trace", "/dev/zero", "--policy", str(policy), "--max-trace-bytes", "4096"])
    err = capsys.readouterr().err
    assert code != 0
    assert "trace /dev/zero is more than 4096 bytes, over the limit of 4096 bytes" in err


def test_step_and_commit_interval_are_the_run_s_and_shown_with_it(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    policy, trace = files
    args = ["simulate", "--trace", str(trace), "--policy", str(policy), "--peak-rate", "9000"]
    assert main([*args, "--baselines", "keda", "--step", "1", "--commit-interval", "0"]) == 0
    continuous = capsys.readouterr().out
    assert "commit every 0 s, HPA sync 15 s on 15 s old data, step 1 s" in continuous
    assert main([*args, "--baselines", "keda", "--step", "1"]) == 0
    committed = capsys.readouterr().out
    assert "commit every 5 s" in committed  # Kafka's auto-commit default
    # KEDA's lag threshold (10 messages a replica) counts what was consumed but not yet committed:
    # with commits every 5 s it reads far more lag than with offsets committed at once.
    keda = [
        line.split()
        for text in (continuous, committed)
        for line in text.splitlines()
        if line.startswith("keda")
    ]
    assert float(keda[1][1]) > float(keda[0][1])  # replica-hours


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: the CLI starts no worker")
def test_an_interrupted_simulation_stops_its_worker_at_once() -> None:
    """Interrupted while the worker still has its lanes to step (here: an hour's work), the command
    stops the worker instead of waiting for it (it used to wait for the worker's whole run)."""
    submitted: list[Future[None]] = []

    def interrupted_while_busy() -> None:
        with simulation_pool() as pool:
            assert pool is not None
            submitted.append(pool.submit(time.sleep, 3600.0))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted_while_busy()
    assert submitted[0].done()
    assert multiprocessing.active_children() == []


SIGTERMED = """
import multiprocessing, sys, time
from lagscaler.cli.simulate import simulation_pool

with simulation_pool() as pool:
    assert pool is not None
    pool.submit(time.sleep, 3600.0)
    while not multiprocessing.active_children():
        time.sleep(0.01)
    print(" ".join(str(w.pid) for w in multiprocessing.active_children()), flush=True)
    time.sleep(3600.0)
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="the pool needs a second core")
def test_a_simulation_sent_sigterm_alone_stops_its_worker() -> None:
    """SIGTERM to the simulate process only (a supervisor's kill, not the terminal's Ctrl-C to the whole
    group): the command exits as it does on Ctrl-C, and its worker does not run on without it."""
    with subprocess.Popen([sys.executable, "-c", SIGTERMED], stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None
        workers = [int(pid) for pid in child.stdout.readline().split()]
        assert workers, "the pool started no worker"
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=120) == 128 + signal.SIGTERM

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    asyncio.run(
        eventually(lambda: all(gone(pid) for pid in workers), what="the worker exits with the command")
    )
