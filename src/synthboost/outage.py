"""Riding out a store outage: a tracking server or a database that stops and comes back within a bound.

Retried calls fail before they commit while the store is down; a write whose answer alone was lost may apply twice
(a duplicate metric point or tag, never a lost one).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from .errors import StoreOutage

T = TypeVar("T")
DEFAULT_BOUND = 600.0
MAX_DELAY = 15.0
#: the text a failure to reach a server or database leaves somewhere in its exception chain
_SIGNS = ("connection refused", "max retries exceeded", "could not connect", "server closed the connection",
          "terminating connection", "the database system is starting up", "the database system is shutting down",
          "connection reset", "remote end closed connection", "connection aborted", "failed to establish",
          "no connection to the server", "connection to server", "is the server running", "bad gateway",
          "service unavailable", "connection is closed")
_NAMES = ("ConnectionError", "MaxRetryError", "NewConnectionError", "RemoteDisconnected", "ConnectionRefusedError",
          "ConnectionResetError")
_lock = threading.Lock()
_down_since: dict[str, float] = {}  # what -> when this process first saw it unreachable
_answered: dict[str, float] = {}  # what -> when it last answered this process
#: the exit code of a worker process that gave up on a store (``StoreOutage``): the command that started it then
#: stops too, instead of waiting the bound a second time
OUTAGE_EXIT = 75


def bound() -> float:
    try:
        return float(os.environ.get("SYNTHBOOST_OUTAGE_SECONDS", DEFAULT_BOUND))
    except ValueError:
        return DEFAULT_BOUND


def unreachable(err: BaseException) -> bool:
    """Whether ``err`` (or an exception it wraps) says the store could not be reached, not that a call was wrong."""
    seen = 0
    while err is not None and seen < 10:
        if type(err).__name__ in _NAMES or any(s in str(err).lower() for s in _SIGNS):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def patient(call: Callable[[], T], *, what: str,
            answers: Callable[[BaseException], BaseException | None] | None = None) -> T:
    """``call()``, retried while ``what`` (e.g. "MLflow tracking server http://…") is unreachable, up to the bound.

    ``answers(err)`` tells a store that answers with a failure (e.g. a full disk) from an outage."""
    delay, start, refused = 1.0, None, 0
    while True:
        try:
            value = call()
        except Exception as err:
            if not unreachable(err):
                raise
            failure = answers(err) if answers is not None else None
            if failure is not None:
                refused += 1
                if refused >= 2:
                    raise failure from None
                time.sleep(1.0)  # once more: a server restarting right then fails one call, not two
                continue
            now = time.monotonic()
            with _lock:
                start = _down_since.setdefault(what, now)
                first = start == now
            waited = now - start
            if waited >= bound():
                raise StoreOutage(f"{what} unreachable for {waited:.0f} s (more than SYNTHBOOST_OUTAGE_SECONDS="
                                  f"{bound():.0f}); start it again, then re-run the same command to resume "
                                  "(finished trials and cells are kept)") from None
            if first:
                print(f"{what} unreachable ({type(err).__name__}); waiting for it with backoff, up to "
                      f"{bound():.0f} s", file=sys.stderr, flush=True)
            time.sleep(min(delay, max(0.1, bound() - waited)))
            delay = min(2 * delay, MAX_DELAY)
            continue
        now = time.monotonic()
        with _lock:
            # only a call that itself failed and now succeeds says the store is back: another thread's call that
            # never needed it (a cached or local look-up) proves nothing
            began = _down_since.pop(what, None) if start is not None else None
            last = _answered.get(what)
            if start is not None or what not in _down_since:
                _answered[what] = now
        if began is not None:
            # the outage began somewhere between the last answer and the first failed call: say both
            since = f"; its last answer was {now - last:.0f} s ago" if last is not None else ""
            print(f"{what} is back after {now - began:.0f} s of failed calls{since}; carrying on", file=sys.stderr,
                  flush=True)
        return value
