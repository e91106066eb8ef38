"""A real Kubernetes control plane on loopback: etcd, kube-apiserver and kube-controller-manager.

The binaries come from :mod:`controlplane.build` (``make test-deps`` builds them once). One
:class:`ControlPlane` serves a whole test session (the ``control_plane`` fixture in
``tests/conftest.py``); tests share it by working in namespaces of their own.

What it runs, all on 127.0.0.1 with free ports and certificates made here:

* etcd (plain HTTP on loopback, ``--unsafe-no-fsync``: a test cluster needs no durability);
* kube-apiserver with RBAC, the aggregation layer (front-proxy CA, ``front-proxy-client``
  certificate, ``--enable-aggregator-routing=false`` so an ExternalName Service can point at a local
  adapter), service-account signing keys (TokenRequest works) and a client CA for x509 users;
* kube-controller-manager with the HPA, deployment, replicaset, serviceaccount, garbage-collector and
  resource-quota controllers, each under its own service account (``--use-service-account-credentials``),
  a short HPA sync period and the HPA controller's decisions logged (``--vmodule=horizontal=4``) so tests
  can read every sync. The garbage collector deletes what an object owns after it (ownerReferences: a
  Deployment's ReplicaSets and pods, the handover generations a workload's Deployment owns). The
  resource-quota controller fills in a ResourceQuota's ``status.hard``, without which the apiserver's
  ResourceQuota admission plugin (on by default: no ``--enable-admission-plugins`` here) enforces
  nothing (``k8s.io/apiserver`` ``pkg/admission/plugin/resourcequota/controller.go``, v0.35.4).

There are no nodes and no kubelet: pods stay Pending unless a test marks them Running and Ready
(``KubeClient.mark_pods_ready`` in ``kubeclient.py``), which is how a test stands in for the kubelet.
A test that needs the scheduler's own verdict (``PodScheduled=False``, ``Unschedulable``, with its
message) starts the real kube-scheduler with :func:`running_scheduler`: it schedules only pods that
name its profile (``spec.schedulerName``), onto Node objects the test creates (:meth:`ControlPlane.add_node`).

The Python API other tests use: :attr:`ControlPlane.admin_kubeconfig`,
:meth:`ControlPlane.user_kubeconfig` (an x509 user in any groups),
:meth:`ControlPlane.service_account_kubeconfig` (a ServiceAccount's TokenRequest token),
:meth:`ControlPlane.kubectl` and :meth:`ControlPlane.apply`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from lagscaler_demo.localkafka.broker import free_port

from lagscaler.edges.kube import CertificateAuthority

from .build import installed

__all__ = [
    "FRONT_PROXY_CLIENT",
    "TEST_SCHEDULER",
    "ControlPlane",
    "ControlPlaneError",
    "deployment",
    "running_control_plane",
    "running_scheduler",
]

FRONT_PROXY_CLIENT = "front-proxy-client"  # kubeadm's CN for the aggregator's client certificate
# 4 s, not a divisor of 15: the default policies' 15 s periods and the windows tests use then never
# fall on a sync, so whether an event is inside a period does not hang on milliseconds of jitter.
HPA_SYNC_SECONDS = 4
# Only HPAs without ``behavior.scaleDown.stabilizationWindowSeconds`` use this flag; 22 s instead of
# 300 s lets a test see such an HPA scale down (and 22 is not a multiple of the sync period either).
DOWNSCALE_STABILIZATION_SECONDS = 22
_READY_WITHIN_SECONDS = 120.0
# The profile of the real kube-scheduler (running_scheduler): only pods that name it are scheduled by
# it, so the pods of every other test stay with the kubelet stand-in, which binds them itself.
TEST_SCHEDULER = "lagscaler-test-scheduler"


class ControlPlaneError(RuntimeError):
    """The control plane did not start; the message ends with the failing component's log tail."""


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)


