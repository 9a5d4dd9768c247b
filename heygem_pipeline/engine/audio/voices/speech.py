"""What every voice runner returns: the voiced WAV and its phoneme timing, and how a chunk's timing is laid out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heygem_pipeline.engine.audio.voices.espeak_ipa import Sentence

OPEN, CLOSE = "^", "$"  # the timing names of the silence a chunk opens and closes with

PhonemeTiming = tuple[str, float, float]  # (phoneme, start_s, end_s); "^"/"$": the silence a chunk opens/closes with


@dataclass(frozen=True)
class VoicedSpeech:
    """A voiced text: the WAV, its rate and length, and the voice's own phoneme timing (None if it has none)."""

    path: Path
    sample_rate: int
    duration_s: float
    timing: tuple[PhonemeTiming, ...] | None
    # How the text became phonemes, so captions can find each written word in ``timing`` without asking espeak-ng
    # again: the espeak-ng voice (None when the phonemes came from elsewhere) and the sentences it gave.
    espeak_voice: str | None = None
    sentences: tuple[Sentence, ...] = ()


def chunk_timing(phonemes: Sequence[str], owners: Sequence[int], id_samples: np.ndarray, audio_samples: int,
                 offset: int, rate: int) -> list[PhonemeTiming]:
    """(phoneme, start_s, end_s) of one chunk: "^", each phoneme (with the ids it owns), "$".

    ``owners[i]`` is the timing entry the i-th id belongs to (0: "^", k: the k-th phoneme, last: "$"). The
    durations are scaled to the chunk's real length when the two differ."""
    per_entry = np.bincount(np.asarray(owners), weights=id_samples.astype(np.float64), minlength=len(phonemes) + 2)
    total = float(per_entry.sum())
    scale = audio_samples / total if total > 0 else 0.0
    ends = np.cumsum(per_entry) * scale
    starts = np.concatenate(([0.0], ends[:-1]))
    names = [OPEN, *phonemes, CLOSE]
    return [(name, (offset + float(s)) / rate, (offset + float(e)) / rate)
            for name, s, e in zip(names, starts, ends, strict=True)]
