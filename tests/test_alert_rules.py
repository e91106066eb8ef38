"""The alert rules: valid for Prometheus, shipped by the chart as configured, and firing when users expect.

``promtool test rules`` (Debian's prometheus package) runs the unit tests in tests/promtool/ against the
rule file exactly as the chart renders it; tests/test_prometheus.py loads the same rendered rules into a
real Prometheus scraping real lagscaler replicas.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from promharness import binary
from test_chart import CHART, one, render, with_values

RULES = CHART / "rules" / "lagscaler.rules.yaml"
UNIT_TESTS = Path(__file__).parent / "promtool"
DURATIONS = {
    "LagscalerDataStale": "dataStaleFor",
    "LagscalerLagOverSLO": "lagOverSloFor",
    "LagscalerDecisionNotCarriedOut": "notCarriedOutFor",
    "LagscalerSampleErrors": "sampleErrorsFor",
    "LagscalerWorkloadErrors": "workloadErrorsFor",
    "LagscalerPolicyInvalid": "policyInvalidFor",
}


def rendered(**rule_values: Any) -> dict[str, Any]:
    docs = render(with_values(metrics={"port": 9090, "prometheusRule": {"enabled": True, **rule_values}}))
    return one(docs, "PrometheusRule")


def alerts(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def promtool(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run([binary("promtool"), *args], capture_output=True, text=True, cwd=cwd, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_rule_file_is_valid_for_prometheus() -> None:
    assert "SUCCESS: 6 rules found" in promtool("check", "rules", str(RULES))


def test_the_chart_ships_the_rule_file_with_the_durations_from_values(tmp_path: Path) -> None:
    assert not [d for d in render(with_values()) if d["kind"] == "PrometheusRule"]  # off by default
    file = yaml.safe_load(RULES.read_text())
    # Rendered with the default values, the PrometheusRule is the rule file: the defaults agree.
    assert rendered()["spec"]["groups"] == file["groups"]
    assert set(alerts(file["groups"])) == set(DURATIONS)
    custom = rendered(labels={"release": "kube-prometheus"}, lagOverSloFor="30m", dataStaleFor="90s")
    assert custom["metadata"]["labels"]["release"] == "kube-prometheus"
    rules = alerts(custom["spec"]["groups"])
    assert rules["LagscalerLagOverSLO"]["for"] == "30m"
    assert rules["LagscalerDataStale"]["for"] == "90s"
    assert rules["LagscalerSampleErrors"]["for"] == alerts(file["groups"])["LagscalerSampleErrors"]["for"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(custom["spec"]))
    promtool("check", "rules", str(tmp_path / "rules.yaml"))


def test_a_malformed_duration_is_refused_naming_the_value() -> None:
    with pytest.raises(Exception, match="lagOverSloFor"):
        rendered(lagOverSloFor="ten minutes")


def test_alerts_fire_when_users_expect_and_not_before(tmp_path: Path) -> None:
    """promtool's unit tests, against the rules as the chart renders them with its default values."""
    (tmp_path / "lagscaler.rules.yaml").write_text(yaml.safe_dump(rendered()["spec"]))
    tests = sorted(UNIT_TESTS.glob("*_test.yaml"))
    assert tests
    tested = set()
    for test in tests:
        shutil.copy(test, tmp_path / test.name)
        spec = yaml.safe_load(test.read_text())
        tested |= {case["alertname"] for group in spec["tests"] for case in group.get("alert_rule_test", [])}
    assert tested == set(DURATIONS)  # every alert has unit tests
    output = promtool("test", "rules", *(t.name for t in tests), cwd=tmp_path)
    assert "SUCCESS" in output
