"""A fault-injection hook for the fault tests (tests/test_faults.py): inert unless ``SYNTHBOOST_FAULT`` is set.

``SYNTHBOOST_FAULT=<stage>:<action>`` acts the first time this process reaches ``point(<stage>)``: it sends itself a
signal, or (``wait``) says so on stderr and sleeps for a test to signal it.
"""

from __future__ import annotations

import os
import signal
import sys
import time

_fired: set[str] = set()


def point(stage: str) -> None:
    spec = os.environ.get("SYNTHBOOST_FAULT")
    if not spec or stage in _fired or spec.partition(":")[0] != stage:
        return
    _fired.add(stage)
    once = os.environ.get("SYNTHBOOST_FAULT_ONCE")
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return  # another process took the fault
    action = spec.partition(":")[2] or "wait"
    print(f"fault point {stage} reached (pid {os.getpid()})", file=sys.stderr, flush=True)
    if action == "wait":
        time.sleep(600)
    else:
        os.kill(os.getpid(), getattr(signal, action))
