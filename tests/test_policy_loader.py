"""Policy files: the shipped examples, the schema, and every kind of mistake a user can make."""

from __future__ import annotations

import contextlib
import copy
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import BILLION_LAUGHS

from lagscaler.core.engine.params import PolicyArrays
from lagscaler.core.policy import (
    Mode,
    PolicyError,
    ScalingPolicy,
    StaleAction,
    check_policy_text,
    load_policy_dir,
    load_policy_file,
    parse_policy,
    policy_reference,
    policy_schema,
)
from lagscaler.core.policy.loader import MAX_DEPTH, MAX_FILE_BYTES, MAX_MESSAGE, MAX_NODES
from lagscaler.errors import UserError

POLICIES = Path(__file__).resolve().parent.parent / "policies"
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
SESSIONIZER = yaml.safe_load((POLICIES / "sessionizer.yaml").read_text())
ISSUE = re.compile(r"^[^\n]+:\d+:\d+: [^\n]+: [^\n]+$")

MINIMAL = """\
apiVersion: lagscaler.io/v1
kind: ScalingPolicy
metadata:
  name: orders
spec:
  scaleTargetRef:
    name: orders-consumer
  kafka:
    group: orders
  maxLagSeconds: 30
  capacity:
    perReplica: 2000
"""


def errors(text: str, source: str = "p.yaml") -> list[str]:
    policy, issues = check_policy_text(text, source)
    assert (policy is None) == bool(issues)
    return [str(issue) for issue in issues]


def with_spec(extra: str) -> str:
    """The minimal policy with more lines appended under ``spec:`` (two-space indented)."""
    return MINIMAL + "".join(f"  {line}\n" for line in extra.splitlines())


# --- the shipped examples -----------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(POLICIES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_policy_loads(path):
    policy = load_policy_file(path)
    assert policy.source == str(path)
    assert policy.min_replicas <= policy.max_replicas


def test_the_examples_cover_the_three_kinds_of_workload():
    policies, problems = load_policy_dir(POLICIES)
    assert problems == []
    by_name = {p.name: p for p in policies}
    clickstream = by_name["clickstream"]
    assert (clickstream.max_replicas, clickstream.stateful, clickstream.mode) == (64, None, Mode.HPA)
    assert clickstream.capacity.per_replica * clickstream.target_utilization * 64 >= 100_000
    sessionizer = by_name["sessionizer"]
    assert sessionizer.stateful is not None
    assert sessionizer.stateful.changelog_topic == "sessionizer-sessions-store-changelog"
    assert sessionizer.stateful.restore_bytes_per_second == 40 * 2**20
    assert sessionizer.smoothing.seasonal_period_seconds == 86400
    assert (sessionizer.fallback.action, sessionizer.fallback.replicas) == (StaleAction.REPLICAS, 16)
    assert by_name["ledger-writer"].mode is Mode.HANDOVER
    assert by_name["ledger-writer"].kafka.topics == ("payments.settled", "payments.refunded")


# --- the schema and the model agree --------------------------------------------------------------


def test_a_minimal_policy_takes_the_model_defaults():
    policy = parse_policy(MINIMAL)
    expected = ScalingPolicy(
        name="orders",
        namespace="default",
        target=policy.target,
        kafka=policy.kafka,
        max_lag_seconds=30,
        capacity=policy.capacity,
        source="<string>",
    )
    assert policy == expected
    assert (policy.target.kind, policy.target.api_version, policy.kafka.topics) == (
        "Deployment",
        "apps/v1",
        (),
    )


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """A subschema with its ``$ref`` (or the object inside a nullable ``anyOf``) followed."""
    if "$ref" in schema:
        return {**policy_schema()["$defs"][schema["$ref"].rsplit("/", 1)[-1]], **schema}
    for option in schema.get("anyOf", ()):
        if "$ref" in option:
            return resolve(option)
    return schema


