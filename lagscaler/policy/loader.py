"""Read ``ScalingPolicy`` files: YAML -> JSON Schema -> semantic checks -> :class:`ScalingPolicy`.

Every problem becomes one line ``file:line:column: path: message`` pointing at the YAML node it is
about (the key for an unknown field, the value for a wrong one, the mapping for a missing one), and
a file reports all of its problems at once, so a user fixes a file in one pass. Files are composed
(``yaml.compose``), not loaded, to keep each node's position, and values are built from the nodes
by hand so that YAML oddities (duplicate keys, merge keys, custom tags, dates, ``.inf``) are
reported instead of silently accepted.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import math
import re
import types
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from lagscaler.errors import UserError
from lagscaler.policy.model import ScalingPolicy

PathKey = tuple[str | int, ...]
# libyaml when PyYAML has it: ~20x faster, and it refuses absurd nesting itself instead of recursing.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_ONE_LINE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
POLICY_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, slots=True, order=True)
class PolicyIssue:
    """One problem in one file, with a 1-based position."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        # One line whatever the file holds: a key or value with a line break must not split it.
        message = _ONE_LINE.sub(lambda m: json.dumps(m.group())[1:-1], self.message)
        return f"{self.file}:{self.line}:{self.column}: {self.path}: {message}"


class PolicyError(UserError):
    """One or more policy files are invalid; ``errors`` holds every problem, one formatted line each."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors: tuple[str, ...] = tuple(errors)
        super().__init__("\n".join(self.errors) if self.errors else "invalid policy")


@cache
def policy_schema() -> dict[str, Any]:
    """The shipped JSON Schema (draft 2020-12) for ``ScalingPolicy`` files."""
    text = resources.files("lagscaler.policy").joinpath("schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator() -> jsonschema.protocols.Validator:
    schema = policy_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def format_path(path: PathKey) -> str:
    """``spec.kafka.topics[0]``; the document itself is ``<document>``."""
    if not path:
        return "<document>"
    out = ""
    for key in path:
        if isinstance(key, int):
            out += f"[{key}]"
        elif _PLAIN_KEY.match(key):
            out += ("." if out else "") + key
        else:
            out += f"[{json.dumps(key)}]"
    return out


def _name(key: object) -> str:
    """A key or word from the file, quoted so that odd characters cannot garble the message."""
    text = str(key)
    return f"'{text}'" if _PLAIN_KEY.match(text) else json.dumps(text)


# --- YAML nodes to plain values, keeping positions ----------------------------------------------


_STR = "tag:yaml.org,2002:str"
_SCALAR_TAGS = {
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


@dataclass
class _Document:
    """A document's plain value and, for every path in it, the key node and the value node."""

    file: str
    root: yaml.Node
    constructor: yaml.constructor.SafeConstructor = field(default_factory=yaml.constructor.SafeConstructor)
    value: Any = None
    values: dict[PathKey, yaml.Node] = field(default_factory=dict)
    keys: dict[PathKey, yaml.Node] = field(default_factory=dict)
    issues: list[PolicyIssue] = field(default_factory=list)
    broken: set[PathKey] = field(default_factory=set)  # values already reported while reading YAML

    def issue(self, node: yaml.Node | None, path: PathKey, message: str) -> None:
        mark = (node or self.root).start_mark
        self.issues.append(PolicyIssue(self.file, mark.line + 1, mark.column + 1, format_path(path), message))

    def node_for(self, path: PathKey, *, key: bool = False) -> yaml.Node:
        """The deepest known node on ``path`` (the key node when ``key`` and the key is known)."""
        if key and path in self.keys:
            return self.keys[path]
        for end in range(len(path), 0, -1):
            if path[:end] in self.values:
                return self.values[path[:end]]
        return self.root


def _unreadable(doc: _Document, node: yaml.Node, path: PathKey, message: str) -> None:
    """A value we could not read at all: report it, and keep the schema quiet about it."""
    doc.issue(node, path, message)
    doc.broken.add(path)


