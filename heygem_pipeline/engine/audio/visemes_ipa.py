"""Phoneme timing → mouth shapes: the same 100 Hz (open, spread, round, press) track as ``visemes.mouth_track``,
timed by the voice that spoke the text instead of recognised from its audio.

A neural voice (``voices.voice_with_piper``) knows when each of its phonemes sounds: ``VoicedSpeech.timing`` is
(phoneme, start_s, end_s) per IPA character of espeak-ng's phoneme string, "^"/"$" a chunk's leading/trailing
silence, " " between words, clause marks (, ; : . ! ?) where the voice pauses. Each phoneme gets its viseme
(the CMU groups of ``visemes.VISEMES``) from ``IPA_VISEMES`` from its own start time on: stress marks, length marks,
tones and diacritics carry no shape and lengthen the phoneme before them, a short gap between words keeps the
shape going, and silence (the chunk edges, clause marks, a long word gap) closes the mouth. Then the same
coarticulation as the audio path (``visemes.coarticulate``): a 30 ms zero-phase blend, and m/b/p closing the lips.

``stages.prepare_script`` uses it whenever the voice gave its timing, and ``mouth_track`` otherwise.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable, Sequence

import numpy as np

from heygem_pipeline.engine.audio.visemes import OPEN, TRACK_RATE, VISEMES, coarticulate, speech_level
from heygem_pipeline.engine.audio.voices.speech import PhonemeTiming as Timing

Shape = tuple[float, float, float, float]  # (open, spread, round, press)

# IPA symbols (espeak-ng's English and Mandarin, and the usual pinyin IPA) to the CMU viseme groups. Diphthongs
# and affricates need no entry of their own: each of their symbols has its own time, so "aɪ" opens on a and
# glides to ɪ, "tʃ" goes from t to ʃ.
IPA_TO_CMU: dict[str, str] = {
    # vowels
    "a": "AA", "ɑ": "AA", "ɒ": "AA", "ä": "AA", "æ": "AE", "ɐ": "AH", "ʌ": "AH", "ə": "AH", "ɤ": "AH", "ɘ": "AH",
    "ɚ": "ER", "ɝ": "ER", "ɜ": "ER", "ɞ": "ER", "ɔ": "AO", "o": "OW", "ɵ": "OW", "ø": "OW", "œ": "AO", "ɶ": "AO",
    "e": "EY", "ɛ": "EH", "ɪ": "IH", "ᵻ": "IH", "ɨ": "IH", "ɿ": "IH", "ʅ": "IH", "i": "IY", "ʏ": "UH", "ʊ": "UH",
    "ɯ": "UH", "u": "UW", "ʉ": "UW", "y": "UW",
    # consonants
    "p": "P", "b": "B", "m": "M", "ɱ": "F", "f": "F", "v": "V", "ʋ": "V", "θ": "TH", "ð": "DH", "s": "S", "z": "Z",
    "ɕ": "S", "ʑ": "Z", "ʃ": "SH", "ʒ": "ZH", "ʂ": "SH", "ʐ": "ZH", "t": "T", "d": "D", "ʈ": "T", "ɖ": "D",
    "ɾ": "D", "ʔ": "T", "n": "N", "ɲ": "N", "ɳ": "N", "k": "K", "ɡ": "G", "g": "G", "c": "K", "ɟ": "G", "q": "K",
    "x": "HH", "ɣ": "G", "χ": "HH", "ŋ": "NG", "h": "HH", "ɦ": "HH", "ç": "HH", "l": "L", "ɫ": "L", "ɬ": "L",
    "ʎ": "L", "ɹ": "R", "r": "R", "ɻ": "R", "ʁ": "R", "w": "W", "ʍ": "W", "ɥ": "W", "j": "Y",
}
IPA_VISEMES: dict[str, Shape] = {ipa: VISEMES[cmu] for ipa, cmu in IPA_TO_CMU.items()}
SILENCE = frozenset("^$,;:.!?")  # a chunk's edges and Piper's clause marks: the voice pauses, the mouth closes
WORD_GAP = " "
PAUSE_SECONDS = 0.12  # a gap between words at least this long is a pause (shorter ones keep the shape going)
UNKNOWN_SHAPE: Shape = (0.40, 0.10, 0.00, 0.0)  # a letter the table lacks: half open, so a word never shuts


def _modifier(symbol: str) -> bool:
    """Stress (ˈ ˌ), length (ː ˑ), tone letters and numbers, aspiration and other diacritics: no shape."""
    category = unicodedata.category(symbol)
    return symbol not in IPA_VISEMES and (category in ("Lm", "Sk", "Mn", "Nd") or symbol in "ˈˌːˑ˥˦˧˨˩ʰʲʷ-")


def viseme_segments(timing: Iterable[Timing]) -> list[tuple[Shape | None, float, float]]:
    """(viseme, or None for silence; start_s; end_s) spans in order: modifiers and short word gaps lengthen the
    span before them, silence closes the mouth, a symbol the table lacks gets a neutral half-open shape."""
    spans: list[tuple[Shape | None, float, float]] = []
    for phoneme, start, end in timing:
        base = unicodedata.normalize("NFD", phoneme)[:1]
        shape: Shape | None
        if phoneme in SILENCE or (phoneme == WORD_GAP and end - start >= PAUSE_SECONDS):
            shape = None
        elif phoneme == WORD_GAP or _modifier(base):
            if spans:
                spans[-1] = (spans[-1][0], spans[-1][1], end)
                continue
            shape = None
        else:
            shape = IPA_VISEMES.get(base) or IPA_VISEMES.get(base.lower()) or UNKNOWN_SHAPE
        if spans and spans[-1][0] is None and shape is None:
            spans[-1] = (None, spans[-1][1], end)
        else:
            spans.append((shape, start, end))
    return spans


def _frame(seconds: float) -> int:
    return math.floor(seconds * TRACK_RATE + 0.5)


def mouth_track_from_phonemes(timing: Sequence[Timing], duration_s: float, samples: np.ndarray | None = None,
                              sample_rate: int = 16000) -> np.ndarray:
    """A (T, 4) float32 track at 100 Hz of (open, spread, round, press), as ``visemes.mouth_track`` returns, with
    each phoneme's shape from its start time in ``timing`` (a voice's (phoneme, start_s, end_s)).

    ``duration_s``: the audio's length (T = ceil(duration_s × 100), or the frames of ``samples`` when given).
    ``samples`` (mono, ``sample_rate``): the voice's audio; its loudness then scales how far the jaw opens, as on
    the audio path, while the timing alone decides when each shape begins and when the mouth closes.
    """
    if samples is not None and len(samples):
        hop = sample_rate // TRACK_RATE
        n_frames = math.ceil(len(samples) / hop)
        level: np.ndarray | None = speech_level(samples, sample_rate)
    else:
        n_frames = math.ceil(round(duration_s * TRACK_RATE, 6))
        level = None
    targets = np.zeros((max(n_frames, 1), 4), dtype=np.float32)
    voiced = np.zeros(len(targets), dtype=bool)
    for shape, start, end in viseme_segments(timing):
        first, last = max(_frame(start), 0), min(_frame(end), len(targets))
        if shape is None or last <= first:
            continue
        targets[first:last] = shape
        voiced[first:last] = True
    if level is not None:  # the audio path's scaling: a loud "ah" opens wider, a soft one less
        targets[voiced, OPEN] *= 0.45 + 0.75 * level[voiced]
    targets[:, OPEN] = np.clip(targets[:, OPEN], 0, 1)
    return coarticulate(targets)[:n_frames]
