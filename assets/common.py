"""What every stage asset shares: the retry policy, turning errors into the right Dagster failure, thumbnails."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator

from dagster import Backoff, Failure, Jitter, MetadataValue, RetryPolicy
from dagster._core.errors import DagsterExecutionInterruptedError

from heygem_pipeline.errors import HeygemError, InputError
from heygem_pipeline.factory.bucket import Bucket
from heygem_pipeline.factory.state import clear_error, write_error

# Transient faults (storage hiccups, an encoder or the GPU dying mid-run) are retried with exponential backoff:
# 2 s, 4 s, 8 s (± jitter). Bad input is never retried (see `stage_failures`).
TRANSIENT_RETRY = RetryPolicy(max_retries=3, delay=2.0, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)

GROUP_SCRIPTS, GROUP_AVATARS, GROUP_VIDEOS, GROUP_DELIVERABLES = "scripts", "avatars", "videos", "deliverables"


def _record_error(context, bucket: Bucket, stage: str, key: str, token: str, message: str, final: bool) -> None:
    try:
        write_error(bucket, stage, key, token, message, final)
    except Exception as error:  # the bucket may be what failed: never hide the original error behind this one
        context.log.warning(f"could not record the failure of {stage} {key}: {error}")


@contextlib.contextmanager
def stage_failures(context, bucket: Bucket, stage: str, key: str, token: str,
                   source: str | None = None) -> Iterator[None]:
    """Run one stage: bad input becomes a non-retryable ``Failure`` carrying the intake error's message; any
    other exception propagates, so the retry policy retries it. The last failure is recorded in the bucket
    (``work/errors/``) for the manifest and cleared on success. ``source`` names the user's file in messages."""
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
    except HeygemError as error:
        if isinstance(error, InputError):
            message = f"{source or error.path}: {error.problem}; {error.fix}"
        else:
            message = str(error)
        _record_error(context, bucket, stage, key, token, message, final=True)
        raise Failure(description=message, allow_retries=False,
                      metadata={"stage": stage, "key": key, "error": type(error).__name__}) from error
    except Exception as error:
        final = context.retry_number >= TRANSIENT_RETRY.max_retries
        _record_error(context, bucket, stage, key, token, f"{type(error).__name__}: {error}", final)
        context.log.warning(f"{stage} {key} failed on attempt {context.retry_number + 1}: {error}"
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
