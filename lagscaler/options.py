"""Command-line settings defined once, as pydantic models, and read from flags, environment and file.

A model (``class KafkaOptions(Options)``) lists settings as fields named like their flags
(``bootstrap_server`` is ``--bootstrap-server``), each with its type, constraints, default and a
docstring that becomes the flag's help. From it:

* :func:`add_flags` adds the argparse flags, each parsed by the field's own type, so a bad flag is
  argparse's usual one-line error naming the flag;
* :func:`from_flags`, :func:`from_environment` and :func:`from_file` read one source each into
  ``{field: Given(value, origin)}``, where the origin is what a user wrote: ``--flag``, ``$VAR`` or
  the file's path;
* :func:`merge` applies a precedence list (highest first, as pydantic-settings'
  ``settings_customise_sources`` returns it) and :func:`build` validates every value with its field's
  type, so every error names where the value came from; :func:`log_sources` then says at debug
  level which source set each setting (names and origins only: values may be secrets).

Why not pydantic-settings itself: its sources cannot say which one supplied a value, so its errors
could not name ``$VAR`` or the file, and its command-line source would replace the CLI's own parser.
This module is that part of it, in about a hundred lines, on pydantic's validation.
"""

from __future__ import annotations

import argparse
import difflib
import enum
import re
import reprlib
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from lagscaler.errors import UserError

__all__ = [
    "Given",
    "Names",
    "Options",
    "UserPath",
    "add_flags",
    "annotate",
    "build",
    "env_var",
    "flag",
    "from_environment",
    "from_file",
    "from_flags",
    "log_sources",
    "merge",
]

M = TypeVar("M", bound="Options")


def _names(value: Any) -> Any:
    """``a, b`` (a flag or a variable) or a YAML list -> a tuple of names."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


Names = Annotated[tuple[str, ...], BeforeValidator(_names)]
"""A list of names: comma-separated in a flag or variable, a list in the file."""
UserPath = Annotated[Path, AfterValidator(Path.expanduser)]
"""A path; ``~`` is the user's home, as a shell would have it."""


_FINITE = ConfigDict(allow_inf_nan=False)
"""No setting means anything as ``inf`` or ``nan``, and pydantic's floats take both (``--timeout inf``
would pass ``gt=0`` and then fail every cycle where it becomes a deadline; ``--sample-interval inf``
would sample once and wait for ever)."""


class Options(BaseModel):
    """Base of every settings model: frozen, unknown names refused, attribute docstrings as help,
    numbers finite."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True, allow_inf_nan=False)


@dataclass(frozen=True, slots=True)
class Given:
    """One setting's raw value and where it came from (``--flag``, ``$VAR`` or a file path)."""

    value: Any
    origin: str


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_var(prefix: str, name: str) -> str:
    return prefix + name.upper()


def _extra(info: FieldInfo) -> dict[str, Any]:
    extra = info.json_schema_extra
    return extra if isinstance(extra, dict) else {}


def _adapter(info: FieldInfo) -> TypeAdapter[Any]:
    """Validates one field's value alone (FieldInfo keeps the constraints apart from the type)."""
    annotation: Any = info.annotation
    if info.metadata:
        annotation = Annotated[annotation, *info.metadata]
    return TypeAdapter(annotation, config=_FINITE)


def _is_switch(info: FieldInfo) -> bool:
    """A bool field is a flag without a value (``store_true``)."""
    return info.annotation in (bool, bool | None)


def _shown(value: Any) -> str:
    """``repr`` of a given value, cut short: a config file's value may be a huge nested list (YAML
    aliases build one from a few lines), and an error quoting it must stay one short line."""
    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxtuple, short.maxdict = 2, 4, 4, 4
    short.maxstring = short.maxother = 80
    return short.repr(value)


def _message(error: ValidationError) -> str:
    """pydantic's first error in this module's words: short, lower case, the value quoted."""
    first = error.errors(include_url=False)[0]
    kind, value, ctx = first["type"], first["input"], first.get("ctx") or {}
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        whole = float(limit).is_integer() and abs(limit) < 1e16  # 31622400, not 3.16224e+07
        return f"must be {bounds[kind]} {int(limit) if whole else format(limit, 'g')}, got {_shown(value)}"
    if kind == "finite_number":
        return f"must be a finite number, got {_shown(value)}"
    if kind.startswith("bool"):
        return f"expected true or false, got {_shown(value)}"
    if kind.startswith(("int", "float")):
        return f"expected a number, got {_shown(value)}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, got {_shown(value)}"
    text = str(first["msg"])
    return f"{text[:1].lower()}{text[1:]}, got {_shown(value)}"


def _converter(name: str, info: FieldInfo) -> Callable[[str], Any]:
    adapter = _adapter(info)

    def convert(text: str) -> Any:
        try:
            return adapter.validate_python(text)
        except ValidationError as exc:
            raise argparse.ArgumentTypeError(_message(exc)) from None

    convert.__name__ = name  # argparse names the type in some messages
    return convert


