"""What a sample of a consumer group is, and the pure computations over sample history.

Pure and synchronous: the sampler fills these from Kafka, the engine and the report read them.
"""

from lagscaler.core.signals.model import GroupSample, PartitionSample, PartitionStatus, Snapshot

__all__ = ["GroupSample", "PartitionSample", "PartitionStatus", "Snapshot"]
