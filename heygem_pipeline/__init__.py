"""HeyGem Pipeline: a Dagster content factory for lip-synced presenter videos.

Top-level imports stay light (no torch, no Dagster): heavy libraries load only where they are used.
"""

from heygem_pipeline.audio import wav2lip_mel

__all__ = ["wav2lip_mel"]
