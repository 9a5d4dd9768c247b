"""Small test media generated offline: ffmpeg lavfi sources and espeak-ng, no fixtures on disk.

Shared by the test modules. Every helper writes ``path`` (parents created) and returns it as a Path; sizes are
tiny (seconds of audio, 64x64 video) so a test run stays fast.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import ffmpeg

from heygem_pipeline.engine.media.tools import ff_path, run_ffmpeg

# Encoder arguments per output extension (ffmpeg-python keyword form). ``.aac`` is raw ADTS.
AUDIO_CODECS: dict[str, dict[str, object]] = {
    "wav": {"acodec": "pcm_s16le"},
    "mp3": {"acodec": "libmp3lame", "audio_bitrate": "128k"},
    "m4a": {"acodec": "aac", "audio_bitrate": "128k"},
    "aac": {"acodec": "aac", "audio_bitrate": "128k", "format": "adts"},
    "flac": {"acodec": "flac"},
    "ogg": {"acodec": "libvorbis", "aq": 4},
    "opus": {"acodec": "libopus", "audio_bitrate": "64k"},
    "mp4": {"acodec": "aac", "audio_bitrate": "128k"},
    "mkv": {"acodec": "flac"},
    "webm": {"acodec": "libopus", "audio_bitrate": "64k"},
    "mov": {"acodec": "pcm_s16le"},
}
VIDEO_CODECS: dict[str, dict[str, object]] = {
    "mp4": {"vcodec": "libx264", "preset": "ultrafast", "pix_fmt": "yuv420p"},
    "mov": {"vcodec": "libx264", "preset": "ultrafast", "pix_fmt": "yuv420p"},
    "mkv": {"vcodec": "libx264", "preset": "ultrafast", "pix_fmt": "yuv420p"},
    "webm": {"vcodec": "libvpx", "deadline": "realtime", "cpu-used": 8},
}


def _ext(path: Path) -> str:
    return path.suffix.lower().lstrip(".")


def make_tone(path: str | os.PathLike[str], seconds: float, rate: int = 44100, channels: int = 2, *,
              frequency: float = 440.0, codec_args: dict[str, object] | None = None, video: bool = False,
              fps: float = 25.0) -> Path:
    """A sine tone of exactly ``seconds`` (a lavfi ``sine`` source), encoded by the file's extension.

    ``codec_args`` override the encoder arguments in ``AUDIO_CODECS``; ``video`` adds a 64x64 gray picture.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = _ext(path)
    audio = ffmpeg.input(f"sine=frequency={frequency}:sample_rate={rate}:duration={seconds}", f="lavfi").audio
    args: dict[str, object] = dict(AUDIO_CODECS.get(ext, {}))
    args.update(codec_args or {})
    # Opus only encodes at 8/12/16/24/48 kHz; other sources are resampled to 48 kHz, as real encoders do.
    opus_ok = args.get("acodec") != "libopus" or rate in (8000, 12000, 16000, 24000, 48000)
    args.update(ac=channels, ar=rate if opus_ok else 48000)
    streams = [audio]
    if video:
        picture = ffmpeg.input(f"color=c=gray:s=64x64:r={fps}:d={seconds}", f="lavfi").video
        streams.insert(0, picture)
        args.update(VIDEO_CODECS.get(ext, {}))
    run_ffmpeg(ffmpeg.output(*streams, ff_path(path), **args).overwrite_output(), f"making test tone {path.name}")
    return path


def make_video(path: str | os.PathLike[str], seconds: float, fps: float = 25.0) -> Path:
    """A 64x64 video with no audio stream."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = ffmpeg.input(f"testsrc=s=64x64:r={fps}:d={seconds}", f="lavfi").video
    args = VIDEO_CODECS.get(_ext(path), VIDEO_CODECS["mp4"])
    run_ffmpeg(ffmpeg.output(picture, ff_path(path), **args).overwrite_output(), f"making test video {path.name}")
    return path


def make_speech(path: str | os.PathLike[str], text: str, voice: str = "en-us") -> Path:
    """Speech from espeak-ng (22.05 kHz mono wav), independent of the code under test."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["espeak-ng", "-b", "1", "-v", voice, "-w", str(path.resolve()), "--stdin"],
                   input=text.encode("utf-8"), check=True, capture_output=True)
    return path


def truncate_copy(source: str | os.PathLike[str], dest: str | os.PathLike[str], fraction: float) -> Path:
    """A copy of the first ``fraction`` of ``source``'s bytes: an upload that was cut off."""
    data = Path(source).read_bytes()
    dest = Path(dest)
    dest.write_bytes(data[: int(len(data) * fraction)])
    return dest
