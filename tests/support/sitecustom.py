"""Code every Python process of a test runs at its start, before anything of watcher's: a sitecustomize."""

from __future__ import annotations

import os
from pathlib import Path


def sitecustomize_path(directory: Path, source: str, pythonpath: str | None = None) -> str:
    """A PYTHONPATH (`directory`, then `pythonpath`) whose processes run `source` first: it is written to
    `directory/sitecustomize.py`, which Python's `site` imports at every start."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(source)
    return os.pathsep.join(path for path in (str(directory), pythonpath) if path)
