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


def _positive(name: str, default: float) -> float:
    text = _env(name, repr(default))
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{name} must be a positive number, got {text!r}")
    return value


@dataclass(frozen=True)
class ToolLimits:
    """How long an external tool (ffmpeg, ffprobe, espeak-ng) may take before it is killed.

    A tool that shows no progress (no frame or byte through its pipes, no advance in ffmpeg's progress report)
    for ``stall_seconds`` is stopped; so is one that runs longer than ``total(media seconds)`` in all, which
    scales with the length of the media it works on. Tools that report no progress (ffprobe, espeak-ng) get
    only the total limit.
    """

    stall_seconds: float = 60.0
    timeout_factor: float = 10.0  # seconds of tool time allowed per second of media

    def total(self, media_seconds: float | None) -> float:
        return self.stall_seconds + self.timeout_factor * max(media_seconds or 0.0, 0.0)

    def run_seconds(self, media_seconds: float | None) -> int:
        """The time limit of a whole run over media this long (Dagster's ``dagster/max_runtime``): a backstop
        over its tools' own limits, with room for the several tools a stage runs one after another."""
        return round(5 * self.stall_seconds + 2 * self.timeout_factor * max(media_seconds or 0.0, 0.0))

    @classmethod
    def from_env(cls) -> ToolLimits:
        """``HEYGEM_STALL_SECONDS`` and ``HEYGEM_TOOL_TIMEOUT_FACTOR``, read at each call (tests and workers may
        change them between items)."""
        return cls(stall_seconds=_positive("HEYGEM_STALL_SECONDS", cls.stall_seconds),
                   timeout_factor=_positive("HEYGEM_TOOL_TIMEOUT_FACTOR", cls.timeout_factor))


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
    tool_limits: ToolLimits = field(default_factory=ToolLimits)
    # The bucket sensor and the nightly schedule run by default; `heygem run` starts its services without them, so
    # that a one-off command does only what it was asked for.
    automation: bool = True

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
            tool_limits=ToolLimits.from_env(),
            automation=_env("HEYGEM_AUTOMATION", "on").lower() not in ("off", "0", "false", "no"),
        )
