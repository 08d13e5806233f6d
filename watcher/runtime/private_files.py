"""Files the watcher creates hold its keys and state, so they are private to the user running it.

Directories are created 0700 and files 0600 from the start (never created wider, then narrowed). The
data dir is the watcher's own, so one that already exists wider (made by hand, or by an older version) is
narrowed to 0700 when it belongs to this user; files from older versions are narrowed the same way.
A file lock serialises the few things processes sharing a data dir must not do at once.
"""

from __future__ import annotations

import fcntl
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from watcher.errors import StateError

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create `path` (0700) if missing, or narrow it if it is ours and wider."""
    try:
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(
            f"cannot use {path}: cannot create the directory: {exc.strerror} "
            "(WATCHER_DATA_DIR and WATCHER_DATABASE_URL choose where the watcher writes)"
        ) from None
    narrow(path)
    return path


def narrow(path: Path) -> None:
    """Take group and other permissions away from `path` if it exists and belongs to this user."""
    try:
        st = path.stat()
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o077)
    except OSError:
        pass  # missing, or not ours to change: its own permissions stand


def touch_private(path: Path) -> None:
    """Create an empty 0600 file unless one exists (an existing one of ours is narrowed)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        narrow(path)
    except OSError as exc:
        raise StateError(f"cannot create {path}: {exc.strerror}") from None


def write_private(path: Path, text: str) -> None:
    """Replace `path` atomically with a 0600 file holding `text`: readers see the old or the new, whole."""
    tmp = _write_temp(path, text)
    try:
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StateError(f"cannot write {path}: {exc.strerror}") from None


def create_private(path: Path, text: str) -> bool:
    """Create `path` as a 0600 file holding `text` unless it exists; False if another process won.

    The file appears whole or not at all, so a process racing this one never reads it half written.
    """
    tmp = _write_temp(path, text)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        raise StateError(f"cannot create {path}: {exc.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _write_temp(path: Path, text: str) -> Path:
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp's mode is 0600
    except OSError as exc:
        raise StateError(f"cannot write in {path.parent}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(name)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (a 0600 file, created if missing) for the block, across processes."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    except OSError as exc:
        raise StateError(f"cannot create the lock file {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
