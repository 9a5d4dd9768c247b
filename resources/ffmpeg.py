"""Media settings: how uploads are normalized (fps, stills, the voice for .txt scripts) and outputs encoded."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from heygem_pipeline.engine.media.frames import EncodeSettings
from heygem_pipeline.factory.campaigns import MediaOptions, RenderOptions


class FFmpegResource(ConfigurableResource):
    fps: float = Field(default=25.0, description="Frame rate of normalized templates and of every output")
    still_seconds: float = Field(default=5.0, description="Length of the template made from a still photo")
    crf: int = Field(default=18, description="x264 quality of outputs (lower is better)")
    preset: str = Field(default="veryfast", description="x264 speed preset")
    voice: str = Field(default="en-us", description="espeak-ng voice for .txt scripts")
    threads: int | None = Field(default=None, description="Threads of each ffmpeg process (default: ffmpeg's "
                                "choice); `heygem run` gives each of its two lanes its share of the cores")

    def media_options(self) -> MediaOptions:
        return MediaOptions(fps=self.fps, still_seconds=self.still_seconds, voice=self.voice)

    def encode_settings(self, crf: int | None = None, preset: str | None = None) -> EncodeSettings:
        return EncodeSettings(crf=self.crf if crf is None else crf, preset=preset or self.preset,
                              threads=self.threads)

    def render_defaults(self, engine: str) -> RenderOptions:
        return RenderOptions(engine=engine, crf=self.crf, preset=self.preset)
