"""Settings from environment variables, with the defaults a first run needs.

One place reads the environment; everything else receives a ``Settings``. The README's configuration
table lists the same variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


@dataclass(frozen=True)
class Settings:
    bucket: str = "data/bucket"
    fps: float = 25.0
    still_seconds: float = 5.0
    engine: str = "viseme"
    voice: str = "en-us"
    crf: int = 18
    preset: str = "veryfast"
    ffmpeg_threads: int | None = None  # None: ffmpeg's choice
    wav2lip_checkpoint: str | None = None
    wav2lip_batch_size: int = 128
    timezone: str = "UTC"
    work_prefix: str = "work"
    dagster_home: Path = field(default_factory=lambda: Path(".dagster_home").resolve())

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            bucket=_env("HEYGEM_BUCKET", cls.bucket),
            fps=float(_env("HEYGEM_FPS", str(cls.fps))),
            still_seconds=float(_env("HEYGEM_STILL_SECONDS", str(cls.still_seconds))),
            engine=_env("HEYGEM_ENGINE", cls.engine),
            voice=_env("HEYGEM_VOICE", cls.voice),
            crf=int(_env("HEYGEM_CRF", str(cls.crf))),
            preset=_env("HEYGEM_PRESET", cls.preset),
            ffmpeg_threads=int(_env("HEYGEM_FFMPEG_THREADS", "0")) or None,
            wav2lip_checkpoint=os.environ.get("HEYGEM_WAV2LIP_CHECKPOINT") or None,
            wav2lip_batch_size=int(_env("HEYGEM_WAV2LIP_BATCH", str(cls.wav2lip_batch_size))),
            timezone=_env("HEYGEM_TIMEZONE", cls.timezone),
            dagster_home=Path(_env("DAGSTER_HOME", ".dagster_home")).resolve(),
        )


def encode_settings(settings: Settings):  # -> media.EncodeSettings (imported lazily: config stays import-light)
    """The H.264 settings for outputs, from the global settings."""
    from heygem_pipeline.media import EncodeSettings

    return EncodeSettings(crf=settings.crf, preset=settings.preset, threads=settings.ffmpeg_threads)
