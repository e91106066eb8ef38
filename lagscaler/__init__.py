"""lagscaler: autoscale Kafka consumers on Kubernetes from lag, arrival rate and true capacity.

The package is layered (see ``[tool.importlinter]`` in ``pyproject.toml``):

* a pure, synchronous core — :mod:`lagscaler.core.signals` (what a sample is),
  :mod:`lagscaler.core.hpa` (what the HPA controller will do), :mod:`lagscaler.core.policy`
  (per-workload policy files), :mod:`lagscaler.core.engine` (the decision) and
  :mod:`lagscaler.core.simulation` (replaying traces) — which never touches the network;
* edges that talk to the world — :mod:`lagscaler.edges.kafka`, :mod:`lagscaler.edges.kube`,
  :mod:`lagscaler.edges.observability`;
* the shell that composes them — :mod:`lagscaler.edges.sampler`, :mod:`lagscaler.edges.api`,
  :mod:`lagscaler.service` and :mod:`lagscaler.cli`.
"""

__version__ = "0.1.0"
