"""A local stand-in for the cluster around the API: its PKI, kube-apiserver's review APIs, and clients.

What a real cluster gives an aggregated API server, made on loopback: a cluster CA (client
certificates, ``--client-ca-file``), a front-proxy CA and the aggregator's ``front-proxy-client``
certificate (``--requestheader-*``), a serving certificate, and a kube-apiserver stand-in answering
TokenReview, SubjectAccessReview and the ``extension-apiserver-authentication`` ConfigMap. Tests,
``bench/api_latency.py`` and the local HPA loop use it to call the API exactly as the aggregator does
(front-proxy certificate plus ``X-Remote-*`` headers).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lagscaler.edges.api.settings import ApiSettings
from lagscaler.edges.kube import CertificateAuthority, KeyPair
from lagscaler_demo.standin import KubeApiStandIn

__all__ = ["FRONT_PROXY_NAME", "HPA_USER", "ClientCert", "LocalCluster", "aggregator_headers"]

FRONT_PROXY_NAME = "front-proxy-client"  # kubeadm's CN for the aggregator's client certificate
HPA_USER = "system:serviceaccount:kube-system:horizontal-pod-autoscaler"


@dataclass(frozen=True, slots=True)
class ClientCert:
    cert_file: Path
    key_file: Path


def aggregator_headers(
    user: str = HPA_USER, groups: tuple[str, ...] = ("system:authenticated",)
) -> list[tuple[str, str]]:
    """The headers the aggregator adds when it proxies a request for ``user``."""
    return [("X-Remote-User", user), *(("X-Remote-Group", group) for group in groups)]


@dataclass
class LocalCluster:
    """PKI files in ``directory`` and a kube-apiserver stand-in (start it with ``async with``)."""

    directory: Path
    cluster_ca: CertificateAuthority = field(init=False)
    front_proxy_ca: CertificateAuthority = field(init=False)
    standin: KubeApiStandIn = field(init=False)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.cluster_ca = CertificateAuthority("local cluster CA")
        self.front_proxy_ca = CertificateAuthority("local front-proxy CA")
        self.cluster_ca_file = self.cluster_ca.write(self.directory, "cluster-ca")
        self.front_proxy_ca_file = self.front_proxy_ca.write(self.directory, "front-proxy-ca")
        serving = self.cluster_ca.issue_server("127.0.0.1", "localhost", "lagscaler.lagscaler.svc")
        self.serving_cert_file, self.serving_key_file = serving.write(self.directory, "serving")
        self.front_proxy = self.write_client(
            self.front_proxy_ca.issue_client(FRONT_PROXY_NAME), "front-proxy-client"
        )
        self.standin = KubeApiStandIn(self.directory / "standin")

    def write_client(self, pair: KeyPair, stem: str) -> ClientCert:
        cert_file, key_file = pair.write(self.directory, stem)
        return ClientCert(cert_file, key_file)

    async def __aenter__(self) -> LocalCluster:
        await self.standin.start()
        self.kubeconfig = self.standin.write_kubeconfig()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.standin.close()

    def settings(self, **overrides: Any) -> ApiSettings:
        """Settings for an API on a free loopback port that trusts this cluster (override any field)."""
        base = ApiSettings(
            bind_address="127.0.0.1",
            secure_port=0,
            tls_cert_file=self.serving_cert_file,
            tls_private_key_file=self.serving_key_file,
            client_ca_file=self.cluster_ca_file,
            requestheader_client_ca_file=self.front_proxy_ca_file,
            requestheader_allowed_names=(FRONT_PROXY_NAME,),
            authentication_kubeconfig=getattr(self, "kubeconfig", None),
            authorization_kubeconfig=getattr(self, "kubeconfig", None),
            authentication_skip_lookup=True,
            metrics_bind_address="127.0.0.1",
            metrics_port=0,
            file_check_seconds=0.2,
        )
        return replace(base, **overrides)

    def client_context(self, cert: ClientCert | None = None, *, trust: Path | None = None) -> ssl.SSLContext:
        """A client TLS context trusting the serving CA (or ``trust``) and presenting ``cert``."""
        context = ssl.create_default_context(cafile=str(trust or self.cluster_ca_file))
        if cert is not None:
            context.load_cert_chain(cert.cert_file, cert.key_file)
        return context
