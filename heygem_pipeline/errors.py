"""Typed errors for bad input, bad settings and failed tools.

Every error a user can cause carries the file (or variable) it is about and what to do, so one line in a log or
in the manifest is enough to fix it. ``InputError`` means "retrying will not help"; the Dagster layer turns it
into a non-retryable failure. ``ToolFailedError.transient`` says whether a retry may help a failed tool.
"""

from __future__ import annotations


class HeygemError(Exception):
    """Base class of every error this package raises on purpose."""


class SettingsError(HeygemError, ValueError):
    """An environment variable with a value the factory cannot use; the message names it, what it must be and
    what it was, on one line."""


class NotInBucketError(HeygemError, LookupError):
    """A campaign, script or avatar that a request names is not in the bucket (the message says which there are)."""


class InputError(HeygemError):
    """An input file cannot be used as it is. Retrying will not help; fixing the file will."""

    about_the_upload = True  # the path is the upload being processed (messages may name it by its bucket address)

    def __init__(self, path: object, problem: str, fix: str) -> None:
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.path}: {problem}" + (f"; {fix}" if fix else ""))


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


class DamagedFileError(InputError):
    """A file the tools recognise as media but cannot decode (corrupt or cut-off data, not a transient fault)."""


class NoFaceError(InputError):
    """The avatar does not show a trackable face in most frames."""


class UnsafeNameError(InputError):
    """A file name that cannot be turned into a safe id (empty, hidden, only punctuation)."""


class UnsupportedFormatError(InputError):
    """A file whose extension is not one the factory accepts."""


class CheckpointError(InputError):
    """A Wav2Lip checkpoint that is missing, unreadable, or does not fit the generator."""


class VoiceModelError(InputError):
    """A voice model (a neural voice's .onnx and its config) that is missing, unreadable, or not a model of the
    engine it is used with (wrong inputs), or a speaker it does not have."""

    about_the_upload = False  # the path is the model file, which the message must name


class ModelFileError(InputError):
    """A model file that is missing, unreadable or not the expected network (a key or shape differs)."""

    about_the_upload = False  # the path is the model file, which the message must name


class UnvoiceableTextError(InputError):
    """A text script with words the chosen voice cannot speak (phonemes its model does not know)."""


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


# Fragments of the operating system's error strings (strerror of EIO, ECONNRESET, ETIMEDOUT, EAGAIN, ENOSPC,
# ESTALE) as ffmpeg and espeak-ng print them. They mean the disk, the network share or the machine failed the tool,
# not the file's content: another attempt may succeed, and the failure must not be recorded against the upload.
# Nothing else is: "Invalid data found", "moov atom not found", "Error while decoding" and the like say the same
# on every attempt.
TRANSIENT_TOOL_ERRORS = ("input/output error", "connection reset", "connection timed out",
                         "resource temporarily unavailable", "no space left on device", "stale file handle")


class ToolFailedError(HeygemError):
    """An external tool (ffmpeg, espeak-ng) exited with an error.

    ``tool``: its name; ``subject``: the file it worked on; ``returncode``: its exit status (negative: killed by
    that signal); ``stderr_tail``: its last lines of stderr, on one line. ``transient``: whether a retry may help.
    """

    def __init__(self, tool: str, subject: object, returncode: int, stderr_tail: str, *, doing: str = "",
                 fix: str = "") -> None:
        self.tool = tool
        self.subject = str(subject)
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        self.fix = fix
        doing = doing or f"working on {self.subject}"
        if self.subject not in doing:
            doing += f" ({self.subject})"
        detail = stderr_tail or (f"exit status {returncode}" if returncode else "it wrote nothing")
        super().__init__(f"{tool} failed while {doing}: {detail}" + (f"; {fix}" if fix else ""))

    @property
    def transient(self) -> bool:
        """True when the tool reports an I/O fault of the machine (see ``TRANSIENT_TOOL_ERRORS``), or was killed by
        a signal it did not raise itself (the kernel's out-of-memory killer; our own time limits raise
        ``ToolTimeoutError`` instead). A crash on a file (SIGSEGV) counts too: three retries cost little."""
        text = self.stderr_tail.lower()
        return self.returncode < 0 or any(fragment in text for fragment in TRANSIENT_TOOL_ERRORS)