def _choices(info: FieldInfo) -> list[str] | None:
    """The values of a Literal or enum field (for argparse's help and its own check)."""
    annotation = info.annotation
    options = [a for a in typing.get_args(annotation) if a is not type(None)]
    kind = (
        options[0]
        if typing.get_origin(annotation) in (typing.Union, UnionType) and len(options) == 1
        else annotation
    )
    if typing.get_origin(kind) is typing.Literal:
        return [str(a) for a in typing.get_args(kind)]
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return [str(member.value) for member in kind]
    return None


def add_flags(group: argparse._ActionsContainer, model: type[Options], *, given_only: bool = False) -> None:
    """One flag per field of ``model``; with ``given_only`` a flag that is not given leaves no attribute
    (other sources may supply it) and nothing is required, else the model's defaults apply."""
    for name, info in model.model_fields.items():
        extra = _extra(info)
        help_text = " ".join((info.description or "").split()).replace("%", "%%")
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        if default not in (None, False, ()):
            shown = default.value if isinstance(default, enum.Enum) else default
            help_text += f" (default: {shown})"
        kwargs: dict[str, Any] = {"dest": name, "help": help_text or None}
        if _is_switch(info):
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = _converter(name, info)
            kwargs["metavar"] = extra.get("metavar")
            kwargs["choices"] = _choices(info)
        if given_only:
            kwargs["default"] = argparse.SUPPRESS
        else:
            kwargs["default"] = default
            kwargs["required"] = info.is_required()
        group.add_argument(flag(name), **kwargs)


def from_flags(args: argparse.Namespace, model: type[Options]) -> dict[str, Given]:
    """The fields whose flag was given (flags added with ``given_only``)."""
    given = vars(args)
    return {name: Given(given[name], flag(name)) for name in model.model_fields if name in given}


def from_environment(environ: Mapping[str, str], prefix: str, model: type[Options]) -> dict[str, Given]:
    """``$PREFIX_FIELD`` variables: ``LAGSCALER_BOOTSTRAP_SERVER`` for ``bootstrap_server``."""
    out: dict[str, Given] = {}
    for name in model.model_fields:
        var = env_var(prefix, name)
        if var in environ:
            out[name] = Given(environ[var], f"${var}")
    return out


def from_file(path: Path, model: type[Options]) -> dict[str, Given]:
    """A YAML mapping whose keys are flag names without dashes (``bootstrap-server: kafka:9092``)."""
    import yaml  # noqa: PLC0415 - only when a file is given

    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except RecursionError:
        raise UserError(f"{path}: not valid YAML: nested too deep") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f":{where.line + 1}:{where.column + 1}" if where is not None else ""
        raise UserError(f"{path}{at}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of settings (flag names without dashes)")
    known = [flag(name)[2:] for name in model.model_fields]
    out: dict[str, Given] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in model.model_fields:
            close = difflib.get_close_matches(str(key).replace("_", "-"), known, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UserError(f"{path}: unknown setting {key!r}{hint}")
        out[name] = Given(value, str(path))
    return out


def merge(sources: Sequence[Mapping[str, Given]]) -> dict[str, Given]:
    """One value per setting: the first source (highest precedence first) that has it wins."""
    merged: dict[str, Given] = {}
    for source in sources:
        for name, given in source.items():
            merged.setdefault(name, given)
    return merged


def build(model: type[M], given: Mapping[str, Given], *, missing_hint: Callable[[str], str]) -> M:
    """The model from the merged values; an error names the setting and where its value came from."""
    values: dict[str, Any] = {}
    for name, item in given.items():
        info = model.model_fields[name]
        value = item.value
        if _is_switch(info) and isinstance(value, str) and not value.strip():
            value = False  # an empty variable switches a flag off, as an unset one would
        if isinstance(value, dict) or (
            isinstance(value, list) and typing.get_origin(info.annotation) is None
        ):
            raise UserError(f"{item.origin}: {flag(name)[2:]}: expected a single value, got {_shown(value)}")
        try:
            values[name] = _adapter(info).validate_python(value)
        except ValidationError as exc:
            raise UserError(f"{item.origin}: {flag(name)[2:]}: {_message(exc)}") from None
    for name, info in model.model_fields.items():
        if info.is_required() and name not in values:
            raise UserError(f"missing setting {flag(name)[2:]}: {missing_hint(name)}")
    return model(**values)


def annotate(error: UserError, given: Mapping[str, Given]) -> UserError:
    """``error`` with the origin of each ``--flag`` it names that was not set by that flag."""

    def origin(match: re.Match[str]) -> str:
        item = given.get(match.group(1).replace("-", "_"))
        return (
            match.group(0)
            if item is None or item.origin.startswith("--")
            else f"{match.group(0)} ({item.origin})"
        )

    return UserError(re.sub(r"--([a-z][a-z0-9-]*)", origin, str(error)), exit_code=error.exit_code)


def log_sources(given: Mapping[str, Given]) -> None:
    """At debug level, which source set each setting: names and origins, never values."""
    from lagscaler.logs import get_logger  # noqa: PLC0415 - `lagscaler lag` never logs: start fast

    log = get_logger("lagscaler.options")
    for name, item in sorted(given.items()):
        log.debug("setting given", setting=flag(name)[2:], source=item.origin)
