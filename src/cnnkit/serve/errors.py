"""Errors of the web playground. Each carries the HTTP status the API answers with; the app turns every
CnnkitError into ``{"error": message}`` so a failed request never takes the server down."""

from __future__ import annotations

from ..errors import CheckpointError, CnnkitError, DataError, ImageError, ShapeError, UnknownNameError


class UploadTooLargeError(ImageError):
    http_status = 413


class UnsupportedImageTypeError(ImageError):
    http_status = 415


class CheckpointNameError(CheckpointError):
    """A checkpoint name that is not a plain folder name inside the configured checkpoints folder."""

    http_status = 400


class CheckpointNotFoundError(CheckpointError, UnknownNameError):
    http_status = 404

    def __str__(self) -> str:
        return CnnkitError.__str__(self)


class NotDrawableError(CheckpointError):
    """A run the Draw page cannot use: not a classifier, or an input a drawing cannot become."""

    http_status = 422


class NotDetectorError(CheckpointError):
    """A run the Detect page cannot use: not a detector, or one whose checkpoint and network disagree."""

    http_status = 422


class NoDetectorError(CnnkitError):
    """A Detect request that names no detector (the checkpoints folder may hold none yet)."""

    http_status = 400


class TrainingBusyError(CnnkitError):
    """A second training job while one runs: the machine trains one model at a time."""

    http_status = 409


class NoTrainingError(CnnkitError):
    http_status = 409


class ModelUnavailableError(CnnkitError):
    """A model the page needs (the pretrained EfficientNet-Lite0) cannot be loaded on this machine."""

    http_status = 503


class TeachBusyError(CnnkitError):
    """Someone else is teaching (or the Train page training): the machine fits one model at a time."""

    http_status = 409


class TeachSessionError(CnnkitError):
    """A request for a session that has ended (fitted, or idle and replaced) or never existed."""

    http_status = 409


class TeachDataError(DataError):
    """Too few classes or images, too many, or a class name that cannot be a folder name."""

    http_status = 422


class NotTaughtError(CheckpointError):
    http_status = 422


def http_status(error: CnnkitError) -> int:
    """The status for errors raised by the rest of cnnkit, which know nothing of HTTP."""
    explicit = getattr(error, "http_status", None)
    if explicit:
        return explicit
    if isinstance(error, UnknownNameError):
        return 404
    if isinstance(error, (ImageError, ShapeError)):
        return 400
    if isinstance(error, CheckpointError):
        return 422  # the named checkpoint exists but cannot be used (corrupt, mismatched)
    return 400


class UnknownExampleError(UnknownNameError):
    http_status = 404
