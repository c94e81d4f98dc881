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
