"""`python -m watcher` is the `watcher` command."""

from watcher.cli.main import entry

entry()
