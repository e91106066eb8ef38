"""An ApiClient for kube-apiserver: from a kubeconfig file, or the pod's service account in a cluster."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from lagscaler.errors import UserError

__all__ = ["in_cluster", "kube_api_client"]


def in_cluster() -> bool:
    """Running in a pod with a service account (what ``load_incluster_config`` needs)."""
    return (
        bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        and Path("/var/run/secrets/kubernetes.io/serviceaccount/token").exists()
    )


async def kube_api_client(kubeconfig: Path | None) -> k8s.ApiClient | None:
    """A client from ``kubeconfig``, else in-cluster config, else ``None`` (no cluster to ask).

    The caller owns the client and must ``await client.close()``.
    """
    configuration = k8s.Configuration()
    if kubeconfig is not None:
        if not os.path.isfile(kubeconfig):  # noqa: ASYNC240 - one stat at startup
            raise UserError(f"kubeconfig {kubeconfig} does not exist")
        try:
            await k8s_config.load_kube_config(
                config_file=str(kubeconfig), client_configuration=configuration, persist_config=False
            )
        except k8s_config.ConfigException as exc:
            raise UserError(f"kubeconfig {kubeconfig}: {exc}") from exc
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or "not valid YAML"
            raise UserError(f"kubeconfig {kubeconfig}{at}: not valid YAML: {problem}") from exc
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            # kubernetes_asyncio's loader indexes the document without checking its shape (a list, an
            # empty file, "clusters: 5"), and reads it as UTF-8: it fails with whatever that raises.
            raise UserError(
                f"kubeconfig {kubeconfig}: not a kubeconfig ({type(exc).__name__}: {exc})"
            ) from exc
        if not (configuration.host or "").startswith(("https://", "http://")):
            raise UserError(f"kubeconfig {kubeconfig}: server {configuration.host!r} is not an http(s) URL")
    elif in_cluster():
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        return None
    return k8s.ApiClient(configuration=configuration)
