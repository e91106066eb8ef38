"""Authentication as k8s.io/apiserver delegates it, in the same order.

1. **Front-proxy client certificate** (``requestheader``): the peer certificate is issued by the
   requestheader CA, is valid now, may be used for client authentication, and its CN is one of the
   allowed names (any CN if none are configured). Only then are ``X-Remote-User``,
   ``X-Remote-Group``, ``X-Remote-Uid`` and ``X-Remote-Extra-*`` believed. Without such a certificate
   those headers are ignored: anyone can send them.
2. **x509 client certificate** issued by the ``client-ca-file`` CA: user = CN, groups = O.
3. **Bearer token**, checked by kube-apiserver with a TokenReview (cached ~10 s, bounded).
4. Otherwise the request is anonymous, which the API refuses (401) except on health paths.

Every authenticated user is then also in ``system:authenticated``, as in Kubernetes.

Which CA verified the peer: the TLS layer trusts both CAs (the union), and Python 3.11 cannot say
which one verified a peer. So this module decides it again itself with ``cryptography``: the leaf
must be *directly* issued (name and signature) by a certificate of the requestheader bundle to count
as a front proxy, and by one of the client CA bundle to count as an x509 user. A front-proxy
certificate issued through an intermediate is therefore not accepted (kubeadm and managed clusters
sign it directly with the front-proxy CA); the same CA in both bundles works as in Kubernetes.

Extended key usage follows Go's ``x509.Verify`` with ``ExtKeyUsageClientAuth``: a certificate
without the extension may be used for anything; with it, it must list client auth (or any).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from multidict import CIMultiDictProxy

from lagscaler.edges.api.reviewcache import SingleFlight, TTLCache
from lagscaler.edges.kube import ExtensionAuthentication, KubeReviewError, ReviewedUser, TokenReviewer
from lagscaler.edges.observability import ServiceMetrics
from lagscaler.errors import UserError
from lagscaler.logs import get_logger

__all__ = [
    "AuthenticationConfig",
    "AuthenticationFailed",
    "AuthenticationSource",
    "Authenticator",
    "Identity",
    "RequestHeaderConfig",
    "load_ca_bundle",
]

_log = get_logger(__name__)

ANONYMOUS = "system:anonymous"  # k8s.io/apiserver pkg/authentication/user: user.Anonymous
AUTHENTICATED = "system:authenticated"  # user.AllAuthenticated
UNAUTHENTICATED = "system:unauthenticated"  # user.AllUnauthenticated
DEFAULT_USERNAME_HEADERS = ("X-Remote-User",)
DEFAULT_UID_HEADERS = ("X-Remote-Uid",)
DEFAULT_GROUP_HEADERS = ("X-Remote-Group",)
DEFAULT_EXTRA_PREFIXES = ("X-Remote-Extra-",)


class AuthenticationFailed(Exception):
    """No authenticator accepted the request; ``reason`` is a short word for logs and metrics."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail or reason


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated user and how we know."""

    user: ReviewedUser
    method: str  # "front-proxy", "x509" or "token"


def load_ca_bundle(pem: bytes | str, origin: str) -> tuple[x509.Certificate, ...]:
    """Every certificate in a PEM bundle; :class:`ValueError` naming ``origin`` if there is none."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        certs = tuple(x509.load_pem_x509_certificates(data))
    except ValueError as exc:
        raise ValueError(f"{origin}: not a PEM certificate bundle ({exc})") from exc
    if not certs:
        raise ValueError(f"{origin}: no certificate in the bundle")
    return certs


@dataclass(frozen=True, slots=True)
class RequestHeaderConfig:
    """Who may act as a front proxy, and which headers carry the user it vouches for."""

    ca_certs: tuple[x509.Certificate, ...]
    allowed_names: frozenset[str] = frozenset()  # empty: any CN the CA signed
    username_headers: tuple[str, ...] = DEFAULT_USERNAME_HEADERS
    uid_headers: tuple[str, ...] = DEFAULT_UID_HEADERS
    group_headers: tuple[str, ...] = DEFAULT_GROUP_HEADERS
    extra_prefixes: tuple[str, ...] = DEFAULT_EXTRA_PREFIXES


@dataclass(frozen=True, slots=True)
class AuthenticationConfig:
    """One consistent version of the authentication settings (files, flags and ConfigMap merged)."""

    requestheader: RequestHeaderConfig | None = None
    client_ca_certs: tuple[x509.Certificate, ...] = ()

    def trusted_client_cas(self) -> tuple[x509.Certificate, ...]:
        """The CAs the TLS layer must accept client certificates from (both bundles)."""
        front = self.requestheader.ca_certs if self.requestheader else ()
        seen: dict[bytes, x509.Certificate] = {}
        for cert in (*front, *self.client_ca_certs):
            seen.setdefault(cert.fingerprint(_SHA256), cert)
        return tuple(seen.values())


