"""English phone recognition with PocketSphinx's bundled en-US acoustic model (no download).

Allphone mode decodes a phone sequence with 10 ms timing and no vocabulary, so any English script works.
The decoder is built once per process (about 0.1 s) and reused.
"""

from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pocketsphinx import Decoder

PHONE_RATE = 100  # PocketSphinx frames per second


@dataclass(frozen=True)
class Phone:
    phone: str  # CMU phone (AA, B, ...), or SIL / a +NOISE+ filler
    start: int  # first 10 ms frame
    end: int  # last 10 ms frame, inclusive


_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _decoder() -> Decoder:
    from pocketsphinx import Decoder, get_model_path

    model = get_model_path()
    # Settings from PocketSphinx's phoneme-recognition guidance: a low language weight and wide beams let
    # the acoustics, not the phone bigram, decide.
    return Decoder(
        hmm=os.path.join(model, "en-us", "en-us"),
        allphone=os.path.join(model, "en-us", "en-us-phone.lm.bin"),
        allphone_ci=True,
        lw=2.0,
        beam=1e-20,
        pbeam=1e-20,
        loglevel="FATAL",
    )


def recognize_phones(samples: np.ndarray, sample_rate: int = 16000) -> list[Phone]:
    """Phones with timings for 16 kHz mono float samples."""
    if sample_rate != 16000:
        raise ValueError("phone recognition needs 16 kHz audio")
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    with _lock:  # one decoder object, not thread-safe
        decoder = _decoder()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        return [Phone(seg.word, seg.start_frame, seg.end_frame) for seg in decoder.seg()]
