"""The JSON Schema and the Markdown reference of policy files, both generated from :mod:`.model`.

``lagscaler policy schema`` prints :func:`policy_schema` (for editors and CI: draft 2020-12, so a
``# yaml-language-server: $schema=`` comment or ``check-jsonschema`` can use it);
``lagscaler policy reference`` prints :func:`policy_reference`, which ``docs/policy-reference.md``
holds (a test fails when the two differ, so the docs cannot fall behind the model).
"""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

from pydantic import TypeAdapter

from lagscaler.core.policy.model import PATTERN_MEANINGS, PolicyFile

__all__ = ["SCHEMA_ID", "policy_adapter", "policy_reference", "policy_schema", "properties_at"]

SCHEMA_ID = "https://lagscaler.io/schemas/scalingpolicy-v1.json"


@cache
def policy_adapter() -> TypeAdapter[PolicyFile]:
    """pydantic's validator for a whole file (built once: it takes a few milliseconds)."""
    return TypeAdapter(PolicyFile)


def _tidy(schema: Any) -> Any:
    """Drop pydantic's generated titles and join docstring lines, in place; returns ``schema``."""
    if isinstance(schema, dict):
        schema.pop("title", None)
        if isinstance(schema.get("description"), str):
            schema["description"] = " ".join(schema["description"].split())
        for key, value in schema.items():
            if key in ("properties", "$defs"):
                for sub in value.values():
                    _tidy(sub)
            elif key not in ("default", "const", "enum", "examples"):
                _tidy(value)
    elif isinstance(schema, list):
        for item in schema:
            _tidy(item)
    return schema


@cache
def _schema() -> dict[str, Any]:
    generated = _tidy(policy_adapter().json_schema(by_alias=True, mode="validation"))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "lagscaler ScalingPolicy (lagscaler.io/v1)",
        **generated,
    }


def policy_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``ScalingPolicy`` files, generated from the model."""
    return copy.deepcopy(_schema())


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with a ``$ref`` (to ``#/$defs/...``) replaced by its target, its own keys kept."""
    ref = schema.get("$ref")
    if not isinstance(ref, str):
        return schema
    target = _schema()["$defs"][ref.rsplit("/", 1)[-1]]
    return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}


def _object(schema: dict[str, Any]) -> dict[str, Any] | None:
    """The object schema in ``schema`` (through a ``$ref`` or a nullable ``anyOf``), if there is one."""
    schema = _resolve(schema)
    if "properties" in schema:
        return schema
    for option in schema.get("anyOf", ()):
        found = _object(option)
        if found is not None:
            return found
    return None


def properties_at(path: tuple[str | int, ...]) -> list[str] | None:
    """The keys allowed in the mapping at ``path`` of a file (``("spec", "kafka")``), or None."""
    node: dict[str, Any] | None = _object(_schema())
    for key in path:
        if node is None or not isinstance(key, str) or key not in node["properties"]:
            return None
        node = _object(node["properties"][key])
    return list(node["properties"]) if node is not None else None


# --- the reference --------------------------------------------------------------------------------


def _type(schema: dict[str, Any]) -> str:
    schema = _resolve(schema)
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return " \\| ".join(f"`{value}`" for value in schema["enum"])
    if "anyOf" in schema:
        return " or ".join(_type(option) for option in schema["anyOf"])
    kinds = schema.get("type", "any")
    names: dict[str, str] = {"object": "mapping", "array": "list"}
    if isinstance(kinds, list):
        text = " or ".join(names.get(str(k), str(k)) for k in kinds)
    elif kinds == "array":
        text = f"list of {_type(schema.get('items', {}))}"
    elif kinds == "object" and "properties" not in schema:
        text = "mapping of string to string"
    else:
        text = names.get(kinds, kinds)
    return text


def _rules(schema: dict[str, Any]) -> str:
    schema = _resolve(schema)
    parts: list[str] = []
    for option in schema.get("anyOf", ()):
        if _resolve(option).get("type") != "null":
            parts.append(_rules(option))
    words = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
    parts += [
        f"{op} {schema[key]}" if isinstance(schema[key], int) else f"{op} {schema[key]:g}"
        for key, op in words.items()
        if key in schema
    ]
    if "minLength" in schema:
        parts.append(
            "not empty" if schema["minLength"] == 1 else f"at least {schema['minLength']} characters"
        )
    if "maxLength" in schema:
        parts.append(f"at most {schema['maxLength']} characters")
    if "pattern" in schema:
        parts.append(PATTERN_MEANINGS.get(schema["pattern"], f"matches `{schema['pattern']}`"))
    if schema.get("uniqueItems"):
        parts.append("no duplicates")
    return "; ".join(part for part in parts if part)


def _default(schema: dict[str, Any], required: bool) -> str:
    if required:
        return "**required**"
    if "default" not in schema:
        return "see below" if _object(schema) is not None else "absent"
    default = schema["default"]
    if isinstance(default, float) and default.is_integer():
        default = int(default)  # 30, not 30.0: a file may write either
    return f"`{json.dumps(default)}`"


def _section(lines: list[str], path: str, schema: dict[str, Any], level: int) -> None:
    obj = _object(schema)
    if obj is None:
        return
    title = f"`{path}`" if path else "The document"
    lines += [f"{'#' * level} {title}", "", obj.get("description", ""), ""]
    lines += ["| Field | Type | Default | Rules | Description |", "| --- | --- | --- | --- | --- |"]
    required = set(obj.get("required", ()))
    nested: list[tuple[str, dict[str, Any]]] = []
    for name, sub in obj["properties"].items():
        description = _resolve(sub).get("description", "")
        row = [f"`{name}`", _type(sub), _default(sub, name in required), _rules(sub), description]
        row[-1] = row[-1].replace("|", "\\|")
        lines.append("| " + " | ".join(row) + " |")
        if _object(sub) is not None:
            nested.append((name, sub))
    lines.append("")
    for name, sub in nested:
        _section(lines, f"{path}.{name}" if path else name, sub, min(level + 1, 4))


def policy_reference() -> str:
    """Markdown: every field of a policy file with its type, default, rules and meaning."""
    schema = _schema()
    lines = [
        "# Policy file reference (`lagscaler.io/v1` `ScalingPolicy`)",
        "",
        "<!-- Generated from lagscaler/core/policy/model.py by `lagscaler policy reference`; do not edit -->",
        "",
        "A minimal policy names the workload, its consumer group, its SLO and what one replica can do;",
        "every other field has the default shown. `lagscaler policy check FILE` validates a file and",
        "`lagscaler policy schema` prints the JSON Schema.",
        "",
    ]
    _section(lines, "", schema, 2)
    return "\n".join(lines).rstrip("\n") + "\n"
