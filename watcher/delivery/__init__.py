"""Delivering events where pipelines listen: subscriptions, the deliveries the relay writes for them, and
sending each to its endpoint in order, signed, with retries (issue 17)."""
