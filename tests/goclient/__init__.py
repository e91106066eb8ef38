"""A Go program that reads lagscaler with the HPA's own client (k8s.io/metrics external_metrics)."""
