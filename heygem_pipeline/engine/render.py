"""The renderer: timing, streaming and encoding around a lip-sync engine.

Output length is fixed by the audio: ceil(duration × fps) frames, so the video never ends before the voice.
A template shorter than that plays forwards, then backwards, then forwards again (ping-pong: no jump cut);
a longer one is cut. Frames are decoded, rendered and encoded as a stream: memory does not grow with length.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heygem_pipeline.engine.audio.features import ScriptFeatures, frame_count
from heygem_pipeline.engine.contact_sheet import SheetCollector
from heygem_pipeline.engine.face.track import FaceTrack
from heygem_pipeline.engine.lipsync.base import LipSyncEngine, RenderItem
from heygem_pipeline.engine.media.frames import EncodeSettings, FrameReader, FrameWriter
from heygem_pipeline.engine.media.previews import PREVIEW_AT, frame_jpeg
from heygem_pipeline.engine.mouth.bank import MouthBank
from heygem_pipeline.settings import ToolLimits

Progress = Callable[[int, int], None]
BACKWARD_BLOCK = 24  # frames held in memory to play a stretch of template backwards


@dataclass(frozen=True)
class RenderResult:
    path: Path
    engine: str
    frames: int
    fps: float
    width: int
    height: int
    duration_s: float  # duration of the audio the video covers
    render_seconds: float
    preview_jpeg: bytes = b""  # the frame 40 % in, as rendered (a thumbnail without decoding the output again)
    contact_sheet_png: bytes = b""  # template mouth, then output mouths at the loudest and quietest moments

    @property
    def render_fps(self) -> float:
        return self.frames / self.render_seconds if self.render_seconds > 0 else 0.0


def pingpong_indices(n_out: int, n_template: int) -> np.ndarray:
    """Template frame for each output frame: 0..L-1, L-2..1, 0..L-1, … cut at ``n_out``."""
    if n_template <= 0:
        raise ValueError("template has no frames")
    if n_template == 1:
        return np.zeros(n_out, dtype=np.int64)
    period = 2 * n_template - 2
    phase = np.arange(n_out) % period
    return np.where(phase < n_template, phase, period - phase).astype(np.int64)


def _runs(order: np.ndarray) -> Iterator[tuple[int, int, int]]:
    """Split an index sequence into monotonic runs: (first, last, step) with step +1 or -1."""
    start = 0
    while start < len(order):
        end = start
        step = int(order[start + 1] - order[start]) if start + 1 < len(order) else 1
        if step not in (1, -1):
            step = 1
        else:
            while end + 1 < len(order) and order[end + 1] - order[end] == step:
                end += 1
        yield int(order[start]), int(order[end]), step
        start = end + 1


def template_frames(template: Path, order: np.ndarray, width: int, height: int, fps: float,
                    pix_fmt: str = "bgr24", threads: int | None = None,
                    limits: ToolLimits | None = None) -> Iterator[np.ndarray]:
    """Stream the template's frames in ``order`` (forward runs decode straight through; backward runs decode
    short blocks and reverse them, so at most ``BACKWARD_BLOCK`` frames are ever held)."""
    for first, last, step in _runs(order):
        if step == 1:
            with FrameReader(template, width, height, start_frame=first, max_frames=last - first + 1,
                             fps=fps, pix_fmt=pix_fmt, threads=threads, limits=limits) as reader:
                yield from reader
            continue
        top = first
        while top >= last:
            bottom = max(last, top - BACKWARD_BLOCK + 1)
            with FrameReader(template, width, height, start_frame=bottom, max_frames=top - bottom + 1,
                             fps=fps, pix_fmt=pix_fmt, threads=threads, limits=limits) as reader:
                block = list(reader)
            yield from reversed(block)
            top = bottom - 1


def render_video(features: ScriptFeatures, audio_source: str | os.PathLike[str], template: str | os.PathLike[str],
                 track: FaceTrack, engine: LipSyncEngine, dest: str | os.PathLike[str], *,
                 settings: EncodeSettings | None = None, progress: Progress | None = None,
                 subtitles: str | os.PathLike[str] | None = None, mouths: MouthBank | None = None,
                 limits: ToolLimits | None = None) -> RenderResult:
    """Render ``features`` onto ``template`` with ``engine``; mux ``audio_source``; write ``dest`` atomically.

    ``subtitles``: an ASS script (``burnin.write_ass``) burnt into the picture during the encode; ``mouths``: the
    avatar's mouth bank, for engines that use one; ``limits``: of the decoders and the encoder (default: from the
    environment)."""
    started = time.perf_counter()
    fps = float(track.fps)
    n_out = frame_count(features.duration, fps)
    order = pingpong_indices(n_out, len(track))
    settings = settings or EncodeSettings()
    frames = template_frames(Path(template), order, track.width, track.height, fps, engine.frame_format,
                             threads=settings.threads, limits=limits)
    sheet = SheetCollector(features.samples, features.sample_rate, n_out, fps, engine.frame_format)
    faces = [track.frame(int(order[index])) for index in range(n_out)]  # views into the track: no copies

    def items() -> Iterator[RenderItem]:
        for index, frame in enumerate(frames):
            face = faces[index]
            sheet.before(index, frame, face.landmarks, face.found)
            yield RenderItem(index, frame, face, mouths)

    preview_index, preview = min(n_out - 1, int(n_out * PREVIEW_AT)), b""
    engine.load()
    with FrameWriter(dest, track.width, track.height, fps, audio=audio_source, settings=settings,
                     pix_fmt=engine.frame_format, subtitles=subtitles, limits=limits) as writer:
        for frame in engine.render(items(), features, fps):
            index = writer.frames_written
            if index == preview_index:
                preview = frame_jpeg(frame, engine.frame_format)
            sheet.after(index, frame, faces[index].landmarks, faces[index].found)
            writer.write(frame)
            if progress is not None:
                progress(writer.frames_written, n_out)
        if writer.frames_written != n_out:
            raise RuntimeError(f"rendered {writer.frames_written} of {n_out} frames from {template}")
    return RenderResult(path=Path(dest), engine=engine.name, frames=n_out, fps=fps, width=track.width,
                        height=track.height, duration_s=features.duration,
                        render_seconds=time.perf_counter() - started, preview_jpeg=preview,
                        contact_sheet_png=sheet.png())
