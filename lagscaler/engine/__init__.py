"""The scaling policy engine: pure, synchronous, vectorised across workloads (numpy, no IO)."""
