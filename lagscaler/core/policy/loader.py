"""Read ``ScalingPolicy`` files: YAML -> the typed model (:mod:`.model`, pydantic) -> semantic checks.

Every problem becomes one line ``file:line:column: path: message`` pointing at the YAML node it is
about (the key for an unknown field, the value for a wrong one, the mapping for a missing one), and
a file reports all of its problems at once, so a user fixes a file in one pass. Files are composed
(``yaml.compose``), not loaded, to keep each node's position, and values are built from the nodes
by hand so that YAML oddities (duplicate keys, merge keys, custom tags, dates, ``.inf``) are
reported instead of silently accepted. pydantic then validates the plain values against the model
and each of its errors is placed back on its node.

Hostile files cost little and say so in one line: a file larger than :data:`MAX_FILE_BYTES`, YAML
aliases that expand past :data:`MAX_NODES` nodes (a "billion laughs"), or nesting deeper than
:data:`MAX_DEPTH` are refused before any of it is expanded, and no message quotes more than a few
dozen characters of what the file holds (:data:`MAX_MESSAGE`).
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lagscaler.core.policy.model import MAX_SECONDS, PATTERN_MEANINGS, PolicyFile, ScalingPolicy, describe
from lagscaler.core.policy.schema import policy_adapter, policy_schema, properties_at
from lagscaler.errors import UserError

PathKey = tuple[str | int, ...]
# libyaml when PyYAML has it: ~20x faster, and it refuses absurd nesting itself instead of recursing.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_ONE_LINE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
POLICY_SUFFIXES = (".yaml", ".yml")

MAX_FILE_BYTES = 256 * 1024
"""Largest policy file read. The shipped examples are under 3 KiB; a ConfigMap holds at most 1 MiB
in all. Larger files are refused unread, so one cannot make every reload slow."""
MAX_NODES = 10_000
"""Most YAML nodes a document may have once its aliases are expanded (a policy has under 100).
Aliases cost nothing to compose but multiply when expanded: nine levels of ten aliases each is a
billion nodes in a few hundred bytes."""
MAX_DEPTH = 32
"""Deepest nesting of mappings and lists (a policy needs 4)."""
MAX_MESSAGE = 400
"""Longest message and longest path an issue prints, in characters."""


def _bound(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


@dataclass(frozen=True, slots=True, order=True)
class PolicyIssue:
    """One problem in one file, with a 1-based position."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        # One line whatever the file holds: a key or value with a line break must not split it, and
        # no key or value may make it long.
        message = _ONE_LINE.sub(lambda m: json.dumps(m.group())[1:-1], _bound(self.message, MAX_MESSAGE))
        path = _ONE_LINE.sub(lambda m: json.dumps(m.group())[1:-1], _bound(self.path, MAX_MESSAGE))
        return f"{self.file}:{self.line}:{self.column}: {path}: {message}"


