"""``lagscaler serve``: sample Kafka, decide, and serve the external metrics API to the HPA.

Every setting is a field of one typed object, :class:`ServeOptions` (the service's own settings, the
Kafka connection and the API server), and may come from three places. Precedence, highest first:

1. a flag: ``--bootstrap-server kafka:9092``;
2. an environment variable, ``LAGSCALER_`` + the setting in upper snake case:
   ``LAGSCALER_BOOTSTRAP_SERVER``;
3. the YAML config file named by ``--config`` (or ``$LAGSCALER_CONFIG``), whose keys are the flag
   names without dashes: ``bootstrap-server: kafka:9092``;
4. the default.

Each value is validated by its field's type whatever its source, and an error names the source:
``$LAGSCALER_SECURE_PORT: secure-port: expected a number, got 'https'``. With ``--log-level
debug`` the service logs which source set each setting (names only: values may be secrets).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BeforeValidator, Field

from lagscaler.cli.lag import KafkaOptions, add_kafka_arguments
from lagscaler.core.handover.protocol import DEFAULT_CONTROL_TOPIC
from lagscaler.core.policy.model import MAX_SECONDS
from lagscaler.edges.api.settings import ApiOptions, add_api_arguments
from lagscaler.edges.handover.leader import DEFAULT_LEASE_NAME
from lagscaler.errors import UserError
from lagscaler.options import (
    Given,
    Options,
    UserPath,
    add_flags,
    annotate,
    build,
    env_var,
    from_environment,
    from_file,
    from_flags,
    log_sources,
    merge,
)

if TYPE_CHECKING:
    from lagscaler.service.handover import HandoverBackend

ENV_PREFIX = "LAGSCALER_"
CONFIG_ENV = "LAGSCALER_CONFIG"


class ServiceOptions(Options):
    """What the service does: where its policies are, how often it samples, how it logs."""

    policy_dir: Annotated[UserPath, Field(json_schema_extra={"metavar": "DIR"})]
    """Directory of policy files (reloaded when they change)."""
    sample_interval: Annotated[
        float, Field(gt=0, le=MAX_SECONDS, json_schema_extra={"metavar": "SECONDS"})
    ] = 10.0
    """Seconds between cycles."""
    history: Annotated[int, Field(ge=1, json_schema_extra={"metavar": "SAMPLES"})] = 120
    """Samples kept per partition."""
    state_file: Annotated[UserPath | None, Field(json_schema_extra={"metavar": "FILE"})] = None
    """Keep the engine's learned state (capacity, windows, dwell timers) here across restarts; put it
    on a volume that outlives the pod."""
    log_format: Literal["auto", "json", "console"] = "auto"
    """auto: JSON when not on a terminal."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """debug also says which source set each setting."""


def _commands(value: object) -> object:
    """``ns/a=CMD; ns/b=CMD`` (a flag or a variable) or a YAML list -> a tuple of ``ns/name=CMD``."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(";") if part.strip())
    return value


