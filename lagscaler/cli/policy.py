"""``lagscaler policy``: check policy files, print the HPA a policy needs, the policy schema or reference."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lagscaler.core.policy import ScalingPolicy, policy_reference, policy_schema, render_hpa_manifest
from lagscaler.core.policy.loader import (
    PolicyError,
    PolicyIssue,
    check_policy_file,
    cross_file_issues,
    load_policy_file,
    policy_files,
)
from lagscaler.core.policy.model import Mode
from lagscaler.errors import UserError


def _bytes(value: float) -> str:
    for suffix, size in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if value >= size:
            return f"{value / size:.4g}{suffix}"
    return f"{value:g}"


def summary(policy: ScalingPolicy) -> str:
    """One line that says what the policy will do, for ``policy check``."""
    parts = [
        policy.key,
        f"group={policy.kafka.group}",
        f"mode={policy.mode}",
        f"slo={policy.max_lag_seconds:g}s",
        f"replicas={policy.min_replicas}..{policy.max_replicas}",
        f"capacity={policy.capacity.per_replica:g}/s" + (" learn" if policy.capacity.learn else " fixed"),
    ]
    if policy.stateful is not None:
        state = policy.stateful
        size = (
            f"changelog:{state.changelog_topic}" if state.changelog_topic else _bytes(state.state_bytes or 0)
        )
        parts.append(f"stateful={size}@{_bytes(state.restore_bytes_per_second)}/s")
    return " ".join(parts)


def _expand(arguments: list[str]) -> tuple[list[Path], list[PolicyIssue]]:
    files: list[Path] = []
    issues: list[PolicyIssue] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = policy_files(path)
            if not found:
                issues.append(
                    PolicyIssue(argument, 1, 1, "<file>", "directory holds no *.yaml or *.yml files")
                )
            files.extend(found)
        else:
            files.append(path)
    return files, issues


def _check(args: argparse.Namespace) -> int:
    files, issues = _expand(args.files)
    for issue in issues:
        print(issue, file=sys.stderr)
    checked: list[tuple[Path, ScalingPolicy | None, list[PolicyIssue]]] = []
    for file in files:
        policy, file_issues = check_policy_file(file)
        checked.append((file, policy, file_issues))
    clashes: dict[str, list[PolicyIssue]] = {}
    for clash in cross_file_issues(p for _, p, _ in checked if p is not None):
        clashes.setdefault(clash.file, []).append(clash)
    failed = bool(issues)
    for file, policy, own_issues in checked:
        file_issues = own_issues + clashes.get(str(file), [])
        for issue in file_issues:
            print(issue, file=sys.stderr)
        if file_issues:
            failed = True
        elif policy is not None:
            print(f"{file}: ok {summary(policy)}")
    return 1 if failed else 0


def _hpa(args: argparse.Namespace) -> int:
    try:
        policy = load_policy_file(args.file)
    except PolicyError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 1
    if policy.mode is not Mode.HPA:
        raise UserError(
            f"{args.file}: policy {policy.key} is mode '{policy.mode}': lagscaler scales it by handing "
            "over to a new consumer generation itself, so no HorizontalPodAutoscaler is used; an HPA "
            "on this workload would fight lagscaler over the replica count",
            exit_code=1,
        )
    sys.stdout.write(render_hpa_manifest(policy))
    return 0


def _schema(_: argparse.Namespace) -> int:
    print(json.dumps(policy_schema(), indent=2))
    return 0


def _reference(_: argparse.Namespace) -> int:
    sys.stdout.write(policy_reference())
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("policy", help="check scaling policy files and print the HPA they need")
    sub = parser.add_subparsers(dest="policy_command", metavar="ACTION")
    sub.required = True
    check = sub.add_parser(
        "check",
        help="validate policy files (or directories of them); exit 1 on any problem",
        description="Validate ScalingPolicy files against the schema and the semantic rules. Every "
        "problem is printed as file:line:column: path: message; each valid file gets a one-line summary.",
    )
    check.add_argument(
        "files", nargs="+", metavar="FILE", help="a policy file, or a directory of *.yaml files"
    )
    check.set_defaults(handler=_check)
    hpa = sub.add_parser(
        "hpa",
        help="print the autoscaling/v2 HorizontalPodAutoscaler to apply for a mode: hpa policy",
    )
    hpa.add_argument("file", metavar="FILE", help="a policy file")
    hpa.set_defaults(handler=_hpa)
    schema = sub.add_parser("schema", help="print the JSON Schema of policy files (for editors and CI)")
    schema.set_defaults(handler=_schema)
    reference = sub.add_parser(
        "reference", help="print the reference of every policy field as Markdown (docs/policy-reference.md)"
    )
    reference.set_defaults(handler=_reference)
