"""The Kubernetes external metrics API (external.metrics.k8s.io/v1beta1) served with aiohttp.

What the service composition uses:

- :class:`MetricsCache` / :class:`WorkloadMetrics` / :class:`MetricValue`: publish what to serve;
- :func:`running_api` (everything) or :func:`delegated_auth` + :func:`create_app` + :func:`serve_https`;
- :class:`ApiSettings` with :func:`add_api_arguments` / :func:`api_settings_from_args` (the flags);
- :class:`HealthChecks` / :class:`CheckResult` for ``/readyz`` and ``/livez``.
"""

from lagscaler.core.quantity import QuantityError, format_quantity, parse_quantity
from lagscaler.edges.api.app import create_app, load_openapi
from lagscaler.edges.api.authn import AuthenticationConfig, AuthenticationSource, Authenticator, Identity
from lagscaler.edges.api.authz import Authorizer, request_attributes
from lagscaler.edges.api.cache import (
    CacheSnapshot,
    Freshness,
    MetricsCache,
    MetricValue,
    WorkloadMetrics,
)
from lagscaler.edges.api.health import CheckResult, HealthChecks
from lagscaler.edges.api.selector import Selector, SelectorError, parse_selector
from lagscaler.edges.api.server import DelegatedAuth, RunningApi, delegated_auth, running_api, serve_https
from lagscaler.edges.api.settings import ApiSettings, add_api_arguments, api_settings_from_args
from lagscaler.edges.api.tls import ServingTLS

__all__ = [
    "ApiSettings",
    "AuthenticationConfig",
    "AuthenticationSource",
    "Authenticator",
    "Authorizer",
    "CacheSnapshot",
    "CheckResult",
    "DelegatedAuth",
    "Freshness",
    "HealthChecks",
    "Identity",
    "MetricValue",
    "MetricsCache",
    "QuantityError",
    "RunningApi",
    "Selector",
    "SelectorError",
    "ServingTLS",
    "WorkloadMetrics",
    "add_api_arguments",
    "api_settings_from_args",
    "create_app",
    "delegated_auth",
    "format_quantity",
    "load_openapi",
    "parse_quantity",
    "parse_selector",
    "request_attributes",
    "running_api",
    "serve_https",
]
