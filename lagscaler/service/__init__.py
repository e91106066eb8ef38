"""The running service: composes sampler, engine, cache and API into lagscaler serve."""
