"""Kubernetes edge: TokenReview, SubjectAccessReview and ConfigMap reads via kubernetes-asyncio."""

from lagscaler.kube.authconfig import (
    CONFIGMAP_NAME,
    CONFIGMAP_NAMESPACE,
    ExtensionAuthentication,
    ExtensionAuthenticationWatcher,
    parse_extension_authentication,
)
from lagscaler.kube.connection import in_cluster, kube_api_client
from lagscaler.kube.pki import CertificateAuthority, KeyPair, self_signed_server
from lagscaler.kube.reviews import (
    AccessDecision,
    AccessRequest,
    AccessReviewer,
    KubeAccessReviewer,
    KubeReviewError,
    KubeTokenReviewer,
    ReviewedUser,
    TokenReviewer,
)
from lagscaler.kube.standin import Grant, KubeApiStandIn

__all__ = [
    "CONFIGMAP_NAME",
    "CONFIGMAP_NAMESPACE",
    "AccessDecision",
    "AccessRequest",
    "AccessReviewer",
    "CertificateAuthority",
    "ExtensionAuthentication",
    "ExtensionAuthenticationWatcher",
    "Grant",
    "KeyPair",
    "KubeAccessReviewer",
    "KubeApiStandIn",
    "KubeReviewError",
    "KubeTokenReviewer",
    "ReviewedUser",
    "TokenReviewer",
    "in_cluster",
    "kube_api_client",
    "parse_extension_authentication",
    "self_signed_server",
]
