"""The Grafana dashboard, read as a file: what tests/test_prometheus.py cannot see by evaluating queries.

That test evaluates every panel against a real Prometheus; these check that none escapes it and that
each panel's axis means one thing.
"""

from __future__ import annotations

import re
from typing import Any

from test_prometheus import CHECKS, DASHBOARD, panels

# The labels the Prometheus Operator puts on every target of a ServiceMonitor (prometheus-operator
# pkg/prometheus/promcfg.go, generateServiceMonitorConfig): about the lagscaler pod, never a workload.
OPERATOR_TARGET_LABELS = ("namespace", "service", "pod", "container", "endpoint")


def exprs() -> list[str]:
    texts = [t["expr"] for p in panels() for t in p["targets"]]
    texts += [t["legendFormat"] for p in panels() for t in p["targets"]]
    return texts + [v["query"] for v in DASHBOARD["templating"]["list"] if v["type"] == "query"]


def test_every_panel_is_checked_against_a_real_prometheus() -> None:
    assert {p["title"] for p in panels()} == set(CHECKS)


def test_no_query_relies_on_a_label_the_operator_sets() -> None:
    """lagscaler's workloads are ``workload_namespace``/``workload``; ``namespace`` is the lagscaler pod's."""
    for text in exprs():
        for label in OPERATOR_TARGET_LABELS:
            assert not re.search(rf"(?<![\w]){label}\b(?!_)", text.replace("$namespace", "")), (label, text)


def kind(expr: str) -> str:
    if "histogram_quantile" in expr:
        return "seconds"
    if "increase(" in expr:
        return "count in range"
    if "rate(" in expr:
        return "ratio" if re.search(r"\)\s*/\s*sum", expr) else "per second"
    return "value"


UNITS = {
    "seconds": {"s"},
    "count in range": {"none"},
    "ratio": {"percentunit"},
    "per second": {"ops", "reqps"},
}


def test_rates_and_counts_never_share_an_axis() -> None:
    """One kind of quantity per panel, with a unit that says which (a count is never per second)."""
    for panel in panels():
        kinds = {kind(t["expr"]) for t in panel["targets"]}
        assert len(kinds) == 1, (panel["title"], kinds)
        (quantity,) = kinds
        unit = panel["fieldConfig"]["defaults"].get("unit")
        assert unit, panel["title"]
        if quantity in UNITS:
            assert unit in UNITS[quantity], (panel["title"], quantity, unit)
        else:
            assert unit not in UNITS["per second"], (panel["title"], unit)
        if quantity == "per second":
            assert "(per second)" in panel["title"], panel["title"]


def test_counts_in_a_range_are_whole_numbers_over_the_dashboard_range() -> None:
    """``increase`` over ``$__range`` (not ``$__rate_interval``): the number does not depend on the zoom."""
    counted: list[dict[str, Any]] = [
        p for p in panels() if any("increase(" in t["expr"] for t in p["targets"])
    ]
    assert counted
    for panel in counted:
        for target in panel["targets"]:
            assert "[$__range]" in target["expr"], target["expr"]
            assert target["expr"].startswith("round("), target["expr"]
            assert target.get("instant") is True
        assert panel["fieldConfig"]["defaults"]["decimals"] == 0
