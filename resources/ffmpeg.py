"""Media settings: how uploads are normalized (fps, stills, the voice for .txt scripts), outputs encoded, and how
long each external tool may take."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from heygem_pipeline.engine.media.frames import EncodeSettings
from heygem_pipeline.factory.campaigns import MediaOptions, RenderOptions
from heygem_pipeline.settings import (
    DEFAULT_CRF,
    DEFAULT_FPS,
    DEFAULT_PRESET,
    DEFAULT_STALL_SECONDS,
    DEFAULT_STILL_SECONDS,
    DEFAULT_TIMEOUT_FACTOR,
    DEFAULT_VOICE,
    ToolLimits,
)


class FFmpegResource(ConfigurableResource):
    fps: float = Field(default=DEFAULT_FPS, description="Frame rate of normalized templates and of every output")
    still_seconds: float = Field(default=DEFAULT_STILL_SECONDS,
                                 description="Length of the template made from a still photo")
    crf: int = Field(default=DEFAULT_CRF, description="x264 quality of outputs (lower is better)")
    preset: str = Field(default=DEFAULT_PRESET, description="x264 speed preset")
    voice: str = Field(default=DEFAULT_VOICE, description="espeak-ng voice for .txt scripts, or the speaker of "
                       "voice_model")
    voice_model: str | None = Field(default=None, description="Piper or Kokoro voice model (.onnx) for .txt "
                                    "scripts (default: espeak-ng); campaigns may choose their own")
    voice_vectors: str | None = Field(default=None, description="the Kokoro model's voices file")
    voice_speed: float = Field(default=1.0, description="pace of voice_model's speech (1: its own)")
    threads: int | None = Field(default=None, description="Threads of each ffmpeg process (default: ffmpeg's "
                                "choice); `heygem run` gives each of its two lanes its share of the cores")
    stall_seconds: float = Field(default=DEFAULT_STALL_SECONDS, description="A tool (ffmpeg, ffprobe, espeak-ng) "
                                 "that makes no progress this long is stopped")
    timeout_factor: float = Field(default=DEFAULT_TIMEOUT_FACTOR, description="A tool may run at most this × its "
                                  "media's length (plus the stall limit)")

    def media_options(self) -> MediaOptions:
        return MediaOptions.from_settings(self)

    def encode_settings(self, crf: int | None = None, preset: str | None = None) -> EncodeSettings:
        return EncodeSettings(crf=self.crf if crf is None else crf, preset=preset or self.preset,
                              threads=self.threads)

    def render_defaults(self, engine: str) -> RenderOptions:
        return RenderOptions.from_settings(self, engine)

    def tool_limits(self) -> ToolLimits:
        """The limits every stage passes down to its tools (instead of each tool reading the environment)."""
        return ToolLimits(stall_seconds=self.stall_seconds, timeout_factor=self.timeout_factor)