def schema_defaults(schema: dict[str, Any], path: tuple[str, ...] = ()):
    for name, sub in resolve(schema).get("properties", {}).items():
        if "default" in sub:
            yield (*path, name), sub["default"]
        yield from schema_defaults(sub, (*path, name))


def test_every_schema_default_is_what_a_file_without_the_field_gets():
    # The schema is generated from the model; this checks that the defaults survive the trip to
    # JSON (enums, tuples, None) and mean the same when a file writes them out.
    baseline = parse_policy(MINIMAL)
    defaults = list(schema_defaults(policy_schema()))
    assert len(defaults) > 20
    for path, default in defaults:
        document = yaml.safe_load(MINIMAL)
        node = document
        for key in path[:-1]:
            node = node.setdefault(key, {})
        if path[:2] == ("spec", "stateful"):
            continue  # stateful has no default section to compare against
        node[path[-1]] = default
        explicit = parse_policy(yaml.safe_dump(document))
        assert explicit == baseline, f"schema default of {'.'.join(path)} differs from the model"


def test_every_field_in_the_schema_has_a_description():
    def walk(schema: dict[str, Any], path: str):
        for name, sub in resolve(schema).get("properties", {}).items():
            assert resolve(sub).get("description"), f"{path}.{name} has no description"
            walk(sub, f"{path}.{name}")

    walk(policy_schema(), "")


def test_the_schema_is_draft_2020_12_and_accepts_the_examples_and_refuses_a_mistake():
    # What an editor or CI does with `lagscaler policy schema`: the same verdicts as the loader.
    import jsonschema

    schema = policy_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in sorted(POLICIES.glob("*.yaml")):
        assert list(validator.iter_errors(yaml.safe_load(path.read_text()))) == [], path.name
    wrong = yaml.safe_load(with_spec("minReplica: 2\nmaxReplicas: many"))
    assert len(list(validator.iter_errors(wrong))) == 2


def test_the_policy_reference_in_the_docs_is_generated_from_the_model():
    docs = Path(__file__).resolve().parent.parent / "docs" / "policy-reference.md"
    assert docs.read_text() == policy_reference(), (
        "docs/policy-reference.md is out of date: run `lagscaler policy reference > docs/policy-reference.md`"
    )
    for path, _ in schema_defaults(policy_schema()):
        assert f"`{path[-1]}`" in docs.read_text()


