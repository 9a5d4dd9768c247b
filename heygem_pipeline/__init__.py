"""HeyGem Pipeline: a Dagster content factory for lip-synced presenter videos.

Top-level imports stay light (no torch, no Dagster): heavy libraries load only where they are used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs only; at run time the names are resolved lazily by __getattr__
    from heygem_pipeline.engine.audio.features import wav2lip_mel
    from heygem_pipeline.engine.lipsync.musetalk.model import load_musetalk
    from heygem_pipeline.engine.lipsync.wav2lip import load_wav2lip_checkpoint

__all__ = ["load_musetalk", "load_wav2lip_checkpoint", "wav2lip_mel"]

# Names served from the engine (numpy, librosa, torch): resolved on first use, so `import heygem_pipeline` (and
# every `import heygem_pipeline.errors`, `heygem --help`) stays cheap.
_LAZY = {"load_musetalk": "heygem_pipeline.engine.lipsync.musetalk.model",
         "load_wav2lip_checkpoint": "heygem_pipeline.engine.lipsync.wav2lip",
         "wav2lip_mel": "heygem_pipeline.engine.audio.features"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this hook
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
