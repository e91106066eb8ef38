"""How long the controller takes to verify a new generation, against the workers' commit interval.

    nice -n 10 .venv/bin/python bench/handover_verify.py [--runs 5] [--commit-interval 1] [--freeze-one]

Each run is one playground workload (4 partitions at 400 msg/s, the shape of
``tests/test_handover_faults.py``) scaled 2 → 3. The time measured is from the controller's STARTING
decision (the ``deadline`` it writes minus ``verify_timeout``: the controller's own clock) to the first
record an observer reads with RETIRING (or idle): what ``verify_timeout`` must cover. The observer reads
the control topic like any worker, so a time is at most one fetch (≤ 100 ms) late. ``verify_timeout`` is
set to 600 s here so that nothing reverts while it is measured. ``--freeze-one`` SIGSTOPs one old worker
first (the controller kills it after the 2 s fence timeout), as the fault test does.

The baseline of the same run is the commit interval the workers were given: the ratio says whether
verification waits for a periodic commit (≈ 1 or more) or not (≪ 1).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

from lagscaler_demo.localkafka import kafka_endpoint
from lagscaler_demo.playground.handover_run import HandoverPlayground, PlaygroundSettings

from lagscaler.edges.handover import HandoverSettings, Phase, Status

VERIFY_TIMEOUT = 600.0


async def one(bootstrap: str, name: str, state: Path, args: argparse.Namespace) -> float:
    """Seconds from the controller's STARTING decision to RETIRING seen, for one 2 → 3 handover."""
    settings = PlaygroundSettings(
        bootstrap=bootstrap,
        name=name,
        state_dir=state,
        partitions=4,
        rate=400.0,
        initial_replicas=2,
        commit_interval=args.commit_interval,
        handover=HandoverSettings(
            control_topic=f"{name}-control",
            warmup_timeout=60.0,
            fence_timeout=2.0,
            kill_grace=10.0,
            tick=0.2,
            verify_timeout=VERIFY_TIMEOUT,
        ),
    )
    async with HandoverPlayground(settings) as play:
        first = await play.scale_to(2)
        assert first.serving is not None
        generation = first.serving.generation

        def serving() -> bool:
            statuses = play.observer.workers(settings.workload).values()
            return sum(1 for s in statuses if s.generation == generation and s.status is Status.SERVING) == 2

        await play.wait(serving, within=60, what="generation 1 serving")
        if args.freeze_one:
            _, pid = sorted(play.worker_pids(generation).items())[0]
            os.kill(pid, signal.SIGSTOP)
        assert play.runner is not None
        play.runner.set_desired(settings.workload, 3)
        decided: float | None = None
        seen = 0
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            version = play.observer.version
            history = play.history()
            for record in history[seen:]:
                handover = record.handover
                if decided is None and handover is not None and handover.phase is Phase.STARTING:
                    decided = handover.deadline - VERIFY_TIMEOUT
                elif decided is not None and (handover is None or handover.phase is Phase.RETIRING):
                    return time.time() - decided
            seen = len(history)
            await play.observer.wait_changed(version, 0.05)
        raise TimeoutError(f"{name}: the handover did not get verified within 300 s: {play.record()}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--commit-interval", type=float, default=1.0, help="the workers' (default 1 s)")
    parser.add_argument("--freeze-one", action="store_true", help="SIGSTOP one old worker before the fence")
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    times: list[float] = []
    with kafka_endpoint() as kafka, tempfile.TemporaryDirectory(prefix="lagscaler-verify-") as tmp:
        for run in range(args.runs):
            state = Path(tmp) / f"run-{run}"
            state.mkdir()
            took = await one(kafka.bootstrap, f"verify{os.getpid()}r{run}", state, args)
            times.append(took)
            print(f"  run {run + 1}: verified {took:6.2f} s after STARTING", flush=True)
    median = statistics.median(times)
    print(
        f"verification over {len(times)} runs: min {min(times):.2f} s, median {median:.2f} s,"
        f" max {max(times):.2f} s; median / commit interval ({args.commit_interval:g} s):"
        f" {median / args.commit_interval:.2f}"
    )
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    asyncio.run(main())