# --- mistakes, one line each, at the right place ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ["p.yaml:1:1: <document>: the file is empty; expected one ScalingPolicy document"]),
        (
            "# only a comment\n",
            ["p.yaml:1:1: <document>: the file is empty; expected one ScalingPolicy document"],
        ),
        (
            MINIMAL + "---\n" + MINIMAL,
            [
                "p.yaml:14:1: <document>: a policy file holds exactly one document; found 2 (one file per policy)"
            ],
        ),
        ("- 1\n", ["p.yaml:1:1: <document>: expected a mapping, got a list"]),
        (
            MINIMAL.replace("lagscaler.io/v1", "lagscaler.io/v2"),
            ['p.yaml:1:13: apiVersion: must be "lagscaler.io/v1", got "lagscaler.io/v2" (a string)'],
        ),
        (
            MINIMAL.replace("  name: orders\n", "  name: Orders_1\n"),
            [
                "p.yaml:4:9: metadata.name: must be a DNS-1123 label: lowercase letters, digits and '-', starting"
                ' and ending with a letter or digit, at most 63 characters; got "Orders_1" (a string)'
            ],
        ),
        (
            MINIMAL.replace("    group: orders\n", "    topics: [orders]\n"),
            ["p.yaml:8:3: spec.kafka: missing required field 'group'"],
        ),
        (
            with_spec("minReplica: 2"),
            ["p.yaml:13:3: spec.minReplica: unknown field 'minReplica'; did you mean 'minReplicas'?"],
        ),
        (
            with_spec("maxReplicas: many"),
            ['p.yaml:13:16: spec.maxReplicas: expected an integer, got "many" (a string)'],
        ),
        (
            with_spec("maxReplicas: 2.5"),
            ["p.yaml:13:16: spec.maxReplicas: expected an integer, got 2.5 (a number)"],
        ),
        (with_spec("maxReplicas: 0"), ["p.yaml:13:16: spec.maxReplicas: must be >= 1, got 0"]),
        (
            with_spec("mode: auto"),
            ['p.yaml:13:9: spec.mode: must be one of: hpa, handover; got "auto" (a string)'],
        ),
        (
            with_spec("targetUtilization: 1.5"),
            ["p.yaml:13:22: spec.targetUtilization: must be <= 1, got 1.5"],
        ),
        (
            with_spec("minReplicas: 8\nmaxReplicas: 4"),
            ["p.yaml:13:16: spec.minReplicas: minReplicas (8) is greater than maxReplicas (4)"],
        ),
        (
            with_spec("maxReplicas: 5\nmaxReplicas: 6"),
            ["p.yaml:14:3: spec.maxReplicas: duplicate key 'maxReplicas' (first at line 13)"],
        ),
        (
            with_spec("fallback: {action: replicas}"),
            ["p.yaml:13:13: spec.fallback: action 'replicas' needs 'replicas': the count to fall back to"],
        ),
        (
            with_spec("fallback: {action: replicas, replicas: 40}"),
            ["p.yaml:13:42: spec.fallback.replicas: 40 is outside [minReplicas, maxReplicas] = [1, 10]"],
        ),
        (
            with_spec("fallback: {replicas: 3}"),
            [
                "p.yaml:13:24: spec.fallback.replicas: 'replicas' is only used with action 'replicas' (action is 'error')"
            ],
        ),
        (
            with_spec("stateful: {restoreBytesPerSecond: 50Mi}"),
            ["p.yaml:13:13: spec.stateful: give the state size as stateBytes or changelogTopic"],
        ),
        (
            with_spec("stateful: {restoreBytesPerSecond: 50Mi, stateBytes: 1Ti, changelogTopic: c}"),
            ["p.yaml:13:13: spec.stateful: give stateBytes or changelogTopic, not both"],
        ),
        (
            with_spec("stateful: {restoreBytesPerSecond: fast, stateBytes: 1Ti}"),
            [
                "p.yaml:13:37: spec.stateful.restoreBytesPerSecond: must be a number of bytes or a quantity such as"
                ' 512, 1.5Gi, 200G or 50Mi; got "fast" (a string)'
            ],
        ),
        (
            with_spec("kafka2: {group: x}\n<<: {a: 1}"),
            [
                "p.yaml:13:3: spec.kafka2: unknown field 'kafka2'; did you mean 'kafka'?",
                "p.yaml:14:3: spec: YAML merge keys (<<) are not supported; write the fields out",
            ],
        ),
        (
            with_spec("startupSeconds: .nan"),
            ["p.yaml:13:19: spec.startupSeconds: must be a finite number, got .nan"],
        ),
        (with_spec("hpa: !custom {}"), ["p.yaml:13:8: spec.hpa: unsupported YAML tag !custom"]),
        (with_spec("maxReplicas: !!int ten"), ['p.yaml:13:16: spec.maxReplicas: not a valid int: "ten"']),
        (
            with_spec("hpa: {configurableTolerance: !!bool maybe}"),
            ['p.yaml:13:32: spec.hpa.configurableTolerance: not a valid bool: "maybe"'],
        ),
        (
            with_spec("targetUtilization: !!float x"),
            ['p.yaml:13:22: spec.targetUtilization: not a valid float: "x"'],
        ),
        (
            with_spec("smoothing: {burstRecurrence: sometimes}"),
            [
                'p.yaml:13:32: spec.smoothing.burstRecurrence: expected true or false, got "sometimes" (a string)'
            ],
        ),
        (
            with_spec("smoothing: {seasonalPeriodSeconds: 2024-01-01}"),
            [
                "p.yaml:13:38: spec.smoothing.seasonalPeriodSeconds: expected a number or null,"
                ' got "2024-01-01" (a string)'
            ],
        ),
        (
            MINIMAL.replace("    group: orders\n", "    group: orders\n    topics: [a, a]\n"),
            ["p.yaml:10:13: spec.kafka.topics: must not list the same item twice"],
        ),
    ],
)
def test_mistakes_are_reported_where_they_are(text, expected):
    assert errors(text) == expected