@dataclass
class ControlPlane:
    """A running control plane and the files a client needs to reach it."""

    directory: Path
    url: str
    ca: CertificateAuthority
    ca_file: Path
    front_proxy_ca_file: Path
    admin_kubeconfig: Path
    hpa_sync_seconds: int
    downscale_stabilization_seconds: int
    processes: dict[str, _Process] = field(default_factory=dict)

    # ------------------------------------------------------------------ identities

    def _kubeconfig(self, name: str, user: Mapping[str, str]) -> Path:
        path = self.directory / "kubeconfigs" / f"{name}.kubeconfig"
        path.parent.mkdir(parents=True, exist_ok=True)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "local", "cluster": {"server": self.url, "certificate-authority": str(self.ca_file)}}
            ],
            "users": [{"name": name, "user": dict(user)}],
            "contexts": [{"name": name, "context": {"cluster": "local", "user": name}}],
            "current-context": name,
        }
        path.touch(mode=0o600)
        path.write_text(yaml.safe_dump(config))
        return path

    def user_kubeconfig(self, user: str, groups: Iterable[str] = ()) -> Path:
        """A kubeconfig for x509 user ``user`` in ``groups`` (a client certificate from the cluster CA)."""
        stem = "user-" + user.replace(":", "_").replace("/", "_")
        cert, key = self.ca.issue_client(user, tuple(groups)).write(self.directory / "users", stem)
        return self._kubeconfig(stem, {"client-certificate": str(cert), "client-key": str(key)})

    def service_account_token(self, namespace: str, name: str, *, audience: str | None = None) -> str:
        """A TokenRequest token for ServiceAccount ``namespace/name`` (which must exist)."""
        args = ["create", "token", name, "-n", namespace, "--duration=2h"]
        if audience:
            args.append(f"--audience={audience}")
        return self.kubectl(*args).strip()

    def service_account_kubeconfig(self, namespace: str, name: str, *, create: bool = False) -> Path:
        """A kubeconfig that authenticates as ServiceAccount ``namespace/name`` with a real token."""
        if create:
            self.apply(
                [
                    {
                        "apiVersion": "v1",
                        "kind": "ServiceAccount",
                        "metadata": {"name": name, "namespace": namespace},
                    }
                ]
            )
        token = self.service_account_token(namespace, name)
        return self._kubeconfig(f"sa-{namespace}-{name}", {"token": token})

    # ------------------------------------------------------------------ clients

    def kubectl(
        self, *args: str, input: str | None = None, kubeconfig: Path | None = None, check: bool = True
    ) -> str:
        """Run kubectl against this control plane (admin unless ``kubeconfig``); its stdout."""
        result = subprocess.run(
            ["kubectl", f"--kubeconfig={kubeconfig or self.admin_kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and result.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout if check else result.stdout + result.stderr

    def apply(self, objects: Iterable[Mapping[str, Any]], *, kubeconfig: Path | None = None) -> None:
        """Server-side apply ``objects`` (as one list), creating or updating each."""
        items = [dict(o) for o in objects]
        if items:
            body = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
            self.kubectl(
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=tests",
                "-f",
                "-",
                input=body,
                kubeconfig=kubeconfig,
            )

    def namespace(self, name: str) -> str:
        """Create namespace ``name`` (idempotent); return it."""
        self.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}])
        return name

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def raw(self, path: str, *, kubeconfig: Path | None = None) -> Any:
        """``kubectl get --raw path`` as JSON."""
        return json.loads(self.kubectl("get", "--raw", path, kubeconfig=kubeconfig))

    def add_node(self, name: str, *, cpu: str, memory: str = "8Gi", pods: int = 110) -> str:
        """A Node object with this much allocatable and no kubelet behind it: for the scheduler to read.

        A Node's status may be given when it is created (a kubelet registers itself that way). The
        apiserver's TaintNodesByCondition admission taints every new Node ``not-ready``; nothing here
        runs the node lifecycle controller that would lift it, so it is removed at once.
        """
        capacity = {"cpu": cpu, "memory": memory, "pods": str(pods)}
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {
                "capacity": capacity,
                "allocatable": capacity,
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            },
        }
        self.kubectl("create", "-f", "-", input=json.dumps(node))
        self.kubectl("patch", "node", name, "--type=json", "-p", '[{"op": "remove", "path": "/spec/taints"}]')
        return name

    def log(self, component: str) -> str:
        return self.processes[component].log.read_text(errors="replace")

    def alive(self) -> bool:
        return all(process.popen.poll() is None for process in self.processes.values())


