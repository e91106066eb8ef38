"""Authorization as k8s.io/apiserver delegates it: SubjectAccessReview, cached, with the usual bypasses.

Request attributes follow the apiserver's request-info rules (``k8s.io/apiserver``
``pkg/endpoints/request/requestinfo.go``):

- ``/apis``, ``/apis/external.metrics.k8s.io`` and ``/apis/external.metrics.k8s.io/v1beta1`` have
  fewer than four path segments after the prefix, so they are **non-resource** requests: the SAR
  carries ``nonResourceAttributes{path, verb: get}`` (allowed to every authenticated user by the
  default ``system:discovery`` ClusterRole). The same holds for ``/openapi/...``.
- ``/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}`` is a **resource** request:
  namespace ``ns``, group ``external.metrics.k8s.io``, version ``v1beta1``, resource ``{metric}``,
  no name, so a GET is verb **list** (``watch`` with ``?watch=true``). This is what the HPA
  controller's RBAC grants (``external.metrics.k8s.io``, resources ``*``, verbs get/list/watch).

``system:masters`` is allowed without asking (the aggregator's availability probe runs as
``system:kube-aggregator`` in that group). ``--authorization-always-allow`` allows everything
without asking and is for local runs only.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping

from lagscaler.edges.api.reviewcache import SingleFlight, TTLCache
from lagscaler.edges.kube import AccessDecision, AccessRequest, AccessReviewer, ReviewedUser
from lagscaler.edges.observability import ServiceMetrics

__all__ = ["MASTERS_GROUP", "Authorizer", "request_attributes"]

MASTERS_GROUP = "system:masters"
_API_PREFIXES = frozenset({"api", "apis"})
_GROUPLESS_PREFIXES = frozenset({"api"})
_SPECIAL_VERBS = frozenset({"proxy", "watch"})
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_METHOD_VERBS = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}


def request_attributes(method: str, path: str, query: Mapping[str, str], user: ReviewedUser) -> AccessRequest:
    """The authorization attributes of a request, derived as kube-apiserver derives them."""
    watch = query.get("watch", "").lower() not in ("", "false", "0")
    info = _resource_info(method, path, watch)
    if info is None:
        return AccessRequest(user=user, verb=method.lower(), path=path)
    verb, resource, namespace, group, version, name, subresource = info
    return AccessRequest(
        user=user,
        verb=verb,
        resource=resource,
        namespace=namespace,
        group=group,
        version=version,
        name=name,
        subresource=subresource,
    )


@functools.lru_cache(maxsize=4096)
def _resource_info(method: str, path: str, watch: bool) -> tuple[str, str, str, str, str, str, str] | None:
    """(verb, resource, namespace, group, version, name, subresource), or None for a non-resource path.

    Memoized: the HPA asks for the same few paths every sync.
    """
    trimmed = path.strip("/")
    parts = trimmed.split("/") if trimmed else []  # empty segments are kept, as in Go's strings.Split
    if len(parts) < 3 or parts[0] not in _API_PREFIXES:
        return None
    prefix, parts = parts[0], parts[1:]
    group = ""
    if prefix not in _GROUPLESS_PREFIXES:
        if len(parts) < 3:
            return None
        group, parts = parts[0], parts[1:]
    version, parts = parts[0], parts[1:]
    if parts[0] in _SPECIAL_VERBS:
        if len(parts) < 2:
            return None  # the apiserver refuses these; nothing here serves them either
        verb = parts[0]
        parts = parts[1:]
        via_path = True
    else:
        verb = _METHOD_VERBS.get(method.upper(), "")
        via_path = False
    namespace = ""
    if parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in _NAMESPACE_SUBRESOURCES:
            parts = parts[2:]
    resource = parts[0]
    name = parts[1] if len(parts) >= 2 else ""
    subresource = parts[2] if len(parts) >= 3 and not via_path else ""
    if not name and verb == "get":
        verb = "watch" if watch else "list"
    if not name and verb == "delete":
        verb = "deletecollection"
    return verb, resource, namespace, group, version, name, subresource


def _cache_key(request: AccessRequest) -> tuple[object, ...]:
    user = request.user
    extra = tuple(sorted((key, tuple(values)) for key, values in user.extra.items()))
    return (
        user.name,
        user.uid,
        tuple(user.groups),
        extra,
        request.verb,
        request.namespace,
        request.group,
        request.version,
        request.resource,
        request.subresource,
        request.name,
        request.path,
    )


class Authorizer:
    """Decide whether an authenticated request may proceed; :class:`KubeReviewError` if nobody can say."""

    def __init__(
        self,
        reviewer: AccessReviewer | None,
        *,
        always_allow: bool = False,
        metrics: ServiceMetrics | None = None,
        allowed_ttl_seconds: float = 10.0,
        denied_ttl_seconds: float = 10.0,
        cache_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reviewer = reviewer
        self.always_allow = always_allow
        self._metrics = metrics
        self._ttl_allowed = allowed_ttl_seconds
        self._ttl_denied = denied_ttl_seconds
        self._cache: TTLCache[tuple[object, ...], AccessDecision] = TTLCache(cache_entries, clock)
        self._inflight: SingleFlight[tuple[object, ...], AccessDecision] = SingleFlight()

    async def authorize(self, request: AccessRequest) -> AccessDecision:
        if self.always_allow:
            return AccessDecision(True, "authorization is off (--authorization-always-allow)")
        if MASTERS_GROUP in request.user.groups:
            return AccessDecision(True, f"member of {MASTERS_GROUP}")
        if self._reviewer is None:
            return AccessDecision(
                False, "no authorizer configured (--authorization-kubeconfig or in-cluster)"
            )
        key = _cache_key(request)
        cached = self._cache.get(key)
        if cached is not None:
            self._count("hit")
            return cached
        self._count("miss")
        reviewer = self._reviewer

        async def review() -> AccessDecision:
            decision = await reviewer.review_access(request)
            self._cache.put(key, decision, self._ttl_allowed if decision.allowed else self._ttl_denied)
            return decision

        return await self._inflight.run(key, review)

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.api_review_cache.labels("subjectaccess", result).inc()
