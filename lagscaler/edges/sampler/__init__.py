"""The lag sampler: batched Kafka requests per cycle → a :class:`~lagscaler.core.signals.Snapshot`."""

from lagscaler.edges.sampler.sampler import SampleFailed, Sampler
from lagscaler.edges.sampler.settings import MAX_HISTORY, SamplerConfigError, SamplerSettings

__all__ = ["MAX_HISTORY", "SampleFailed", "Sampler", "SamplerConfigError", "SamplerSettings"]
