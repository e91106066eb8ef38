"""``kube-system/extension-apiserver-authentication``: who may front-proxy to us, and which CAs to trust.

kube-apiserver publishes its front-proxy (requestheader) CA, the allowed front-proxy names, the
header names and its client CA in this ConfigMap; every aggregated API server reads it and watches
it for changes (the CAs rotate). :func:`parse_extension_authentication` is the pure part;
:class:`ExtensionAuthenticationWatcher` lists and watches the ConfigMap and reports each version.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import watch

from lagscaler.logs import get_logger

__all__ = [
    "CONFIGMAP_NAME",
    "CONFIGMAP_NAMESPACE",
    "ExtensionAuthentication",
    "ExtensionAuthenticationWatcher",
    "parse_extension_authentication",
]

CONFIGMAP_NAMESPACE = "kube-system"
CONFIGMAP_NAME = "extension-apiserver-authentication"
_log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ExtensionAuthentication:
    """The ConfigMap's content; a field is ``None`` when the ConfigMap does not set it."""

    client_ca_pem: str | None = None
    requestheader_client_ca_pem: str | None = None
    requestheader_allowed_names: tuple[str, ...] | None = None
    requestheader_username_headers: tuple[str, ...] | None = None
    requestheader_uid_headers: tuple[str, ...] | None = None
    requestheader_group_headers: tuple[str, ...] | None = None
    requestheader_extra_headers_prefix: tuple[str, ...] | None = None


def _string_list(data: Mapping[str, str], key: str) -> tuple[str, ...] | None:
    raw = data.get(key)
    if raw is None:
        return None
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{CONFIGMAP_NAME}: {key} is not a JSON array of strings: {exc}") from exc
    if not isinstance(parsed, list) or not all(isinstance(item, str) for item in parsed):
        raise ValueError(f"{CONFIGMAP_NAME}: {key} is not a JSON array of strings")
    return tuple(parsed)


def parse_extension_authentication(data: Mapping[str, str]) -> ExtensionAuthentication:
    """Parse the ConfigMap's ``data`` (list-valued keys are JSON arrays, as kube-apiserver writes them)."""
    return ExtensionAuthentication(
        client_ca_pem=data.get("client-ca-file") or None,
        requestheader_client_ca_pem=data.get("requestheader-client-ca-file") or None,
        requestheader_allowed_names=_string_list(data, "requestheader-allowed-names"),
        requestheader_username_headers=_string_list(data, "requestheader-username-headers"),
        requestheader_uid_headers=_string_list(data, "requestheader-uid-headers"),
        requestheader_group_headers=_string_list(data, "requestheader-group-headers"),
        requestheader_extra_headers_prefix=_string_list(data, "requestheader-extra-headers-prefix"),
    )


class ExtensionAuthenticationWatcher:
    """List, then watch, the ConfigMap; call ``on_change`` with each version (``None`` once deleted).

    Like an informer without the cache: the watch (``kubernetes_asyncio.watch.Watch``) resumes from
    the last resourceVersion it saw when the server ends it, the list is repeated only when that
    version is gone (410 Gone: etcd compacted it), and errors are retried after ``retry_seconds``.
    A version that does not parse is logged and skipped, so the last good configuration stays in
    force.
    """

    def __init__(
        self,
        api_client: k8s.ApiClient,
        on_change: Callable[[ExtensionAuthentication | None], None],
        *,
        namespace: str = CONFIGMAP_NAMESPACE,
        name: str = CONFIGMAP_NAME,
        retry_seconds: float = 5.0,
        watch_seconds: int = 300,
    ) -> None:
        self._core = k8s.CoreV1Api(api_client)
        self._on_change = on_change
        self._namespace = namespace
        self._name = name
        self._log = _log.bind(configmap=f"{namespace}/{name}")
        self._retry = retry_seconds
        self._watch_seconds = watch_seconds
        self.versions_seen = 0
        self.lists = 0  # how many times the ConfigMap was listed (once, plus once per 410 Gone)

    @property
    def _selector(self) -> str:
        return f"metadata.name={self._name}"

    async def fetch(self) -> tuple[ExtensionAuthentication | None, str]:
        """The current version and the list's resourceVersion (to watch from)."""
        listing = await self._core.list_namespaced_config_map(
            self._namespace, field_selector=self._selector, _request_timeout=30
        )
        self.lists += 1
        version = str(listing.metadata.resource_version or "")
        if not listing.items:
            return None, version
        return parse_extension_authentication(listing.items[0].data or {}), version

    def _report(self, value: ExtensionAuthentication | None) -> None:
        self.versions_seen += 1
        self._on_change(value)

    async def run(self) -> None:
        """Run until cancelled."""
        version: str | None = None
        while True:
            try:
                if version is None:
                    value, version = await self.fetch()
                    self._report(value)
                version = await self.watch(version)
            except asyncio.CancelledError:
                raise
            except ValueError as exc:
                self._log.error("ignoring an invalid ConfigMap", problem=str(exc))
                version = None
                await asyncio.sleep(self._retry)
            except (TimeoutError, OSError, aiohttp.ClientError, k8s.ApiException) as exc:
                self._log.warning("cannot read the ConfigMap, retrying", error=str(exc))
                version = None
                await asyncio.sleep(self._retry)

    async def watch(self, version: str) -> str | None:
        """Report events after ``version`` until the server ends the watch.

        Returns the resourceVersion to resume from, or ``None`` when ``version`` is gone (410) and
        the caller must list again.
        """
        async with watch.Watch() as stream:
            try:
                async for event in stream.stream(
                    self._core.list_namespaced_config_map,
                    self._namespace,
                    field_selector=self._selector,
                    resource_version=version or None,
                    allow_watch_bookmarks=True,
                    timeout_seconds=self._watch_seconds,
                    _request_timeout=aiohttp.ClientTimeout(total=None, sock_read=self._watch_seconds + 30),
                ):
                    self._apply(event["type"], event["raw_object"])
            except k8s.ApiException as exc:
                if exc.status == 410:
                    self._log.debug("watch resource version gone, listing again", resource_version=version)
                    return None
                raise
            return str(stream.resource_version or version)

    def _apply(self, kind: str, obj: Mapping[str, Any]) -> None:
        if kind in ("ADDED", "MODIFIED"):
            try:
                self._report(parse_extension_authentication(obj.get("data") or {}))
            except ValueError as exc:
                self._log.error("ignoring an invalid ConfigMap", problem=str(exc))
        elif kind == "DELETED":
            self._report(None)