def deployment(namespace: str, name: str, *, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A one-replica Deployment whose pods select ``app=<name>``; its image is never pulled (no nodes)."""
    selector = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector},
                "spec": {"containers": [{"name": "app", "image": f"registry.invalid/{name}:1"}]},
            },
        },
    }


# ---------------------------------------------------------------------------------- starting


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    path.touch(mode=0o600)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def _start(name: str, argv: list[str], directory: Path) -> _Process:
    log = directory / f"{name}.log"
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    return _Process(name, popen, log)


def _get(url: str, context: ssl.SSLContext) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError as exc:
        return 0, str(exc)


def _wait(process: _Process, ready: Any, what: str) -> None:
    deadline = time.monotonic() + _READY_WITHIN_SECONDS
    last = ""
    while True:
        if process.popen.poll() is not None:
            raise ControlPlaneError(f"{process.name} exited ({process.popen.returncode}):\n{process.tail()}")
        ok, last = ready()
        if ok:
            return
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"{process.name}: {what} not ready ({last}):\n{process.tail()}")
        time.sleep(0.2)


def _wait_healthz(process: _Process, port: int) -> None:
    """Wait for a component's ``/healthz`` on its secure port (a self-signed certificate: not checked)."""
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE

    def ready() -> tuple[bool, str]:
        code, body = _get(f"https://127.0.0.1:{port}/healthz", insecure)
        return code == 200, body[-300:]

    _wait(process, ready, "/healthz")


@contextlib.contextmanager
def running_control_plane(
    directory: Path,
    *,
    hpa_sync_seconds: int = HPA_SYNC_SECONDS,
    downscale_stabilization_seconds: int = DOWNSCALE_STABILIZATION_SECONDS,
) -> Iterator[ControlPlane]:
    """Start etcd, kube-apiserver and kube-controller-manager; stop them (by process group) on exit."""
    binaries = installed()
    if binaries is None:
        raise ControlPlaneError(
            "the Kubernetes control plane is not built: run `make test-deps` "
            "(python -m tests.controlplane.build, ~15 min the first time)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    pki = directory / "pki"
    ca = CertificateAuthority("lagscaler-test cluster CA")
    ca_file = ca.write(pki, "ca")
    front_proxy_ca = CertificateAuthority("lagscaler-test front-proxy CA")
    front_proxy_ca_file = front_proxy_ca.write(pki, "front-proxy-ca")
    serving_cert, serving_key = ca.issue_server(
        "127.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "10.96.0.1"
    ).write(pki, "apiserver")
    proxy_cert, proxy_key = front_proxy_ca.issue_client(FRONT_PROXY_CLIENT).write(pki, "front-proxy-client")
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa_key_file = pki / "sa.key"
    _write_key(sa_key_file, sa_key)
    sa_pub_file = pki / "sa.pub"
    sa_pub_file.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )

    etcd_port, peer_port, api_port, kcm_port = (free_port() for _ in range(4))
    url = f"https://127.0.0.1:{api_port}"
    plane = ControlPlane(
        directory=directory,
        url=url,
        ca=ca,
        ca_file=ca_file,
        front_proxy_ca_file=front_proxy_ca_file,
        admin_kubeconfig=Path(),
        hpa_sync_seconds=hpa_sync_seconds,
        downscale_stabilization_seconds=downscale_stabilization_seconds,
    )
    plane.admin_kubeconfig = plane.user_kubeconfig("lagscaler-test-admin", ("system:masters",))
    kcm_kubeconfig = plane.user_kubeconfig("system:kube-controller-manager")
    admin_context = ssl.create_default_context(cafile=str(ca_file))
    admin_context.load_cert_chain(
        directory / "users" / "user-lagscaler-test-admin.crt",
        directory / "users" / "user-lagscaler-test-admin.key",
    )
    try:
        etcd = _start(
            "etcd",
            [
                str(binaries / "etcd"),
                "--name=default",
                f"--data-dir={directory / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            directory,
        )
        plane.processes["etcd"] = etcd
        _wait(
            etcd,
            lambda: (_get(f"http://127.0.0.1:{etcd_port}/health", admin_context)[0] == 200, "health"),
            "etcd",
        )
        apiserver = _start(
            "kube-apiserver",
            [
                str(binaries / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--tls-cert-file={serving_cert}",
                f"--tls-private-key-file={serving_key}",
                f"--client-ca-file={ca_file}",
                "--authorization-mode=RBAC",
                "--anonymous-auth=false",
                "--service-cluster-ip-range=10.96.0.0/12",
                "--endpoint-reconciler-type=none",
                "--enable-aggregator-routing=false",
                f"--service-account-issuer={url}",
                f"--service-account-key-file={sa_pub_file}",
                f"--service-account-signing-key-file={sa_key_file}",
                f"--requestheader-client-ca-file={front_proxy_ca_file}",
                f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={proxy_cert}",
                f"--proxy-client-key-file={proxy_key}",
                "--profiling=false",
                "--v=1",
            ],
            directory,
        )
        plane.processes["kube-apiserver"] = apiserver

        def apiserver_ready() -> tuple[bool, str]:
            code, body = _get(url + "/readyz", admin_context)
            return code == 200, body[-300:]

        _wait(apiserver, apiserver_ready, "/readyz")
        kcm = _start(
            "kube-controller-manager",
            [
                str(binaries / "kube-controller-manager"),
                f"--kubeconfig={kcm_kubeconfig}",
                f"--authentication-kubeconfig={kcm_kubeconfig}",
                f"--authorization-kubeconfig={kcm_kubeconfig}",
                "--controllers=horizontalpodautoscaling,deployment,replicaset,serviceaccount,garbagecollector,"
                "resourcequota",
                "--use-service-account-credentials=true",
                f"--root-ca-file={ca_file}",
                f"--horizontal-pod-autoscaler-sync-period={hpa_sync_seconds}s",
                f"--horizontal-pod-autoscaler-downscale-stabilization={downscale_stabilization_seconds}s",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                "--profiling=false",
                "--vmodule=horizontal=4",
            ],
            directory,
        )
        plane.processes["kube-controller-manager"] = kcm
        _wait_healthz(kcm, kcm_port)
        yield plane
    finally:
        for process in reversed(list(plane.processes.values())):
            process.stop()


@contextlib.contextmanager
def running_scheduler(plane: ControlPlane, directory: Path) -> Iterator[_Process]:
    """The real kube-scheduler (same build), with the one profile :data:`TEST_SCHEDULER`; stopped on exit.

    It runs as ``system:kube-scheduler``, the user Kubernetes' bootstrap RBAC grants the scheduler's
    rights to (``plugin/pkg/auth/authorizer/rbac/bootstrappolicy``: ClusterRoleBindings
    ``system:kube-scheduler`` and ``system:volume-scheduler``).
    """
    binaries = installed()
    if binaries is None:
        raise ControlPlaneError("kube-scheduler is not built: run `make test-deps`")
    directory.mkdir(parents=True, exist_ok=True)
    kubeconfig = plane.user_kubeconfig("system:kube-scheduler")
    config = directory / "scheduler.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kubescheduler.config.k8s.io/v1",
                "kind": "KubeSchedulerConfiguration",
                "clientConnection": {"kubeconfig": str(kubeconfig)},
                "leaderElection": {"leaderElect": False},
                "profiles": [{"schedulerName": TEST_SCHEDULER}],
            }
        )
    )
    port = free_port()
    scheduler = _start(
        "kube-scheduler",
        [
            str(binaries / "kube-scheduler"),
            f"--config={config}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            "--profiling=false",
        ],
        directory,
    )
    try:
        _wait_healthz(scheduler, port)
        yield scheduler
    finally:
        scheduler.stop()
