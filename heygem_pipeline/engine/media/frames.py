"""Media I/O on top of ffmpeg/ffprobe: probing, streamed frame reading and writing, atomic outputs.

Every other engine module goes through here, so there is one place that knows how ffmpeg is called.
Commands are argument lists built with ffmpeg-python (never a shell string) and paths are passed as
absolute ``file:`` URLs, so names with spaces, quotes, colons or leading dashes are never read as options.
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import cast

import ffmpeg
import numpy as np

from heygem_pipeline.engine.media.files import atomic_output
from heygem_pipeline.engine.media.probe import probe
from heygem_pipeline.engine.media.tools import (
    FFMPEG_GLOBAL_ARGS,
    Watchdog,
    ff_path,
    kill_tool,
    require_tool,
    spawn,
)
from heygem_pipeline.errors import NotMediaError, ToolFailedError
from heygem_pipeline.settings import DEFAULT_CRF, DEFAULT_PRESET, ToolLimits

FRAME_SHAPES = ("bgr24", "yuv420p")


def frame_shape(width: int, height: int, pix_fmt: str = "bgr24") -> tuple[int, ...]:
    """Array shape of one raw frame: (H, W, 3) for bgr24, OpenCV's I420 layout (H*3/2, W) for yuv420p."""
    if pix_fmt == "yuv420p":
        if width % 2 or height % 2:
            raise ValueError(f"yuv420p frames need even dimensions, got {width}x{height}")
        return (height * 3 // 2, width)
    return (height, width, 3)


def i420_size(frame: np.ndarray) -> tuple[int, int]:
    """(width, height) of the picture in an OpenCV I420 array (H*3/2, W)."""
    return frame.shape[1], frame.shape[0] * 2 // 3


def i420_planes(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the Y, U and V planes of an I420 frame (contiguous: Y, then U, then V, each row-major)."""
    width, height = i420_size(frame)
    flat = frame.reshape(-1)
    size, quarter = width * height, width * height // 4
    return (flat[:size].reshape(height, width),
            flat[size: size + quarter].reshape(height // 2, width // 2),
            flat[size + quarter:].reshape(height // 2, width // 2))


def i420_box(frame: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A box of an I420 frame as its own I420 array, and the box itself (grown to even edges, clipped).

    Lets a consumer convert just the region it looks at (``cv2.cvtColor(box, cv2.COLOR_YUV2BGR_I420)``).
    """
    width, height = i420_size(frame)
    x0, y0 = max(x0, 0) // 2 * 2, max(y0, 0) // 2 * 2
    x1, y1 = min((x1 + 1) // 2 * 2, width), min((y1 + 1) // 2 * 2, height)
    luma, chroma_u, chroma_v = i420_planes(frame)
    box_w, box_h = max(x1 - x0, 0), max(y1 - y0, 0)
    box = np.concatenate([luma[y0:y1, x0:x1].reshape(-1), chroma_u[y0 // 2:y1 // 2, x0 // 2:x1 // 2].reshape(-1),
                          chroma_v[y0 // 2:y1 // 2, x0 // 2:x1 // 2].reshape(-1)]).reshape(box_h * 3 // 2, box_w)
    return box, (x0, y0, x1, y1)


class FrameReader:
    """Decode a video as a stream of BGR ``uint8`` frames (H, W, 3), a few frames buffered.

    A background thread reads ahead so ffmpeg's decoding overlaps with the caller's work; memory stays at
    ``prefetch`` frames whatever the video's length.
    """

    def __init__(self, path: str | os.PathLike[str], width: int | None = None, height: int | None = None,
                 prefetch: int = 8, start_frame: int = 0, max_frames: int | None = None,
                 fps: float | None = None, pix_fmt: str = "bgr24",
                 crop: tuple[int, int, int, int] | None = None, scale_to: tuple[int, int] | None = None,
                 threads: int | None = None, limits: ToolLimits | None = None) -> None:
        """``start_frame``/``max_frames`` read a window of a constant-frame-rate video (``fps`` required).

        ``crop=(left, top, width, height)`` (in the video's pixels) and ``scale_to=(width, height)`` are applied by
        ffmpeg, so a consumer that needs one region sees only that region's bytes; ``width``/``height`` are then
        the frames' size after both.

        ``pix_fmt="yuv420p"`` yields OpenCV I420 arrays (H*3/2, W) instead of BGR (H, W, 3): no colour conversion
        in ffmpeg and half the bytes through the pipe, for consumers that touch only part of each frame.

        ``threads``: decoder threads (default: ffmpeg's choice, several). One thread decodes a 720p H.264 frame with
        ~20 % less CPU time, for readers that run beside other busy work rather than alone.

        ``limits``: a decoder that delivers no frame for ``stall_seconds`` (a stalled network file, a pipe that
        never ends) is killed and iterating raises ``ToolTimeoutError``; default from the environment.
        """
        if pix_fmt not in FRAME_SHAPES:
            raise ValueError(f"unsupported pix_fmt {pix_fmt!r}; use one of {', '.join(FRAME_SHAPES)}")
        self.pix_fmt = pix_fmt
        self.path = Path(path)
        if start_frame and not fps:
            raise ValueError("start_frame needs the video's fps")
        self.start_frame, self.max_frames, self.fps, self.threads = start_frame, max_frames, fps, threads
        self.limits = limits or ToolLimits.from_env()
        self._watchdog: Watchdog | None = None
        if width is None or height is None:
            info = probe(self.path)
            if info.video is None:
                raise NotMediaError(self.path, "has no video stream", "upload a video or image")
            width, height = info.video.width, info.video.height
            if info.video.rotation in (90, 270):
                # ffmpeg autorotates while decoding, so a quarter-turned video arrives with width and height swapped.
                width, height = height, width
        self.filters: list[tuple[str, tuple[int, ...]]] = []
        if crop is not None:
            self.filters.append(("crop", (crop[2], crop[3], crop[0], crop[1])))
            width, height = crop[2], crop[3]
        if scale_to is not None:
            self.filters.append(("scale", scale_to))
            width, height = scale_to
        self.width, self.height = width, height
        self._shape = frame_shape(width, height, pix_fmt)
        self._frame_bytes = int(np.prod(self._shape))
        self._queue: queue.Queue[np.ndarray | BaseException | None] = queue.Queue(maxsize=prefetch)
        self._process: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._pool: list[np.ndarray] = []
        self._pool_size = prefetch + 8

    def __enter__(self) -> FrameReader:
        require_tool("ffmpeg")
        input_options: dict[str, object] = {} if self.threads is None else {"threads": self.threads}
        if self.start_frame:
            assert self.fps is not None  # __init__ refuses start_frame without fps
            # Accurate seek: land a quarter frame before the wanted frame's timestamp, so rounding never
            # drops it and never keeps the one before.
            input_options["ss"] = f"{(self.start_frame - 0.25) / float(self.fps):.6f}"
        # Default swscale rounding: "accurate_rnd" would keep colours within one level instead of ~2 through a
        # decode/encode round trip, but costs 1.3 ms per 720p frame on each side, more than the mouth itself.
        output_options: dict[str, object] = {"format": "rawvideo", "pix_fmt": self.pix_fmt, "vsync": "passthrough"}
        if self.max_frames is not None:
            output_options["frames:v"] = self.max_frames
        picture = ffmpeg.input(ff_path(self.path), **input_options)
        if self.filters:
            picture = picture["v:0"]
            for name, values in self.filters:
                picture = picture.filter(name, *values)
        args = (
            picture.output("pipe:", **output_options)
            .global_args(*FFMPEG_GLOBAL_ARGS)
            .compile()
        )
        self._process = spawn(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._watchdog = Watchdog(self._process, subject=self.path, limits=self.limits)
        self._thread = threading.Thread(target=self._pump, name="frame-reader", daemon=True)
        self._thread.start()
        return self

    def _put(self, item: np.ndarray | BaseException | None) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _free_buffer(self) -> np.ndarray:
        """A frame buffer nobody references any more, or a new one.

        Reusing buffers spares a 2.7 MB allocation and its page faults per 720p frame. A buffer is free when the
        pool holds the only reference: a consumer that keeps a frame (or a view of it) keeps it out of reuse.
        """
        for buffer in self._pool:
            if sys.getrefcount(buffer) <= 3:  # the pool's list, this loop's name, getrefcount's argument
                return buffer
        buffer = np.empty(self._shape, dtype=np.uint8)
        if len(self._pool) < self._pool_size:
            self._pool.append(buffer)
        return buffer

    def _pump(self) -> None:
        assert self._process is not None and self._process.stdout is not None and self._watchdog is not None
        # Popen's pipes are buffered readers (the default bufsize); typeshed's IO[bytes] lacks readinto.
        stdout, watchdog = cast(io.BufferedReader, self._process.stdout), self._watchdog
        try:
            while not self._stop.is_set():
                frame = self._free_buffer()
                view = frame.reshape(-1).data  # a memoryview of the buffer
                filled = 0
                with watchdog.blocking("reading a decoded frame"):
                    while filled < self._frame_bytes:
                        got = stdout.readinto(view[filled:])
                        if not got:
                            break
                        filled += got
                if filled < self._frame_bytes:
                    break
                if not self._put(frame):
                    return
            watchdog.check()  # the end of the stream may be the watchdog's kill: say so, never a silent cut
            self._put(None)
        except BaseException as exc:  # surface decoder-side failures in the consumer's thread
            self._put(exc)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._process is None:
            raise RuntimeError("use FrameReader as a context manager")
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._process is not None:
            kill_tool(self._process)
            self._process.wait()
            if self._process.stdout:
                self._process.stdout.close()
        if self._watchdog is not None:
            self._watchdog.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)


def iter_frames(path: str | os.PathLike[str]) -> Iterator[np.ndarray]:
    """Convenience generator over a video's BGR frames."""
    with FrameReader(path) as reader:
        yield from reader


@dataclass(frozen=True)
class EncodeSettings:
    """H.264 output settings shared by normalization and rendering."""

    crf: int = DEFAULT_CRF
    preset: str = DEFAULT_PRESET
    audio_bitrate: str = "192k"
    # Threads of each ffmpeg process of a stage (its encoder, the render's template decoder). None: ffmpeg's
    # choice, about 1.5 per core, right for one stage alone. Stages running side by side (``heygem run``'s two
    # lanes) use fewer: less CPU per frame and the same output (x264's result does not depend on its threads).
    threads: int | None = None

    def video_options(self) -> dict[str, object]:
        """ffmpeg output options that encode H.264 yuv420p MP4 (``+faststart``) at these settings."""
        options: dict[str, object] = {"vcodec": "libx264", "crf": self.crf, "preset": self.preset,
                                      "pix_fmt": "yuv420p", "movflags": "+faststart"}
        if self.threads is not None:
            options["threads"] = self.threads
        return options


class FrameWriter:
    """Encode a stream of BGR frames to H.264 yuv420p MP4 (``+faststart``), optionally muxing an audio file.

    Written atomically: the file appears at ``dest`` only after ``close()`` succeeds; an exception inside the
    ``with`` block discards the partial output and leaves any earlier ``dest`` untouched.
    """

    def __init__(self, dest: str | os.PathLike[str], width: int, height: int, fps: float,
                 audio: str | os.PathLike[str] | None = None, settings: EncodeSettings | None = None,
                 pix_fmt: str = "bgr24", subtitles: str | os.PathLike[str] | None = None,
                 limits: ToolLimits | None = None) -> None:
        """``subtitles``: an ASS file burnt into the picture by libass during this encode (see ``captions``).

        ``limits``: an encoder that accepts no frame, or does not finish after the last one, for
        ``stall_seconds`` is killed and the writer raises ``ToolTimeoutError``; default from the environment.
        """
        self.dest = Path(dest)
        self.subtitles = Path(subtitles) if subtitles is not None else None
        self.limits = limits or ToolLimits.from_env()
        self._watchdog: Watchdog | None = None
        self.pix_fmt = pix_fmt
        self._shape = frame_shape(width, height, pix_fmt)
        self.width, self.height, self.fps = width, height, fps
        self.audio = Path(audio) if audio is not None else None
        self.settings = settings or EncodeSettings()
        self.frames_written = 0
        self._atomic: contextlib.AbstractContextManager[Path] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=4)
        self._feeder: threading.Thread | None = None
        self._feed_error: BaseException | None = None

    def __enter__(self) -> FrameWriter:
        require_tool("ffmpeg")
        self._atomic = atomic_output(self.dest)
        tmp = self._atomic.__enter__()
        video = ffmpeg.input("pipe:", format="rawvideo", pix_fmt=self.pix_fmt, s=f"{self.width}x{self.height}",
                             framerate=self.fps)
        if self.subtitles is not None:
            video = video.filter("ass", filename=str(self.subtitles))
        common = {**self.settings.video_options(), "r": self.fps}
        if self.audio is not None:
            audio = ffmpeg.input(ff_path(self.audio)).audio
            out = ffmpeg.output(video, audio, ff_path(tmp), acodec="aac", audio_bitrate=self.settings.audio_bitrate,
                                **common)
        else:
            out = ffmpeg.output(video, ff_path(tmp), **common)
        args = out.overwrite_output().global_args(*FFMPEG_GLOBAL_ARGS).compile()
        self._stderr_file = tempfile.TemporaryFile()
        self._process = spawn(args, stdin=subprocess.PIPE, stderr=self._stderr_file)
        self._watchdog = Watchdog(self._process, subject=self.dest, limits=self.limits)
        return self

    def write(self, frame: np.ndarray) -> None:
        """Queue one frame; a background thread feeds the encoder, so the caller renders while ffmpeg reads."""
        assert self._process is not None
        if frame.shape != self._shape or frame.dtype != np.uint8:
            raise ValueError(f"frame {frame.shape} {frame.dtype} does not match {self._shape} uint8 ({self.pix_fmt})")
        if self._feeder is None:
            self._feeder = threading.Thread(target=self._feed, name="frame-writer", daemon=True)
            self._feeder.start()
        while True:
            if self._feed_error is not None:
                self._fail("the encoder stopped accepting frames")
            try:
                self._queue.put(np.ascontiguousarray(frame), timeout=0.1)
                break
            except queue.Full:
                continue
        self.frames_written += 1

    def _feed(self) -> None:
        assert self._process is not None and self._process.stdin is not None and self._watchdog is not None
        stdin, watchdog = self._process.stdin, self._watchdog
        while True:
            frame = self._queue.get()
            if frame is None:
                return
            try:
                with watchdog.blocking("the encoder accepts no frame"):
                    stdin.write(frame.data)
            except (BrokenPipeError, OSError) as error:
                self._feed_error = error
                return

    def _drain(self) -> None:
        """Wait until every queued frame reached the encoder (or the encoder died)."""
        if self._feeder is None:
            return
        while self._feeder.is_alive():
            try:
                self._queue.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        self._feeder.join()

    def _fail(self, what: str = "") -> None:
        assert self._process is not None and self._watchdog is not None
        returncode = self._process.wait()
        self._watchdog.check()
        self._stderr_file.seek(0)
        tail = " | ".join(self._stderr_file.read().decode(errors="replace").strip().splitlines()[-3:])
        raise ToolFailedError("ffmpeg", self.dest, returncode, tail,
                              doing=f"writing {self.dest}" + (f" ({what})" if what else ""))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self._process is not None and self._atomic is not None
        try:
            if exc_type is not None:
                kill_tool(self._process)
            self._drain()
            assert self._watchdog is not None
            with self._watchdog.blocking("the encoder does not finish"):
                if self._process.stdin:
                    with contextlib.suppress(BrokenPipeError, OSError):
                        self._process.stdin.close()  # flushes what is buffered: may block like a write
                returncode = self._process.wait()
            if exc_type is None and self._feed_error is not None:
                self._fail("the encoder stopped accepting frames")
            elif exc_type is None and returncode != 0:
                self._fail()
        except BaseException as error:
            kill_tool(self._process)  # an interrupted close (a cancelled run) must not leave the encoder running
            self._atomic.__exit__(type(error), error, error.__traceback__)
            raise
        finally:
            if self._watchdog is not None:
                self._watchdog.stop()
            self._stderr_file.close()
        self._atomic.__exit__(exc_type, exc, tb)
