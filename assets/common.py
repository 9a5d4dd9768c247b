"""What every stage asset shares: the retry policy, turning errors into the right Dagster failure, thumbnails."""

from __future__ import annotations

import base64
import contextlib
import sys
from collections.abc import Iterator

from dagster import Backoff, DagsterExecutionInterruptedError, Failure, Jitter, MetadataValue, RetryPolicy

from heygem_pipeline.errors import HeygemError, InputError, ToolFailedError
from heygem_pipeline.factory.bucket import Bucket
from heygem_pipeline.factory.state import clear_error, write_error

# Transient faults (storage hiccups, a tool's I/O error, memory running out) are retried with exponential backoff:
# 2 s, 4 s, 8 s (± jitter). Anything else fails at once (see `retryable`).
TRANSIENT_RETRY = RetryPolicy(max_retries=3, delay=2.0, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)

GROUP_SCRIPTS, GROUP_AVATARS, GROUP_VIDEOS, GROUP_DELIVERABLES = "scripts", "avatars", "videos", "deliverables"


def _record_error(context, bucket: Bucket, stage: str, key: str, token: str, message: str, final: bool) -> None:
    try:
        write_error(bucket, stage, key, token, message, final)
    except Exception as error:  # the bucket may be what failed: never hide the original error behind this one
        context.log.warning(f"could not record the failure of {stage} {key}: {error}")


def retryable(error: BaseException) -> bool:
    """Whether another attempt may succeed where this one failed.

    Yes: a tool that reported an I/O fault of the machine (``ToolFailedError.transient``), an ``OSError`` (the
    bucket, the network, the local disk: fsspec raises ``ConnectionError``, ``TimeoutError``, ``OSError``), and
    memory running out (host or GPU: another job may hold it now). No: bad input (``InputError``), a missing tool,
    bad settings, a tool that failed on the file (the same bytes fail the same way), and a tool stopped by its time
    limit (``ToolTimeoutError``: that attempt already waited the whole limit, minutes for a long video, and three
    more would hold a worker for as long again; its message tells the user to retry once the share is back). Any
    other exception is a bug in this code, which no retry fixes.
    """
    if isinstance(error, ToolFailedError):
        return error.transient
    if isinstance(error, HeygemError):
        return False
    if isinstance(error, OSError | MemoryError):
        return True
    torch = sys.modules.get("torch")  # only when a stage already loaded it
    return torch is not None and isinstance(error, torch.cuda.OutOfMemoryError)


def failure_message(error: BaseException, source: str | None = None) -> str:
    """The one line recorded for the manifest: the error's own message for errors of this package (``source``
    names the user's file in an input error), and the exception's type before anything else's."""
    if isinstance(error, InputError):
        where = source if source and error.about_the_upload else error.path
        return f"{where}: {error.problem}; {error.fix}"
    if isinstance(error, HeygemError):
        return str(error)
    return f"{type(error).__name__}: {error}"


@contextlib.contextmanager
def stage_failures(context, bucket: Bucket, stage: str, key: str, token: str,
                   source: str | None = None) -> Iterator[None]:
    """Run one stage: a transient fault (``retryable``) propagates, so the retry policy retries it; any other
    failure becomes a non-retryable ``Failure`` carrying its message (bad input: the intake error's). The last
    failure is recorded in the bucket (``work/errors/``) for the manifest and cleared on success. ``source`` names
    the user's file in messages."""
    try:
        yield
    except (KeyboardInterrupt, DagsterExecutionInterruptedError) as interrupt:
        # Terminated (the UI's Terminate, Ctrl-C of `heygem run`): stop for good. Dagster would otherwise retry an
        # interrupted step under its retry policy; a failed step in a run being canceled ends it CANCELED.
        message = f"{stage} {key}: interrupted (its run was terminated)"
        _record_error(context, bucket, stage, key, token, message, final=True)
        raise Failure(description=message, allow_retries=False) from interrupt
    except Failure as failure:
        _record_error(context, bucket, stage, key, token, failure.description or str(failure), final=True)
        raise
    except Exception as error:
        message = failure_message(error, source)
        if not retryable(error):
            _record_error(context, bucket, stage, key, token, message, final=True)
            raise Failure(description=message, allow_retries=False,
                          metadata={"stage": stage, "key": key, "error": type(error).__name__}) from error
        final = context.retry_number >= TRANSIENT_RETRY.max_retries
        _record_error(context, bucket, stage, key, token, message, final)
        context.log.warning(f"{stage} {key} failed on attempt {context.retry_number + 1}: {message}"
                            + ("" if final else " (will retry)"))
        raise
    clear_error(bucket, stage, key)


def thumbnail_markdown(jpeg: bytes) -> MetadataValue:
    """A JPEG as a markdown image with a data URI (the UI has no image type)."""
    encoded = base64.b64encode(jpeg).decode("ascii")
    return MetadataValue.md(f"![thumbnail](data:image/jpeg;base64,{encoded})")


def human_size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"
