"""Small JPEG previews of videos and frames (for Dagster metadata and the studio)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from heygem_pipeline.engine.media.frames import FrameReader
from heygem_pipeline.engine.media.probe import probe
from heygem_pipeline.errors import NotMediaError
from heygem_pipeline.settings import ToolLimits

PREVIEW_AT = 0.4  # share of a video where its preview frame is taken


def thumbnail_jpeg(video: str | os.PathLike[str], width: int = 320, at: float = PREVIEW_AT, *,
                   frames: int | None = None, fps: float | None = None, threads: int | None = None,
                   limits: ToolLimits | None = None) -> bytes:
    """A JPEG of the frame at ``at`` (share of the duration) of ``video``, ``width`` pixels wide.

    ``frames`` and ``fps``: the video's, when the caller knows them (no probe then); ``threads`` and ``limits``: see
    FrameReader.
    """
    if frames is None or fps is None:
        info = probe(video, limits=limits)
        if info.video is None:
            raise NotMediaError(Path(video), "has no video stream", "upload a video or image")
        fps = info.video.fps or 25.0
        frames = info.video.frame_count or max(1, round((info.duration or 0.0) * fps))
    with FrameReader(video, start_frame=min(frames - 1, int(frames * at)), max_frames=1, fps=fps,
                     threads=threads, limits=limits) as reader:
        frame = next(iter(reader), None)
    if frame is None:
        raise NotMediaError(Path(video), "has no frame to show", "upload the video again")
    return frame_jpeg(frame, width=width)


def frame_jpeg(frame: np.ndarray, pix_fmt: str = "bgr24", width: int = 320, quality: int = 85) -> bytes:
    """A JPEG of one decoded or rendered frame (BGR, or OpenCV I420 with ``pix_fmt="yuv420p"``), ``width`` wide."""
    import cv2  # only previews need it here

    bgr = cv2.cvtColor(frame, cv2.COLOR_YUV2BGR_I420) if pix_fmt == "yuv420p" else frame
    height = max(2, round(bgr.shape[0] * width / bgr.shape[1] / 2) * 2)
    small = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("could not encode a JPEG preview")
    return data.tobytes()
