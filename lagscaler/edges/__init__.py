"""The imperative shell: everything that talks to Kafka, Kubernetes, HTTP clients or Prometheus.

Each edge is small and sits behind an interface the service composes:

* :mod:`.kafka` — the admin requests aiokafka lacks (batched OffsetFetch, ListOffsets...), settings;
* :mod:`.sampler` — the asyncio sampling loop that turns Kafka answers into core signals;
* :mod:`.kube` — TokenReview, SubjectAccessReview, the authentication ConfigMap, certificates;
* :mod:`.api` — the external metrics API server (aiohttp, TLS, delegated authn/authz);
* :mod:`.observability` — Prometheus metrics;
* :mod:`.handover` — the handover's control topic, controller driver, backends and leader election.

Edges may import :mod:`lagscaler.core`; the core never imports an edge.
"""
