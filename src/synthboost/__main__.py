"""``python -m synthboost`` = the ``synthboost`` command (used by MLproject, which needs no install)."""

from .cli import app

if __name__ == "__main__":
    app(prog_name="synthboost")
