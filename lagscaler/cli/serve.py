"""``lagscaler serve``: sample Kafka, decide, and serve the external metrics API to the HPA.

Settings come from three places, the later overriding the earlier: a YAML ``--config`` file whose
keys are the flag names without dashes (``bootstrap-server: kafka:9092``), environment variables
named ``LAGSCALER_`` + the flag in upper snake case (``LAGSCALER_BOOTSTRAP_SERVER``), and the flags.
File and environment values are turned into flags and parsed by the same parser, so every value
is validated the same way whatever its source, and a bad one is named in the error.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lagscaler.cli._types import positive
from lagscaler.errors import UserError

if TYPE_CHECKING:
    from lagscaler.service.handover import LocalHandover

ENV_PREFIX = "LAGSCALER_"
_NOT_SETTINGS = {"help", "config"}


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from lagscaler.api import add_api_arguments  # noqa: PLC0415 - keep `lagscaler --help` fast
    from lagscaler.cli.lag import add_kafka_arguments  # noqa: PLC0415

    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="YAML file of settings (keys: flag names)"
    )
    service = parser.add_argument_group("service")
    service.add_argument(
        "--policy-dir", type=Path, required=True, metavar="DIR", help="directory of policy files"
    )
    service.add_argument(
        "--sample-interval",
        type=positive(float),
        default=10.0,
        metavar="SECONDS",
        help="seconds between cycles (default 10)",
    )
    service.add_argument(
        "--history", type=int, default=120, metavar="SAMPLES", help="samples kept per partition (default 120)"
    )
    service.add_argument(
        "--state-file",
        type=Path,
        metavar="FILE",
        help="keep the engine's learned state (capacity, windows, dwell timers) here across restarts; "
        "put it on a volume that outlives the pod",
    )
    handover = parser.add_argument_group(
        "handover", "run mode: handover policies with local worker processes (docs/handover.md)"
    )
    handover.add_argument(
        "--handover-state-dir",
        type=Path,
        metavar="DIR",
        help="run handovers: worker pid files and logs, and the leader lock, live here",
    )
    handover.add_argument(
        "--handover-command",
        action="append",
        default=[],
        metavar="NAMESPACE/NAME=COMMAND",
        help="the worker command of a handover workload (repeat per workload)",
    )
    handover.add_argument(
        "--handover-control-topic",
        default="lagscaler.handover",
        metavar="TOPIC",
        help="the compacted control topic (default %(default)s; created if missing)",
    )
    handover.add_argument(
        "--handover-warmup-timeout",
        type=positive(float),
        default=120.0,
        metavar="SECONDS",
        help="abort a handover whose new generation is not warm by then (default 120)",
    )
    handover.add_argument(
        "--handover-fence-timeout",
        type=positive(float),
        default=5.0,
        metavar="SECONDS",
        help="kill an old worker that has not stopped by then (default 5)",
    )
    service.add_argument("--log-format", choices=["auto", "json", "console"], default="auto")
    service.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    add_kafka_arguments(parser)
    add_api_arguments(parser)
    return parser


def _flag_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Settings by name (``bootstrap-server``), from the parser's long options."""
    actions: dict[str, argparse.Action] = {}
    for action in parser._actions:  # argparse has no public accessor for this
        for option in action.option_strings:
            if option.startswith("--") and option[2:] not in _NOT_SETTINGS:
                actions[option[2:]] = action
    return actions


