"""Engines by name, created lazily so that the viseme path never imports torch."""

from __future__ import annotations

from heygem_pipeline.engine.lipsync.base import LipSyncEngine
from heygem_pipeline.errors import HeygemError
from heygem_pipeline.settings import DEFAULT_MUSETALK_BATCH, DEFAULT_WAV2LIP_BATCH, ENGINE_NAMES

__all__ = ["ENGINE_NAMES", "RENDER_SLOWDOWN", "create_engine"]

# How many times longer than a viseme or wav2lip render of the same voice an engine's render may take before run
# monitoring stops it (its `dagster/max_runtime`): MuseTalk's UNet on 2 CPU cores renders about 0.2 frames a second.
RENDER_SLOWDOWN = {"musetalk": 60.0}


def create_engine(name: str, *, checkpoint: str | None = None, models: str | None = None, device: str | None = None,
                  batch_size: int = DEFAULT_WAV2LIP_BATCH, fp16: bool = False) -> LipSyncEngine:
    """A new (not yet loaded) engine. ``checkpoint`` (wav2lip's .pth), ``models`` (musetalk's folder), ``device``,
    ``batch_size`` (wav2lip's; musetalk runs the reference's batch of 8) and ``fp16`` (musetalk's networks in half
    precision, on a GPU only) matter for the networks only."""
    if name == "viseme":
        from heygem_pipeline.engine.lipsync.viseme import VisemeEngine

        return VisemeEngine()
    if name == "wav2lip":
        from heygem_pipeline.engine.lipsync.wav2lip.engine import Wav2LipEngine

        return Wav2LipEngine(checkpoint=checkpoint, device=device, batch_size=batch_size)
    if name == "musetalk":
        from heygem_pipeline.engine.lipsync.musetalk.engine import MuseTalkEngine

        return MuseTalkEngine(models=models, device=device, batch_size=DEFAULT_MUSETALK_BATCH, fp16=fp16)
    raise HeygemError(f"unknown engine {name!r}; choose one of: {', '.join(ENGINE_NAMES)}")