class HandoverOptions(Options):
    """Run mode: handover policies (docs/handover.md): local processes, or a Deployment per generation."""

    handover_backend: Literal["local", "kubernetes"] | None = None
    """What runs the generations: local processes (--handover-state-dir, --handover-command) or
    Kubernetes Deployments cloned from each policy's scaleTargetRef. Default: local when
    --handover-state-dir is given, else no handover."""
    handover_state_dir: Annotated[UserPath | None, Field(json_schema_extra={"metavar": "DIR"})] = None
    """local: worker pid files and logs, and the leader lock, live here."""
    handover_command: Annotated[
        tuple[str, ...],
        BeforeValidator(_commands),
        Field(json_schema_extra={"metavar": "NAMESPACE/NAME=COMMAND[;...]"}),
    ] = ()
    """local: the worker command of each handover workload; several separated by ';' (a list in the file)."""
    handover_kubeconfig: Annotated[UserPath | None, Field(json_schema_extra={"metavar": "FILE"})] = None
    """kubernetes: how to reach the API server (default: the pod's service account)."""
    handover_lease_namespace: Annotated[
        str | None, Field(min_length=1, json_schema_extra={"metavar": "NAMESPACE"})
    ] = None
    """kubernetes: the namespace of the leader Lease (default: the pod's own namespace)."""
    handover_lease_name: Annotated[str, Field(min_length=1, json_schema_extra={"metavar": "NAME"})] = (
        DEFAULT_LEASE_NAME
    )
    """kubernetes: the leader Lease; every serve replica that shares it runs handovers one at a time."""
    # Kafka's rule for topic names (``org.apache.kafka.common.internals.Topic.validate``): refused
    # here rather than when the first handover creates the topic.
    handover_control_topic: Annotated[
        str, Field(max_length=249, pattern=r"^[A-Za-z0-9._-]+$", json_schema_extra={"metavar": "TOPIC"})
    ] = DEFAULT_CONTROL_TOPIC
    """The compacted control topic (created if missing)."""
    handover_warmup_timeout: Annotated[
        float, Field(gt=0, le=MAX_SECONDS, json_schema_extra={"metavar": "SECONDS"})
    ] = 120.0
    """Abort a handover whose new generation is not warm by then. A workload whose policy states its
    state size (stateful.stateBytes) gets at least twice the warm-up its policy implies; one whose state
    is measured from a changelog topic relies on this value."""
    handover_fence_timeout: Annotated[
        float, Field(gt=0, le=MAX_SECONDS, json_schema_extra={"metavar": "SECONDS"})
    ] = 5.0
    """Kill an old worker that has not stopped by then."""
    handover_verify_timeout: Annotated[
        float, Field(gt=0, le=MAX_SECONDS, json_schema_extra={"metavar": "SECONDS"})
    ] = 120.0
    """Revert a handover (the old generation serves again) when the new one has made no progress past
    the cut by then (at least the warm-up its policy implies, so a stateful catch-up is not taken for a
    hang)."""
    handover_revert_backoff: Annotated[
        float, Field(gt=0, le=MAX_SECONDS, json_schema_extra={"metavar": "SECONDS"})
    ] = 60.0
    """After a reverted handover, start no new handover of that workload for this long, doubled per
    revert in a row (at most 64 times)."""
    handover_unschedulable_grace: Annotated[
        float, Field(gt=0, le=MAX_SECONDS, json_schema_extra={"metavar": "SECONDS"})
    ] = 300.0
    """Give a new generation up (abort it, or revert while it is verified) once one of its pods has
    found no node for this long. Longer than the next: a cluster autoscaler may add a node meanwhile."""
    handover_failing_grace: Annotated[
        float, Field(gt=0, le=MAX_SECONDS, json_schema_extra={"metavar": "SECONDS"})
    ] = 30.0
    """Give a new generation up once one of its workers has been unable to start for this long: an image
    that cannot be pulled, a missing Secret or ConfigMap, a crash loop (a local worker that exits as it
    starts), pods the API server refuses to create (a ResourceQuota, a LimitRange, PodSecurity)."""


class ServeOptions(ServiceOptions, HandoverOptions, KafkaOptions, ApiOptions):
    """Every setting of ``lagscaler serve``."""


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of :class:`ServeOptions`; a flag not given leaves room for the other sources."""
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"YAML file of settings (keys: flag names; or ${CONFIG_ENV})",
    )
    add_flags(parser.add_argument_group("service"), ServiceOptions, given_only=True)
    add_flags(
        parser.add_argument_group("handover", HandoverOptions.__doc__), HandoverOptions, given_only=True
    )
    add_kafka_arguments(parser, given_only=True)
    add_api_arguments(parser, given_only=True)
    return parser


def _missing(name: str) -> str:
    key = name.replace("_", "-")
    return f"give --{key}, ${env_var(ENV_PREFIX, name)} or '{key}:' in the --config file"


def serve_options(
    args: argparse.Namespace, environ: Mapping[str, str]
) -> tuple[ServeOptions, dict[str, Given]]:
    """The settings from flags, environment and config file, by the precedence in this module's docstring."""
    config = (
        args.config
        if args.config is not None
        else (Path(environ[CONFIG_ENV]) if environ.get(CONFIG_ENV) else None)
    )
    sources = [
        from_flags(args, ServeOptions),
        from_environment(environ, ENV_PREFIX, ServeOptions),
        from_file(config, ServeOptions) if config is not None else {},
    ]
    given = merge(sources)
    return build(ServeOptions, given, missing_hint=_missing), given


