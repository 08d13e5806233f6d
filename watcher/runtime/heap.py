"""The collector and a poll: what a process imported is set aside once, so big polls do not re-scan it.

CPython's full collections walk every tracked object, and a worker that has imported SQLAlchemy, botocore
and the rest holds around a million of them that live as long as the process. A big poll allocates
enough to set off full collections again and again (py-spy put a third of a 100k-tag ECR poll's samples
in them; freezing saved about 15 % of its CPU, `benchmarks/ecr_scale.py`). `settle()` collects once, then
freezes what is left (`gc.freeze`): those objects are never scanned again, while everything a poll
allocates afterwards is collected as usual.

A command's start is the same story in small: its imports alone set off some 270 collections, each
rescanning the objects imported before (~15 % of `watcher poll`'s CPU before its first request, and of a
reading command's). A command run `holding` has the collector off while it imports; `settle()` then
freezes without the full collection (what imports leave unreachable is a few thousand objects, not worth a
pass over a few hundred thousand) and turns it back on. A reading command never settles: the collector
is back on when it returns (in a process of its own, that is its end; in a test's process, it matters).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

#: collections of the middle generation between two of the oldest, once settled (CPython's default is 10).
#: A big poll keeps hundreds of thousands of objects alive for a while (a listing, the stored rows it is
#: compared with); each full collection walks them all, and with the default a 1 %-changed poll of 100,000
#: ECR tags made five, ~130 ms of its ~3.3 s of CPU. At 100 the old generation is still collected, after
#: ~700,000 net allocations rather than ~70,000 (`benchmarks/ecr_scale.py`: -6 % CPU on that poll).
OLD_EVERY = 100

_lock = threading.Lock()
_settled = False
_held = False


def holding(func: Callable[P, R]) -> Callable[P, R]:
    """`func` runs with no collections until it returns or settles the heap, whichever comes first."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        hold()
        try:
            return func(*args, **kwargs)
        finally:
            release()

    return wrapper


def hold() -> None:
    """No collections until `settle()` or `release()`: for a command's start, before its imports."""
    global _held
    with _lock:
        if _settled or not gc.isenabled():
            return  # settled already, or the collector is someone else's to turn on
        _held = True
        gc.disable()


def release() -> None:
    """The collector back on, if `hold()` turned it off and nothing settled since."""
    global _held
    with _lock:
        if _held:
            _held = False
            gc.enable()


def settle() -> None:
    """Once per process: collect (unless held since the start), then move every object still alive out of
    the collector's sight, and consider the oldest generation a tenth as often (`OLD_EVERY`); a held
    collector is turned back on."""
    global _settled, _held
    with _lock:
        if _settled:
            return
        _settled = True
        if not _held:
            gc.collect()
        gc.freeze()
        young, middle, old = gc.get_threshold()
        gc.set_threshold(young, middle, max(old, OLD_EVERY))
        if _held:
            _held = False
            gc.enable()
