"""What an outsider can do to the HTTPS listener before authentication, and the limits that stop it.

The API port is reachable by anyone who can reach the pod, and TLS, request parsing and the
401 all happen before we know who is calling. aiohttp's defaults leave a connection that completes
the handshake and then sends nothing, or half a request, open for an hour, and log every malformed
request at error level with the sender's bytes. kube-apiserver bounds the same things
(``k8s.io/apiserver`` ``pkg/server/secure_serving.go`` ``Serve``, v0.35.4: ``ReadHeaderTimeout``
32 s, ``IdleTimeout`` 90 s, ``MaxHeaderBytes`` 1 MiB); lagscaler does likewise:

* **TLS handshake**: at most ``header_timeout`` (asyncio's ``ssl_handshake_timeout``);
* **first request**: a connection that has not completed a request ``header_timeout`` after it
  was established is closed (Go's ReadHeaderTimeout also starts at accept);
* **idle keep-alive**: closed ``idle_timeout`` after its last response (aiohttp's
  ``keepalive_timeout``, which also bounds a half-sent later request);
* **open connections**: at most ``max_connections``; past that the connection idle the longest
  is closed (never one whose request is being answered), so a flood of idle connections costs the
  attacker their own connections, not a real client's new one;
* **malformed requests**: logged once in a while, briefly, at info level, and counted
  (``lagscaler_api_malformed_requests_total``); requests refused for lack of credentials (401) are
  throttled the same way in the app (counted in ``lagscaler_api_auth_failures_total``).

Headers are bounded by aiohttp's parser (8190 bytes a line, 128 headers) and bodies by the app's
``client_max_size``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from lagscaler.edges.observability import ServiceMetrics
from lagscaler.logs import get_logger

__all__ = ["ConnectionGuard", "ConnectionLimits", "GuardedSite", "LogThrottle", "MalformedRequestLog"]

_log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """How long and how many; the defaults are kube-apiserver's where it has one."""

    header_timeout: float = 32.0
    idle_timeout: float = 90.0
    max_connections: int = 512

    def __post_init__(self) -> None:
        if self.header_timeout <= 0 or self.idle_timeout <= 0:
            raise ValueError("connection timeouts must be positive")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")


@dataclass
class _Connection:
    opened: float
    last_activity: float
    busy: int = 0
    completed: int = 0


@dataclass
class ConnectionGuard:
    """Tracks each established connection's activity and closes those past a limit.

    :meth:`middleware` sees every request (so a connection being answered is never closed);
    :meth:`sweep` runs every ``tick`` seconds against the server's connections.
    """

    limits: ConnectionLimits
    metrics: ServiceMetrics | None = None
    clock: Callable[[], float] = time.monotonic
    _connections: dict[object, _Connection] = field(default_factory=dict)
    closed: dict[str, int] = field(default_factory=dict)

    @property
    def tick(self) -> float:
        return min(1.0, self.limits.header_timeout / 4, self.limits.idle_timeout / 4)

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        transport = request.transport
        if transport is None:  # pragma: no cover - aiohttp always has one while handling
            return cast(web.StreamResponse, await handler(request))
        now = self.clock()
        state = self._connections.setdefault(transport, _Connection(now, now))
        state.busy += 1
        try:
            return cast(web.StreamResponse, await handler(request))
        finally:
            state.busy -= 1
            state.completed += 1
            state.last_activity = self.clock()

    def _close(self, handler: web.RequestHandler, reason: str) -> None:
        handler.force_close()
        self.closed[reason] = self.closed.get(reason, 0) + 1
        if self.metrics is not None:
            self.metrics.api_connections_closed.labels(reason).inc()

    def sweep(self, server: web.Server) -> None:
        """Close connections past the first-request deadline, then the longest idle past the cap."""
        now = self.clock()
        live: dict[object, tuple[web.RequestHandler, _Connection]] = {}
        for handler in server.connections:
            transport = handler.transport
            if transport is None or transport.is_closing():
                continue
            state = self._connections.setdefault(transport, _Connection(now, now))
            if state.busy == 0 and state.completed == 0 and now - state.opened > self.limits.header_timeout:
                self._close(handler, "header-timeout")
                continue
            live[transport] = (handler, state)
        self._connections = {transport: state for transport, (_, state) in live.items()}
        excess = len(live) - self.limits.max_connections
        if excess > 0:
            idle = sorted(
                (pair for pair in live.values() if pair[1].busy == 0), key=lambda p: p[1].last_activity
            )
            for handler, _ in idle[:excess]:
                self._close(handler, "over-limit")

    async def run(self, server: web.Server) -> None:
        """Sweep until cancelled."""
        while True:
            await asyncio.sleep(self.tick)
            self.sweep(server)


class GuardedSite(web.BaseSite):
    """``web.SockSite`` plus a TLS handshake timeout (aiohttp's sites do not pass one to asyncio)."""

    __slots__ = ("_handshake_timeout", "_sock")

    def __init__(
        self,
        runner: web.BaseRunner,
        sock: socket.socket,
        *,
        ssl_context: ssl.SSLContext,
        handshake_timeout: float,
        backlog: int = 128,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._sock = sock
        self._handshake_timeout = handshake_timeout

    @property
    def name(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"https://{host}:{port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._server = await loop.create_server(
            server,
            sock=self._sock,
            ssl=self._ssl_context,
            backlog=self._backlog,
            ssl_handshake_timeout=self._handshake_timeout,
        )


class LogThrottle:
    """At most one event per ``interval`` seconds for things anyone can cause; counts what it held back."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._next = 0.0
        self.suppressed = 0

    def allow(self) -> int | None:
        """``None`` to stay quiet, else how many events were held back since the last one logged."""
        now = self._clock()
        if now < self._next:
            self.suppressed += 1
            return None
        self._next = now + self._interval
        suppressed, self.suppressed = self.suppressed, 0
        return suppressed


class MalformedRequestLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The logger aiohttp's request handler reports to, with malformed requests made harmless.

    aiohttp logs a request it cannot parse with ``logger.exception`` (error level, traceback, the
    offending bytes). Here such a request is counted and logged at info level as a short
    ``malformed request`` event, at most one every ``interval`` seconds, saying how many were
    suppressed in between; anything else (a real bug) passes through to ``logger`` unchanged.
    """

    def __init__(
        self,
        logger: logging.Logger,
        metrics: ServiceMetrics | None = None,
        *,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(logger, {})
        self._metrics = metrics
        self._throttle = LogThrottle(interval, clock)
        self.count = 0

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return msg, kwargs

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if not isinstance(exc_info, HttpProcessingError):
            self.logger.error(msg, *args, exc_info=exc_info, **kwargs)
            return
        self.count += 1
        if self._metrics is not None:
            self._metrics.api_malformed_requests.inc()
        suppressed = self._throttle.allow()
        if suppressed is None:
            return
        detail = str(exc_info.message if exc_info.message else exc_info).splitlines()[0][:120]
        _log.info(
            "malformed request",
            peer=str(args[0]) if args else "?",
            status=exc_info.code,
            detail=detail,
            suppressed=suppressed,
        )

    def debug(self, msg: object, *args: object, exc_info: Any = None, **kwargs: Any) -> None:
        # aiohttp's debug lines (non-HTTP bytes on the port, disconnects) carry no traceback here.
        if isinstance(exc_info, HttpProcessingError):
            self.exception(msg, *args, exc_info=exc_info)
            return
        self.logger.debug(msg, *args, **kwargs)
