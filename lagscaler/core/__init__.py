"""The functional core: pure, synchronous and deterministic (numpy), no IO of any kind.

Everything here takes values and returns values, so it is tested by calling it and the simulator can
replay months of traffic through exactly the code that runs in production:

* :mod:`.signals` — what a sample is; ring buffers, lag-in-seconds tables, Burrow's status rules;
* :mod:`.policy` — the typed ScalingPolicy model, its schema and the loader;
* :mod:`.hpa` — a model of the HPA controller and the design of the served metric;
* :mod:`.engine` — the decision, vectorised over workloads, in named stages;
* :mod:`.simulation` — trace replay of a consumer group, and the baselines lagscaler is judged against;
* :mod:`.handover` — the handover protocol's records and the controller's state machine;
* :mod:`.quantity` — Kubernetes quantities, parsed and formatted.

``lint-imports`` keeps asyncio, aiohttp, aiokafka, kubernetes and prometheus out of this package and
keeps it from importing :mod:`lagscaler.edges`.
"""
