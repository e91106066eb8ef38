"""lagscaler: autoscale Kafka consumers on Kubernetes from lag, arrival rate and true capacity.

The package is layered (see ``[tool.importlinter]`` in ``pyproject.toml``):

* a pure, synchronous core — :mod:`lagscaler.signals` (what a sample is),
  :mod:`lagscaler.hpa` (what the HPA controller will do), :mod:`lagscaler.policy`
  (per-workload policy files), :mod:`lagscaler.engine` (the decision) and
  :mod:`lagscaler.simulation` (replaying traces) — which never touches the network;
* edges that talk to the world — :mod:`lagscaler.kafka`, :mod:`lagscaler.kube`,
  :mod:`lagscaler.observability`;
* the shell that composes them — :mod:`lagscaler.sampler`, :mod:`lagscaler.api`,
  :mod:`lagscaler.service` and :mod:`lagscaler.cli`.
"""

__version__ = "0.1.0"
