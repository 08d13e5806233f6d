"""The HTTP service: the JSON API under /api/v1, metrics and health checks — one FastAPI app.

`create_app()` builds it; `watcher serve` and `watcher run` serve it with uvicorn. Handlers are thin: they
read through `watcher.read.model` and write through the same functions the CLI uses.
"""
