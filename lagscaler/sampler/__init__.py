"""The lag sampler: batched Kafka requests per cycle → a :class:`~lagscaler.signals.Snapshot`."""

from lagscaler.sampler.sampler import SampleFailed, Sampler
from lagscaler.sampler.settings import SamplerConfigError, SamplerSettings

__all__ = ["SampleFailed", "Sampler", "SamplerConfigError", "SamplerSettings"]
