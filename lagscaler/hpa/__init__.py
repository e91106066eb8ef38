"""A pure model of the Kubernetes HPA controller for External metrics."""
