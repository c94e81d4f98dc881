"""One plain line per stage of a long command (``synthboost demo``, ``synthboost run``), on a terminal or not.

Progress bars hide themselves off a terminal, so a CI log saw nothing for minutes; ``tqdm.write`` keeps a stage line
above a running bar.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

#: ``stage(name, detail)``: announce that a stage starts (pipeline code takes one of these, or None for silence)
StageFn = Callable[[str, str], None]


class Stages:
    """A ``StageFn`` that writes ``[  12.3 s] name: detail`` lines, the time counted from its creation."""

    def __init__(self, *, stream: TextIO | None = None, prefix: str = ""):
        self.stream = stream  # None: sys.stderr at write time (test runners swap it)
        self.prefix = prefix
        self.t0 = time.perf_counter()
        self.names: list[str] = []  # every stage announced, in order

    def __call__(self, name: str, detail: str = "") -> None:
        from tqdm import tqdm

        self.names.append(name)
        stream = self.stream or sys.stderr
        line = f"{self.prefix}[{time.perf_counter() - self.t0:6.1f} s] {name}" + (f": {detail}" if detail else "")
        tqdm.write(line, file=stream)
        stream.flush()


def silent(name: str, detail: str = "") -> None:
    """The ``StageFn`` of studies and grids, whose workers report through Optuna and MLflow instead."""
