"""A failed tool is a ``ToolFailedError`` that says which tool, on which file, and why; only a fault of the machine
(an I/O error) is retried, a file that cannot be decoded fails at once with the tool's own words.

Real ffmpeg and espeak-ng on real bad inputs: random bytes named like a video, an MP4 whose picture data is random,
a voice that does not exist, and ``/dev/full`` (every write fails with ENOSPC) for an I/O fault.
"""

from __future__ import annotations

import random
from pathlib import Path

import ffmpeg
import numpy as np
import pytest
from dagster import DagsterEventType, Failure, RetryPolicy, job, op

from assets.common import failure_message, retryable, stage_failures
from heygem_pipeline.engine.audio.intake import synthesize_speech
from heygem_pipeline.engine.avatar import normalize_avatar
from heygem_pipeline.engine.media.frames import FrameWriter
from heygem_pipeline.engine.media.tools import ff_path, run_ffmpeg
from heygem_pipeline.errors import (
    DamagedFileError,
    InputError,
    NotMediaError,
    ToolFailedError,
    ToolTimeoutError,
)
from heygem_pipeline.factory.bucket import Bucket
from heygem_pipeline.factory.layout import error_path


def garbage(path: Path, size: int = 20000) -> Path:
    """Random bytes (always the same ones) under a video's name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(7).randbytes(size))
    return path


def scrambled_mp4(path: Path) -> Path:
    """A faststart MP4 whose index is intact (ffprobe reads it) and whose picture data is random bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    run_ffmpeg(ffmpeg.input("testsrc=duration=3:size=320x240:rate=25", f="lavfi")
               .output(ff_path(path), vcodec="libx264", preset="ultrafast", pix_fmt="yuv420p", movflags="+faststart")
               .overwrite_output(), "making test media")
    data = path.read_bytes()
    start = data.index(b"mdat") + 4 + 64  # keep the box header and the first bytes of the stream
    path.write_bytes(data[:start] + random.Random(7).randbytes(len(data) - start))
    return path


def decode(path: Path) -> None:
    run_ffmpeg(ffmpeg.input(ff_path(path)).output("-", f="null"), f"decoding {path}", subject=path)


