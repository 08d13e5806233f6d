"""The `watcher` command (click): each command parses, calls the package that owns the work, prints."""
