"""Benchmarks that need the real registry and a watcher installation; see README.md."""
