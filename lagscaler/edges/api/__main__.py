"""Run the external metrics API alone, serving fixed values from a JSON file (for trials and benchmarks).

    python -m lagscaler.edges.api --workloads values.json --secure-port 6443 \\
        --requestheader-client-ca-file front-proxy-ca.crt --authorization-always-allow

``values.json`` is a list of ``{"namespace", "name", "values": [{"metric", "value", "labels"}]}``;
every workload is re-published each second as freshly sampled. ``lagscaler serve`` is the real thing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from lagscaler.core.hpa.served import WORKLOAD_LABEL
from lagscaler.edges.api.cache import MetricsCache, MetricValue, WorkloadMetrics
from lagscaler.edges.api.server import running_api
from lagscaler.edges.api.settings import add_api_arguments, api_settings_from_args
from lagscaler.edges.observability import configure_logging
from lagscaler.errors import UserError


def _workloads(raw: Any, sampled_at: float) -> list[WorkloadMetrics]:
    if not isinstance(raw, list):
        raise UserError("--workloads: expected a JSON list of workloads")
    out = []
    for entry in raw:
        try:
            name = entry["name"]
            values = tuple(
                MetricValue(
                    metric=v["metric"],
                    value=float(v["value"]),
                    labels={WORKLOAD_LABEL: name, **v.get("labels", {})},
                    window_seconds=v.get("window"),
                )
                for v in entry["values"]
            )
            out.append(
                WorkloadMetrics(
                    namespace=entry["namespace"],
                    name=name,
                    sampled_at=sampled_at,
                    values=values,
                    max_age_seconds=float(entry.get("maxAgeSeconds", 60)),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"--workloads: bad workload entry {entry!r:.200}: {exc}") from exc
    return out


def _read_workloads(path: str | None) -> Any:
    if not path:
        return []
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
        raise UserError(f"--workloads {path}: {exc}") from exc
    except RecursionError:
        raise UserError(f"--workloads {path}: nested too deep") from None


async def _serve(args: argparse.Namespace) -> None:
    raw = _read_workloads(args.workloads)
    cache = MetricsCache()
    cache.publish(_workloads(raw, time.time()))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running_api(api_settings_from_args(args), cache) as api:
        print(f"serving {api.url} (metrics {api.metrics_url}); Ctrl-C stops", flush=True)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            cache.publish(_workloads(raw, time.time()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lagscaler.edges.api", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--workloads", help="JSON file with the values to serve")
    parser.add_argument("--log-format", choices=["auto", "json", "console"], default="auto")
    add_api_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(fmt=args.log_format)
    try:
        asyncio.run(_serve(args))
    except UserError as exc:
        print(f"lagscaler: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