_SHA256 = hashes.SHA256()


# ------------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class AuthenticationFlags:
    """What the command line says; ``None`` means "not given, take it from the ConfigMap"."""

    client_ca_file: Path | None = None
    requestheader_client_ca_file: Path | None = None
    requestheader_allowed_names: tuple[str, ...] | None = None
    requestheader_username_headers: tuple[str, ...] | None = None
    requestheader_uid_headers: tuple[str, ...] | None = None
    requestheader_group_headers: tuple[str, ...] | None = None
    requestheader_extra_headers_prefix: tuple[str, ...] | None = None


def _file_stamp(path: Path | None) -> tuple[int, int, int] | None:
    if path is None:
        return None
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


class AuthenticationSource:
    """The current :class:`AuthenticationConfig`, rebuilt when a CA file or the ConfigMap changes.

    Flags win over the ConfigMap field by field (as in k8s.io/apiserver). A change that does not
    parse is logged and ignored: the last good configuration stays in force. Listeners (the TLS
    context, which must trust the new CAs) are called after every successful change.
    """

    def __init__(self, flags: AuthenticationFlags) -> None:
        self._flags = flags
        self._configmap: ExtensionAuthentication | None = None
        self._stamps = self._current_stamps()
        self._listeners: list[Callable[[AuthenticationConfig], None]] = []
        try:
            self._config = self._build()
        except ValueError as exc:
            raise UserError(str(exc)) from exc
        self.generation = 1

    @property
    def config(self) -> AuthenticationConfig:
        return self._config

    def trusted_client_cas(self) -> tuple[x509.Certificate, ...]:
        return self._config.trusted_client_cas()

    def subscribe(self, listener: Callable[[AuthenticationConfig], None]) -> None:
        self._listeners.append(listener)

    def _current_stamps(self) -> tuple[object, ...]:
        return (
            _file_stamp(self._flags.client_ca_file),
            _file_stamp(self._flags.requestheader_client_ca_file),
        )

    def _read(self, path: Path, flag: str) -> tuple[x509.Certificate, ...]:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"{flag} {path}: {exc.strerror or exc}") from exc
        return load_ca_bundle(data, f"{flag} {path}")

    def _build(self) -> AuthenticationConfig:
        flags, cm = self._flags, self._configmap or ExtensionAuthentication()
        if flags.client_ca_file is not None:
            client_cas = self._read(flags.client_ca_file, "--client-ca-file")
        elif cm.client_ca_pem:
            client_cas = load_ca_bundle(cm.client_ca_pem, "ConfigMap client-ca-file")
        else:
            client_cas = ()
        if flags.requestheader_client_ca_file is not None:
            front_cas = self._read(flags.requestheader_client_ca_file, "--requestheader-client-ca-file")
        elif cm.requestheader_client_ca_pem:
            front_cas = load_ca_bundle(
                cm.requestheader_client_ca_pem, "ConfigMap requestheader-client-ca-file"
            )
        else:
            front_cas = ()

        def pick(
            flag: tuple[str, ...] | None, cm_value: tuple[str, ...] | None, default: tuple[str, ...]
        ) -> tuple[str, ...]:
            if flag is not None:
                return flag
            if cm_value:
                return cm_value
            return default

        requestheader = None
        if front_cas:
            requestheader = RequestHeaderConfig(
                ca_certs=front_cas,
                allowed_names=frozenset(
                    pick(flags.requestheader_allowed_names, cm.requestheader_allowed_names, ())
                ),
                username_headers=pick(
                    flags.requestheader_username_headers,
                    cm.requestheader_username_headers,
                    DEFAULT_USERNAME_HEADERS,
                ),
                uid_headers=pick(
                    flags.requestheader_uid_headers, cm.requestheader_uid_headers, DEFAULT_UID_HEADERS
                ),
                group_headers=pick(
                    flags.requestheader_group_headers, cm.requestheader_group_headers, DEFAULT_GROUP_HEADERS
                ),
                extra_prefixes=pick(
                    flags.requestheader_extra_headers_prefix,
                    cm.requestheader_extra_headers_prefix,
                    DEFAULT_EXTRA_PREFIXES,
                ),
            )
        return AuthenticationConfig(requestheader=requestheader, client_ca_certs=client_cas)

    def _rebuild(self, why: str) -> bool:
        try:
            config = self._build()
        except ValueError as exc:
            _log.error("authentication settings unchanged", why=why, problem=str(exc))
            return False
        self._config = config
        self.generation += 1
        _log.info("authentication settings reloaded", why=why)
        for listener in self._listeners:
            listener(config)
        return True

    def apply_configmap(self, value: ExtensionAuthentication | None) -> bool:
        """A new version of ``kube-system/extension-apiserver-authentication`` (``None``: deleted)."""
        if value == self._configmap:
            return False
        self._configmap = value
        return self._rebuild("ConfigMap changed")

    def reload_files(self) -> bool:
        """Re-read the CA files if they changed on disk (call this periodically)."""
        stamps = self._current_stamps()
        if stamps == self._stamps:
            return False
        self._stamps = stamps
        return self._rebuild("CA file changed")


