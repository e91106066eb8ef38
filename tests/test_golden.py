"""What users and the HPA read must not change by accident: golden files, compared byte for byte.

``lagscaler lag --output table|json`` on a fixed snapshot, and the external metrics API's answers
(status and body) on fixed values, are compared with ``tests/golden/``. A refactor that changes a
byte fails here. When a change is meant, regenerate and review the diff:

    LAGSCALER_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_golden.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_api_http import GV, Api, api, workload  # noqa: F401 - `api` is the fixture used below

from lagscaler.cli.lag import _print
from lagscaler.core.hpa.served import DESIRED_REPLICAS, GROUP_LABEL, LAG_MESSAGES, WORKLOAD_LABEL
from lagscaler.core.signals.model import GroupSample, PartitionSample, PartitionStatus, Snapshot
from lagscaler.edges.api import MetricValue

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = bool(os.environ.get("LAGSCALER_UPDATE_GOLDEN"))


def matches_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; if that is meant, see this module's docstring"


SAMPLED_AT = 1_750_000_000.125
SNAPSHOT = Snapshot(
    sampled_at=SAMPLED_AT,
    groups=(
        GroupSample(
            "orders",
            "Stable",
            2,
            SAMPLED_AT,
            (
                PartitionSample(
                    "orders", 0, 1200, 1500, 300, 2.5, False, 120.04, 95.5, PartitionStatus.OK,
                    "consumer-1-a1b2", "orders-worker", "/10.0.0.7",
                ),
                PartitionSample(
                    "orders", 1, 900, 2900, 2000, 41.23456, True, 119.96, 0.0, PartitionStatus.STALL,
                    "consumer-2-c3d4", "orders-worker", "/10.0.0.8",
                ),
                PartitionSample("orders-retry", 0, None, 17, None),
            ),
            warnings=("end offset of orders-dlq-0 unreadable this cycle (NOT_LEADER_OR_FOLLOWER)",),
        ),
        GroupSample("billing", "Empty", 0, SAMPLED_AT - 30, (PartitionSample("invoices", 0, 10, 10, 0),),
                    stale=True, error="coordinator not available"),
        GroupSample("gone", "Dead", 0, SAMPLED_AT, found=False),
    ),
    duration=0.0421,
    requests=(("DescribeGroups", 1), ("ListOffsets", 1), ("OffsetFetch", 1)),
)  # fmt: skip


@pytest.mark.parametrize("output", ["table", "json"])
def test_lag_output_is_unchanged(output: str, capsys: pytest.CaptureFixture[str]) -> None:
    _print(SNAPSHOT, output)
    matches_golden(f"lag.{'txt' if output == 'table' else 'json'}", capsys.readouterr().out)


# Every kind of answer: discovery, values by each selector kind, canonical quantities, errors.
REQUESTS: list[tuple[str, dict[str, str]]] = [
    ("/apis", {}),
    ("/apis/external.metrics.k8s.io", {}),
    (GV, {}),
    (f"{GV}/namespaces/shop/{DESIRED_REPLICAS}", {"labelSelector": f"{WORKLOAD_LABEL}=orders"}),
    (f"{GV}/namespaces/shop/{LAG_MESSAGES}", {"labelSelector": f"{GROUP_LABEL}=billing-group"}),
    (f"{GV}/namespaces/shop/lagscaler_lag_seconds", {}),
    (f"{GV}/namespaces/shop/lagscaler_produce_rate", {"labelSelector": f"{WORKLOAD_LABEL} notin (orders)"}),
    (f"{GV}/namespaces/shop/{DESIRED_REPLICAS}", {"labelSelector": f"{WORKLOAD_LABEL}=stale"}),
    (f"{GV}/namespaces/shop/{DESIRED_REPLICAS}", {"labelSelector": f"{WORKLOAD_LABEL}=held"}),
    (f"{GV}/namespaces/shop/{DESIRED_REPLICAS}", {"labelSelector": "x in orders"}),
    (f"{GV}/namespaces/shop/cpu", {}),
    (f"{GV}/namespaces/elsewhere/{DESIRED_REPLICAS}", {}),
    (f"{GV}/namespaces/shop/{DESIRED_REPLICAS}", {"labelSelector": f"{WORKLOAD_LABEL}=nope"}),
]


async def test_api_answers_are_unchanged(api: Api) -> None:  # noqa: F811 - the imported fixture
    held = {WORKLOAD_LABEL: "held", GROUP_LABEL: "held-group"}
    api.cache.publish(
        [
            workload("orders", desired=3.5, lag=1200.125),
            workload("billing", topics=("invoices", "refunds"), lag=901, desired=17.0005),
            workload("stale", sampled_at=api.clock.now - 600),
            workload(
                "held", sampled_at=api.clock.now - 600, stale_values=(MetricValue(DESIRED_REPLICAS, 5, held),)
            ),
        ]
    )
    answers = []
    for path, params in REQUESTS:
        async with api.session.get(api.url + path, params=params, headers=_aggregator()) as response:
            answers.append(
                {
                    "request": path
                    + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else ""),
                    "status": response.status,
                    "content_type": response.content_type,
                    "body": await response.text(),
                }
            )
    matches_golden("api.json", json.dumps(answers, indent=1) + "\n")


def _aggregator() -> list[tuple[str, str]]:
    from lagscaler_demo.harness import aggregator_headers

    return aggregator_headers()
