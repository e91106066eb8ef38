"""The Kubernetes external metrics API (external.metrics.k8s.io/v1beta1) served with aiohttp."""
