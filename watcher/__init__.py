"""watcher: polls container registries and emits one CloudEvent per tag change onto a Redis stream."""

__version__ = "0.1.0"
