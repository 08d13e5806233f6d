"""A child process that must not outlive its parent: the beat `watcher run` embeds, and its HTTP side.

Celery's embedded beat is a forked child of the worker. When the worker ends on its own it stops the beat,
but a worker killed outright (SIGKILL, the OOM killer) leaves the beat behind, ticking into the broker for
ever with nobody to stop it, and beside the beat of the next `watcher run`. On Linux the kernel can send the
child a signal when its parent dies (`prctl(PR_SET_PDEATHSIG)`; it survives the exec of `watcher serve`, the
HTTP child, which would otherwise keep the port); elsewhere nothing is done.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
#: the C library, found when this module is imported: `end_with_parent` may run between a fork and an exec
#: (`subprocess`'s `preexec_fn`), where neither an import nor a `dlopen` is safe
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def end_with_parent(parent: int) -> bool:
    """SIGTERM this process when `parent` (the pid it was forked from) dies; at once if it already has.
    False where the system cannot say (not Linux, or the call failed)."""
    if _LIBC is None or _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return False
    if os.getppid() != parent:  # it died between the fork and the call: nothing would signal it now
        os.kill(os.getpid(), signal.SIGTERM)
    return True