def write_to_full_disk() -> None:
    """ffmpeg writing 30 s of tone to /dev/full: the kernel answers every write with ENOSPC."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    run_ffmpeg(ffmpeg.input("sine=duration=30", f="lavfi").output("file:/dev/full", f="wav").overwrite_output(),
               "writing a tone to /dev/full", subject="/dev/full")


def test_ffmpeg_on_garbage_names_the_tool_the_file_and_why(tmp_path: Path) -> None:
    upload = garbage(tmp_path / "avatars" / "x.mp4")
    with pytest.raises(ToolFailedError) as caught:
        decode(upload)
    error = caught.value
    assert (error.tool, error.subject) == ("ffmpeg", str(upload))
    assert error.returncode > 0
    assert "Invalid data found when processing input" in error.stderr_tail
    assert str(error) == f"ffmpeg failed while decoding {upload}: {error.stderr_tail}"
    assert "\n" not in str(error)
    assert not error.transient
    assert not retryable(error)
    assert failure_message(error) == str(error)  # recorded as the tool's message, not "RuntimeError: …"


def test_an_io_fault_is_transient() -> None:
    with pytest.raises(ToolFailedError) as caught:
        write_to_full_disk()
    error = caught.value
    assert error.tool == "ffmpeg" and error.subject == "/dev/full" and error.returncode > 0
    assert "No space left on device" in error.stderr_tail
    assert error.transient and retryable(error)


def test_an_encoder_that_cannot_read_its_audio_names_the_output(tmp_path: Path) -> None:
    audio = garbage(tmp_path / "voice.wav")
    dest = tmp_path / "out" / "render.mp4"
    with pytest.raises(ToolFailedError) as caught, FrameWriter(dest, 64, 64, 25.0, audio=audio) as writer:
        for _ in range(200):
            writer.write(np.zeros((64, 64, 3), np.uint8))
    error = caught.value
    assert error.subject == str(dest) and str(dest) in str(error) and error.returncode != 0
    assert "Invalid data found" in error.stderr_tail and not error.transient
    assert not dest.exists()


def test_an_unknown_voice_fails_with_the_fix(tmp_path: Path) -> None:
    script = tmp_path / "hello.txt"
    with pytest.raises(ToolFailedError) as caught:
        synthesize_speech("Hello there.", tmp_path / "hello.wav", voice="zz", subject=script)
    error = caught.value
    assert error.tool == "espeak-ng" and error.subject == str(script) and not error.transient
    assert str(script) in str(error) and str(error).endswith("list the installed voices with: espeak-ng --voices")


def test_an_undecodable_avatar_is_the_users_input(tmp_path: Path) -> None:
    upload = scrambled_mp4(tmp_path / "avatars" / "scrambled.mp4")
    with pytest.raises(DamagedFileError) as caught:
        normalize_avatar(upload, tmp_path / "out.mp4")
    error = caught.value
    assert isinstance(error, InputError) and not retryable(error)
    assert str(error) == (f"{upload}: no video frame could be decoded (the upload looks cut short or damaged); "
                          "upload the file again (or export it again)")
    cause = error.__cause__
    assert isinstance(cause, ToolFailedError) and cause.tool == "ffmpeg" and cause.subject == str(upload)
    assert not (tmp_path / "out.mp4").exists()


def test_garbage_is_not_media_and_its_probe_failure_is_kept(tmp_path: Path) -> None:
    upload = garbage(tmp_path / "avatars" / "x.mp4")
    with pytest.raises(NotMediaError) as caught:
        normalize_avatar(upload, tmp_path / "out.mp4")
    assert str(upload) in str(caught.value)


def test_what_is_retried() -> None:
    assert ToolFailedError("ffmpeg", "a.mp4", 1, "a.mp4: Input/output error").transient
    assert ToolFailedError("ffmpeg", "a.mp4", 1, "Error reading: Connection reset by peer").transient
    assert ToolFailedError("ffmpeg", "a.mp4", -9, "").transient  # killed by a signal we did not send
    assert not ToolFailedError("ffmpeg", "a.mp4", 1, "moov atom not found").transient
    assert retryable(ConnectionError("connection reset by storage")) and retryable(OSError(5, "I/O error"))
    assert retryable(MemoryError())
    assert not retryable(ToolTimeoutError("a.mp4", "ffmpeg", "made no progress for 60 s", "retry"))
    assert not retryable(ValueError("a bug"))


# A stage through Dagster: the same classification decides whether the step is retried.
@op(config_schema={"bucket": str, "upload": str, "fault": str},
    retry_policy=RetryPolicy(max_retries=1))  # no delay: the test waits for nothing
def stage(context) -> None:
    config = context.op_config
    with stage_failures(context, Bucket(config["bucket"]), "avatar", "x", "token", source="avatars/x.mp4"):
        if config["fault"] == "transient":
            write_to_full_disk()
        else:
            decode(Path(config["upload"]))


@job
def stage_job() -> None:
    stage()


def run_stage(tmp_path: Path, fault: str) -> tuple[list[DagsterEventType], dict]:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    upload = garbage(tmp_path / "avatars" / "x.mp4")
    result = stage_job.execute_in_process(
        run_config={"ops": {"stage": {"config": {"bucket": str(bucket), "upload": str(upload), "fault": fault}}}},
        raise_on_error=False)
    assert not result.success
    kinds = [e.event_type for e in result.all_events if e.event_type in (
        DagsterEventType.STEP_UP_FOR_RETRY, DagsterEventType.STEP_FAILURE)]
    record = Bucket(str(bucket)).read_json(error_path(Bucket(str(bucket)), "avatar", "x"))
    return kinds, record


def test_a_deterministic_tool_failure_fails_at_once(tmp_path: Path) -> None:
    kinds, record = run_stage(tmp_path, "deterministic")
    assert kinds == [DagsterEventType.STEP_FAILURE]  # not up for retry
    assert record["final"] is True
    assert record["message"].startswith(f"ffmpeg failed while decoding {tmp_path / 'avatars' / 'x.mp4'}: ")
    assert "Invalid data found" in record["message"] and "RuntimeError" not in record["message"]


def test_a_transient_tool_failure_is_retried(tmp_path: Path) -> None:
    kinds, record = run_stage(tmp_path, "transient")
    assert kinds == [DagsterEventType.STEP_UP_FOR_RETRY, DagsterEventType.STEP_FAILURE]
    assert "No space left on device" in record["message"] and record["message"].startswith("ffmpeg failed while")


def test_failure_is_what_stage_failures_raises_for_bad_input(tmp_path: Path) -> None:
    """Outside Dagster's retry loop too: a deterministic failure comes out as a non-retryable ``Failure``."""

    class Context:  # what stage_failures reads of an execution context, for a first attempt
        retry_number = 0

    upload = garbage(tmp_path / "avatars" / "x.mp4")
    with pytest.raises(Failure) as caught, stage_failures(Context(), Bucket(str(tmp_path / "b")), "avatar", "x",
                                                          "token"):
        decode(upload)
    assert caught.value.allow_retries is False
    assert caught.value.description == str(caught.value.__cause__)
