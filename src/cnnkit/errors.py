"""Errors meant for people: each says what was given, what was expected and what to do.

The CLI prints these without a traceback and exits with status 2; anything else is a bug.
"""


class CnnkitError(Exception):
    """Base class of every error cnnkit raises on purpose."""


class UnknownNameError(CnnkitError, KeyError):
    """An unknown model, dataset, layer or option name."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class DataError(CnnkitError):
    """A dataset file that is missing, corrupt, truncated or of the wrong kind."""


class ImageError(CnnkitError):
    """An image that cannot be read or converted to what the model expects."""


class CheckpointError(CnnkitError):
    """A checkpoint that is missing, corrupt or does not match the model."""


class TrainingDivergedError(CnnkitError):
    """The loss became NaN or infinite."""


def did_you_mean(name: str, choices) -> str:
    """A short hint naming the closest valid choices, for error messages."""
    import difflib

    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return f"{hint} Valid names: {', '.join(choices)}."


class ShapeError(CnnkitError, ValueError):
    """An input whose size does not fit a layer or an architecture (a filter that does not fit, an image
    smaller than the model's minimum input size)."""


class BitstreamError(CnnkitError):
    """A compressed image file that is truncated, corrupt, of another format, or written by another model."""


class ConfigError(CnnkitError, ValueError):
    """A training option, recipe entry or checkpoint field of the wrong type or out of range."""


class RunFolderError(CnnkitError):
    """A run folder that already holds a run, cannot be written, or is a file."""
