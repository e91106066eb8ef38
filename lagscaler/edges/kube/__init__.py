"""Kubernetes edge: TokenReview, SubjectAccessReview and ConfigMap reads via kubernetes-asyncio."""

from lagscaler.edges.kube.authconfig import (
    CONFIGMAP_NAME,
    CONFIGMAP_NAMESPACE,
    ExtensionAuthentication,
    ExtensionAuthenticationWatcher,
    parse_extension_authentication,
)
from lagscaler.edges.kube.connection import in_cluster, kube_api_client
from lagscaler.edges.kube.pki import CertificateAuthority, KeyPair, self_signed_server
from lagscaler.edges.kube.reviews import (
    AccessDecision,
    AccessRequest,
    AccessReviewer,
    KubeAccessReviewer,
    KubeReviewError,
    KubeTokenReviewer,
    ReviewedUser,
    TokenReviewer,
)

__all__ = [
    "CONFIGMAP_NAME",
    "CONFIGMAP_NAMESPACE",
    "AccessDecision",
    "AccessRequest",
    "AccessReviewer",
    "CertificateAuthority",
    "ExtensionAuthentication",
    "ExtensionAuthenticationWatcher",
    "KeyPair",
    "KubeAccessReviewer",
    "KubeReviewError",
    "KubeTokenReviewer",
    "ReviewedUser",
    "TokenReviewer",
    "in_cluster",
    "kube_api_client",
    "parse_extension_authentication",
    "self_signed_server",
]
