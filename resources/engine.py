"""The lip-sync engine resource: one loaded engine per process, reused by every render that process runs."""

from __future__ import annotations

import sys
import threading

from dagster import ConfigurableResource
from pydantic import Field

from heygem_pipeline.engine.lipsync.base import LipSyncEngine
from heygem_pipeline.engine.lipsync.registry import create_engine
from heygem_pipeline.settings import DEFAULT_ENGINE, DEFAULT_WAV2LIP_BATCH

# Loading a model costs seconds (and GPU memory): keep each engine for the life of the process, so a run worker
# or a CLI worker process that renders many pairs loads it once.
_ENGINES: dict[tuple, LipSyncEngine] = {}
_LOCK = threading.Lock()


def pick_device(requested: str) -> str:
    """``auto`` means cuda when torch sees a GPU, else cpu; torch is only imported when it is already needed."""
    if requested != "auto":
        return requested
    torch = sys.modules.get("torch")
    if torch is None:
        try:
            import torch  # only here: the viseme engine must not pay for importing torch
        except ImportError:
            return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


class LipSyncEngineResource(ConfigurableResource):
    engine: str = Field(default=DEFAULT_ENGINE, description="Default engine: viseme (weights-free), wav2lip or "
                        "musetalk")
    wav2lip_checkpoint: str | None = Field(default=None, description="Path of the Wav2Lip .pth checkpoint")
    musetalk_models: str | None = Field(default=None, description="Folder of MuseTalk 1.5's weights")
    device: str = Field(default="auto", description="auto (cuda when present), cuda or cpu")
    batch_size: int = Field(default=DEFAULT_WAV2LIP_BATCH, description="Frames per inference batch (wav2lip)")

    def get(self, name: str | None = None, checkpoint: str | None = None, models: str | None = None
            ) -> LipSyncEngine:
        """The loaded engine ``name`` (default: the configured one), created and loaded once per process.

        ``checkpoint``/``models`` (a campaign's) override the configured wav2lip/musetalk weights."""
        name = name or self.engine
        device = pick_device(self.device) if name != "viseme" else "cpu"
        checkpoint = checkpoint or self.wav2lip_checkpoint
        models = models or self.musetalk_models
        key = (name, checkpoint, models, device, self.batch_size)
        with _LOCK:
            engine = _ENGINES.get(key)
            if engine is None:
                engine = create_engine(name, checkpoint=checkpoint, models=models, device=device,
                                       batch_size=self.batch_size)
                engine.load()
                _ENGINES[key] = engine
        return engine
