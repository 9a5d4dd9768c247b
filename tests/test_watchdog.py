"""No stuck jobs: every external tool is killed when it stalls or overruns, with a one-line error naming the file.

Hangs are real: fake ``ffmpeg``/``ffprobe``/``espeak-ng`` scripts first on PATH that sleep, and the real ffmpeg
reading a FIFO that delivers part of a file and then nothing (a stalled network file). Limits are set low through
the environment variables the factory reads (``HEYGEM_STALL_SECONDS``, ``HEYGEM_TOOL_TIMEOUT_FACTOR``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import ffmpeg
import numpy as np
import pytest

from heygem_pipeline.engine.audio.intake import decode_audio, normalize_script, synthesize_speech
from heygem_pipeline.engine.media import files
from heygem_pipeline.engine.media.files import atomic_output, remove_stale_temporaries
from heygem_pipeline.engine.media.frames import FrameReader, FrameWriter
from heygem_pipeline.engine.media.probe import probe
from heygem_pipeline.engine.media.tools import PROGRESS_STDOUT, ff_path, run_ffmpeg, run_tool
from heygem_pipeline.errors import ToolTimeoutError
from heygem_pipeline.settings import ToolLimits
from tests.helpers.media_factory import make_speech, make_tone

STALL = 1.0
BOUND = 8.0  # seconds a stalled call may take in all: the stall limit plus process start and clean-up


@pytest.fixture
def low_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEYGEM_STALL_SECONDS", str(STALL))
    monkeypatch.setenv("HEYGEM_TOOL_TIMEOUT_FACTOR", "100")  # only the stall limit can fire in these tests


def fake_tool(folder: Path, name: str, body: str = "sleep 1000") -> Path:
    """A tool named ``name`` that hangs. No ``exec``: the sleep is a child, so the kill must reach the group."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / name
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return script