def test_yaml_syntax_errors_point_at_the_problem():
    (line,) = errors("a: [1, 2\n")
    assert line.startswith("p.yaml:2:1: <yaml>: ")
    assert "',' or ']'" in line
    assert line.endswith("(while parsing a flow sequence)")


@pytest.mark.parametrize("character", ["\x00", "\x07", "\x1b"])
def test_a_control_character_is_reported_on_its_line(character):
    """Not at "1:<offset into the file>", which is what the YAML reader gives."""
    text = MINIMAL.replace("group: orders", f"group: ord{character}ers")
    (line,) = errors(text)
    assert line.startswith("p.yaml:9:15: <yaml>: unacceptable character")
    (line,) = errors("# Übersicht: ☃\n" + text)  # offsets in bytes or characters: the same place
    assert line.startswith("p.yaml:10:15: <yaml>: unacceptable character")


def test_every_problem_in_a_file_is_reported_at_once():
    text = """\
apiVersion: lagscaler.io/v1
kind: Policy
metadata: {name: orders, nmespace: shop}
spec:
  scaleTargetRef: {name: x}
  kafka: {group: 7}
  maxLagSeconds: -5
  capacity: {perReplica: 0}
  minReplicas: 9
  maxReplicas: 3
"""
    found = errors(text)
    assert len(found) == 6, found
    assert all(ISSUE.match(line) for line in found)
    assert [line.split(": ")[1] for line in found] == [
        "kind",
        "metadata.nmespace",
        "spec.kafka.group",
        "spec.maxLagSeconds",
        "spec.capacity.perReplica",
        "spec.minReplicas",
    ]


def test_missing_file_directory_and_binary_file(tmp_path):
    with pytest.raises(PolicyError) as missing:
        load_policy_file(tmp_path / "nope.yaml")
    assert missing.value.errors == (f"{tmp_path / 'nope.yaml'}:1:1: <file>: no such file",)
    with pytest.raises(PolicyError) as directory:
        load_policy_file(tmp_path)
    assert directory.value.errors[0].endswith("<file>: is a directory; give a policy file")
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(PolicyError, match=r"b\.yaml:1:1: <file>: not UTF-8 text \(byte 0\)"):
        load_policy_file(binary)
    endless = tmp_path / "zero.yaml"
    endless.symlink_to("/dev/zero")  # no size to stat: read up to the limit, then refused
    with pytest.raises(PolicyError) as device:
        load_policy_file(endless)
    assert device.value.errors == (
        f"{endless}:1:1: <file>: more than {MAX_FILE_BYTES} bytes is too large for a policy file"
        f" (at most {MAX_FILE_BYTES})",
    )


def test_policy_error_is_a_user_error_holding_every_line():
    with pytest.raises(UserError) as raised:
        parse_policy(with_spec("minReplicas: 0\nmode: x"), "p.yaml")
    assert isinstance(raised.value, PolicyError)
    assert len(raised.value.errors) == 2
    assert str(raised.value) == "\n".join(raised.value.errors)


def test_quantities_for_sizes():
    policy = parse_policy(
        with_spec("stateful: {restoreBytesPerSecond: 100M, stateBytes: 2Ti, standbyReplicas: 1}")
    )
    assert policy.stateful is not None
    assert (policy.stateful.restore_bytes_per_second, policy.stateful.state_bytes) == (100e6, 2 * 2**40)


# --- directories ---------------------------------------------------------------------------------


