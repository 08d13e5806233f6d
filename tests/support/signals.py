"""A signal whose handler's exception is lost, for tests of `watcher.runtime.early_stop`."""

#: Python source defining `lose_a_sigterm()`: it sends its process a SIGTERM from inside a weakref callback,
#: so the handler runs there, and a SystemExit it raises is only printed ("Exception ignored"): a lost exit,
#: as when the collector or SQLAlchemy runs such a callback at the moment the signal arrives
LOSE_A_SIGTERM = """
import os, signal, weakref

class _Doomed:
    pass

def lose_a_sigterm():
    def callback(_ref):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10):  # the handler runs here, inside the callback
            pass
    doomed = _Doomed()
    ref = weakref.ref(doomed, callback)
    del doomed  # the callback runs now, while `ref` lives
"""
