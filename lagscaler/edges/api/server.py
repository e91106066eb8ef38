"""Assemble and run the API: delegated authentication/authorization, TLS, the HTTPS and metrics listeners.

The service composition calls :func:`running_api` (everything, as a context manager) or, for finer
control, :func:`delegated_auth` + :func:`create_app` + :func:`serve_https`. Background work
(ConfigMap watch, CA and certificate file checks) runs as ``cleanup_ctx`` lifetimes of the app, so
it starts and stops with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast

from aiohttp import web

from lagscaler.edges.api.app import Lifetime, create_app
from lagscaler.edges.api.authn import AuthenticationFlags, AuthenticationSource, Authenticator
from lagscaler.edges.api.authz import Authorizer
from lagscaler.edges.api.cache import MetricsCache
from lagscaler.edges.api.connections import (
    ConnectionGuard,
    ConnectionLimits,
    GuardedSite,
    MalformedRequestLog,
)
from lagscaler.edges.api.health import HealthChecks
from lagscaler.edges.api.settings import ApiSettings
from lagscaler.edges.api.tls import ServingTLS
from lagscaler.edges.kube import (
    ExtensionAuthenticationWatcher,
    KubeAccessReviewer,
    KubeTokenReviewer,
    in_cluster,
    kube_api_client,
)
from lagscaler.edges.observability import ServiceMetrics, metrics_app
from lagscaler.errors import UserError
from lagscaler.logs import get_logger

__all__ = ["DelegatedAuth", "RunningApi", "delegated_auth", "running_api", "serve_https"]

_log = get_logger(__name__)


@dataclass
class DelegatedAuth:
    """Authentication and authorization as wired from settings, plus the lifetimes they need."""

    source: AuthenticationSource
    authenticator: Authenticator
    authorizer: Authorizer
    lifetimes: list[Lifetime] = field(default_factory=list)


def _ignore(_: object) -> None:
    """Adapt a function that reports whether it changed something to a plain callback."""


def _flags(settings: ApiSettings) -> AuthenticationFlags:
    return AuthenticationFlags(
        client_ca_file=settings.client_ca_file,
        requestheader_client_ca_file=settings.requestheader_client_ca_file,
        requestheader_allowed_names=settings.requestheader_allowed_names,
        requestheader_username_headers=settings.requestheader_username_headers,
        requestheader_uid_headers=settings.requestheader_uid_headers,
        requestheader_group_headers=settings.requestheader_group_headers,
        requestheader_extra_headers_prefix=settings.requestheader_extra_headers_prefix,
    )


def _periodic(name: str, interval: float, step: object) -> Lifetime:
    async def lifetime(_: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    step()  # type: ignore[operator]
                except Exception:  # a bad file must not stop the checks
                    _log.exception("periodic check failed", check=name)

        task = asyncio.create_task(loop(), name=name)
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return lifetime


@contextlib.asynccontextmanager
async def delegated_auth(settings: ApiSettings, metrics: ServiceMetrics) -> AsyncIterator[DelegatedAuth]:
    """Build the authenticator and authorizer from settings (kube clients live as long as this)."""
    source = AuthenticationSource(_flags(settings))
    async with contextlib.AsyncExitStack() as stack:
        authn_client = await kube_api_client(settings.authentication_kubeconfig)
        if authn_client is not None:
            stack.push_async_callback(authn_client.close)
        if settings.authorization_kubeconfig == settings.authentication_kubeconfig:
            authz_client = authn_client
        else:
            authz_client = await kube_api_client(settings.authorization_kubeconfig)
            if authz_client is not None:
                stack.push_async_callback(authz_client.close)
        lifetimes: list[Lifetime] = [
            _periodic("ca-file-check", settings.file_check_seconds, source.reload_files)
        ]
        if authn_client is not None and not settings.authentication_skip_lookup:
            watcher = ExtensionAuthenticationWatcher(
                authn_client, lambda value: _ignore(source.apply_configmap(value))
            )
            try:  # the first version before serving, as the apiserver does; later ones by watch
                first, _ = await watcher.fetch()
                source.apply_configmap(first)
            except (OSError, ValueError) as exc:
                _log.warning(
                    "cannot read the authentication ConfigMap yet",
                    configmap="kube-system/extension-apiserver-authentication",
                    error=str(exc),
                )

            async def watch_configmap(_: web.Application) -> AsyncIterator[None]:
                task = asyncio.create_task(watcher.run(), name="extension-apiserver-authentication watch")
                yield
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

            lifetimes.append(watch_configmap)
        token_reviewer = KubeTokenReviewer(authn_client) if authn_client is not None else None
        access_reviewer = KubeAccessReviewer(authz_client) if authz_client is not None else None
        if settings.authorization_always_allow:
            _log.warning(
                "!!! --authorization-always-allow: EVERY AUTHENTICATED CALLER MAY READ EVERY METRIC. "
                "LOCAL USE ONLY !!!"
            )
        elif access_reviewer is None:
            _log.warning(
                "no --authorization-kubeconfig and not in a cluster: only system:masters will be authorized"
            )
        config = source.config
        if config.requestheader is None and not config.client_ca_certs and token_reviewer is None:
            _log.warning(
                "no authentication source (requestheader CA, client CA, TokenReview): "
                "every request except the health paths will get 401"
            )
        authenticator = Authenticator(
            source,
            token_reviewer,
            metrics=metrics,
            token_ttl_seconds=settings.authentication_token_webhook_cache_ttl,
        )
        authorizer = Authorizer(
            access_reviewer,
            always_allow=settings.authorization_always_allow,
            metrics=metrics,
            allowed_ttl_seconds=settings.authorization_webhook_cache_authorized_ttl,
            denied_ttl_seconds=settings.authorization_webhook_cache_unauthorized_ttl,
        )
        yield DelegatedAuth(source, authenticator, authorizer, lifetimes)


def _listener(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


@dataclass(frozen=True, slots=True)
class Endpoints:
    https_port: int
    metrics_port: int | None
    guard: ConnectionGuard


@contextlib.asynccontextmanager
async def serve_https(
    app: web.Application,
    settings: ApiSettings,
    tls: ServingTLS,
    *,
    metrics: ServiceMetrics | None = None,
    limits: ConnectionLimits | None = None,
) -> AsyncIterator[Endpoints]:
    """Serve ``app`` over HTTPS (and ``metrics`` over plain HTTP) until the block exits.

    The HTTPS listener enforces ``limits`` (see :mod:`lagscaler.edges.api.connections`): handshake and
    first-request deadlines, idle keep-alive, a connection cap, and quiet logging of malformed
    requests. It adds its request-tracking middleware to ``app``, which must not be running yet.
    The metrics listener gets the same limits but the handshake's: it is as reachable (0.0.0.0 by
    default), and connections held open there cost the same file descriptors.
    """
    limits = limits or ConnectionLimits()
    guard = ConnectionGuard(limits, metrics)
    app.middlewares.insert(0, guard.middleware)
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=2.0,
        handle_signals=False,
        keepalive_timeout=limits.idle_timeout,
        logger=cast(
            logging.Logger, MalformedRequestLog(logging.getLogger("lagscaler.edges.api.requests"), metrics)
        ),
    )
    await runner.setup()
    metrics_runner: web.AppRunner | None = None
    sweepers: list[asyncio.Task[None]] = []
    try:
        sock = _listener(settings.bind_address, settings.secure_port)
        await GuardedSite(runner, sock, ssl_context=tls.base, handshake_timeout=limits.header_timeout).start()
        assert runner.server is not None
        sweepers.append(asyncio.create_task(guard.run(runner.server), name="https connection guard"))
        metrics_port: int | None = None
        if metrics is not None and settings.metrics_port >= 0:
            metrics_guard = ConnectionGuard(limits, metrics)
            scrape = metrics_app(metrics)
            scrape.middlewares.insert(0, metrics_guard.middleware)
            metrics_runner = web.AppRunner(
                scrape,
                access_log=None,
                handle_signals=False,
                keepalive_timeout=limits.idle_timeout,
                logger=cast(
                    logging.Logger,
                    MalformedRequestLog(logging.getLogger("lagscaler.edges.observability.requests"), metrics),
                ),
            )
            await metrics_runner.setup()
            msock = _listener(settings.metrics_bind_address, settings.metrics_port)
            await web.SockSite(metrics_runner, msock).start()
            assert metrics_runner.server is not None
            sweepers.append(
                asyncio.create_task(metrics_guard.run(metrics_runner.server), name="metrics connection guard")
            )
            metrics_port = msock.getsockname()[1]
        yield Endpoints(sock.getsockname()[1], metrics_port, guard)
    finally:
        for sweeper in sweepers:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await runner.cleanup()


@dataclass(frozen=True, slots=True)
class RunningApi:
    """A running API server: where it listens and the parts a caller may poke."""

    url: str  # https://host:port
    metrics_url: str | None  # http://host:port/metrics
    tls: ServingTLS
    auth: DelegatedAuth
    app: web.Application
    guard: ConnectionGuard


def _dialable(host: str) -> str:
    """An address a local client can connect to for a listener bound to ``host``."""
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1" if host == "0.0.0.0" else "[::1]"
    return f"[{host}]" if ":" in host else host


@contextlib.asynccontextmanager
async def running_api(
    settings: ApiSettings,
    cache: MetricsCache,
    *,
    readiness: HealthChecks | None = None,
    liveness: HealthChecks | None = None,
    metrics: ServiceMetrics | None = None,
    limits: ConnectionLimits | None = None,
) -> AsyncIterator[RunningApi]:
    """Everything: delegated auth from settings, TLS (reloading), the app and both listeners."""
    metrics = metrics or ServiceMetrics()
    if in_cluster() and settings.authorization_always_allow:
        _log.warning("--authorization-always-allow inside a cluster: anyone with a client cert reads all")
    async with delegated_auth(settings, metrics) as auth:
        tls = ServingTLS(
            settings.tls_cert_file,
            settings.tls_private_key_file,
            auth.source.trusted_client_cas,
            self_signed_hosts=settings.self_signed_hosts,
            metrics=metrics,
        )
        try:
            auth.source.subscribe(lambda _: _ignore(tls.rebuild("client CAs changed")))
            lifetimes = [
                *auth.lifetimes,
                _periodic("tls-file-check", settings.file_check_seconds, tls.reload_if_changed),
            ]
            app = create_app(
                cache,
                auth.authenticator,
                auth.authorizer,
                readiness or HealthChecks(),
                metrics,
                liveness=liveness,
                lifetimes=lifetimes,
            )
            async with serve_https(app, settings, tls, metrics=metrics, limits=limits) as endpoints:
                shown = _dialable(settings.bind_address)
                metrics_url = None
                if endpoints.metrics_port is not None:
                    metrics_url = (
                        f"http://{_dialable(settings.metrics_bind_address)}:{endpoints.metrics_port}/metrics"
                    )
                _log.info("external metrics API serving", url=f"https://{shown}:{endpoints.https_port}")
                yield RunningApi(
                    f"https://{shown}:{endpoints.https_port}", metrics_url, tls, auth, app, endpoints.guard
                )
        finally:
            tls.close()