class PolicyError(UserError):
    """One or more policy files are invalid; ``errors`` holds every problem, one formatted line each."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors: tuple[str, ...] = tuple(errors)
        super().__init__("\n".join(self.errors) if self.errors else "invalid policy")


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
    text = _bound(str(key), 60)
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
# A float as Kubernetes reads YAML (go-yaml v2 ``resolve.go`` ``yamlStyleFloat``, which
# sigs.k8s.io/yaml uses): ``1e5`` and ``2.5e5`` are numbers there, but text to PyYAML, whose YAML 1.1
# floats need a dot and a signed exponent (``2.5e+5``). A plain scalar of this form is read as the
# number a user (and kubectl) takes it for; quoted, it stays text.
_GO_YAML_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")


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
    nodes: int = 0  # nodes read so far, aliases expanded: bounded by MAX_NODES

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


_TOO_DEEP = f"nesting too deep: more than {MAX_DEPTH} levels (a policy needs 4)"


class _TooLarge(Exception):
    """The document is too large or too deep to read; the message says which (one issue, no partial)."""


def _unreadable(doc: _Document, node: yaml.Node, path: PathKey, message: str) -> None:
    """A value we could not read at all: report it, and keep the model quiet about it."""
    doc.issue(node, path, message)
    doc.broken.add(path)


def _plain(doc: _Document, node: yaml.Node, path: PathKey) -> Any:
    """Build the plain value of ``node`` by hand, counting nodes and depth so hostile files stop early.

    Every node is recorded under its path so that later errors can point at it.
    """
    doc.nodes += 1
    if doc.nodes > MAX_NODES:
        raise _TooLarge(
            f"more than {MAX_NODES} YAML nodes once anchors and aliases are expanded"
            " (a policy has under 100); write the fields out"
        )
    if len(path) > MAX_DEPTH:
        raise _TooLarge(_TOO_DEEP)
    doc.values[path] = node
    if isinstance(node, yaml.MappingNode):
        return _plain_mapping(doc, node, path)
    if isinstance(node, yaml.SequenceNode):
        if node.tag != _SEQ:
            _unreadable(doc, node, path, f"unsupported YAML tag {node.tag}")
            return None
        return [_plain(doc, item, (*path, index)) for index, item in enumerate(node.value)]
    if isinstance(node, yaml.ScalarNode):
        return _plain_scalar(doc, node, path)
    _unreadable(doc, node, path, "unsupported YAML node")  # pragma: no cover - composer makes only the three
    return None


def _plain_mapping(doc: _Document, node: yaml.MappingNode, path: PathKey) -> dict[str, Any] | None:
    """A mapping's plain value, reporting what PyYAML would accept silently.

    Merge keys, non-string keys and duplicate keys are issues here, not quietly resolved, because
    each hides from the user which value the policy really holds.
    """
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


def _plain_scalar(doc: _Document, node: yaml.ScalarNode, path: PathKey) -> Any:
    """A scalar's plain value: text stays text, the core YAML tags are constructed, others refused.

    Dates stay text because a policy has none (the schema then says what type was wanted), and
    non-finite numbers are refused because no field of a policy means anything with them.
    """
    if node.tag == _STR and not node.style and _GO_YAML_FLOAT.match(node.value):  # plain: None or ""
        value = float(node.value)
        if not math.isfinite(value):  # 1e400
            _unreadable(doc, node, path, f"must be a finite number, got {node.value}")
        return value
    if node.tag in (_STR, _TIMESTAMP):
        return node.value
    if node.tag not in _SCALAR_TAGS:
        _unreadable(doc, node, path, f"unsupported YAML tag {node.tag}")
        return None
    try:
        value = doc.constructor.construct_object(node, deep=True)
    except Exception:  # PyYAML's scalar constructors fail in many ways on explicit tags (!!int "")
        kind = node.tag.rsplit(":", 1)[-1]
        _unreadable(doc, node, path, f"not a valid {kind}: {json.dumps(_bound(node.value, 60))}")
        return None
    if isinstance(value, float) and not math.isfinite(value):
        _unreadable(doc, node, path, f"must be a finite number, got {node.value}")
    return value


# --- the model's errors as messages a user can act on -------------------------------------------

_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="), "less_than": ("lt", "<")}
_BOUNDS["less_than_equal"] = ("le", "<=")


def _unknown_field(doc: _Document, path: PathKey) -> None:
    parent, extra = path[:-1], path[-1]
    allowed = properties_at(parent) or []
    hint = difflib.get_close_matches(str(extra), allowed, n=1)
    suffix = f"; did you mean '{hint[0]}'?" if hint else f"; known fields: {', '.join(allowed)}"
    doc.issue(doc.node_for(path, key=True), path, f"unknown field {_name(extra)}{suffix if allowed else ''}")


def _model_message(kind: str, value: Any, ctx: dict[str, Any], message: str) -> str:
    """The message for one pydantic error (``kind`` is its ``type``), in the loader's words."""
    if kind in _BOUNDS:
        name, relation = _BOUNDS[kind]
        bound = ctx[name]  # a whole bound in full (2147483647 or 31622400, not 2.14748e+09)
        whole = isinstance(bound, int) or (float(bound).is_integer() and abs(bound) < 1e16)
        shown = str(int(bound)) if whole else f"{bound:g}"
        if kind == "less_than_equal" and bound == MAX_SECONDS:
            shown += " (366 days, the longest duration a policy takes)"
        huge = isinstance(value, int) and abs(value) > 10**15  # 1e300 as an integer is 301 digits
        got = f"a {len(str(abs(value)))}-digit number" if huge else repr(value)
        return f"must be {relation} {shown}, got {got}"
    if kind in ("dataclass_type", "dict_type", "model_type"):
        return f"expected a mapping, got {describe(value)}"
    if kind in ("tuple_type", "list_type"):
        return f"expected a list, got {describe(value)}"
    if kind == "string_type":
        return f"expected a string, got {describe(value)}"
    if kind in ("literal_error", "enum"):
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        if len(choices) == 1:
            return f"must be {json.dumps(choices[0])}, got {describe(value)}"
        return f"must be one of: {', '.join(choices)}; got {describe(value)}"
    if kind == "string_pattern_mismatch":
        wanted = PATTERN_MEANINGS.get(ctx["pattern"], f"text matching {ctx['pattern']}")
        return f"must be {wanted}; got {describe(value)}"
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters long, got {len(value)}"
    if kind == "string_too_short":
        return "must not be empty"
    return message  # the model's own validators word their messages themselves