# ------------------------------------------------------------------------------- certificates


def _allows_client_auth(cert: x509.Certificate) -> bool:
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True  # Go: no EKU extension means no restriction
    return ExtendedKeyUsageOID.CLIENT_AUTH in usages or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usages


def _issued_by(cert: x509.Certificate, cas: tuple[x509.Certificate, ...]) -> bool:
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


@dataclass(frozen=True, slots=True)
class _CertFacts:
    """What a peer certificate proves under one configuration (cached per DER)."""

    common_name: str
    organizations: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    client_auth: bool
    from_front_proxy_ca: bool
    from_client_ca: bool

    def valid_at(self, now: dt.datetime) -> bool:
        return self.not_before <= now <= self.not_after


def _facts(der: bytes, config: AuthenticationConfig) -> _CertFacts | None:
    try:
        cert = x509.load_der_x509_certificate(der)
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        client_auth = _allows_client_auth(cert)
    except ValueError:
        return None
    front = config.requestheader.ca_certs if config.requestheader else ()
    return _CertFacts(
        common_name=str(names[0].value) if names else "",
        organizations=tuple(str(o.value) for o in orgs),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        client_auth=client_auth,
        from_front_proxy_ca=_issued_by(cert, front),
        from_client_ca=_issued_by(cert, config.client_ca_certs),
    )


# ------------------------------------------------------------------------------- authenticator


@dataclass
class _FactsCache:
    config: AuthenticationConfig
    entries: OrderedDict[bytes, _CertFacts | None] = field(default_factory=OrderedDict)


