"""What a media file holds, from ffprobe (under the tools' time limits)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from heygem_pipeline.engine.media.tools import (
    ff_path,
    require_tool,
    run_tool,
)
from heygem_pipeline.errors import EmptyFileError, NotMediaError, ToolFailedError
from heygem_pipeline.settings import ToolLimits

IMAGE_CODECS = {"png", "mjpeg", "webp", "bmp", "tiff", "jpegls", "gif"}


@dataclass(frozen=True)
class AudioStream:
    codec: str
    sample_rate: int
    channels: int
    duration: float | None


@dataclass(frozen=True)
class VideoStream:
    codec: str
    width: int
    height: int
    fps: float
    rotation: int  # degrees clockwise the player must turn the stored picture to show it upright
    frame_count: int | None
    duration: float | None
    is_image: bool


@dataclass(frozen=True)
class MediaInfo:
    path: str
    format_name: str
    duration: float | None
    audio: AudioStream | None
    video: VideoStream | None


def _float(value: Any) -> float | None:  # a value from ffprobe's JSON: a number, a string, 'N/A', None
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if np.isfinite(result) and result > 0 else None


def _rate(text: str | None) -> float:
    try:
        rate = Fraction(text or "0")
    except (ValueError, ZeroDivisionError):
        return 0.0
    return float(rate)


def _rotation(stream: dict) -> int:
    rotate = stream.get("tags", {}).get("rotate")
    if rotate is not None:
        return int(float(rotate)) % 360
    for side in stream.get("side_data_list", []):
        if "rotation" in side:
            # Display-matrix rotation is counter-clockwise; players turn clockwise by its negation.
            return int(-float(side["rotation"])) % 360
    return 0


def probe(path: str | os.PathLike[str], *, limits: ToolLimits | None = None) -> MediaInfo:
    """Describe a media file with ffprobe; raise a typed error for empty or non-media files.

    ffprobe reports no progress, so it gets the base limit (``HEYGEM_STALL_SECONDS``): ToolTimeoutError past it.
    """
    require_tool("ffprobe")
    path = Path(path)
    if not path.is_file():
        raise NotMediaError(path, "file does not exist", "check the path")
    if path.stat().st_size == 0:
        raise EmptyFileError(path, "file is empty (0 bytes)", "upload it again")
    command = [
        "ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", ff_path(path),
    ]
    if "%" in path.name:
        # The image2 demuxer reads '%d' in a photo's name as a frame-number pattern and finds no file.
        command[1:1] = ["-pattern_type", "none"]
    result = run_tool(command, subject=path, limits=limits)
    failure = None
    if result.returncode != 0:
        failure = ToolFailedError("ffprobe", path, result.returncode, result.stderr_tail(), doing=f"reading {path}")
        if failure.transient:
            raise failure  # the disk or the share failed, not the file: a retry may read it
    data = json.loads(result.stdout or b"{}") if failure is None else {}
    streams = data.get("streams", [])
    fmt = data.get("format", {})
    if not streams:
        raise NotMediaError(path, "not a readable audio, video or image file",
                            "upload a wav/mp3/m4a/flac/ogg voice track or an mp4/mov/mkv/webm video or png/jpg image"
                            ) from failure
    audio = video = None
    for stream in streams:
        kind = stream.get("codec_type")
        if kind == "audio" and audio is None:
            audio = AudioStream(
                codec=stream.get("codec_name", "?"),
                sample_rate=int(stream.get("sample_rate") or 0),
                channels=int(stream.get("channels") or 0),
                duration=_float(stream.get("duration")),
            )
        elif kind == "video" and video is None and not stream.get("disposition", {}).get("attached_pic"):
            codec = stream.get("codec_name", "?")
            frames = stream.get("nb_frames")
            is_image = codec in IMAGE_CODECS and fmt.get("format_name", "").endswith(("_pipe", "image2", "gif"))
            video = VideoStream(
                codec=codec,
                width=int(stream.get("width") or 0),
                height=int(stream.get("height") or 0),
                fps=_rate(stream.get("avg_frame_rate")) or _rate(stream.get("r_frame_rate")),
                rotation=_rotation(stream),
                frame_count=int(frames) if frames and str(frames).isdigit() else None,
                duration=_float(stream.get("duration")),
                is_image=is_image,
            )
    return MediaInfo(
        path=str(path),
        format_name=fmt.get("format_name", "?"),
        duration=_float(fmt.get("duration")),
        audio=audio,
        video=video,
    )
