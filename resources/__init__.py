"""Dagster resources of the factory: the bucket (fsspec), the lip-sync engine, and the ffmpeg/media settings."""

from __future__ import annotations

from typing import Any

from heygem_pipeline.settings import Settings
from resources.bucket import BucketResource
from resources.engine import LipSyncEngineResource
from resources.ffmpeg import FFmpegResource

__all__ = ["BucketResource", "FFmpegResource", "LipSyncEngineResource", "build_resources"]


def build_resources(settings: Settings) -> dict[str, Any]:
    """The resources under the keys the assets ask for, configured from ``settings`` (runs may override)."""
    return {
        "bucket": BucketResource(url=settings.bucket, work_prefix=settings.work_prefix),
        "engine": LipSyncEngineResource(engine=settings.engine, wav2lip_checkpoint=settings.wav2lip_checkpoint,
                                        musetalk_models=settings.musetalk_models,
                                        batch_size=settings.wav2lip_batch_size),
        "ffmpeg": FFmpegResource(fps=settings.fps, still_seconds=settings.still_seconds, crf=settings.crf,
                                 preset=settings.preset, voice=settings.voice, voice_model=settings.voice_model,
                                 voice_vectors=settings.voice_vectors, voice_speed=settings.voice_speed,
                                 threads=settings.ffmpeg_threads,
                                 stall_seconds=settings.tool_limits.stall_seconds,
                                 timeout_factor=settings.tool_limits.timeout_factor),
    }
