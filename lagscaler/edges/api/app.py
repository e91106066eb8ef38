"""The aiohttp application: discovery, metric values, health, OpenAPI; authentication and authorization.

Wire format follows what the aggregator and the HPA's client expect (k8s.io/metrics
``pkg/apis/external_metrics/v1beta1/types.go``, ``ExternalMetricValueList``): JSON bodies,
Kubernetes ``Status`` objects for every error, canonical quantities, RFC 3339 timestamps.

Choices worth knowing:

- **No matching item is a 404, not an empty list.** The HPA treats an empty ``items`` list as an
  error anyway ("no metrics returned from external metrics API") and freezes; a ``NotFound`` Status
  carries a message that says which namespace, metric and selector matched nothing, and that message
  is what ``kubectl describe hpa`` shows in the ``FailedGetExternalMetric`` event.
- **Stale data the policy gives no value for is a 503** (``ServiceUnavailable``: its
  ``fallback.action`` is ``error``, or its fallback does not cover the metric) for the whole request
  if *any* matched workload is stale: the HPA sums items, so a partial answer would under-count and
  scale down by mistake. An error freezes scaling instead. The message says how old the sample is
  with enough decimals to be visibly over the limit. It carries **no** ``Retry-After``: client-go
  (the HPA's client) retries a 5xx that has one up to 10 times (``rest/with_retry.go``
  ``IsNextRetry``, v0.35.4), which held the real controller's sync for ~50 s per HPA and kept
  ``FailedGetExternalMetric`` out of its status (found on the control-plane tier).
- **Content negotiation**: JSON is answered to clients that accept JSON, ``*/*``, or Kubernetes
  protobuf (client-go decodes whatever content type the answer declares, and the HPA's client asks
  for protobuf first); anything else gets 406.
- **Unexpected exceptions** become a ``Status`` 500 and a log line with the traceback; bad input of any
  kind must never get there (the fuzz tests assert it).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from importlib import resources
from typing import Any

from aiohttp import web

from lagscaler.core.hpa.served import SERVED_METRICS
from lagscaler.core.quantity import format_quantity
from lagscaler.edges.api.authn import AuthenticationFailed, Authenticator
from lagscaler.edges.api.authz import Authorizer, request_attributes
from lagscaler.edges.api.cache import MetricsCache, WorkloadMetrics
from lagscaler.edges.api.connections import LogThrottle
from lagscaler.edges.api.health import HealthChecks
from lagscaler.edges.api.selector import Selector, SelectorError, parse_selector
from lagscaler.edges.kube import KubeReviewError
from lagscaler.edges.observability import METRICS_KEY, ServiceMetrics
from lagscaler.logs import get_logger

__all__ = [
    "AUTHENTICATOR_KEY",
    "AUTHORIZER_KEY",
    "CACHE_KEY",
    "GROUP",
    "GROUP_VERSION",
    "LIVENESS_KEY",
    "READINESS_KEY",
    "VERSION",
    "Lifetime",
    "create_app",
    "load_openapi",
]

GROUP = "external.metrics.k8s.io"
VERSION = "v1beta1"
GROUP_VERSION = f"{GROUP}/{VERSION}"
_GV_PATH = f"/apis/{GROUP_VERSION}"
HEALTH_PATHS = ("/healthz", "/livez", "/readyz")

_log = get_logger(__name__)

CACHE_KEY = web.AppKey("cache", MetricsCache)
AUTHENTICATOR_KEY = web.AppKey("authenticator", Authenticator)
AUTHORIZER_KEY = web.AppKey("authorizer", Authorizer)
READINESS_KEY = web.AppKey("readiness", HealthChecks)
LIVENESS_KEY = web.AppKey("liveness", HealthChecks)
_OPENAPI_KEY = web.AppKey("openapi", dict)
_UNAUTHORIZED_LOG = web.AppKey("unauthorized_log", LogThrottle)

Lifetime = Callable[[web.Application], AsyncIterator[None]]

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    500: "InternalError",
    503: "ServiceUnavailable",
}


def _dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def status_response(
    code: int,
    message: str,
    *,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """A Kubernetes ``Status`` (``kind: Status``, ``apiVersion: v1``) with the HTTP code."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": _REASONS.get(code, "Unknown"),
        "code": code,
    }
    if details:
        body["details"] = details
    return web.Response(body=_dumps(body), status=code, content_type="application/json", headers=headers)