class Authenticator:
    """Turns a request's peer certificate and headers into an :class:`Identity`, or refuses it."""

    def __init__(
        self,
        source: AuthenticationSource,
        token_reviewer: TokenReviewer | None = None,
        *,
        metrics: ServiceMetrics | None = None,
        token_ttl_seconds: float = 10.0,
        cache_entries: int = 4096,
        max_token_reviews: int = 16,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._tokens = token_reviewer
        # Anyone who reaches the port can make us ask about a new token per request. The reviews share
        # the kube client (100 connections) with the SubjectAccessReviews the aggregator's requests
        # need: past this many in flight a new token is refused at once instead of queueing.
        self._max_reviews = max_token_reviews
        self._reviewing = 0
        self._metrics = metrics
        self._token_ttl = token_ttl_seconds
        self._token_cache: TTLCache[bytes, _TokenAnswer] = TTLCache(cache_entries, clock)
        self._inflight: SingleFlight[bytes, _TokenAnswer] = SingleFlight()
        self._facts = _FactsCache(source.config)
        self._facts_max = 1024

    @property
    def source(self) -> AuthenticationSource:
        return self._source

    def _cert_facts(self, der: bytes) -> _CertFacts | None:
        config = self._source.config
        if self._facts.config is not config:  # a new configuration invalidates every verdict
            self._facts = _FactsCache(config)
        cache = self._facts.entries
        if der in cache:
            cache.move_to_end(der)
            return cache[der]
        facts = _facts(der, config)
        cache[der] = facts
        if len(cache) > self._facts_max:
            cache.popitem(last=False)
        return facts

    async def authenticate(self, peer_der: bytes | None, headers: CIMultiDictProxy[str]) -> Identity:
        """The caller's identity, or :class:`AuthenticationFailed` (→ 401).

        Like k8s.io/apiserver's ``AuthenticatedGroupAdder`` (``pkg/authentication/group``, v0.35.4),
        every authenticated user except ``system:anonymous`` is in ``system:authenticated`` unless it
        already is (or is in ``system:unauthenticated``). The aggregator relies on it: it fetches
        ``/openapi/v2`` and ``/openapi/v3`` as ``system:aggregator`` with no groups, and only the
        ``system:discovery`` binding of ``system:authenticated`` lets it read them.
        """
        identity = await self._authenticate(peer_der, headers)
        groups = identity.user.groups
        if identity.user.name == ANONYMOUS or AUTHENTICATED in groups or UNAUTHENTICATED in groups:
            return identity
        return Identity(dataclasses.replace(identity.user, groups=(*groups, AUTHENTICATED)), identity.method)

    async def _authenticate(self, peer_der: bytes | None, headers: CIMultiDictProxy[str]) -> Identity:
        config = self._source.config
        problems: list[str] = []
        if peer_der:
            facts = self._cert_facts(peer_der)
            now = dt.datetime.now(dt.UTC)
            if facts is None:
                problems.append("unparsable client certificate")
            elif not facts.valid_at(now):
                problems.append("client certificate expired or not yet valid")
            elif not facts.client_auth:
                problems.append("client certificate not valid for client authentication")
            else:
                identity = self._front_proxy(facts, config, headers, problems)
                if identity is not None:
                    return identity
                if facts.from_client_ca:
                    if facts.common_name:
                        user = ReviewedUser(name=facts.common_name, groups=facts.organizations)
                        return Identity(user, "x509")
                    problems.append("client certificate has no CN")
        token = _bearer_token(headers)
        if token is not None:
            reviewed = await self._review_token(token)
            if reviewed is not None:
                return Identity(reviewed, "token")
            problems.append("bearer token rejected")
        if not problems:
            raise AuthenticationFailed("anonymous", "no client certificate and no bearer token")
        reason = "token" if token is not None else "certificate"
        raise AuthenticationFailed(reason, "; ".join(problems))

    def _front_proxy(
        self,
        facts: _CertFacts,
        config: AuthenticationConfig,
        headers: CIMultiDictProxy[str],
        problems: list[str],
    ) -> Identity | None:
        front = config.requestheader
        if front is None or not facts.from_front_proxy_ca:
            return None
        if front.allowed_names and facts.common_name not in front.allowed_names:
            problems.append(f"front-proxy certificate CN {facts.common_name!r} is not an allowed name")
            return None
        name = _first_header(headers, front.username_headers)
        if not name:
            return None  # a front proxy without a user header: try the other authenticators (as k8s)
        groups = tuple(value for header in front.group_headers for value in headers.getall(header, ()))
        uid = _first_header(headers, front.uid_headers) or ""
        extra: dict[str, list[str]] = {}
        prefixes = tuple(prefix.lower() for prefix in front.extra_prefixes)
        for header, value in headers.items():
            lowered = header.lower()
            if not lowered.startswith(prefixes):
                continue
            for prefix in prefixes:
                if lowered.startswith(prefix) and len(header) > len(prefix):
                    key = unquote(header[len(prefix) :]).lower()
                    extra.setdefault(key, []).append(value)
                    break
        user = ReviewedUser(
            name=name, uid=uid, groups=groups, extra={key: tuple(values) for key, values in extra.items()}
        )
        return Identity(user, "front-proxy")

    async def _review_token(self, token: str) -> ReviewedUser | None:
        if self._tokens is None:
            return None
        key = hashlib.sha256(token.encode()).digest()  # never keep the token itself
        cached = self._token_cache.get(key)
        if cached is not None:
            self._count("hit")
            return cached.user
        self._count("miss")
        reviewer = self._tokens

        async def review() -> _TokenAnswer:
            if self._reviewing >= self._max_reviews:
                raise AuthenticationFailed("token-review-busy", "too many token reviews in flight")
            self._reviewing += 1
            try:
                answer = _TokenAnswer(await reviewer.review_token(token))
            finally:
                self._reviewing -= 1
            self._token_cache.put(key, answer, self._token_ttl)
            return answer

        try:
            return (await self._inflight.run(key, review)).user
        except KubeReviewError as exc:
            _log.warning("token review failed", error=str(exc))
            raise AuthenticationFailed("token-review-error", str(exc)) from exc

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.api_review_cache.labels("token", result).inc()


@dataclass(frozen=True, slots=True)
class _TokenAnswer:
    """A cached TokenReview answer; ``user=None`` caches a rejection (as the apiserver does)."""

    user: ReviewedUser | None


def _first_header(headers: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    for header in names:
        value = headers.get(header)
        if value:
            return value
    return None


def _bearer_token(headers: Mapping[str, str]) -> str | None:
    value = headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
