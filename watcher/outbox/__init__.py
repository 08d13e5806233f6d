"""The outbox: each change as its event (stream fields and CloudEvent), the relay that publishes committed
events onto the Redis stream exactly once, the history and a stream consumer."""
