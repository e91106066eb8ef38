"""Delegated authentication and authorization against the real kube-apiserver.

Tokens are real ServiceAccount tokens (TokenRequest), checked by a real TokenReview; permissions
are real RBAC objects, checked by a real SubjectAccessReview; CAs come from the real
``kube-system/extension-apiserver-authentication`` ConfigMap that kube-apiserver writes. lagscaler
is called directly, as a client inside the cluster would call its Service.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from support import eventually

from lagscaler.edges.kube import CertificateAuthority

from .adapter import GV, ChartInstall, Serve, call
from .cluster import FRONT_PROXY_CLIENT, ControlPlane

pytestmark = [pytest.mark.controlplane, pytest.mark.kafka, pytest.mark.slow]

METRIC = "lagscaler_desired_replicas"


def _reader(control_plane: ControlPlane, namespace: str, verbs: list[str] | None) -> str:
    """A ServiceAccount in ``namespace`` allowed ``verbs`` on the metric (no Role if ``None``); its token."""
    control_plane.namespace(namespace)
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader", "namespace": namespace}}
    ]
    if verbs is not None:
        objects += [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "metric-reader", "namespace": namespace},
                "rules": [{"apiGroups": ["external.metrics.k8s.io"], "resources": [METRIC], "verbs": verbs}],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "metric-reader", "namespace": namespace},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "metric-reader"},
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
            },
        ]
    control_plane.apply(objects)
    return control_plane.service_account_token(namespace, "reader")


async def test_service_account_tokens_meet_a_real_token_review_and_access_review(
    control_plane: ControlPlane, chart: ChartInstall, serve: Serve
) -> None:
    path = f"{GV}/namespaces/{{ns}}/{METRIC}"
    cases = {"authz-none": None, "authz-get": ["get"], "authz-list": ["list"]}
    tokens = {ns: _reader(control_plane, ns, verbs) for ns, verbs in cases.items()}

    status, body = await call(chart, serve.port, path.format(ns="authz-none"), token=tokens["authz-none"])
    assert status == 403, body
    assert body["message"].startswith(
        f'User "system:serviceaccount:authz-none:reader" cannot list resource "{METRIC}" '
        'in API group "external.metrics.k8s.io" in the namespace "authz-none"'
    )
    # The README's claim, checked on real RBAC: a GET of a metric is verb "list" on resource <metric>.
    status, body = await call(chart, serve.port, path.format(ns="authz-get"), token=tokens["authz-get"])
    assert status == 403, body
    status, body = await call(chart, serve.port, path.format(ns="authz-list"), token=tokens["authz-list"])
    assert status == 404, body  # authorized; no lagscaler workload lives in that namespace
    assert body["message"] == f'no lagscaler workload in namespace "authz-list" (metric "{METRIC}")'
    # kube-apiserver derives the same verb for the same path: through the aggregator, "get" alone
    # is refused by kube-apiserver itself and "list" reaches lagscaler.
    for namespace, reached in (("authz-get", False), ("authz-list", True)):
        kubeconfig = control_plane.service_account_kubeconfig(namespace, "reader")
        out = control_plane.kubectl(
            "get", "--raw", path.format(ns=namespace), kubeconfig=kubeconfig, check=False
        )
        assert ("no lagscaler workload" in out) is reached, out
        assert ("Forbidden" in out or "forbidden" in out) is not reached, out


def _forged_token(control_plane: ControlPlane) -> str:
    """A well-formed ServiceAccount JWT with the right issuer and audience, signed by another key."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    claims = {
        "iss": control_plane.url,
        "aud": [control_plane.url],
        "sub": "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "kubernetes.io": {
            "namespace": "kube-system",
            "serviceaccount": {
                "name": "horizontal-pod-autoscaler",
                "uid": "00000000-0000-0000-0000-000000000000",
            },
        },
    }
    signing_input = (
        f"{b64(json.dumps({'alg': 'RS256', 'typ': 'JWT'}).encode())}.{b64(json.dumps(claims).encode())}"
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"


async def test_a_forged_token_is_refused(
    chart: ChartInstall, serve: Serve, control_plane: ControlPlane
) -> None:
    status, body = await call(chart, serve.port, GV, token=_forged_token(control_plane))
    assert status == 401, body
    status, body = await call(chart, serve.port, GV, token="not-even-a-jwt")
    assert status == 401, body


async def test_an_x509_user_from_the_configmap_client_ca(
    chart: ChartInstall, serve: Serve, control_plane: ControlPlane, tmp_path: Path
) -> None:
    # lagscaler has no --client-ca-file: it trusts the client-ca-file kube-apiserver publishes.
    # The user is the certificate's CN and its groups the O fields, which real RBAC then matches.
    namespace = control_plane.namespace("authz-x509")
    control_plane.apply(
        [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "metric-reader", "namespace": namespace},
                "rules": [{"apiGroups": ["external.metrics.k8s.io"], "resources": ["*"], "verbs": ["list"]}],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "metric-reader", "namespace": namespace},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "metric-reader"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "auditors"}],
            },
        ]
    )
    carol = control_plane.ca.issue_client("carol", ("auditors",)).write(tmp_path, "carol")
    status, body = await call(chart, serve.port, f"{GV}/namespaces/{namespace}/{METRIC}", cert=carol)
    assert status == 404, body  # allowed through her group: no workload lives there
    dave = control_plane.ca.issue_client("dave", ("interns",)).write(tmp_path, "dave")
    status, body = await call(chart, serve.port, f"{GV}/namespaces/{namespace}/{METRIC}", cert=dave)
    assert status == 403, body
    assert body["message"].startswith('User "dave" cannot list')


async def _front_proxy_status(chart: ChartInstall, serve: Serve, cert: tuple[Path, Path]) -> int | None:
    """What lagscaler answers a front proxy with ``cert`` (``None``: the handshake was refused)."""
    headers = {"X-Remote-User": "system:kube-aggregator", "X-Remote-Group": "system:masters"}
    try:
        status, _ = await call(chart, serve.port, GV, cert=cert, headers=headers)
    except (aiohttp.ClientError, ssl.SSLError):
        return None
    return status


async def test_a_new_front_proxy_ca_in_the_configmap_is_trusted_without_a_restart(
    chart: ChartInstall, serve: Serve, control_plane: ControlPlane, tmp_path: Path
) -> None:
    rotated = CertificateAuthority("rotated front-proxy CA")
    cert = rotated.issue_client(FRONT_PROXY_CLIENT).write(tmp_path, "rotated-front-proxy")
    assert await _front_proxy_status(chart, serve, cert) is None

    original = control_plane.get_json("configmap", "-n", "kube-system", "extension-apiserver-authentication")
    changed = json.loads(json.dumps(original))
    changed["data"]["requestheader-client-ca-file"] += rotated.cert_pem.decode()
    control_plane.kubectl("replace", "-f", "-", input=json.dumps(changed))
    try:
        status = await eventually(
            lambda: _front_proxy_status(chart, serve, cert), within=60, what="lagscaler to trust the new CA"
        )
        assert status == 200  # trusted as a front proxy: X-Remote-Group system:masters is believed
        assert serve.alive()
    finally:
        current = control_plane.get_json(
            "configmap", "-n", "kube-system", "extension-apiserver-authentication"
        )
        current["data"]["requestheader-client-ca-file"] = original["data"]["requestheader-client-ca-file"]
        control_plane.kubectl("replace", "-f", "-", input=json.dumps(current))
    assert serve.forbidden_lines() == []
