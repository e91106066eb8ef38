"""TokenReview and SubjectAccessReview: how a delegating API server asks kube-apiserver who and whether.

Two small interfaces (:class:`TokenReviewer`, :class:`AccessReviewer`) so the API layer never sees
kubernetes_asyncio, and their implementations speaking ``authentication.k8s.io/v1`` and
``authorization.k8s.io/v1`` through a kubernetes_asyncio ``ApiClient``. Tests point that client at
a loopback stand-in (:mod:`lagscaler_demo.standin`) by kubeconfig: same code path, other endpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

__all__ = [
    "AccessDecision",
    "AccessRequest",
    "AccessReviewer",
    "KubeAccessReviewer",
    "KubeReviewError",
    "KubeTokenReviewer",
    "ReviewedUser",
    "TokenReviewer",
]


def _not_a_response_body(record: logging.LogRecord) -> bool:
    """Drop kubernetes_asyncio's debug record of a response body: a TokenReview's holds a bearer token.

    ``kubernetes_asyncio/client/rest.py`` ``RESTClientObject.request`` (36.1.0) logs every response
    body at debug level, and kube-apiserver answers a TokenReview with its spec, ``spec.token``
    included: with ``--log-level debug`` every caller's token would reach the log.
    """
    return record.msg != "response body: %s"


logging.getLogger("kubernetes_asyncio.client.rest").addFilter(_not_a_response_body)

_TIMEOUT_SECONDS = 10.0  # like the apiserver's webhook clients: a hung review must not hang requests


class KubeReviewError(Exception):
    """kube-apiserver could not answer a review (unreachable, refused us, malformed answer)."""


T = TypeVar("T")


async def _ask(kind: str, call: Awaitable[T]) -> T:
    """The review's answer, or :class:`KubeReviewError` for every way of not getting one.

    Besides an error status and a refused or timed-out connection (``OSError``), a connection closed
    before the answer (aiohttp's ``ServerDisconnectedError``, which is no ``OSError``: what a
    restarting kube-apiserver does to keep-alive connections) and an answer that is not a review (a
    proxy's HTML page: kubernetes_asyncio's models raise ``ValueError`` on a missing ``spec``) are
    outages too, answered 401/503 like the others rather than a 500 per request.
    """
    try:
        return await call
    except ApiException as exc:
        raise KubeReviewError(f"{kind} failed: HTTP {exc.status} {exc.reason}") from exc
    except (OSError, aiohttp.ClientError) as exc:  # aiohttp's connection errors are partly OSErrors
        raise KubeReviewError(f"{kind} failed: {str(exc) or type(exc).__name__}") from exc
    except ValueError as exc:
        raise KubeReviewError(f"{kind} failed: the answer is not a {kind}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class ReviewedUser:
    """A user as Kubernetes describes one (``user.Info``)."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AccessRequest:
    """The attributes of one request, as the apiserver's request-info rules derive them.

    A resource request has ``resource`` set (``namespace``/``group``/``version``/``name`` as
    parsed); a non-resource request has ``path``. ``verb`` is ``get``/``list``/... for resources and
    the lower-cased HTTP method for non-resource paths.
    """

    user: ReviewedUser
    verb: str
    resource: str = ""
    namespace: str = ""
    group: str = ""
    version: str = ""
    name: str = ""
    subresource: str = ""
    path: str = ""

    @property
    def is_resource(self) -> bool:
        return bool(self.resource)

    def describe(self) -> str:
        """The apiserver's wording, e.g. ``User "u" cannot list resource "m" in API group "g" ...``."""
        if not self.is_resource:
            return f'User "{self.user.name}" cannot {self.verb} path "{self.path}"'
        where = f' in the namespace "{self.namespace}"' if self.namespace else " at the cluster scope"
        return (
            f'User "{self.user.name}" cannot {self.verb} resource "{self.resource}" '
            f'in API group "{self.group}"{where}'
        )


@dataclass(frozen=True, slots=True)
class AccessDecision:
    allowed: bool
    reason: str = ""


class TokenReviewer(Protocol):
    async def review_token(self, token: str) -> ReviewedUser | None:
        """The token's user, ``None`` if the token is not valid; :class:`KubeReviewError` if unknown."""


class AccessReviewer(Protocol):
    async def review_access(self, request: AccessRequest) -> AccessDecision:
        """Whether the request is allowed; :class:`KubeReviewError` if kube-apiserver cannot say."""


def _user_of(status_user: Any) -> ReviewedUser:
    extra = status_user.extra or {}
    return ReviewedUser(
        name=status_user.username or "",
        uid=status_user.uid or "",
        groups=tuple(status_user.groups or ()),
        extra={key: tuple(values or ()) for key, values in extra.items()},
    )


class KubeTokenReviewer:
    """``POST /apis/authentication.k8s.io/v1/tokenreviews`` with the given ApiClient's credentials."""

    def __init__(self, api_client: k8s.ApiClient, audiences: tuple[str, ...] = ()) -> None:
        self._api = k8s.AuthenticationV1Api(api_client)
        self._audiences = list(audiences) or None

    async def review_token(self, token: str) -> ReviewedUser | None:
        body = k8s.V1TokenReview(
            api_version="authentication.k8s.io/v1",
            kind="TokenReview",
            spec=k8s.V1TokenReviewSpec(token=token, audiences=self._audiences),
        )
        review = await _ask(
            "TokenReview", self._api.create_token_review(body, _request_timeout=_TIMEOUT_SECONDS)
        )
        status = review.status
        if status is None:
            raise KubeReviewError("TokenReview answer has no status")
        if status.error and not status.authenticated:
            return None
        if not status.authenticated or status.user is None or not status.user.username:
            return None
        return _user_of(status.user)


class KubeAccessReviewer:
    """``POST /apis/authorization.k8s.io/v1/subjectaccessreviews`` with the given ApiClient's credentials."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self._api = k8s.AuthorizationV1Api(api_client)

    async def review_access(self, request: AccessRequest) -> AccessDecision:
        user = request.user
        spec = k8s.V1SubjectAccessReviewSpec(
            user=user.name,
            uid=user.uid or None,
            groups=list(user.groups),
            extra={key: list(values) for key, values in user.extra.items()} or None,
        )
        if request.is_resource:
            spec.resource_attributes = k8s.V1ResourceAttributes(
                namespace=request.namespace or None,
                verb=request.verb,
                group=request.group,
                version=request.version or None,
                resource=request.resource,
                subresource=request.subresource or None,
                name=request.name or None,
            )
        else:
            spec.non_resource_attributes = k8s.V1NonResourceAttributes(path=request.path, verb=request.verb)
        body = k8s.V1SubjectAccessReview(
            api_version="authorization.k8s.io/v1", kind="SubjectAccessReview", spec=spec
        )
        review = await _ask(
            "SubjectAccessReview",
            self._api.create_subject_access_review(body, _request_timeout=_TIMEOUT_SECONDS),
        )
        status = review.status
        if status is None:
            raise KubeReviewError("SubjectAccessReview answer has no status")
        # Like the apiserver's webhook authorizer: not allowed (denied or "no opinion") is a deny; an
        # evaluationError is only part of the explanation.
        reason = status.reason or status.evaluation_error or ""
        return AccessDecision(allowed=bool(status.allowed) and not status.denied, reason=reason)
