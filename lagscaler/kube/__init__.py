"""Kubernetes edge: TokenReview, SubjectAccessReview and ConfigMap reads via kubernetes-asyncio."""
