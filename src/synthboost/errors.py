"""Error types shared by every layer; the CLI maps ``UserError`` to exit code 2."""


class UserError(Exception):
    """The user's input is wrong; the message says what to fix (one line, no traceback)."""


class DataError(UserError):
    """Fashion-MNIST is missing or corrupt."""


class TrackingUnavailable(UserError):
    """The tracking store or Optuna storage cannot be reached."""


class TrainingError(RuntimeError):
    """A model failed while training (not the user's fault, but a clear reason is recorded)."""


class GeneratorDiverged(TrainingError):
    """A generator's loss became NaN/inf or training collapsed."""


class ResourceError(RuntimeError):
    """The machine or a store ran out (disk space, a server gone too long): one line that says how to resume."""


class DiskFull(ResourceError):
    """A write failed for lack of space (ENOSPC, or EFBIG under a file-size limit)."""


class StoreOutage(ResourceError):
    """The tracking server or the database stayed unreachable for longer than the outage bound."""


class CheckpointIncomplete(RuntimeError):
    """A stored checkpoint does not match the digest recorded after its upload (partly written or damaged)."""