def _as_flags(name: str, value: Any, action: argparse.Action, source: str) -> list[str]:
    flag = f"--{name}"
    if action.nargs == 0:  # store_true
        if isinstance(value, bool):
            return [flag] if value else []
        if isinstance(value, str) and value.lower() in (
            "1",
            "true",
            "yes",
            "on",
            "0",
            "false",
            "no",
            "off",
            "",
        ):
            return [flag] if value.lower() in ("1", "true", "yes", "on") else []
        raise UserError(f"{source}: {name}: expected true or false, got {value!r}")
    if isinstance(value, list):
        if not all(isinstance(v, str | int | float) for v in value):
            raise UserError(f"{source}: {name}: expected a list of plain values, got {value!r}")
        if action.option_strings and isinstance(action, argparse._AppendAction):
            return [item for v in value for item in (flag, str(v))]
        value = ",".join(str(v) for v in value)
    if isinstance(value, dict) or value is None:
        raise UserError(f"{source}: {name}: expected a single value, got {value!r}")
    if isinstance(value, bool):
        value = str(value).lower()
    return [flag, str(value)]


def settings_argv(
    parser: argparse.ArgumentParser, argv: Sequence[str], environ: Mapping[str, str]
) -> list[str]:
    """``argv`` with the config file's and the environment's settings in front (so flags win)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path)
    known, _ = pre.parse_known_args(argv)
    actions = _flag_actions(parser)
    prefix: list[str] = []
    config_file = known.config or (
        Path(environ["LAGSCALER_CONFIG"]) if environ.get("LAGSCALER_CONFIG") else None
    )
    if config_file is not None:
        prefix += _file_flags(config_file, actions)
    for name, action in actions.items():
        env = ENV_PREFIX + name.upper().replace("-", "_")
        if env in environ:
            prefix += _as_flags(name, environ[env], action, f"${env}")
    return [*prefix, *argv]


def _file_flags(path: Path, actions: Mapping[str, argparse.Action]) -> list[str]:
    import yaml  # noqa: PLC0415

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UserError(f"--config {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f":{where.line + 1}:{where.column + 1}" if where is not None else ""
        raise UserError(f"{path}{at}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of settings (flag names without dashes)")
    flags: list[str] = []
    for key, value in data.items():
        name = str(key).replace("_", "-")
        if name not in actions:
            close = difflib.get_close_matches(name, list(actions), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UserError(f"{path}: unknown setting {key!r}{hint}")
        flags += _as_flags(name, value, actions[name], str(path))
    return flags


def run_serve(args: argparse.Namespace) -> int:
    from lagscaler.api import api_settings_from_args  # noqa: PLC0415
    from lagscaler.cli.lag import kafka_settings_from_args  # noqa: PLC0415
    from lagscaler.observability import configure_logging  # noqa: PLC0415
    from lagscaler.service.run import ServeSettings, serve_forever  # noqa: PLC0415

    settings = ServeSettings(
        kafka=kafka_settings_from_args(args),
        policy_dir=args.policy_dir,
        api=api_settings_from_args(args),
        interval=args.sample_interval,
        history=args.history,
        state_file=args.state_file,
        handover=_handover_from_args(args),
    )
    configure_logging(args.log_level, args.log_format)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve_forever(settings, stop)

    asyncio.run(main())
    return 0


def _handover_from_args(args: argparse.Namespace) -> LocalHandover | None:
    from lagscaler.handover import HandoverSettings  # noqa: PLC0415
    from lagscaler.service.handover import LocalHandover, parse_commands  # noqa: PLC0415

    commands = parse_commands(args.handover_command)
    if args.handover_state_dir is None:
        if commands:
            raise UserError("--handover-command needs --handover-state-dir (where the workers are tracked)")
        return None
    try:
        timeouts = HandoverSettings(
            control_topic=args.handover_control_topic,
            warmup_timeout=args.handover_warmup_timeout,
            fence_timeout=args.handover_fence_timeout,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return LocalHandover(args.handover_state_dir, commands, timeouts)


def expand_argv(argv: Sequence[str]) -> list[str]:
    """Called by the CLI before parsing: the config file's and environment's settings become flags."""
    standalone = build_parser(argparse.ArgumentParser(prog="lagscaler serve", add_help=False))
    return settings_argv(standalone, argv, os.environ)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the service: sample Kafka, decide, serve external.metrics.k8s.io to the HPA",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    build_parser(parser)
    parser.set_defaults(handler=run_serve)