def _json(body: Any, *, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=_dumps(body), content_type="application/json", headers=headers)


_ACCEPTABLE = frozenset(
    {
        "application/json",
        "application/*",
        "*/*",
        "application/vnd.kubernetes.protobuf",
        "application/yaml+json",
    }
)


def _negotiate(request: web.Request) -> web.Response | None:
    accept = request.headers.get("Accept", "")
    if _json_acceptable(accept):
        return None
    return status_response(406, f"only application/json is served; Accept was {accept[:200]!r}")


@functools.lru_cache(maxsize=256)
def _json_acceptable(accept: str) -> bool:
    """Whether an Accept header admits our JSON (memoized: clients send the same header every time)."""
    if not accept.strip():
        return True
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        if media.strip().lower() in _ACCEPTABLE and "q=0" not in params.replace(" ", "").split(";"):
            return True
    return False


@functools.lru_cache(maxsize=1024)
def _parse_selector_cached(text: str) -> Selector:
    """The HPA sends the same few selectors every sync: parse each once (errors are not cached)."""
    return parse_selector(text)


@functools.lru_cache(maxsize=4096)
def _rfc3339(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------- discovery

_GROUP_VERSION_FOR_DISCOVERY = {"groupVersion": GROUP_VERSION, "version": VERSION}
_API_GROUP = {
    "name": GROUP,
    "versions": [_GROUP_VERSION_FOR_DISCOVERY],
    "preferredVersion": _GROUP_VERSION_FOR_DISCOVERY,
}


async def _api_group_list(request: web.Request) -> web.Response:
    return _negotiate(request) or _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": [_API_GROUP]})


async def _api_group(request: web.Request) -> web.Response:
    return _negotiate(request) or _json({"kind": "APIGroup", "apiVersion": "v1", **_API_GROUP})


_RESOURCE_LIST = {
    "kind": "APIResourceList",
    "apiVersion": "v1",
    "groupVersion": GROUP_VERSION,
    "resources": [
        {
            "name": metric,
            "singularName": "",
            "namespaced": True,
            "kind": "ExternalMetricValueList",
            "verbs": ["get"],
        }
        for metric in SERVED_METRICS
    ],
}


async def _api_resource_list(request: web.Request) -> web.Response:
    return _negotiate(request) or _json(_RESOURCE_LIST)


# ------------------------------------------------------------------------------------ metric values


class _Answers:
    """Rendered answers for the current snapshot: the HPA repeats the same request every sync.

    An entry is valid until the snapshot changes or a workload in it turns stale, so a memoized
    answer is always the answer that would be computed now.
    """

    _MAX = 1024

    def __init__(self) -> None:
        self.snapshot: object = None
        self.entries: dict[tuple[str, str, str], tuple[bytes, float]] = {}

    def reset(self, snapshot: object) -> None:
        self.snapshot = snapshot
        self.entries = {}

    def remember(self, key: tuple[str, str, str], body: bytes, valid_until: float) -> None:
        if len(self.entries) >= self._MAX:
            self.entries.clear()
        self.entries[key] = (body, valid_until)


_ANSWERS_KEY = web.AppKey("answers", _Answers)


async def _metric_values(request: web.Request) -> web.Response:
    if (refusal := _negotiate(request)) is not None:
        return refusal
    namespace = request.match_info["namespace"]
    metric = request.match_info["metric"]
    details = {"group": GROUP, "kind": metric}
    if request.query.get("watch", "").lower() not in ("", "false", "0"):
        return status_response(405, "watch is not supported for external metrics", details=details)
    if metric not in SERVED_METRICS:
        return status_response(
            404,
            f'external metric "{metric}" is not served by lagscaler (served: {", ".join(SERVED_METRICS)})',
            details=details,
        )
    selector_text = request.query.get("labelSelector", "")
    try:
        selector = _parse_selector_cached(selector_text)
    except SelectorError as exc:
        return status_response(400, f"invalid labelSelector {selector_text[:200]!r}: {exc}", details=details)
    cache = request.app[CACHE_KEY]
    snapshot = cache.snapshot
    now = cache.now()
    answers = request.app[_ANSWERS_KEY]
    key = (namespace, metric, selector_text)
    if answers.snapshot is not snapshot:
        answers.reset(snapshot)
    memo = answers.entries.get(key)
    if memo is not None and now <= memo[1]:
        return web.Response(body=memo[0], content_type="application/json")
    selection = snapshot.select(namespace, metric, selector, now)
    if not selection.namespace_known:
        return status_response(
            404, f'no lagscaler workload in namespace "{namespace}" (metric "{metric}")', details=details
        )
    if selection.unavailable:
        why = "; ".join(_unavailable_reason(w, metric, now) for w in selection.unavailable)
        return status_response(
            503,
            f'external metric "{metric}" is unavailable: {why}',
            details=details,
        )
    if not selection.items:
        return status_response(
            404,
            f'no lagscaler workload in namespace "{namespace}" matches labelSelector '
            f'"{selector}" for metric "{metric}"',
            details=details,
        )
    items = []
    for value, sampled_at in selection.items:
        item: dict[str, Any] = {
            "metricName": metric,
            "metricLabels": dict(value.labels),
            "timestamp": _rfc3339(sampled_at),
            "value": format_quantity(value.value),
        }
        if value.window_seconds is not None:
            item["window"] = value.window_seconds
        items.append(item)
    body = _dumps(
        {"kind": "ExternalMetricValueList", "apiVersion": GROUP_VERSION, "metadata": {}, "items": items}
    )
    answers.remember(key, body, selection.fresh_until)
    return web.Response(body=body, content_type="application/json")


def _age(age: float, limit: float) -> str:
    """``age`` with just enough decimals to show it is over ``limit`` (3.04 s is not "3s", max "3s")."""
    for digits in range(4):
        text = f"{age:.{digits}f}"
        if float(text) > limit:
            return text
    return f"{age:.3f}"


def _unavailable_reason(workload: WorkloadMetrics, metric: str, now: float) -> str:
    """What happened to one stale workload, in the policy's own terms."""
    age = now - workload.sampled_at
    limit = workload.max_age_seconds
    what = (
        f"{workload.namespace}/{workload.name}: last sample {_rfc3339(workload.sampled_at)} is "
        f"{_age(age, limit)}s old, over fallback.maxAgeSeconds={limit:g}"
    )
    if workload.stale_values is None:
        what += ", and the policy's fallback.action is error (the HPA keeps the current replicas)"
    else:
        what += f", and the policy's fallback serves no {metric}"
    return what + (f" ({workload.detail})" if workload.detail else "")


async def _not_found_in_group(request: web.Request) -> web.Response:
    return status_response(404, "the server could not find the requested resource")


# ------------------------------------------------------------------------------------------ health


def _health(key: web.AppKey[HealthChecks], label: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        checks = request.app[key]
        only = request.match_info.get("check")
        results = checks.run(only, exclude=request.query.getall("exclude", []))
        if only is not None and not results:
            return web.Response(status=404, text=f"no {label} check named {only!r}\n")
        failed = any(not result.ok for _, result in results)
        verbose = "verbose" in request.query
        if not failed and not verbose:
            return web.Response(text="ok")
        lines = []
        for name, result in results:
            mark = "+" if result.ok else "-"
            state = "ok" if result.ok else "failed"
            detail = result.detail if (verbose or not result.ok) and result.detail else ""
            lines.append(f"[{mark}]{name} {state}" + (f": {detail}" if detail else ""))
        lines.append(f"{label} check {'failed' if failed else 'passed'}")
        return web.Response(status=503 if failed else 200, text="\n".join(lines) + "\n")

    return handler


# ----------------------------------------------------------------------------------------- OpenAPI


def load_openapi() -> dict[str, Any]:
    """The OpenAPI v3 document of the whole API, shipped as package data."""
    text = resources.files("lagscaler.edges.api").joinpath("openapi.json").read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def _swagger(document: dict[str, Any], paths: dict[str, Any]) -> dict[str, Any]:
    """The same operations as a Swagger 2.0 document, for the aggregator's ``/openapi/v2`` merge.

    Operations, parameters and response descriptions only (no schemas): kube-aggregator
    (``pkg/controllers/openapi/aggregator``, v0.35.4) downloads ``/openapi/v2`` from every APIService
    and logs a warning on each merge for one that answers 404.
    """
    operations: dict[str, Any] = {}
    for path, item in paths.items():
        operations[path] = {
            method: {
                "operationId": operation["operationId"],
                "description": operation.get("summary", ""),
                "produces": ["application/json"],
                "parameters": [
                    {
                        "name": p["name"],
                        "in": p["in"],
                        "required": bool(p.get("required", False)),
                        "type": p.get("schema", {}).get("type", "string"),
                        "description": p.get("description", ""),
                    }
                    for p in operation.get("parameters", [])
                ],
                "responses": {
                    code: {"description": r["description"]} for code, r in operation["responses"].items()
                },
            }
            for method, operation in item.items()
        }
    info = document["info"]
    return {
        "swagger": "2.0",
        "info": {"title": info["title"], "version": info["version"]},
        "paths": operations,
    }


def _openapi_views(document: dict[str, Any]) -> dict[str, Any]:
    """The group-version document the aggregator merges, its hash, the ``/openapi/v3`` index and v2.

    Only ``apis/external.metrics.k8s.io/v1beta1`` is listed: the aggregator copies every key an
    APIService lists into the cluster's index, so listing ``apis`` would shadow kube-apiserver's.
    """
    gv = dict(document)
    gv["paths"] = {path: item for path, item in document["paths"].items() if path.startswith(_GV_PATH)}
    body = _dumps(gv)
    digest = hashlib.sha512(body).hexdigest().upper()
    key = f"apis/{GROUP_VERSION}"
    index = {"paths": {key: {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest}"}}}
    v2 = _dumps(_swagger(document, gv["paths"]))
    v2_etag = hashlib.sha512(v2).hexdigest().upper()
    return {"gv_body": body, "hash": digest, "index": _dumps(index), "v2": v2, "v2_etag": v2_etag}


async def _openapi_index(request: web.Request) -> web.Response:
    return web.Response(body=request.app[_OPENAPI_KEY]["index"], content_type="application/json")


async def _openapi_v2(request: web.Request) -> web.Response:
    views = request.app[_OPENAPI_KEY]
    etag = f'"{views["v2_etag"]}"'
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers={"Etag": etag})
    return web.Response(body=views["v2"], content_type="application/json", headers={"Etag": etag})


async def _openapi_group_version(request: web.Request) -> web.Response:
    views = request.app[_OPENAPI_KEY]
    headers = {"Etag": f'"{views["hash"]}"'}
    if request.query.get("hash") == views["hash"]:
        headers["Cache-Control"] = "public, immutable"
    return web.Response(body=views["gv_body"], content_type="application/json", headers=headers)


# ------------------------------------------------------------------------------------- middlewares


_HEALTH_PREFIXES = tuple(p + "/" for p in HEALTH_PATHS)


def _is_health(path: str) -> bool:
    return path in HEALTH_PATHS or path.startswith(_HEALTH_PREFIXES)


def _peer_certificate(request: web.Request) -> bytes | None:
    transport = request.transport
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return der if isinstance(der, bytes) else None


@web.middleware
async def _auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Authenticate (401), then authorize (403); health paths are open to anonymous callers."""
    if _is_health(request.path):
        return await handler(request)
    app = request.app
    metrics = app[METRICS_KEY]
    try:
        identity = await app[AUTHENTICATOR_KEY].authenticate(_peer_certificate(request), request.headers)
    except AuthenticationFailed as failure:
        metrics.api_auth_failures.labels(failure.reason).inc()
        if (suppressed := app[_UNAUTHORIZED_LOG].allow()) is not None:  # anyone can cause these: throttled
            _log.info(
                "request not authenticated",
                method=request.method,
                path=request.path[:200],
                reason=failure.reason,
                detail=failure.detail,
                suppressed=suppressed,
            )
        return status_response(401, "Unauthorized")
    attributes = request_attributes(request.method, request.path, request.query, identity.user)
    try:
        decision = await app[AUTHORIZER_KEY].authorize(attributes)
    except KubeReviewError as exc:
        metrics.api_auth_failures.labels("authorization-error").inc()
        _log.warning(
            "authorization unavailable", method=request.method, path=request.path[:200], error=str(exc)
        )
        # no Retry-After, as for stale data: the HPA's client would hold its sync retrying
        return status_response(503, "authorization is temporarily unavailable")
    if not decision.allowed:
        metrics.api_auth_failures.labels("forbidden").inc()
        message = f"{attributes.describe()}" + (f": {decision.reason}" if decision.reason else "")
        details: dict[str, Any] = (
            {"group": attributes.group, "kind": attributes.resource} if attributes.is_resource else {}
        )
        return status_response(403, message, details=details)
    return await handler(request)


@web.middleware
async def _error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error as a ``Status``; unexpected exceptions as a logged 500; latency by route."""
    started = time.perf_counter()
    response: web.StreamResponse
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status == 404:
            response = status_response(404, "the server could not find the requested resource")
        elif exc.status == 405:
            response = status_response(405, f"the server does not allow method {request.method} here")
        elif exc.status < 400:
            raise
        else:
            response = status_response(exc.status, exc.reason or "request refused")
    except asyncio.CancelledError:
        raise
    except Exception:
        request.app[METRICS_KEY].api_internal_errors.inc()
        _log.exception(
            "internal error answering a request", method=request.method, path=request.path_qs[:500]
        )
        response = status_response(500, "internal error; see the lagscaler log")
    route = request.match_info.route.resource
    template = route.canonical if route is not None else "unmatched"
    _latency_child(request.app[METRICS_KEY], template, request.method, response.status).observe(
        time.perf_counter() - started
    )
    return response


@functools.lru_cache(maxsize=512)
def _latency_child(metrics: ServiceMetrics, route: str, method: str, code: int) -> Any:
    """The histogram child for a label set (``labels()`` is a locked dict lookup; this is cheaper)."""
    return metrics.api_request_duration.labels(route, method, str(code))


# ------------------------------------------------------------------------------------------ factory


def create_app(
    cache: MetricsCache,
    authenticator: Authenticator,
    authorizer: Authorizer,
    readiness: HealthChecks,
    metrics: ServiceMetrics,
    *,
    liveness: HealthChecks | None = None,
    lifetimes: Sequence[Lifetime] = (),
) -> web.Application:
    """The HTTPS application (serve it with :func:`lagscaler.edges.api.server.serve_https`).

    ``lifetimes`` are ``cleanup_ctx`` generators (background watchers, clients to close) that start
    and stop with the app.
    """
    app = web.Application(middlewares=[_error_middleware, _auth_middleware], client_max_size=64 * 1024)
    app[CACHE_KEY] = cache
    app[AUTHENTICATOR_KEY] = authenticator
    app[AUTHORIZER_KEY] = authorizer
    app[READINESS_KEY] = readiness
    app[LIVENESS_KEY] = liveness or HealthChecks()
    app[METRICS_KEY] = metrics
    app[_OPENAPI_KEY] = _openapi_views(load_openapi())
    app[_ANSWERS_KEY] = _Answers()
    app[_UNAUTHORIZED_LOG] = LogThrottle()
    app.cleanup_ctx.extend(lifetimes)
    add = app.router.add_get
    add("/apis", _api_group_list)
    add(f"/apis/{GROUP}", _api_group)
    add(_GV_PATH, _api_resource_list)
    add(_GV_PATH + "/namespaces/{namespace}/{metric}", _metric_values)
    add(_GV_PATH + "/{tail:.*}", _not_found_in_group)
    add("/openapi/v2", _openapi_v2)
    add("/openapi/v3", _openapi_index)
    add(f"/openapi/v3/apis/{GROUP_VERSION}", _openapi_group_version)
    for path, key, label in (
        ("/healthz", LIVENESS_KEY, "healthz"),
        ("/livez", LIVENESS_KEY, "livez"),
        ("/readyz", READINESS_KEY, "readyz"),
    ):
        handler = _health(key, label)
        add(path, handler)
        add(path + "/{check}", handler)
    return app