def _plain(doc: _Document, node: yaml.Node, path: PathKey) -> Any:
    doc.values[path] = node
    if isinstance(node, yaml.MappingNode):
        if node.tag != _MAP:
            _unreadable(doc, node, path, f"unsupported YAML tag {node.tag}")
            return None
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                doc.issue(key_node, path, "YAML merge keys (<<) are not supported; write the fields out")
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR:
                doc.issue(key_node, path, "keys must be plain strings")
                continue
            key = key_node.value
            child = (*path, key)
            if key in result:
                first = doc.keys[child].start_mark
                doc.issue(key_node, child, f"duplicate key {_name(key)} (first at line {first.line + 1})")
                continue
            doc.keys[child] = key_node
            result[key] = _plain(doc, value_node, child)
        return result
    if isinstance(node, yaml.SequenceNode):
        if node.tag != _SEQ:
            _unreadable(doc, node, path, f"unsupported YAML tag {node.tag}")
            return None
        return [_plain(doc, item, (*path, index)) for index, item in enumerate(node.value)]
    if isinstance(node, yaml.ScalarNode):
        if node.tag == _STR:
            return node.value
        if node.tag == _TIMESTAMP:
            return node.value  # a date is text to us; the schema says what type it should have been
        if node.tag in _SCALAR_TAGS:
            try:
                value = doc.constructor.construct_object(node, deep=True)
            except Exception:  # PyYAML's scalar constructors fail in many ways on explicit tags (!!int "")
                kind = node.tag.rsplit(":", 1)[-1]
                _unreadable(doc, node, path, f"not a valid {kind}: {json.dumps(node.value)}")
                return None
            if isinstance(value, float) and not math.isfinite(value):
                doc.issue(node, path, f"must be a finite number, got {node.value}")
            return value
        _unreadable(doc, node, path, f"unsupported YAML tag {node.tag}")
        return None
    _unreadable(doc, node, path, "unsupported YAML node")  # pragma: no cover - composer makes only the three
    return None


# --- schema errors as messages a user can act on ------------------------------------------------

_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "true or false",
    "null": "null",
}


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"{json.dumps(value)} (a string)"
    return f"{value!r} (a number)"


def _expected_types(expected: str | list[str]) -> str:
    names = [_TYPE_NAMES.get(t, t) for t in ([expected] if isinstance(expected, str) else expected)]
    return " or ".join(names)


def _schema_issues(doc: _Document) -> None:
    for error in sorted(_validator().iter_errors(doc.value), key=lambda e: [str(p) for p in e.absolute_path]):
        path: PathKey = tuple(error.absolute_path)
        if any(path[: len(broken)] == broken for broken in doc.broken if broken):
            continue  # already reported where the YAML was read
        node = doc.node_for(path)
        # Typed loosely by the stubs (they may be unset); every error the validator yields has them.
        kind: Any = error.validator
        expected: Any = error.validator_value
        value: Any = error.instance
        schema: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
        if kind == "additionalProperties" and isinstance(value, dict):
            allowed = sorted(schema.get("properties", {}))
            for extra in sorted(set(value) - set(allowed)):
                hint = difflib.get_close_matches(extra, allowed, n=1)
                suffix = f"; did you mean '{hint[0]}'?" if hint else f"; known fields: {', '.join(allowed)}"
                if not allowed:
                    suffix = ""
                doc.issue(
                    doc.node_for((*path, extra), key=True),
                    (*path, extra),
                    f"unknown field {_name(extra)}{suffix}",
                )
        elif kind == "required" and isinstance(value, dict):
            for missing in expected:
                if missing not in value:
                    doc.issue(doc.node_for(path, key=True), path, f"missing required field '{missing}'")
        elif kind == "type":
            doc.issue(node, path, f"expected {_expected_types(expected)}, got {_describe(value)}")
        elif kind == "const":
            doc.issue(node, path, f"must be {json.dumps(expected)}, got {_describe(value)}")
        elif kind == "enum":
            choices = ", ".join(str(choice) for choice in expected)
            doc.issue(node, path, f"must be one of: {choices}; got {_describe(value)}")
        elif kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
            relation = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[
                kind
            ]
            doc.issue(node, path, f"must be {relation} {expected:g}, got {value!r}")
        elif kind == "pattern":
            wanted = schema.get("errorMessage", f"text matching {expected}")
            doc.issue(node, path, f"must be {wanted}; got {_describe(value)}")
        elif kind == "maxLength":
            doc.issue(node, path, f"must be at most {expected} characters long, got {len(value)}")
        elif kind == "minLength":
            doc.issue(node, path, "must not be empty")
        elif kind == "uniqueItems":
            doc.issue(node, path, "must not list the same item twice")
        else:  # pragma: no cover - every keyword the schema uses is handled above
            doc.issue(node, path, error.message)