def _model_issues(doc: _Document) -> PolicyFile | None:
    """Validate the plain value with the model; every error becomes an issue on its node."""
    try:
        return policy_adapter().validate_python(doc.value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    for error in errors:
        path: PathKey = tuple(error["loc"])
        if any(path[: len(broken)] == broken for broken in doc.broken):
            continue  # already reported where the YAML was read
        kind = error["type"]
        if kind == "missing":
            parent = path[:-1]
            doc.issue(doc.node_for(parent, key=True), parent, f"missing required field '{path[-1]}'")
        elif kind == "unexpected_keyword_argument":
            _unknown_field(doc, path)
        else:
            message = _model_message(kind, error["input"], error.get("ctx") or {}, error["msg"])
            doc.issue(doc.node_for(path), path, message)
    return None


# --- semantic checks (what the model's per-field types cannot say) -------------------------------


def _get(mapping: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _semantic_issues(doc: _Document) -> None:
    """Rules across fields, checked on the plain value so that they are reported with the others."""
    spec = _get(doc.value, "spec")
    if not isinstance(spec, dict):
        return
    minimum = spec.get("minReplicas", 1)
    maximum = spec.get("maxReplicas", 10)
    # Only when both are what the model allows; otherwise it has already said so.
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
        sources = [key for key in ("stateBytes", "changelogTopic") if stateful.get(key) is not None]
        if len(sources) != 1:
            message = (
                "give the state size as stateBytes or changelogTopic"
                if not sources
                else "give stateBytes or changelogTopic, not both"
            )
            doc.issue(doc.node_for(base), base, message)


# --- entry points -------------------------------------------------------------------------------


def _yaml_issue(file: str, exc: yaml.YAMLError, text: str) -> PolicyIssue:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = exc.problem or "invalid YAML"
        context = f" ({exc.context})" if exc.context else ""
        return PolicyIssue(file, mark.line + 1, mark.column + 1, "<yaml>", f"{problem}{context}")
    if isinstance(exc, yaml.reader.ReaderError):
        # The reader gives an offset into the whole text, not a line and column; libyaml's counts
        # the bytes of the text in UTF-8, PyYAML's own its characters.
        offset = exc.position
        if _LOADER is not yaml.SafeLoader:
            offset = len(text.encode("utf-8", "surrogatepass")[:offset].decode("utf-8", "ignore"))
        offset = min(max(offset, 0), len(text))
        line = text.count("\n", 0, offset) + 1
        column = offset - text.rfind("\n", 0, offset)
        return PolicyIssue(
            file, line, column, "<yaml>", f"unacceptable character {exc.character!r}: {exc.reason}"
        )
    return PolicyIssue(file, 1, 1, "<yaml>", str(exc))  # pragma: no cover - every YAMLError has a position


def _documents(text: str, file: str) -> tuple[list[yaml.Node], list[PolicyIssue]]:
    nodes: list[yaml.Node] = []
    try:
        for node in yaml.compose_all(text, Loader=_LOADER):
            if node is not None:
                nodes.append(node)
    except yaml.YAMLError as exc:
        return nodes, [_yaml_issue(file, exc, text)]
    except RecursionError:
        return nodes, [PolicyIssue(file, 1, 1, "<yaml>", _TOO_DEEP)]
    return nodes, []


def _too_large(source: str, size: int) -> PolicyIssue:
    # A device or pipe has no size: say "more than" what was read rather than "0 bytes is too large".
    amount = f"{size} bytes is" if size > MAX_FILE_BYTES else f"more than {MAX_FILE_BYTES} bytes is"
    return PolicyIssue(
        source, 1, 1, "<file>", f"{amount} too large for a policy file (at most {MAX_FILE_BYTES})"
    )


def check_policy_text(text: str, source: str = "<string>") -> tuple[ScalingPolicy | None, list[PolicyIssue]]:
    """Every problem in one policy document, and the policy when there is none."""
    if len(text) > MAX_FILE_BYTES:
        return None, [_too_large(source, len(text.encode("utf-8", "surrogatepass")))]
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
    except (_TooLarge, RecursionError) as exc:
        message = str(exc) if isinstance(exc, _TooLarge) else _TOO_DEEP
        return None, [PolicyIssue(source, 1, 1, "<document>", message)]
    document = _model_issues(doc)
    _semantic_issues(doc)
    if doc.issues or document is None:
        return None, sorted(set(doc.issues))
    return document.policy(source), []


def parse_policy(text: str, source: str = "<string>") -> ScalingPolicy:
    """The policy in ``text``, or :class:`PolicyError` with every problem."""
    policy, issues = check_policy_text(text, source)
    if policy is None:
        raise PolicyError([str(issue) for issue in issues])
    return policy


def _read(path: Path) -> tuple[str | None, list[PolicyIssue]]:
    name = str(path)
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)  # never more: a huge file is refused, not read
    except FileNotFoundError:
        return None, [PolicyIssue(name, 1, 1, "<file>", "no such file")]
    except IsADirectoryError:
        return None, [PolicyIssue(name, 1, 1, "<file>", "is a directory; give a policy file")]
    except OSError as exc:
        return None, [PolicyIssue(name, 1, 1, "<file>", f"cannot read: {exc.strerror or exc}")]
    if len(data) > MAX_FILE_BYTES:
        try:
            size = path.stat().st_size
        except OSError:
            size = len(data)
        return None, [_too_large(name, size)]
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
    try:
        _plain(doc, nodes[0], ())
    except (_TooLarge, RecursionError):  # the file changed since it was loaded
        return PolicyIssue(source, 1, 1, format_path(path), message)
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
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_MESSAGE",
    "MAX_NODES",
    "PolicyError",
    "PolicyIssue",
    "check_policy_file",
    "check_policy_text",
    "cross_file_issues",
    "format_path",
    "load_policy_dir",
    "load_policy_file",
    "parse_policy",
    "policy_files",
    "policy_schema",
]
