"""The collector and a poll: what a process imported is set aside once, so big polls do not re-scan it.

CPython's full collections walk every tracked object, and a worker that has imported SQLAlchemy, botocore
and the rest holds around a million of them that live as long as the process. A big poll allocates
enough to set off full collections again and again (py-spy put a third of a 100k-tag ECR poll's samples
in them; freezing saved about 15 % of its CPU, `benchmarks/ecr_scale.py`). `settle()` collects once, then
freezes what is left (`gc.freeze`): those objects are never scanned again, while everything a poll
allocates afterwards is collected as usual.
"""

from __future__ import annotations

import gc
import threading

_lock = threading.Lock()
_settled = False


def settle() -> None:
    """Once per process: collect, then move every object still alive out of the collector's sight."""
    global _settled
    with _lock:
        if _settled:
            return
        _settled = True
        gc.collect()
        gc.freeze()