def run_serve(args: argparse.Namespace) -> int:
    from lagscaler.cli.lag import kafka_settings_from_args  # noqa: PLC0415
    from lagscaler.edges.api import api_settings_from_args  # noqa: PLC0415 - keep `lagscaler --help` fast
    from lagscaler.edges.observability import configure_logging  # noqa: PLC0415
    from lagscaler.service.run import ServeSettings, serve_forever  # noqa: PLC0415

    options, given = serve_options(args, os.environ)
    try:
        settings = ServeSettings(
            kafka=kafka_settings_from_args(options),
            policy_dir=options.policy_dir,
            api=api_settings_from_args(options),
            interval=options.sample_interval,
            history=options.history,
            state_file=options.state_file,
            handover=handover_from_options(options),
        )
    except UserError as exc:  # a rule across settings: say where each one it names came from
        raise annotate(exc, given) from None
    configure_logging(options.log_level, options.log_format)
    log_sources(given)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve_forever(settings, stop)

    asyncio.run(main())
    return 0


def handover_from_options(options: HandoverOptions) -> HandoverBackend | None:
    from lagscaler.edges.handover import HandoverSettings  # noqa: PLC0415 - keep `lagscaler --help` fast
    from lagscaler.service.handover import (  # noqa: PLC0415
        KubernetesHandover,
        LocalHandover,
        parse_commands,
    )

    commands = parse_commands(options.handover_command)
    backend = options.handover_backend or ("local" if options.handover_state_dir is not None else None)
    if backend is None and commands:
        raise UserError("--handover-command needs --handover-state-dir (where the workers are tracked)")
    local_only = [
        flag
        for flag, value in (
            ("--handover-state-dir", options.handover_state_dir),
            ("--handover-command", commands),
        )
        if value
    ]
    if backend == "kubernetes" and local_only:
        raise UserError(f"{' and '.join(local_only)} belong to --handover-backend local, not kubernetes")
    if backend != "kubernetes" and options.handover_kubeconfig is not None:
        raise UserError("--handover-kubeconfig belongs to --handover-backend kubernetes")
    if backend is None:
        return None
    if options.handover_control_topic in (".", ".."):  # the rest of Kafka's rule is the option's pattern
        raise UserError(f"--handover-control-topic: {options.handover_control_topic!r} is not a topic name")
    timeouts = HandoverSettings(
        control_topic=options.handover_control_topic,
        warmup_timeout=options.handover_warmup_timeout,
        fence_timeout=options.handover_fence_timeout,
        verify_timeout=options.handover_verify_timeout,
        revert_backoff=options.handover_revert_backoff,
        unschedulable_grace=options.handover_unschedulable_grace,
        failing_grace=options.handover_failing_grace,
    )
    if backend == "local":
        if options.handover_state_dir is None:
            raise UserError(
                "--handover-backend local needs --handover-state-dir (where the workers are tracked)"
            )
        return LocalHandover(options.handover_state_dir, commands, timeouts)
    namespace = options.handover_lease_namespace or _pod_namespace()
    if namespace is None:
        raise UserError(
            "--handover-backend kubernetes needs --handover-lease-namespace outside a pod (where its leader"
            " Lease lives)"
        )
    return KubernetesHandover(
        lease_namespace=namespace,
        lease_name=options.handover_lease_name,
        kubeconfig=options.handover_kubeconfig,
        settings=timeouts,
    )


def _pod_namespace() -> str | None:
    """The namespace of the pod this runs in (the service account's mount says), or None."""
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the service: sample Kafka, decide, serve external.metrics.k8s.io to the HPA",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    build_parser(parser)
    parser.set_defaults(handler=run_serve)
