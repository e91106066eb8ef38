"""A loopback stand-in for the parts of kube-apiserver a delegating API server calls.

It speaks the real wire formats: ``POST /apis/authentication.k8s.io/v1/tokenreviews``,
``POST /apis/authorization.k8s.io/v1/subjectaccessreviews`` and list/watch of the ConfigMap
``kube-system/extension-apiserver-authentication``, over HTTPS, and requires its own bearer token
like kube-apiserver requires the caller's credentials. Tests, benchmarks and local runs point the
real clients (:mod:`lagscaler.edges.kube.reviews`, :mod:`lagscaler.edges.kube.authconfig`) at it with a
kubeconfig
from :meth:`KubeApiStandIn.write_kubeconfig`; nothing is patched.

It records every review it answers so tests can prove caching, and ``down = True`` makes it answer
503 to simulate an unreachable control plane.

Everything a real kube-apiserver can show is tested against one (``tests/controlplane``: tokens,
RBAC decisions, the ConfigMap watch, discovery through the aggregator). This stand-in
remains for what the real one cannot be made to do on demand, or where none runs:

* go down or answer 503 mid-session (``test_unreachable_authorizer_is_503_not_an_allow``), which
  would break every other test sharing the session's control plane;
* answer a watch with 410 Gone (:meth:`KubeApiStandIn.compact`): its watch cache replays from any
  old resourceVersion, so no test can make it refuse one in reasonable time;
* tell how many TokenReviews and SubjectAccessReviews it answered, which the cache tests
  (``tests/test_auth_cache.py``) count;
* the local runs that have no control plane at all: ``lagscaler demo``, the playground HPA loop,
  ``bench/api_latency.py``, and API tests that need an authorizer but test something else.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from lagscaler.edges.kube.authconfig import CONFIGMAP_NAME, CONFIGMAP_NAMESPACE
from lagscaler.edges.kube.pki import CertificateAuthority
from lagscaler.edges.kube.reviews import ReviewedUser

__all__ = ["Grant", "KubeApiStandIn"]


@dataclass(frozen=True, slots=True)
class Grant:
    """Allow ``subject`` (a user name, or ``group:<name>``) to do ``verbs`` on ``resources``.

    ``resources`` are resource names for resource requests and paths for non-resource requests;
    ``"*"`` matches anything.
    """

    subject: str
    verbs: frozenset[str] = frozenset({"*"})
    resources: frozenset[str] = frozenset({"*"})


@dataclass
class KubeApiStandIn:
    directory: Path
    tokens: dict[str, ReviewedUser] = field(default_factory=dict)
    grants: list[Grant] = field(default_factory=list)
    configmap_data: dict[str, str] | None = None
    down: bool = False
    # Faults a real kube-apiserver shows but not on demand, for the review endpoints: "hang-up" closes
    # the connection without an answer (a restarting apiserver closing its keep-alive connections),
    # "proxy-page" answers 200 with an HTML page (a proxy in front of it).
    fault: str | None = None
    # While set and not yet fired, token reviews are recorded and then held: a slow kube-apiserver.
    hold_token_reviews: asyncio.Event | None = None
    token_reviews: list[dict[str, Any]] = field(default_factory=list)
    access_reviews: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ca = CertificateAuthority("stand-in kube-apiserver CA")
        self.admin_token = secrets.token_urlsafe(24)
        self._resource_version = 1
        self._compacted = 0
        self._watchers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/apis/authentication.k8s.io/v1/tokenreviews", self._token_review)
        app.router.add_post("/apis/authorization.k8s.io/v1/subjectaccessreviews", self._access_review)
        app.router.add_get(f"/api/v1/namespaces/{CONFIGMAP_NAMESPACE}/configmaps", self._configmaps)
        app.on_shutdown.append(self._close_watchers)
        serving = self.ca.issue_server("127.0.0.1", "localhost")
        cert_path, key_path = serving.write(self.directory, "standin-serving")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_path, key_path)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        site = web.SockSite(self._runner, listener, ssl_context=context)
        await site.start()
        self.url = f"https://127.0.0.1:{listener.getsockname()[1]}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> KubeApiStandIn:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def write_kubeconfig(self, path: Path | None = None, token: str | None = None) -> Path:
        """A kubeconfig that reaches this stand-in with its admin token (or ``token``)."""
        path = path or self.directory / "standin.kubeconfig"
        ca_path = self.ca.write(self.directory, "standin-ca")
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "standin", "cluster": {"server": self.url, "certificate-authority": str(ca_path)}}
            ],
            "users": [{"name": "standin", "user": {"token": token or self.admin_token}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "standin"}}],
            "current-context": "standin",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # ------------------------------------------------------------------ state changes

    def allow(self, subject: str, verbs: Iterable[str] = ("*",), resources: Iterable[str] = ("*",)) -> None:
        self.grants.append(Grant(subject, frozenset(verbs), frozenset(resources)))

    def set_configmap(self, data: Mapping[str, str] | None) -> None:
        """Create, replace or (``None``) delete the ConfigMap; watchers get the event."""
        kind = "DELETED" if data is None else ("MODIFIED" if self.configmap_data is not None else "ADDED")
        previous = self.configmap_data
        self.configmap_data = None if data is None else dict(data)
        self._resource_version += 1
        event = {"type": kind, "object": self._configmap_object(self.configmap_data or previous or {})}
        for queue in self._watchers:
            queue.put_nowait(event)

    def compact(self) -> None:
        """Forget history, as etcd compaction does: open watches end, and a watch from a
        resourceVersion before now gets a 410 Gone ERROR event (the client must list again)."""
        self._compacted = self._resource_version + 1
        for queue in self._watchers:
            queue.put_nowait(None)

    # ------------------------------------------------------------------ handlers

    def _refuse(self, request: web.Request) -> web.Response | None:
        if self.down:
            return self._status(503, "ServiceUnavailable", "the stand-in is down")
        if self.fault == "hang-up" and request.transport is not None:
            request.transport.abort()
            return web.Response()  # never sent
        if self.fault == "proxy-page":
            return web.Response(text="<html>502 Bad Gateway</html>", content_type="text/html")
        if request.headers.get("Authorization") != f"Bearer {self.admin_token}":
            return self._status(401, "Unauthorized", "Unauthorized")
        return None

    @staticmethod
    def _status(code: int, reason: str, message: str) -> web.Response:
        body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
        body |= {"message": message, "reason": reason, "code": code}
        return web.json_response(body, status=code)

    async def _token_review(self, request: web.Request) -> web.Response:
        if (refusal := self._refuse(request)) is not None:
            return refusal
        review = await request.json()
        self.token_reviews.append(review)
        if self.hold_token_reviews is not None:
            await self.hold_token_reviews.wait()
        user = self.tokens.get(review.get("spec", {}).get("token", ""))
        status: dict[str, Any] = {"authenticated": user is not None}
        if user is not None:
            status["user"] = {
                "username": user.name,
                "uid": user.uid,
                "groups": list(user.groups),
                "extra": {key: list(values) for key, values in user.extra.items()},
            }
        else:
            status["error"] = "token not recognised"
        return web.json_response(review | {"status": status}, status=201)

    def _decide(self, spec: Mapping[str, Any]) -> bool:
        subjects = {spec.get("user", "")} | {f"group:{g}" for g in spec.get("groups") or ()}
        if "resourceAttributes" in spec:
            attributes = spec["resourceAttributes"]
            verb, target = attributes.get("verb", ""), attributes.get("resource", "")
        else:
            attributes = spec.get("nonResourceAttributes") or {}
            verb, target = attributes.get("verb", ""), attributes.get("path", "")
        return any(
            grant.subject in subjects
            and ("*" in grant.verbs or verb in grant.verbs)
            and ("*" in grant.resources or target in grant.resources)
            for grant in self.grants
        )

    async def _access_review(self, request: web.Request) -> web.Response:
        if (refusal := self._refuse(request)) is not None:
            return refusal
        review = await request.json()
        self.access_reviews.append(review)
        allowed = self._decide(review.get("spec") or {})
        status = {"allowed": allowed, "reason": "granted by stand-in" if allowed else "no grant matches"}
        return web.json_response(review | {"status": status}, status=201)

    def _configmap_object(self, data: Mapping[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": CONFIGMAP_NAME,
                "namespace": CONFIGMAP_NAMESPACE,
                "resourceVersion": str(self._resource_version),
            },
            "data": dict(data),
        }

    async def _configmaps(self, request: web.Request) -> web.StreamResponse:
        if (refusal := self._refuse(request)) is not None:
            return refusal
        if request.query.get("fieldSelector") != f"metadata.name={CONFIGMAP_NAME}":
            return self._status(400, "BadRequest", "the stand-in only serves one ConfigMap by name")
        if request.query.get("watch") not in ("true", "1", "True"):
            items = [] if self.configmap_data is None else [self._configmap_object(self.configmap_data)]
            return web.json_response(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMapList",
                    "metadata": {"resourceVersion": str(self._resource_version)},
                    "items": items,
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        since = request.query.get("resourceVersion", "")
        if since.isdigit() and int(since) < self._compacted:
            gone = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410}
            gone |= {"reason": "Expired", "message": f"too old resource version: {since}"}
            await response.write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
            return response
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._watchers.add(queue)
        try:
            while (event := await queue.get()) is not None:
                await response.write(json.dumps(event).encode() + b"\n")
        finally:
            self._watchers.discard(queue)
        return response

    async def _close_watchers(self, _: web.Application) -> None:
        for queue in self._watchers:
            queue.put_nowait(None)