def test_a_directory_loads_the_good_and_reports_the_bad(tmp_path):
    (tmp_path / "a.yaml").write_text(MINIMAL)
    (tmp_path / "b.yml").write_text(
        MINIMAL.replace("name: orders\n", "name: billing\n", 1).replace("group: orders", "group: billing")
    )
    (tmp_path / "c.yaml").write_text(with_spec("maxReplicas: -1"))
    (tmp_path / "d.yaml").write_text(MINIMAL)  # same namespace/name as a.yaml
    (tmp_path / "e.yaml").write_text(MINIMAL.replace("name: orders\n", "name: orders2\n", 1))  # same group
    (tmp_path / ".hidden.yaml").write_text("garbage: [")
    (tmp_path / "notes.txt").write_text("not a policy")
    policies, problems = load_policy_dir(tmp_path)
    assert sorted(p.name for p in policies) == ["billing", "orders"]
    assert [p.split(": ", 2)[1] for p in problems] == [
        "spec.maxReplicas",
        "metadata.name",
        "spec.kafka.group",
    ]
    assert (
        problems[1]
        == f"{tmp_path / 'd.yaml'}:4:9: metadata.name: policy default/orders is also defined in {tmp_path / 'a.yaml'}"
    )


def test_a_missing_directory_is_one_error(tmp_path):
    policies, problems = load_policy_dir(tmp_path / "nowhere")
    assert policies == []
    assert problems == [f"{tmp_path / 'nowhere'}:1:1: <file>: no such directory"]


# --- fuzzing: nothing but PolicyError ever comes out ---------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_arbitrary_text_never_raises(text):
    policy, issues = check_policy_text(text, "f.yaml")
    assert policy is None or not issues
    assert all(ISSUE.match(str(issue)) for issue in issues)


yaml_tokens = st.sampled_from(
    ["!!int", "!!float", "!!bool", "!!null", "!!str", "!!binary", "!!timestamp", "!!map", "!!seq", "!x", "&a", "*a",
     "<<", ":", "- ", "[", "]", "{", "}", ",", "\n", "  ", "'", '"', "|", ">", "#", "?", "---", "...", "1e9", ".inf",
     "0x1F", "yes", "~", "2024-01-01", "spec", "minReplicas", "\t", "%YAML 1.1"]
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(yaml_tokens, st.text(max_size=4)), max_size=40).map(" ".join))
def test_yaml_shaped_noise_never_raises(text):
    policy, issues = check_policy_text(text, "f.yaml")
    assert policy is None or not issues
    assert all(ISSUE.match(str(issue)) for issue in issues)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-10, 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_arbitrary_yaml_documents_raise_nothing_but_policy_error(value):
    with contextlib.suppress(PolicyError):
        parse_policy(yaml.dump(value, Dumper=DUMPER), "any.yaml")


def test_absurd_nesting_is_one_error():
    (line,) = errors("[" * 3000 + "]" * 3000)
    assert line.startswith("p.yaml:1:")
    assert "nesting" in line


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            out.extend(paths(child, (*prefix, key)))
    return out


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_valid_policy_with_any_one_value_replaced_never_raises(data):
    document = SESSIONIZER
    target = data.draw(st.sampled_from(paths(document)[1:]))
    mutated = copy.deepcopy(document)
    node = mutated
    for key in target[:-1]:
        node = node[key]
    if data.draw(st.booleans()):
        node[target[-1]] = data.draw(json_values)
    else:
        del node[target[-1]]
    policy, issues = check_policy_text(yaml.dump(mutated, Dumper=DUMPER), "m.yaml")
    if policy is None:
        assert issues
        assert all(ISSUE.match(str(issue)) for issue in issues)
    else:
        assert not issues
        assert isinstance(policy, ScalingPolicy)
        PolicyArrays.from_policies([policy])  # what the loader accepts, the engine can take


