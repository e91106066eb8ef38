"""The trace simulator and the baselines lagscaler is compared with (pure, no IO)."""
