"""``lagscaler policy check | hpa | schema | reference`` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support import BILLION_LAUGHS

from lagscaler.cli import main
from lagscaler.core.hpa import (
    Behavior,
    ExternalMetric,
    HpaScalingPolicy,
    HpaSpec,
    HpaState,
    PolicyType,
    ScalingRules,
    SelectPolicy,
    TargetType,
    plan_served_metric,
    step,
)
from lagscaler.core.policy import hpa_spec_for, load_policy_file

POLICIES = Path(__file__).resolve().parent.parent / "policies"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_prints_one_summary_line_per_valid_file(capsys):
    code, out, err = run(capsys, "policy", "check", str(POLICIES))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == len(list(POLICIES.glob("*.yaml")))
    assert (
        f"{POLICIES / 'clickstream.yaml'}: ok analytics/clickstream group=clickstream-ingest mode=hpa slo=30s "
        "replicas=2..64 capacity=2500/s learn"
    ) in lines
    assert any("streams/sessionizer" in line and "stateful=changelog:" in line for line in lines)


def test_check_prints_every_error_and_exits_one(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((POLICIES / "clickstream.yaml").read_text().replace("minReplicas: 2", "minReplicas: 99"))
    typo = tmp_path / "typo.yaml"
    typo.write_text((POLICIES / "ledger-handover.yaml").read_text().replace("learn: false", "lern: false"))
    code, out, err = run(
        capsys,
        "policy",
        "check",
        str(POLICIES / "sessionizer.yaml"),
        str(bad),
        str(typo),
        str(tmp_path / "gone.yaml"),
    )
    assert code == 1
    assert out.splitlines() == [
        f"{POLICIES / 'sessionizer.yaml'}: ok " + out.split(" ok ", 1)[1].splitlines()[0]
    ]
    bad_line = bad.read_text().splitlines().index("  minReplicas: 99") + 1
    typo_line = typo.read_text().splitlines().index("    lern: false") + 1
    assert err.splitlines() == [
        f"{bad}:{bad_line}:16: spec.minReplicas: minReplicas (99) is greater than maxReplicas (64)",
        f"{typo}:{typo_line}:5: spec.capacity.lern: unknown field 'lern'; did you mean 'learn'?",
        f"{tmp_path / 'gone.yaml'}:1:1: <file>: no such file",
    ]


def test_check_reports_two_policies_for_one_group(capsys, tmp_path):
    copy = tmp_path / "copy.yaml"
    copy.write_text(
        (POLICIES / "clickstream.yaml").read_text().replace("name: clickstream\n", "name: clicks\n")
    )
    code, _, err = run(capsys, "policy", "check", str(POLICIES / "clickstream.yaml"), str(copy))
    assert code == 1
    line = copy.read_text().splitlines().index("  kafka:") + 2
    assert err == (
        f"{copy}:{line}:12: spec.kafka.group: group 'clickstream-ingest' is already scaled by policy "
        f"analytics/clickstream ({POLICIES / 'clickstream.yaml'})\n"
    )


def test_check_needs_a_file(capsys):
    code, _, err = run(capsys, "policy", "check")
    assert code == 2
    assert err.startswith("lagscaler: error: ")


def manifest_spec(manifest: dict) -> HpaSpec:
    """Read the HPA the way the API server and the controller will (the fields lagscaler sets)."""
    spec = manifest["spec"]
    (metric,) = spec["metrics"]
    target = metric["external"]["target"]

    def rules(raw: dict) -> ScalingRules:
        return ScalingRules(
            raw["stabilizationWindowSeconds"],
            SelectPolicy(raw["selectPolicy"]),
            tuple(
                HpaScalingPolicy(PolicyType(p["type"]), p["value"], p["periodSeconds"])
                for p in raw["policies"]
            ),
            float(raw["tolerance"]) if "tolerance" in raw else None,
        )

    behavior = spec["behavior"]
    return HpaSpec(
        (
            ExternalMetric(
                TargetType(target["type"]),
                float(target["averageValue"]),
                metric["external"]["metric"]["name"],
            ),
        ),
        spec["maxReplicas"],
        spec["minReplicas"],
        Behavior(rules(behavior["scaleUp"]), rules(behavior["scaleDown"])),
    )


@pytest.mark.parametrize("name", ["clickstream.yaml", "sessionizer.yaml"])
def test_hpa_prints_the_manifest_the_model_simulates(capsys, name):
    path = POLICIES / name
    code, out, err = run(capsys, "policy", "hpa", str(path))
    assert (code, err) == (0, "")
    manifest = yaml.safe_load(out)
    policy = load_policy_file(path)
    assert manifest["apiVersion"] == "autoscaling/v2"
    assert manifest["metadata"] == {
        "name": policy.name,
        "namespace": policy.namespace,
        "labels": {"lagscaler.io/workload": policy.name},
    }
    assert manifest["spec"]["scaleTargetRef"] == {
        "apiVersion": policy.target.api_version,
        "kind": policy.target.kind,
        "name": policy.target.name,
    }
    external = manifest["spec"]["metrics"][0]["external"]
    assert external["metric"] == {
        "name": "lagscaler_desired_replicas",
        "selector": {"matchLabels": {"lagscaler.io/workload": policy.name}},
    }
    expected = hpa_spec_for(policy)
    read = manifest_spec(manifest)
    assert read.metrics == expected.metrics
    assert (read.min_replicas, read.max_replicas) == (expected.min_replicas, expected.max_replicas)
    assert read.scale_up_rules == expected.scale_up_rules
    assert read.scale_down_rules == expected.scale_down_rules


def test_tolerance_lines_are_live_only_where_the_cluster_keeps_them(capsys):
    _, stateless, _ = run(capsys, "policy", "hpa", str(POLICIES / "clickstream.yaml"))
    _, stateful, _ = run(capsys, "policy", "hpa", str(POLICIES / "sessionizer.yaml"))
    assert '# tolerance: "0"' in stateless
    assert "tolerance" not in json.dumps(yaml.safe_load(stateless)["spec"]["behavior"])
    assert yaml.safe_load(stateful)["spec"]["behavior"]["scaleUp"]["tolerance"] == "0"
    assert "20 -> 21 or 22 cannot" in stateless


def test_the_printed_hpa_reaches_the_partition_count_from_one_short(capsys):
    # The stateless example: 64 partitions, maxReplicas 64, default 10 % band.
    _, out, _ = run(capsys, "policy", "hpa", str(POLICIES / "clickstream.yaml"))
    spec = manifest_spec(yaml.safe_load(out))
    plan = plan_served_metric(64, 63, spec)
    assert step(spec, HpaState(), 0.0, 63, [plan.value]).replicas == 64


def test_hpa_refuses_a_handover_policy(capsys):
    code, out, err = run(capsys, "policy", "hpa", str(POLICIES / "ledger-handover.yaml"))
    assert (code, out) == (1, "")
    assert err.count("\n") == 1
    assert "no HorizontalPodAutoscaler is used" in err


def test_hpa_on_an_invalid_file_prints_its_errors(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: lagscaler.io/v1\n")
    code, out, err = run(capsys, "policy", "hpa", str(bad))
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"{bad}:1:1: <document>: missing required field 'kind'",
        f"{bad}:1:1: <document>: missing required field 'metadata'",
        f"{bad}:1:1: <document>: missing required field 'spec'",
    ]


def test_schema_prints_the_json_schema(capsys):
    code, out, _ = run(capsys, "policy", "schema")
    assert code == 0
    assert json.loads(out)["properties"]["kind"]["const"] == "ScalingPolicy"


def test_reference_prints_the_docs(capsys):
    code, out, _ = run(capsys, "policy", "reference")
    assert code == 0
    assert out == (POLICIES.parent / "docs" / "policy-reference.md").read_text()


def test_check_on_a_billion_laughs_is_one_line_not_a_traceback(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BILLION_LAUGHS)
    result = subprocess.run(
        [sys.executable, "-m", "lagscaler", "policy", "check", str(bomb), str(POLICIES / "clickstream.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"{bomb}:1:1: <document>: more than ")
    assert result.stdout.count(": ok ") == 1  # the good file next to it is still checked


def test_the_console_script_runs_check():
    result = subprocess.run(
        [sys.executable, "-m", "lagscaler", "policy", "check", str(POLICIES)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": ok ") == len(list(POLICIES.glob("*.yaml")))