# --- semantic checks (what a schema cannot say) -------------------------------------------------

_QUANTITY = re.compile(r"^(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_MULTIPLIERS = {
    None: 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def parse_bytes(value: float | int | str) -> float:
    """``512``, ``1.5Gi``, ``200G``, ``50Mi`` -> a number of bytes."""
    if isinstance(value, bool):
        raise ValueError("a size is a number or a quantity such as 50Mi")
    if isinstance(value, int | float):
        return float(value)
    match = _QUANTITY.match(value)
    if not match:
        raise ValueError(f"not a quantity: {value!r}")
    return float(match["number"]) * _MULTIPLIERS[match["suffix"]]


def _get(mapping: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _semantic_issues(doc: _Document) -> None:
    spec = _get(doc.value, "spec")
    if not isinstance(spec, dict):
        return
    minimum = spec.get("minReplicas", 1)
    maximum = spec.get("maxReplicas", 10)
    # Only when both are what the schema allows; otherwise the schema has already said so.
    bounds_ok = _is_int(minimum) and _is_int(maximum) and minimum >= 1 and maximum >= 1
    if bounds_ok and minimum > maximum:
        where: PathKey = ("spec", "minReplicas") if "minReplicas" in spec else ("spec", "maxReplicas")
        doc.issue(
            doc.node_for(where), where, f"minReplicas ({minimum}) is greater than maxReplicas ({maximum})"
        )

    fallback = spec.get("fallback")
    if isinstance(fallback, dict):
        action, replicas = fallback.get("action", "error"), fallback.get("replicas")
        base: PathKey = ("spec", "fallback")
        if action == "replicas" and replicas is None:
            doc.issue(
                doc.node_for(base), base, "action 'replicas' needs 'replicas': the count to fall back to"
            )
        elif replicas is not None and action != "replicas":
            where = (*base, "replicas")
            doc.issue(
                doc.node_for(where),
                where,
                f"'replicas' is only used with action 'replicas' (action is {_name(action)})",
            )
        elif _is_int(replicas) and bounds_ok and not minimum <= replicas <= maximum:
            where = (*base, "replicas")
            doc.issue(
                doc.node_for(where),
                where,
                f"{replicas} is outside [minReplicas, maxReplicas] = [{minimum}, {maximum}]",
            )

    stateful = spec.get("stateful")
    if isinstance(stateful, dict):
        base = ("spec", "stateful")
        where = (*base, "restoreBytesPerSecond")
        sources = [key for key in ("stateBytes", "changelogTopic") if stateful.get(key) is not None]
        if len(sources) != 1:
            message = (
                "give the state size as stateBytes or changelogTopic"
                if not sources
                else "give stateBytes or changelogTopic, not both"
            )
            doc.issue(doc.node_for(base), base, message)
        rate = stateful.get("restoreBytesPerSecond")
        if isinstance(rate, str) and _QUANTITY.match(rate) and parse_bytes(rate) <= 0:
            doc.issue(doc.node_for(where), where, "must be > 0")


# --- plain values to the typed model -----------------------------------------------------------


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


_RENAMES: dict[type, dict[str, str]] = {ScalingPolicy: {"target": "scaleTargetRef"}}


def _convert(annotation: Any, value: Any, name: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        return _convert(options[0], value, name)
    if origin is tuple:
        (item,) = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return tuple(_convert(item, v, name) for v in value)
    if isinstance(annotation, type):
        if dataclasses.is_dataclass(annotation):
            return _build(annotation, value)
        if issubclass(annotation, enum.Enum):
            return annotation(value)
        if annotation is float:
            return parse_bytes(value) if "bytes" in name else float(value)
        if annotation is int:
            return int(value)
    return value


@cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type, data: Mapping[str, Any]) -> Any:
    """A model dataclass from its camelCase mapping; fields the file leaves out keep their defaults."""
    hints = _type_hints(cls)
    renames = _RENAMES.get(cls, {})
    kwargs = {}
    for item in dataclasses.fields(cls):
        key = renames.get(item.name, _camel(item.name))
        if key in data:
            kwargs[item.name] = _convert(hints[item.name], data[key], item.name)
    return cls(**kwargs)


def _to_policy(value: dict[str, Any], source: str) -> ScalingPolicy:
    metadata, spec = value["metadata"], dict(value["spec"])
    spec["name"] = metadata["name"]
    spec["namespace"] = metadata.get("namespace", "default")
    policy: ScalingPolicy = _build(ScalingPolicy, spec)
    return dataclasses.replace(policy, source=source)


# --- entry points -------------------------------------------------------------------------------


def _yaml_issue(file: str, exc: yaml.YAMLError) -> PolicyIssue:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = exc.problem or "invalid YAML"
        context = f" ({exc.context})" if exc.context else ""
        return PolicyIssue(file, mark.line + 1, mark.column + 1, "<yaml>", f"{problem}{context}")
    if isinstance(exc, yaml.reader.ReaderError):
        return PolicyIssue(
            file, 1, exc.position + 1, "<yaml>", f"unacceptable character {exc.character!r}: {exc.reason}"
        )
    return PolicyIssue(file, 1, 1, "<yaml>", str(exc))  # pragma: no cover - every YAMLError has a position


def _documents(text: str, file: str) -> tuple[list[yaml.Node], list[PolicyIssue]]:
    nodes: list[yaml.Node] = []
    try:
        for node in yaml.compose_all(text, Loader=_LOADER):
            if node is not None:
                nodes.append(node)
    except yaml.YAMLError as exc:
        return nodes, [_yaml_issue(file, exc)]
    except RecursionError:
        return nodes, [PolicyIssue(file, 1, 1, "<yaml>", "nesting too deep")]
    return nodes, []


def check_policy_text(text: str, source: str = "<string>") -> tuple[ScalingPolicy | None, list[PolicyIssue]]:
    """Every problem in one policy document, and the policy when there is none."""
    nodes, issues = _documents(text, source)
    if issues:
        return None, issues
    if not nodes:
        return None, [
            PolicyIssue(source, 1, 1, "<document>", "the file is empty; expected one ScalingPolicy document")
        ]
    if len(nodes) > 1:
        mark = nodes[1].start_mark
        return None, [
            PolicyIssue(
                source,
                mark.line + 1,
                mark.column + 1,
                "<document>",
                f"a policy file holds exactly one document; found {len(nodes)} (one file per policy)",
            )
        ]
    doc = _Document(source, nodes[0])
    try:
        doc.value = _plain(doc, nodes[0], ())
    except RecursionError:
        return None, [PolicyIssue(source, 1, 1, "<document>", "nesting too deep")]
    _schema_issues(doc)
    _semantic_issues(doc)
    if doc.issues:
        return None, sorted(set(doc.issues))
    return _to_policy(doc.value, source), []


def parse_policy(text: str, source: str = "<string>") -> ScalingPolicy:
    """The policy in ``text``, or :class:`PolicyError` with every problem."""
    policy, issues = check_policy_text(text, source)
    if policy is None:
        raise PolicyError([str(issue) for issue in issues])
    return policy


def _read(path: Path) -> tuple[str | None, list[PolicyIssue]]:
    name = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, [PolicyIssue(name, 1, 1, "<file>", "no such file")]
    except IsADirectoryError:
        return None, [
            PolicyIssue(name, 1, 1, "<file>", "is a directory; give a policy file (or use load_policy_dir)")
        ]
    except OSError as exc:
        return None, [PolicyIssue(name, 1, 1, "<file>", f"cannot read: {exc.strerror or exc}")]
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError as exc:
        return None, [PolicyIssue(name, 1, 1, "<file>", f"not UTF-8 text (byte {exc.start})")]


def check_policy_file(path: str | Path) -> tuple[ScalingPolicy | None, list[PolicyIssue]]:
    """Every problem in one policy file, and the policy when there is none."""
    path = Path(path)
    text, issues = _read(path)
    if text is None:
        return None, issues
    return check_policy_text(text, str(path))


def load_policy_file(path: str | Path) -> ScalingPolicy:
    """The policy in the file at ``path``, or :class:`PolicyError` listing every problem in it."""
    policy, issues = check_policy_file(path)
    if policy is None:
        raise PolicyError([str(issue) for issue in issues])
    return policy


def policy_files(directory: Path) -> list[Path]:
    """The ``*.yaml`` and ``*.yml`` files directly in ``directory``, hidden ones excluded, sorted."""
    return sorted(
        p
        for p in directory.iterdir()
        if p.suffix in POLICY_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def _issue_at(source: str, path: PathKey, message: str) -> PolicyIssue:
    """An issue about a policy that loaded fine, placed on its node (found again from the file)."""
    text, _ = _read(Path(source))
    nodes, _ = _documents(text or "", source)
    if len(nodes) != 1:
        return PolicyIssue(source, 1, 1, format_path(path), message)
    doc = _Document(source, nodes[0])
    _plain(doc, nodes[0], ())
    mark = doc.node_for(path).start_mark
    return PolicyIssue(source, mark.line + 1, mark.column + 1, format_path(path), message)


def cross_file_issues(policies: Iterable[ScalingPolicy]) -> Iterator[PolicyIssue]:
    """Two policies for the same workload, or for the same consumer group, would fight each other."""
    by_key: dict[str, ScalingPolicy] = {}
    by_group: dict[str, ScalingPolicy] = {}
    for policy in policies:
        source = policy.source or "<string>"
        first = by_key.setdefault(policy.key, policy)
        if first is not policy:
            message = f"policy {policy.key} is also defined in {first.source}"
            yield _issue_at(source, ("metadata", "name"), message)
            continue
        other = by_group.setdefault(policy.kafka.group, policy)
        if other is not policy:
            message = f"group '{policy.kafka.group}' is already scaled by policy {other.key} ({other.source})"
            yield _issue_at(source, ("spec", "kafka", "group"), message)


def load_policy_dir(path: str | Path) -> tuple[list[ScalingPolicy], list[str]]:
    """Every valid policy in a directory, and every problem (one formatted line each) in the others.

    A policy that clashes with an earlier one (same namespace/name, or same consumer group) is
    reported and left out.
    """
    directory = Path(path)
    if not directory.is_dir():
        reason = "no such directory" if not directory.exists() else "not a directory"
        return [], [str(PolicyIssue(str(directory), 1, 1, "<file>", reason))]
    policies: list[ScalingPolicy] = []
    errors: list[str] = []
    for file in policy_files(directory):
        policy, issues = check_policy_file(file)
        errors.extend(str(issue) for issue in issues)
        if policy is not None:
            policies.append(policy)
    clashes = list(cross_file_issues(policies))
    errors.extend(str(issue) for issue in clashes)
    clashing = {issue.file for issue in clashes}
    return [p for p in policies if p.source not in clashing], errors


__all__ = [
    "PolicyError",
    "PolicyIssue",
    "check_policy_file",
    "check_policy_text",
    "cross_file_issues",
    "format_path",
    "load_policy_dir",
    "load_policy_file",
    "parse_bytes",
    "parse_policy",
    "policy_files",
    "policy_schema",
]
