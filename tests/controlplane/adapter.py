"""lagscaler registered with a real control plane through the Helm chart's own objects.

:func:`install_chart` renders the chart offline (as ``tests/test_chart.py`` does), applies what an
aggregated API server needs from it (ServiceAccount, RBAC, APIService, the serving Secret's
certificate) and turns its Service into an ExternalName for 127.0.0.1 (there are no pods, and
``--enable-aggregator-routing=false`` lets kube-apiserver dial an ExternalName). :class:`Serve` runs
``lagscaler serve`` as a local process with the chart ServiceAccount's token, exactly as the pod's
service account would be used in a cluster.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from test_chart import render

from .cluster import ControlPlane, ControlPlaneError

__all__ = [
    "GV",
    "ChartInstall",
    "HandoverInstall",
    "Serve",
    "granted_rules",
    "install_chart",
    "install_handover_rbac",
]

GV = "/apis/external.metrics.k8s.io/v1beta1"
RELEASE = "lagscaler"
NAMESPACE = "lagscaler"
# What an aggregated API server needs from the chart: the rest (Deployment, PDB, ...) is the pod,
# which this test replaces with a local process.
_KINDS = {
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "APIService",
    "Secret",
}


@dataclass
class ChartInstall:
    plane: ControlPlane
    objects: list[dict[str, Any]]
    service: dict[str, Any]
    service_account: str
    tls_cert_file: Path
    tls_key_file: Path
    ca_file: Path  # what the APIService's caBundle trusts
    kubeconfig: Path  # the chart ServiceAccount's identity

    def point_at(self, port: int) -> None:
        """Make the APIService reach an adapter listening on 127.0.0.1:``port``."""
        service = json.loads(json.dumps(self.service))
        service["spec"] = {
            "type": "ExternalName",
            "externalName": "127.0.0.1",
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        }
        api = next(o for o in self.objects if o["kind"] == "APIService")
        api = json.loads(json.dumps(api))
        api["spec"]["service"]["port"] = port
        self.plane.apply([service, api])

    def available(self) -> bool:
        api = self.plane.get_json("apiservice", "v1beta1.external.metrics.k8s.io")
        conditions = api.get("status", {}).get("conditions", [])
        return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)


def install_chart(plane: ControlPlane, directory: Path, port: int) -> ChartInstall:
    """Render the chart and apply its ServiceAccount, RBAC and APIService; the Service points at ``port``."""
    values = {
        "kafka": {"bootstrapServers": "unused-by-this-test:9092"},
        "service": {"port": port},
    }
    rendered = render(values, name=RELEASE, namespace=NAMESPACE)
    plane.namespace(NAMESPACE)
    objects = [o for o in rendered if o["kind"] in _KINDS]
    service = next(o for o in rendered if o["kind"] == "Service" and o["metadata"]["name"] == RELEASE)
    secret = next(o for o in objects if o["kind"] == "Secret")
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file, ca_file = directory / "tls.crt", directory / "tls.key", directory / "ca.crt"
    ca_file.write_bytes(base64.b64decode(secret["data"]["ca.crt"]))
    cert_file.write_bytes(base64.b64decode(secret["data"]["tls.crt"]))
    key_file.touch(mode=0o600)
    key_file.write_bytes(base64.b64decode(secret["data"]["tls.key"]))
    plane.apply(objects)
    account = next(o for o in objects if o["kind"] == "ServiceAccount")["metadata"]["name"]
    install = ChartInstall(
        plane=plane,
        objects=objects,
        service=service,
        service_account=account,
        tls_cert_file=cert_file,
        tls_key_file=key_file,
        ca_file=ca_file,
        kubeconfig=plane.service_account_kubeconfig(NAMESPACE, account),
    )
    install.point_at(port)
    return install


@dataclass
class HandoverInstall:
    """The chart rendered with ``handover.enabled`` for some namespaces: its ServiceAccount and handover RBAC."""

    objects: list[dict[str, Any]]
    service_account: str
    kubeconfig: Path  # that ServiceAccount's identity
    args: list[str]  # the --handover-* flags the chart gives serve
    lease_namespace: str
    lease_name: str


def install_handover_rbac(
    plane: ControlPlane, release: str, namespaces: Iterable[str], **handover: Any
) -> HandoverInstall:
    """Render the chart as release ``release`` with handover enabled for ``namespaces`` (and the other
    ``handover.*`` values given); apply its ServiceAccount and handover Roles and RoleBindings (nothing
    else: the session's chart serves the API)."""
    listed = list(namespaces)
    values = {
        "kafka": {"bootstrapServers": "unused-by-this-test:9092"},
        "handover": {**handover, "enabled": True, "namespaces": listed},
    }
    rendered = render(values, name=release, namespace=NAMESPACE)
    objects = [
        o
        for o in rendered
        if o["kind"] == "ServiceAccount"
        or (o["kind"] in ("Role", "RoleBinding") and "handover" in o["metadata"]["name"])
    ]
    for namespace in [NAMESPACE, *listed]:
        plane.namespace(namespace)
    plane.apply(objects)
    account = next(o for o in objects if o["kind"] == "ServiceAccount")["metadata"]["name"]
    pod = next(o for o in rendered if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    args = [a for a in pod["containers"][0]["args"] if a.startswith("--handover-")]
    flags = dict(a.removeprefix("--").split("=", 1) for a in args)
    return HandoverInstall(
        objects=objects,
        service_account=account,
        kubeconfig=plane.service_account_kubeconfig(NAMESPACE, account),
        args=args,
        lease_namespace=flags["handover-lease-namespace"],
        lease_name=flags["handover-lease-name"],
    )


def granted_rules(plane: ControlPlane, subject: str, namespace: str) -> set[str]:
    """``kubectl auth can-i --list`` for ``subject`` in ``namespace``, one normalized line per rule."""
    out = plane.kubectl("auth", "can-i", "--list", f"--as={subject}", "-n", namespace)
    return {re.sub(r"\s+", " ", line.strip()) for line in out.splitlines()[1:] if line.strip()}


SERVICE_HOST = f"{RELEASE}.{NAMESPACE}.svc"  # the name the serving certificate is for


async def call(
    install: ChartInstall,
    port: int,
    path: str,
    *,
    token: str | None = None,
    cert: tuple[Path, Path] | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Any]:
    """Call lagscaler directly (not through kube-apiserver), verifying its certificate like the aggregator."""
    context = ssl.create_default_context(cafile=str(install.ca_file))
    if cert is not None:
        context.load_cert_chain(*cert)
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
        session.get(
            f"https://127.0.0.1:{port}{path}", ssl=context, server_hostname=SERVICE_HOST, headers=sent
        ) as response,
    ):
        body = await response.json() if response.content_type == "application/json" else await response.text()
        return response.status, body


def api_flags(install: ChartInstall, port: int) -> list[str]:
    """The API flags a chart pod gets, with this machine's addresses and the ServiceAccount's kubeconfig."""
    return [
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--tls-cert-file={install.tls_cert_file}",
        f"--tls-private-key-file={install.tls_key_file}",
        f"--authentication-kubeconfig={install.kubeconfig}",
        f"--authorization-kubeconfig={install.kubeconfig}",
        "--metrics-bind-address=127.0.0.1",
    ]


@dataclass
class Serve:
    """``lagscaler serve`` as a local process (one per session), its policy directory and log."""

    popen: subprocess.Popen[bytes]
    policy_dir: Path
    log: Path
    port: int
    metrics_port: int

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        """The log's event dicts (``--log-format=json``: one per line; other lines are skipped)."""
        found = []
        for line in self.log_text().splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    found.append(event)
        return found

    def forbidden_lines(self) -> list[str]:
        """Log lines where kube-apiserver refused lagscaler something (the chart's RBAC fell short)."""
        return [
            line
            for line in self.log_text().splitlines()
            if re.search(r"\b403\b", line) or "Forbidden" in line or "forbidden" in line  # not port 43403
        ]

    def alive(self) -> bool:
        return self.popen.poll() is None


@contextlib.contextmanager
def running_serve(
    install: ChartInstall,
    directory: Path,
    *,
    bootstrap: str,
    port: int,
    metrics_port: int,
    extra: Sequence[str] = (),
) -> Iterator[Serve]:
    """Run ``lagscaler serve`` with the chart ServiceAccount's identity (and ``extra`` flags) until the
    block exits."""
    policy_dir = directory / "policies"
    policy_dir.mkdir(parents=True, exist_ok=True)
    log = directory / "lagscaler-serve.log"
    argv = [
        sys.executable,
        "-m",
        "lagscaler",
        "serve",
        f"--policy-dir={policy_dir}",
        f"--bootstrap-server={bootstrap}",
        "--sample-interval=1",
        "--log-format=json",
        *api_flags(install, port),
        f"--metrics-port={metrics_port}",
        *extra,
    ]
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    serve = Serve(popen, policy_dir, log, port, metrics_port)
    try:
        deadline = time.monotonic() + 90
        while "external metrics API serving" not in serve.log_text():
            if not serve.alive() or time.monotonic() > deadline:
                raise ControlPlaneError(f"lagscaler serve did not start:\n{serve.log_text()[-3000:]}")
            time.sleep(0.2)
        yield serve
    finally:
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGTERM)
            try:
                popen.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)
                popen.wait(5)