@pytest.fixture
def hanging_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder first on PATH; the test puts fake tools into it."""
    folder = tmp_path / "fakebin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


def assert_one_line_naming(error: ToolTimeoutError, path: Path, tool: str) -> None:
    message = str(error)
    assert "\n" not in message
    assert message.startswith(f"{path}: {tool} ")
    assert "HEYGEM_STALL_SECONDS" in message


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ToolLimits.from_env() == ToolLimits(60.0, 10.0)
    monkeypatch.setenv("HEYGEM_STALL_SECONDS", "5")
    monkeypatch.setenv("HEYGEM_TOOL_TIMEOUT_FACTOR", "2.5")
    limits = ToolLimits.from_env()
    assert (limits.stall_seconds, limits.timeout_factor) == (5.0, 2.5)
    assert limits.total(10) == 30.0 and limits.total(None) == 5.0
    monkeypatch.setenv("HEYGEM_STALL_SECONDS", "soon")
    with pytest.raises(ValueError, match="HEYGEM_STALL_SECONDS must be a positive number, got 'soon'"):
        ToolLimits.from_env()


def test_hanging_ffprobe_fails_in_bounded_time_and_the_next_item_works(
        tmp_path: Path, hanging_path: Path, low_limits: None, monkeypatch: pytest.MonkeyPatch) -> None:
    voice = make_tone(tmp_path / "voice.wav", 1.5)
    fake_tool(hanging_path, "ffprobe")
    started = time.monotonic()
    with pytest.raises(ToolTimeoutError) as caught:
        probe(voice)
    assert time.monotonic() - started < BOUND
    assert_one_line_naming(caught.value, voice, "ffprobe")
    (hanging_path / "ffprobe").unlink()  # the next item finds the real ffprobe
    info = probe(voice)
    assert info.audio is not None and info.duration == pytest.approx(1.5, abs=0.05)


def test_hanging_ffmpeg_fails_and_leaves_no_output(tmp_path: Path, hanging_path: Path, low_limits: None) -> None:
    voice = make_tone(tmp_path / "voice.wav", 1.5)
    pid_file = tmp_path / "ffmpeg.pid"
    fake_tool(hanging_path, "ffmpeg", f"echo $$ > {pid_file}\nsleep 1000")
    dest = tmp_path / "out" / "copy.mka"
    started = time.monotonic()
    with pytest.raises(ToolTimeoutError) as caught, atomic_output(dest) as tmp:
        run_ffmpeg(ffmpeg.input(ff_path(voice)).output(ff_path(tmp), acodec="copy"), "copying", subject=voice,
                   media_seconds=1.5)
    assert time.monotonic() - started < BOUND
    assert_one_line_naming(caught.value, voice, "ffmpeg")
    assert "made no progress for 1 s" in str(caught.value)
    assert list(dest.parent.iterdir()) == []
    assert not Path(f"/proc/{pid_file.read_text().strip()}").exists()


def test_hanging_decoder_of_a_script_names_the_upload(tmp_path: Path, hanging_path: Path, low_limits: None) -> None:
    voice = make_tone(tmp_path / "voice.mp3", 1.5)
    info = probe(voice)
    fake_tool(hanging_path, "ffmpeg")
    with pytest.raises(ToolTimeoutError) as caught:
        decode_audio(voice, info)
    assert_one_line_naming(caught.value, voice, "ffmpeg")


def test_hanging_espeak_is_stopped(tmp_path: Path, hanging_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # espeak-ng reports no progress: only its total limit applies, base + factor × the text's expected length.
    monkeypatch.setenv("HEYGEM_STALL_SECONDS", "1")
    monkeypatch.setenv("HEYGEM_TOOL_TIMEOUT_FACTOR", "0.1")
    fake_tool(hanging_path, "espeak-ng")
    script = tmp_path / "hello.txt"
    script.write_text("Hello there, this is a short script.")
    started = time.monotonic()
    with pytest.raises(ToolTimeoutError) as caught:
        normalize_script(script, tmp_path / "work")
    assert time.monotonic() - started < BOUND
    assert_one_line_naming(caught.value, script, "espeak-ng")
    assert "ran longer than its limit of 1 s" in str(caught.value)
    assert not any((tmp_path / "work").glob("*.wav"))
    (hanging_path / "espeak-ng").unlink()
    assert synthesize_speech("It works again.", tmp_path / "again.wav").stat().st_size > 1000


def test_total_limit_stops_a_tool_that_keeps_talking(low_limits: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # Output keeps arriving, so the stall limit never fires; the limit scaled to the media's length does.
    monkeypatch.setenv("HEYGEM_TOOL_TIMEOUT_FACTOR", "1")
    started = time.monotonic()
    with pytest.raises(ToolTimeoutError, match=r"endless\.wav: sh ran longer than its limit of 2 s for 1\.0 s"):
        run_tool(["sh", "-c", "while true; do echo x; sleep 0.1; done"], subject="endless.wav", media_seconds=1.0,
                 progress=PROGRESS_STDOUT)
    assert 1.9 < time.monotonic() - started < BOUND


class StalledFile:
    """A FIFO that delivers the first ``fraction`` of a real file, then nothing, and is never closed (until the
    test ends): what a reader sees of a network file whose server stopped answering."""

    def __init__(self, source: Path, fifo: Path, fraction: float = 0.5) -> None:
        self.data = source.read_bytes()[: int(source.stat().st_size * fraction)]
        self.fifo = fifo
        os.mkfifo(fifo)
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        try:
            with open(self.fifo, "wb") as pipe:
                pipe.write(self.data)
                pipe.flush()
                self.release.wait(60)
        except OSError:  # the reader was killed: broken pipe
            pass

    def __enter__(self) -> StalledFile:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release.set()
        # If the reader never opened the FIFO, the writer still waits in open(): a reader that never blocks (and
        # leaves at once) lets it through, to a broken pipe.
        os.close(os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK))
        self.thread.join(5)
        assert not self.thread.is_alive()


def test_real_ffmpeg_on_a_stalled_file_is_killed_and_other_items_go_on(tmp_path: Path, low_limits: None,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEYGEM_STALL_SECONDS", "3")  # room for the other item to finish first, even on a busy machine
    voice = make_tone(tmp_path / "voice.wav", 3.0)
    other = make_tone(tmp_path / "other.wav", 2.0, frequency=220)
    info = probe(voice)
    stalled = tmp_path / "stalled.wav"
    outcome: dict[str, object] = {}

    def decode_stalled() -> None:
        started = time.monotonic()
        try:
            decode_audio(stalled, info)
        except ToolTimeoutError as error:
            outcome["error"] = error
        outcome["seconds"] = time.monotonic() - started

    with StalledFile(voice, stalled):
        worker = threading.Thread(target=decode_stalled)
        worker.start()
        samples = decode_audio(other)  # another item, meanwhile: not held up by the stalled one
        stalled_still_waiting = worker.is_alive()
        worker.join(BOUND + 5)
    assert samples.size == 32000 and stalled_still_waiting
    assert isinstance(outcome.get("error"), ToolTimeoutError)
    assert_one_line_naming(outcome["error"], stalled, "ffmpeg")  # type: ignore[arg-type]
    assert "made no progress for 3 s" in str(outcome["error"])
    assert 3.0 <= float(outcome["seconds"]) < 3.0 + BOUND  # type: ignore[arg-type]


def test_frame_reader_on_a_stalled_stream_raises_instead_of_hanging(tmp_path: Path, low_limits: None,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEYGEM_STALL_SECONDS", "3")  # ffmpeg starts and decodes what arrived, even on a busy machine
    source = tmp_path / "source.ts"
    run_ffmpeg(ffmpeg.input("testsrc=s=64x64:r=25:d=20", f="lavfi").output(
        ff_path(source), vcodec="libx264", preset="ultrafast", pix_fmt="yuv420p", f="mpegts"), "making a stream")
    stalled = tmp_path / "stalled.ts"
    frames = 0
    started = time.monotonic()
    with StalledFile(source, stalled), pytest.raises(ToolTimeoutError) as caught, \
            FrameReader(stalled, width=64, height=64) as reader:
        for _ in reader:
            frames += 1
    assert time.monotonic() - started < 3.0 + BOUND
    assert 0 < frames < 500  # what arrived was decoded; then the reader stopped with an error, not a short video
    assert_one_line_naming(caught.value, stalled, "ffmpeg")


def test_frame_writer_with_an_encoder_that_never_drains(tmp_path: Path, hanging_path: Path,
                                                        low_limits: None) -> None:
    fake_tool(hanging_path, "ffmpeg")  # never reads its stdin
    dest = tmp_path / "out" / "video.mp4"
    frame = np.zeros((360, 640, 3), np.uint8)  # 0.7 MB: the pipe is full after the first
    started = time.monotonic()
    with pytest.raises(ToolTimeoutError) as caught, FrameWriter(dest, 640, 360, 25) as writer:
        for _ in range(50):
            writer.write(frame)
    assert time.monotonic() - started < BOUND
    assert_one_line_naming(caught.value, dest, "ffmpeg")
    assert list(dest.parent.iterdir()) == []


class Interrupted(Exception):
    pass


def test_an_interrupted_call_kills_its_tool(tmp_path: Path, hanging_path: Path, low_limits: None,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # A cancelled run raises in the waiting thread; the tool must not outlive it.
    monkeypatch.setenv("HEYGEM_STALL_SECONDS", "60")
    pid_file = tmp_path / "ffmpeg.pid"
    fake_tool(hanging_path, "ffmpeg", f"echo $$ > {pid_file}\nsleep 1000")

    def interrupt(*_: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        with pytest.raises(Interrupted), atomic_output(tmp_path / "out" / "x.mkv") as tmp:
            run_ffmpeg(ffmpeg.input("sine", f="lavfi").output(ff_path(tmp)), "writing", subject="x")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert not Path(f"/proc/{pid_file.read_text().strip()}").exists()
    assert list((tmp_path / "out").iterdir()) == []


KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from heygem_pipeline.engine.media.files import atomic_output
    with atomic_output(sys.argv[1]) as tmp:
        tmp.write_bytes(b"half a video")
        os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.fixture
def killed_writer_leftover(tmp_path: Path) -> Iterator[Path]:
    dest = tmp_path / "out" / "pair.mp4"
    dest.parent.mkdir()
    result = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(dest)], cwd=Path(__file__).parents[1],
                            check=False)
    assert result.returncode == -signal.SIGKILL
    leftovers = list(dest.parent.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".pair.") and leftovers[0].name.endswith(".tmp.mp4")
    yield dest


def test_a_later_writer_removes_what_a_killed_writer_left(killed_writer_leftover: Path) -> None:
    dest = killed_writer_leftover
    with atomic_output(dest) as tmp:
        tmp.write_bytes(b"a whole video")
    assert [p.name for p in dest.parent.iterdir()] == ["pair.mp4"]


def test_stale_temporaries_of_live_or_remote_writers_are_kept(killed_writer_leftover: Path) -> None:
    dest = killed_writer_leftover
    ours = dest.parent / f".pair.{files._HOST}.{os.getpid()}.abcdefgh.tmp.mp4"  # a writer alive right now
    remote = dest.parent / ".pair.other-host.1.abcdefgh.tmp.mp4"
    unrelated = dest.parent / ".pair.tmp.mp4.note"
    for path in (ours, remote, unrelated):
        path.write_bytes(b"x")
    removed = remove_stale_temporaries(dest)
    assert len(removed) == 1 and removed[0].name not in {ours.name, remote.name}
    assert {p.name for p in dest.parent.iterdir()} == {ours.name, remote.name, unrelated.name}
    # The lead's hook: a host registry can say which remote writers are gone.
    assert remove_stale_temporaries(dest, is_alive=lambda host, pid: host != "other-host") == [remote]


def test_espeak_and_decode_still_work_under_the_watchdog(tmp_path: Path) -> None:
    speech = make_speech(tmp_path / "hi.wav", "Hello world, the watchdog lets normal work through.")
    assert decode_audio(speech).size > 16000