def numeric_fields(schema: dict[str, Any], path: tuple[str, ...] = ()):
    """The path of every field of the schema that takes a number."""
    for name, sub in resolve(schema).get("properties", {}).items():
        options = [sub, *sub.get("anyOf", ())]
        kinds = {kind for option in options for kind in np.atleast_1d(option.get("type", [])).tolist()}
        if kinds & {"integer", "number"}:
            yield (*path, name)
        yield from numeric_fields(sub, (*path, name))


NUMERIC_FIELDS = list(numeric_fields(policy_schema()))


def test_every_numeric_field_is_found():
    assert len(NUMERIC_FIELDS) > 25
    assert ("spec", "maxReplicas") in NUMERIC_FIELDS


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_number_in_any_numeric_field_is_refused_in_one_line_or_taken_by_the_engine(data):
    """Huge, tiny, negative, integral or not: a number is refused where it is, or the engine's
    arrays can hold the policy (a 10**20 maxReplicas used to pass and crash the engine)."""
    path = data.draw(st.sampled_from(NUMERIC_FIELDS))
    value = data.draw(
        st.integers()
        | st.sampled_from([2**31 - 1, 2**31, 2**63, -(2**63) - 1, 10**400])
        | st.floats(allow_nan=False, allow_infinity=False)
    )
    document = copy.deepcopy(SESSIONIZER)
    node = document["spec"] if path[0] == "spec" else document
    for key in path[1:-1] if path[0] == "spec" else path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    policy, issues = check_policy_text(yaml.dump(document, Dumper=DUMPER), "n.yaml")
    if policy is None:
        assert issues
        assert all(ISSUE.match(str(issue)) and len(str(issue)) < 2 * MAX_MESSAGE for issue in issues)
    else:
        PolicyArrays.from_policies([policy])


def bounds(path: tuple[str, ...]) -> tuple[float, float]:
    """The (minimum, maximum) the schema gives the numeric field at ``path`` (exclusive or not)."""
    schema = policy_schema()
    for name in path:
        schema = resolve(schema)["properties"][name]
    (number,) = [o for o in [schema, *schema.get("anyOf", ())] if o.get("type") not in (None, "null")]
    low = number.get("minimum", number.get("exclusiveMinimum", -math.inf))
    high = number.get("maximum", number.get("exclusiveMaximum", math.inf))
    return low, high


def test_every_numeric_field_has_an_upper_bound():
    """1e300 s for hpa.syncPeriodSeconds was accepted: no field may take an absurd number."""
    unbounded = [".".join(path) for path in NUMERIC_FIELDS if bounds(path)[1] == math.inf]
    assert unbounded == []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_number_outside_a_fields_bounds_is_an_error_naming_the_field(data):
    """Huge, infinite, NaN or below the minimum: one clear line naming the field, never a traceback."""
    path = data.draw(st.sampled_from(NUMERIC_FIELDS))
    low, high = bounds(path)
    value = data.draw(
        st.floats(min_value=float(high), exclude_min=True, allow_infinity=False)
        | st.integers(min_value=math.floor(high) + 1, max_value=10**400)
        | st.floats(max_value=float(low), exclude_max=True, allow_infinity=False)
        | st.sampled_from([math.inf, -math.inf, math.nan, 1e300, 10**20])
    )
    with contextlib.suppress(OverflowError):
        if low <= value <= high or low <= float(value) <= high:
            return  # 10**20 within the bounds of a size, or 2**63 that a float rounds onto one: not hostile
    document = copy.deepcopy(SESSIONIZER)
    node = document["spec"]
    for key in path[1:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    policy, issues = check_policy_text(yaml.dump(document, Dumper=DUMPER), "n.yaml")
    assert policy is None
    named = [i for i in issues if i.path == ".".join(path)]
    assert named, [str(i) for i in issues]
    assert any(re.search(r"must be (a finite number|[<>]=? )|expected an integer", i.message) for i in named)
    assert all(ISSUE.match(str(issue)) and len(str(issue)) < 2 * MAX_MESSAGE for issue in issues)


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("1e5", 100000.0),  # a number to kubectl (go-yaml), text to YAML 1.1
        ("2.5E3", 2500.0),
        ("-1e-5", None),  # read as a number, then refused as one: "must be > 0"
        ("1e400", None),  # too large for a float: refused as not finite
        ('"1e5"', None),  # quoted: text, as everywhere
    ],
)
def test_exponent_numbers_read_as_kubernetes_reads_them(written, expected):
    policy, issues = check_policy_text(
        MINIMAL.replace("perReplica: 2000", f"perReplica: {written}"), "e.yaml"
    )
    if expected is None:
        (issue,) = issues
        assert issue.path == "spec.capacity.perReplica"
        assert "got" in issue.message
        assert "a string" not in issue.message or written.startswith('"')
    else:
        assert policy is not None
        assert policy.capacity.per_replica == expected


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("maxReplicas: 2147483648", "spec.maxReplicas: must be <= 2147483647, got 2147483648"),
        ("maxReplicas: 1.0e+300", "spec.maxReplicas: must be <= 2147483647, got a 301-digit number"),
        ("scaleUp: {maxStepReplicas: 100000000000000000000}", "must be <= 2147483647, got a 21-digit number"),
    ],
)
def test_replica_counts_beyond_kubernetes_int32_are_refused(field, message):
    (line,) = errors(with_spec(field))
    assert line.endswith(message)


