"""Typed errors for bad input and bad settings.

Every error a user can cause carries the file (or variable) it is about and what to do, so one line in a log or
in the manifest is enough to fix it. ``InputError`` means "retrying will not help"; the Dagster layer turns it
into a non-retryable failure.
"""

from __future__ import annotations


class HeygemError(Exception):
    """Base class of every error this package raises on purpose."""


class SettingsError(HeygemError, ValueError):
    """An environment variable with a value the factory cannot use; the message names it, what it must be and
    what it was, on one line."""


class InputError(HeygemError):
    """An input file cannot be used as it is. Retrying will not help; fixing the file will."""

    def __init__(self, path: object, problem: str, fix: str) -> None:
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.path}: {problem}; {fix}")


class EmptyFileError(InputError):
    """The file has zero bytes (an upload that never finished, or a placeholder)."""


class NotMediaError(InputError):
    """ffprobe cannot read the file as audio, video or image."""


class NoAudioStreamError(InputError):
    """A script (voice track) that has no audio stream."""


class NoVideoStreamError(InputError):
    """An avatar (presenter template) that has no video stream."""


class TooShortError(InputError):
    """Less usable media than the pipeline needs (truncated upload, or a clip shorter than 1 s)."""


class NoFaceError(InputError):
    """The avatar does not show a trackable face in most frames."""


class UnsafeNameError(InputError):
    """A file name that cannot be turned into a safe id (empty, hidden, only punctuation)."""


class UnsupportedFormatError(InputError):
    """A file whose extension is not one the factory accepts."""


class CheckpointError(InputError):
    """A Wav2Lip checkpoint that is missing, unreadable, or does not fit the generator."""


class ToolMissingError(HeygemError):
    """A system tool (ffmpeg, ffprobe, espeak-ng) is not installed."""


class ToolTimeoutError(HeygemError):
    """An external tool (ffmpeg, ffprobe, espeak-ng) stalled or ran past its time limit and was killed.

    Not an ``InputError``: a stalled network file or an overloaded machine may work on a retry.
    """

    def __init__(self, path: object, tool: str, problem: str, fix: str) -> None:
        self.path = str(path)
        self.tool = tool
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.path}: {tool} {problem} and was stopped; {fix}")
