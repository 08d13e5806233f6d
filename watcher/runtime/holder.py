"""Who holds a lease, named so that another process on the same host can tell when it died.

A lease's token is `HOSTNAME:PID:START:HOST:NONCE`. A claim whose holder is known dead is taken at once
instead of waiting for its lease to lapse; `known_dead` is true only when it is certain:

- HOST says which processes PID can be checked against: a hash of the kernel's boot id and of this
  process's pid namespace. Pids mean something only within one namespace of one running kernel: the
  containers of one Kubernetes pod share a hostname, and the copies of an image share /etc/machine-id,
  while each has its own pid namespace, where the same pid is another process; and the same pid and start
  tick recur after a reboot, which changes the boot id. A hostname is not needed either: processes that
  share a pid namespace see each other whatever their hostnames.
- START is the process's start time in clock ticks since boot (/proc/PID/stat field 22): a pid reused by
  another process has another start time.
- NONCE tells two claims of one process apart (two polls never share a claim).

HOSTNAME is for people reading the token. A token from another host, or one that cannot be read (no
/proc, another release's token), is never known dead: its lease lapses on its own.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import secrets
import socket
from pathlib import Path

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
#: what a hostname may keep in a token (it is for people only; ':' separates the fields)
_UNSAFE = re.compile(r"[^A-Za-z0-9.-]")


def token() -> str:
    """A new token naming this process (under 90 characters: leases store 100)."""
    return _prefix(os.getpid()) + secrets.token_hex(4)


def known_dead(holder: str) -> bool:
    """Whether the process that made `holder` (a `token()`) has certainly exited: it ran on this host and
    there is no such process now, or the pid is another process's (another start time) or a zombie's."""
    parts = holder.split(":")
    if len(parts) != 5:
        return False
    _, pid_text, start_text, host, _ = parts
    here, _ = _identity(os.getpid())
    if here is None or host != here or not _number(pid_text) or not _number(start_text):
        return False
    pid = int(pid_text)
    if pid <= 0:
        return False
    try:
        seen = _stat(pid)
        if seen is None:  # hidden (`hidepid`) or gone: only a signal 0 tells
            return not _exists(pid)
    except (OSError, ValueError, IndexError):
        return False
    state, started = seen
    return started != int(start_text) or state in ("Z", "X")


@functools.lru_cache(maxsize=1)
def _prefix(pid: int) -> str:
    host, start = _identity(pid)
    name = _UNSAFE.sub("-", socket.gethostname())[:40] or "-"
    return f"{name}:{pid}:{start if start is not None else '-'}:{host or '-'}:"


@functools.lru_cache(maxsize=1)
def _identity(pid: int) -> tuple[str | None, int | None]:
    """(HOST, START) of process `pid`, this one (cached by pid: a forked child asks again)."""
    try:
        seen = _stat(pid)
        if seen is None or int(Path("/proc/self/stat").read_text().split(" ", 1)[0]) != pid:
            return None, None  # /proc is another pid namespace's: pids cannot be checked through it
        boot = BOOT_ID.read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except (OSError, ValueError):
        return None, None
    return hashlib.sha256(f"{boot} {namespace}".encode()).hexdigest()[:16], seen[1]


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in ticks since boot) of process `pid`; None if /proc shows no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces and ')'
    return fields[0], int(fields[19])  # fields 3 and 22 of proc(5)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, another user's
        return True
    return True


def _number(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 20