# --- hostile files: refused cheaply, in one short line each ----------------------------------------


def test_a_billion_laughs_is_one_error_and_is_never_expanded():
    assert len(BILLION_LAUGHS.encode()) < 400
    (line,) = errors(BILLION_LAUGHS)
    assert line.startswith("p.yaml:1:1: <document>: ")
    assert f"more than {MAX_NODES} YAML nodes once anchors and aliases are expanded" in line


def test_a_small_anchor_is_still_fine():
    text = MINIMAL.replace("    group: orders\n", "    group: &g orders\n    topics: [*g]\n")
    assert parse_policy(text).kafka.topics == ("orders",)


def test_nesting_beyond_the_limit_is_one_error():
    deep = with_spec("hpa:" + " {a:" * MAX_DEPTH + " 1" + "}" * MAX_DEPTH)
    (line,) = errors(deep)
    assert (
        line == f"p.yaml:1:1: <document>: nesting too deep: more than {MAX_DEPTH} levels (a policy needs 4)"
    )


def test_an_oversized_file_is_refused_unread(tmp_path):
    big = tmp_path / "big.yaml"
    with big.open("w") as out:  # 50 MB, as found by trying: a comment line repeated
        out.write(MINIMAL)
        line = "# " + "x" * 1022 + "\n"
        for _ in range(50 * 1024):
            out.write(line)
    with pytest.raises(PolicyError) as raised:
        load_policy_file(big)
    size = big.stat().st_size
    assert raised.value.errors == (
        f"{big}:1:1: <file>: {size} bytes is too large for a policy file (at most {MAX_FILE_BYTES})",
    )
    (line,) = errors("#" * (MAX_FILE_BYTES + 1))
    assert "too large for a policy file" in line


@pytest.mark.parametrize(
    "text",
    [
        with_spec("k" * 100_000 + ": 1"),  # an unknown field with a huge name
        with_spec("maxReplicas: " + "9" * 100_000),  # a huge number
        with_spec("mode: '" + "x" * 100_000 + "'"),  # a huge wrong value
        with_spec("maxReplicas: !!int '" + "z" * 100_000 + "'"),  # a huge unreadable value
        with_spec("stateful: {restoreBytesPerSecond: " + "y" * 100_000 + ", stateBytes: 1}"),
        "a: [" + "x" * 100_000,  # a YAML error in a huge line
    ],
    ids=["key", "number", "value", "tagged", "bytes", "yaml"],
)
def test_no_message_quotes_much_of_the_file(text):
    found = errors(text)
    assert found
    for line in found:
        assert ISSUE.match(line)
        assert len(line) < 2 * MAX_MESSAGE + 50, line[:300]
