"""Celery: the app (`celery -A watcher.tasks worker|beat`) and its thin task wrappers."""

from watcher.tasks.app import app

__all__ = ["app"]
