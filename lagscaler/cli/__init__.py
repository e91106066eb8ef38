"""The ``lagscaler`` command line.

Each subcommand lives in its own module in this package and exposes
``register(subparsers) -> None``; the parser is assembled by discovering those modules, so adding
a command never touches this file. Other distributions add commands the same way through the
``lagscaler.commands`` entry-point group (name → module): the demo tooling (``demo/``) adds
``demo`` and ``broker``, which a plain ``pip install lagscaler`` does not carry. When the command is
named, only its module is imported: a one-shot ``lagscaler lag`` must not pay for importing the API
server's stack (about a second). A handler returns the exit code. Any :class:`UserError` becomes one
``lagscaler: error: ...`` line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Protocol, cast

from lagscaler import __version__
from lagscaler.errors import UserError

Handler = Callable[[argparse.Namespace], int]


class _CommandModule(Protocol):
    def register(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None: ...


ENTRY_POINT_GROUP = "lagscaler.commands"

# Commands that live in another distribution, and how to get them: named when they are missing, so
# `lagscaler demo` on a lean install says what to do instead of "invalid choice".
ELSEWHERE = {
    "demo": "the demo tooling",
    "broker": "the demo tooling",
}
INSTALL_DEMO = "pip install -e ./demo from a lagscaler checkout (make demo does this)"


def _modules() -> dict[str, str]:
    """Every command's module: this package's own, then those other distributions register."""
    own = {
        m.name: f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")
    }
    added = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in own}
    return own | added


def _commands() -> list[str]:
    return sorted(_modules())


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is a :class:`UserError` (one line, exit 2) like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or (``only``) one with just the named command registered."""
    parser = _Parser(
        prog="lagscaler",
        description="Autoscale Kafka consumers on Kubernetes from lag, arrival rate and true capacity.",
    )
    parser.add_argument("--version", action="version", version=f"lagscaler {__version__}")
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser] = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=_Parser
    )
    subparsers.required = True
    modules = _modules()
    for name in [only] if only is not None else sorted(modules):
        module = cast(_CommandModule, importlib.import_module(modules[name]))
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        arguments = list(sys.argv[1:] if argv is None else argv)
        commands = _commands()
        named = arguments[0] if arguments and arguments[0] in commands else None
        if named is None and arguments and arguments[0] in ELSEWHERE:
            raise UserError(
                f"'{arguments[0]}' is part of {ELSEWHERE[arguments[0]]}, which is not installed: "
                + INSTALL_DEMO
            )
        args = build_parser(only=named).parse_args(arguments)
        handler = cast(Handler, args.handler)
        return handler(args)
    except UserError as exc:
        message = " ".join(str(exc).split())
        print(f"lagscaler: error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
