"""A registry's key: the one string that names a registry across the whole deployment.

Names are unique within a workspace, so a task, a queue key, a lease or a log line that names a registry
needs its workspace too. The key is `WORKSPACE/NAME`, and for the workspace `default` the bare `NAME`: an
installation that never creates a second workspace sees the names it always saw, and tasks queued by an
older version (a bare name) still find their registry. A name never holds `/`, so the key is unambiguous.
"""

from __future__ import annotations

from watcher.schema import DEFAULT_WORKSPACE

SEPARATOR = "/"
#: names that, as a workspace's stream `{WATCHER_EVENTS_STREAM}:{name}`, would be a key watcher keeps for
#: itself (the relay's memory of appended ids and its lock, the pool's workers and their pace): no workspace may
#: take them.
#: Other internal keys have a further `:` in them, which a workspace name never has.
RESERVED_WORKSPACE_NAMES = frozenset({"appended", "pace", "relay-lock", "workers"})


def registry_key(workspace: str, name: str) -> str:
    """The key of the registry `name` of `workspace`."""
    return name if workspace == DEFAULT_WORKSPACE else f"{workspace}{SEPARATOR}{name}"


def split_key(key: str) -> tuple[str, str]:
    """(workspace, name) of a key; a bare name is in `default`."""
    workspace, separator, name = key.rpartition(SEPARATOR)
    return (workspace, name) if separator else (DEFAULT_WORKSPACE, key)
