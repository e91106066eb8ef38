"""``helm test``, equivalently: the chart's test hook, accepted by the real apiserver, its check run here.

There is no kubelet to run the hook's Pod, so the test creates it (kube-apiserver validates and
admits it exactly as for ``helm test``) and runs its container's command on this machine, with the
two things a pod would get from the cluster supplied locally: the serving-cert Secret mounted at
``/var/run/serving-cert`` (here: the same files, by path) and cluster DNS for ``<service>.<ns>.svc``
(here: that name resolves to 127.0.0.1, where the Service's ExternalName points).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_chart import render

from .adapter import NAMESPACE, RELEASE, ChartInstall, Serve
from .cluster import ControlPlane

pytestmark = [pytest.mark.controlplane, pytest.mark.kafka, pytest.mark.slow]

_CLUSTER_DNS = """\
import socket
_resolve = socket.getaddrinfo
socket.getaddrinfo = lambda host, *a, **k: _resolve("127.0.0.1" if host.endswith(".svc") else host, *a, **k)
"""


def test_the_chart_test_hook_passes_against_the_registered_api(
    control_plane: ControlPlane, chart: ChartInstall, serve: Serve
) -> None:
    values = {"kafka": {"bootstrapServers": "unused:9092"}, "service": {"port": serve.port}}
    (pod,) = [
        o
        for o in render(values, name=RELEASE, namespace=NAMESPACE)
        if o["kind"] == "Pod" and o["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"
    ]
    control_plane.kubectl("create", "-f", "-", input=json.dumps(pod))
    control_plane.kubectl("delete", "pod", pod["metadata"]["name"], "-n", NAMESPACE, "--wait=false")

    (container,) = pod["spec"]["containers"]
    command = container["command"]
    assert command[:2] == ["python", "-c"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "serving-cert")["mountPath"]
    script = command[2].replace(f"{mount}/ca.crt", str(chart.ca_file))
    result = subprocess.run(
        [sys.executable, "-c", _CLUSTER_DNS + script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "readyz check passed" in result.stdout
