"""``lagscaler lag``: a one-shot (or repeated) consumer-group lag report, as a table or as JSON.

The connection settings (``--bootstrap-server`` and the TLS/SASL ones) are defined once here, as
:class:`KafkaOptions`, for every command that talks to Kafka (:func:`add_kafka_arguments` adds their
flags, :func:`kafka_settings_from_args` reads them; ``serve`` also takes them from its environment
and config file). Secrets come from files (``--sasl-password-file``) or the environment
(``LAGSCALER_SASL_PASSWORD``), never from a flag, so they stay out of shell history and ``ps``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from lagscaler.cli._types import positive
from lagscaler.edges.kafka.settings import (
    MAX_REQUEST_TIMEOUT,
    KafkaSettings,
    SaslMechanism,
    SaslSettings,
    Secret,
    SecurityProtocol,
    TlsSettings,
    parse_bootstrap,
)
from lagscaler.errors import UserError
from lagscaler.options import Options, UserPath, add_flags

if TYPE_CHECKING:
    from lagscaler.core.signals.model import Snapshot
    from lagscaler.edges.sampler import SamplerSettings

# The sampler (numpy, aiokafka, structlog) is imported when a report runs, not when the command
# line is built: every `lagscaler ...` invocation builds the full parser, and a one-shot report's
# wall time is mostly interpreter start-up.

PASSWORD_ENV = "LAGSCALER_SASL_PASSWORD"
USERNAME_ENV = "LAGSCALER_SASL_USERNAME"
KEY_PASSWORD_ENV = "LAGSCALER_SSL_KEY_PASSWORD"


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1, got {text!r}")
    return int(text)


def _meta(metavar: str) -> Any:
    return Field(json_schema_extra={"metavar": metavar})


class KafkaOptions(Options):
    """How to reach and authenticate to a Kafka cluster."""

    bootstrap_server: Annotated[str, _meta("HOST:PORT[,HOST:PORT...]")]
    """Kafka brokers to start from."""
    client_id: str = "lagscaler"
    """Client id shown in broker logs."""
    timeout: Annotated[float, Field(gt=0, le=MAX_REQUEST_TIMEOUT), _meta("SECONDS")] = 10.0
    """Bound on each Kafka request, connecting included."""
    security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    """How to talk to the brokers."""
    ssl_cafile: Annotated[UserPath | None, _meta("FILE")] = None
    """CA certificates (PEM) to trust."""
    ssl_certfile: Annotated[UserPath | None, _meta("FILE")] = None
    """Client certificate (PEM), for mutual TLS."""
    ssl_keyfile: Annotated[UserPath | None, _meta("FILE")] = None
    """Client private key (PEM)."""
    ssl_key_password_file: Annotated[
        UserPath | None,
        Field(description=f"Passphrase of the client key (or ${KEY_PASSWORD_ENV})."),
        _meta("FILE"),
    ] = None
    ssl_no_check_hostname: bool = False
    """Accept a broker certificate for another name."""
    sasl_mechanism: SaslMechanism | None = None
    """SASL mechanism; needs a password."""
    sasl_username: Annotated[
        str | None, Field(description=f"SASL user (or ${USERNAME_ENV})."), _meta("NAME")
    ] = None
    sasl_password_file: Annotated[
        UserPath | None,
        Field(description=f"File holding the SASL password (or ${PASSWORD_ENV})."),
        _meta("FILE"),
    ] = None


def add_kafka_arguments(parser: argparse.ArgumentParser, *, given_only: bool = False) -> None:
    """The flags of :class:`KafkaOptions` (see :func:`lagscaler.options.add_flags` for ``given_only``)."""
    add_flags(parser.add_argument_group("Kafka connection"), KafkaOptions, given_only=given_only)


def kafka_settings_from_args(args: argparse.Namespace | KafkaOptions) -> KafkaSettings:
    """Validated connection settings from :class:`KafkaOptions` (or its flags) and the environment."""
    protocol = SecurityProtocol(args.security_protocol)
    tls_flags = (args.ssl_cafile, args.ssl_certfile, args.ssl_keyfile, args.ssl_key_password_file)
    tls = None
    if protocol.uses_tls or any(tls_flags) or args.ssl_no_check_hostname:
        key_password = None
        if args.ssl_key_password_file is not None:
            key_password = Secret.from_file(args.ssl_key_password_file)
        elif os.environ.get(KEY_PASSWORD_ENV):
            key_password = Secret.from_env(KEY_PASSWORD_ENV)
        tls = TlsSettings(
            cafile=args.ssl_cafile,
            certfile=args.ssl_certfile,
            keyfile=args.ssl_keyfile,
            key_password=key_password,
            check_hostname=not args.ssl_no_check_hostname,
        )
    sasl = None
    username = args.sasl_username or os.environ.get(USERNAME_ENV)
    if protocol.uses_sasl or args.sasl_mechanism or args.sasl_username or args.sasl_password_file:
        if not args.sasl_mechanism:
            raise UserError("SASL needs --sasl-mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)")
        if args.sasl_password_file is not None:
            password = Secret.from_file(args.sasl_password_file)
        elif os.environ.get(PASSWORD_ENV) is not None:
            password = Secret.from_env(PASSWORD_ENV)
        else:
            raise UserError(f"SASL needs a password: --sasl-password-file FILE or ${PASSWORD_ENV}")
        sasl = SaslSettings(SaslMechanism(args.sasl_mechanism), username or "", password)
    return KafkaSettings(
        bootstrap=parse_bootstrap(args.bootstrap_server),
        client_id=args.client_id,
        request_timeout=args.timeout,
        security_protocol=protocol,
        tls=tls,
        sasl=sasl,
    )


def quiet_logs() -> None:
    """A report command writes its report to stdout and its one error line to stderr, nothing else.

    The sampler logs a failed cycle as a warning and aiokafka logs connection trouble at ERROR on its
    own; the CLI reports the failure once, as one line, so both are kept below the surface (and
    always away from stdout, where ``--output json`` must stay machine-readable).
    """
    import structlog  # noqa: PLC0415 - see the note on imports at the top

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    logger = logging.getLogger("aiokafka")
    logger.propagate = False
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


def _sampler_settings(args: argparse.Namespace) -> SamplerSettings:
    from lagscaler.edges.sampler import SamplerSettings  # noqa: PLC0415 - see the note on imports at the top

    if args.all_groups and args.group:
        raise UserError("give either --group or --all-groups, not both")
    if not args.all_groups and not args.group:
        raise UserError("name the consumer groups with --group G (repeatable) or use --all-groups")
    if args.count is not None and args.watch is None and args.count != 1:
        raise UserError("--count needs --watch SECONDS (the time between samples)")
    defaults = SamplerSettings(all_groups=True)
    # History only has to cover the samples this report takes (it is allocated up front).
    history = defaults.history if args.watch is not None and args.count is None else max(args.count or 1, 2)
    return SamplerSettings(
        groups=tuple(args.group or ()),
        all_groups=args.all_groups,
        topics=tuple(args.topic or ()),
        interval=args.watch or 1.0,
        cycle_timeout=3 * args.timeout,
        history=min(defaults.history, max(history, defaults.status.window)),
    )


def _print(snapshot: Snapshot, output: str) -> None:
    import json  # noqa: PLC0415 - see the note on imports at the top

    from lagscaler.core.signals.report import render_table, snapshot_json  # noqa: PLC0415

    if output == "json":
        print(json.dumps(snapshot_json(snapshot)), flush=True)
    else:
        print(render_table(snapshot), flush=True)


async def report(
    kafka: KafkaSettings, settings: SamplerSettings, *, output: str = "table", count: int | None = 1
) -> int:
    """Print ``count`` samples (``None``: until interrupted), ``settings.interval`` seconds apart.

    The first sample must succeed and find every named group, or this raises a one-line
    :class:`UserError`; a later failure is reported on stderr and watching goes on (exit code 1).
    """
    from lagscaler.edges.sampler import SampleFailed, Sampler  # noqa: PLC0415 - see the note on imports at the top

    printed = failures = 0
    async with Sampler(kafka, settings) as sampler:
        while count is None or printed + failures < count:
            started = asyncio.get_running_loop().time()
            try:
                snapshot = await sampler.sample()
            except SampleFailed as exc:
                if printed == 0:
                    raise UserError(str(exc), exit_code=1) from None
                failures += 1
                print(f"lagscaler: warning: {exc}", file=sys.stderr, flush=True)
            else:
                if printed == 0:
                    missing = [g.group for g in snapshot.groups if not g.found]
                    if missing and not settings.all_groups:
                        names = ", ".join(f"'{g}'" for g in missing)
                        raise UserError(f"consumer group {names} does not exist", exit_code=1)
                if printed and output == "table":
                    print()
                _print(snapshot, output)
                printed += 1
            if count is None or printed + failures < count:
                elapsed = asyncio.get_running_loop().time() - started
                await asyncio.sleep(max(0.0, settings.interval - elapsed))
    return 1 if failures else 0


def run_lag(args: argparse.Namespace) -> int:
    kafka = kafka_settings_from_args(args)
    settings = _sampler_settings(args)
    quiet_logs()
    count = args.count or (1 if args.watch is None else None)
    return asyncio.run(report(kafka, settings, output=args.output, count=count))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "lag",
        help="report consumer-group lag, like kafka-consumer-groups --describe plus rates and lag seconds",
        description=(
            "Sample consumer-group lag once, or every --watch SECONDS. Rates and lag in seconds need two "
            "samples, so they are null (-) in a one-shot report. Partitions a group has never committed on "
            "are listed with no committed offset and are not counted in the group's lag."
        ),
    )
    add_kafka_arguments(parser)
    what = parser.add_argument_group("what to sample")
    what.add_argument("--group", action="append", metavar="GROUP", help="a consumer group (repeatable)")
    what.add_argument("--all-groups", action="store_true", help="every consumer group of the cluster")
    what.add_argument("--topic", action="append", metavar="TOPIC", help="only these topics (repeatable)")
    out = parser.add_argument_group("output")
    out.add_argument("--output", choices=["table", "json"], default="table")
    out.add_argument("--watch", type=positive(float), metavar="SECONDS", help="sample again every SECONDS")
    out.add_argument("--count", type=_count, metavar="N", help="stop after N samples (with --watch)")
    parser.set_defaults(handler=run_lag)
