"""The lag sampler: an asyncio loop that turns batched Kafka admin requests into signals."""
