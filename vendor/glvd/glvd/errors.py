"""The errors a caller (CLI, worker, Blender) can tell apart and report."""

from __future__ import annotations


class GLVDError(RuntimeError):
    """Base class: a failure with a message fit to show a user. ``code`` goes into worker events."""

    code = "internal"


class BadRequest(GLVDError):
    """A request's field is missing, of the wrong type or out of range; the message names the field."""

    code = "bad_request"


class ImageError(GLVDError):
    """An image is missing, unreadable, or not an image."""

    code = "unreadable_image"


class NoFaceError(GLVDError):
    """No face was found in a photo."""

    code = "no_face"


class CheckpointError(GLVDError):
    """A checkpoint is missing, unreadable, or does not match this runtime."""

    code = "checkpoint"


class Cancelled(GLVDError):
    """The caller cancelled; raised between descent steps."""

    code = "cancelled"
