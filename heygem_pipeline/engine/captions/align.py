"""Offline forced alignment of a known text to its speech: when each word (or sentence) is spoken.

- English: PocketSphinx's bundled en-US acoustic model aligns the exact word sequence (a forced-alignment
  search over the text, nothing to download). Words missing from its dictionary (names, numbers, "Wav2Lip") get
  a pronunciation from espeak-ng's phonemes mapped to the model's phone set.
- Other languages (Chinese, …), and English speech that cannot be aligned: the text is cut into sentences and
  clauses and timed to the voiced segments of the audio (energy-based), each in proportion to its length and
  snapped to the pauses between them (``voice_timing``).

The result is a list of ``Word``: a unit of the script's own text with its start and end in the audio.
No Dagster here; captions are built from the words in ``captions.py``.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from heygem_pipeline.engine.captions.text import Word, split_sentences, spoken_weight, text_language
from heygem_pipeline.engine.captions.voice_timing import time_sentences, time_to_voice, voiced_segments
from heygem_pipeline.engine.media.tools import require_tool, run_tool

if TYPE_CHECKING:
    from pocketsphinx import Decoder

RATE = 16000  # the analysis audio's rate (audio.ANALYSIS_RATE)
FRAME_SECONDS = 0.01  # PocketSphinx frames
METHOD_POCKETSPHINX, METHOD_VOICED = "pocketsphinx", "voiced-segments"
METHOD_VOICE = "voice"  # the neural voice's own phoneme timing (voice_words.caption_voiced): no alignment


@dataclass
class Alignment:
    words: list[Word]
    method: str  # METHOD_POCKETSPHINX or METHOD_VOICED
    language: str
    warnings: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------- English


@dataclass(frozen=True)
class _Token:
    text: str  # as written, punctuation included
    spoken: str  # the dictionary word ("" when nothing is spoken, e.g. a dash)


def _tokens(text: str) -> list[_Token]:
    tokens = []
    for raw in text.split():
        spoken = raw.replace("’", "'").lower()
        spoken = re.sub(r"^[^\w]+|[^\w]+$", "", spoken)
        tokens.append(_Token(raw, spoken))
    return tokens


# espeak-ng's English phoneme names (``-x``) to the CMU phones of PocketSphinx's model.
_ESPEAK_TO_CMU = {
    "a": "AE", "a#": "AE", "aa": "AE", "A:": "AA", "A@": "AA R", "A": "AA", "0": "AA", "O": "AO", "O:": "AO",
    "O2": "AO", "O@": "AO R", "o@": "AO R", "o": "OW", "oU": "OW", "OI": "OY", "aI": "AY", "aI@": "AY ER",
    "aI3": "AY ER", "aU": "AW", "aU@": "AW ER", "eI": "EY", "e@": "EH R", "e": "EH", "E": "EH", "E2": "EH",
    "@": "AH", "@2": "AH", "@5": "AH", "@-": "AH", "@L": "AH L", "3": "ER", "3:": "ER", "a2": "AH", "I": "IH",
    "I2": "IH", "I#": "IH", "i": "IY", "i:": "IY", "i@": "IY R", "i@3": "IY R", "U": "UH", "U@": "UH R",
    "u": "UW", "u:": "UW", "V": "AH", "b": "B", "d": "D", "f": "F", "g": "G", "h": "HH", "j": "Y", "k": "K",
    "l": "L", "m": "M", "n": "N", "N": "NG", "p": "P", "r": "R", "r-": "R", "s": "S", "S": "SH", "t": "T",
    "t#": "T", "t2": "T", "d#": "D", "T": "TH", "D": "DH", "v": "V", "w": "W", "z": "Z", "Z": "ZH", "tS": "CH",
    "dZ": "JH", "?": "T", "n-": "N", "m-": "M", "l-": "L", "x": "K",
}


@functools.lru_cache(maxsize=4096)
def espeak_phones(word: str, voice: str = "en-us") -> str:
    """CMU phones for ``word`` from espeak-ng's pronunciation (``-x``), for words the dictionary lacks."""
    espeak = require_tool("espeak-ng")
    result = run_tool([espeak, "-q", "-x", "--sep=_", "-v", voice, "--stdin"], subject=f"the word {word!r}",
                      media_seconds=1.0, stdin=word.encode("utf-8"))
    phones = []
    for name in re.split(r"[_\s]+", result.stdout.decode(errors="replace")):
        name = name.lstrip("'‚,%=")
        mapped = _ESPEAK_TO_CMU.get(name) or _ESPEAK_TO_CMU.get(name.rstrip("#0123456789-/"))
        if mapped:
            phones.append(mapped)
    return " ".join(phones)


_decoder_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _decoder() -> Decoder:
    from pocketsphinx import Decoder, get_model_path

    model = os.path.join(get_model_path(), "en-us")
    # cmn=batch: the whole utterance's cepstral mean (we have it all). Beams wider than the recognizer's defaults
    # (1e-48/1e-48/7e-29): a forced alignment follows one word sequence and must not lose it on an odd vowel.
    # silprob 0.1 (default 0.005): pauses between words are expected here; with the default the search let a word
    # start 220 ms early, at the start of the pause before it, rather than pay for a silence.
    return Decoder(hmm=os.path.join(model, "en-us"), dict=os.path.join(model, "cmudict-en-us.dict"), lm=None,
                   cmn="batch", beam=1e-80, pbeam=1e-80, wbeam=1e-60, silprob=0.1, loglevel="FATAL")


# Synthesized voices hold exact digital silence, whose log-energy PocketSphinx's silence model never saw: the
# search then loses every path through a pause or the final silence ("final result does not match the grammar"
# in 4 of 6 test sentences), or lets a word start early in the pause before it. A faint noise floor, this many dB
# below the voice's level (its 95th percentile over 10 ms frames), fixes both. Worst word start error over five
# English scripts (170 s) against espeak-ng's word timing: 25-30 dB below, 72 ms; 33-36 dB, 87/72 ms; 40 dB,
# 193 ms; a fixed -80 dBFS floor left two scripts unaligned.
NOISE_BELOW_VOICE_DB = 30.0


def _with_noise_floor(samples: np.ndarray) -> np.ndarray:
    hop = RATE // 100
    frames = np.asarray(samples[: len(samples) // hop * hop], dtype=np.float64).reshape(-1, hop)
    voice_db = float(np.percentile(10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12), 95)) if len(frames) else -20.0
    rms = 10.0 ** ((voice_db - NOISE_BELOW_VOICE_DB) / 20.0)
    return samples + np.random.default_rng(0).normal(0.0, rms, len(samples)).astype(np.float32)


CHUNK_SECONDS = 30.0  # longer speech is aligned in pieces of whole sentences (the search slows with length)


def _pronounce(tokens: list[_Token]) -> list[int]:
    """Phones each token is said with (0: nothing to say); words the dictionary lacks are added to it from
    espeak-ng's pronunciation. Call with the decoder lock held."""
    decoder = _decoder()
    counts = []
    for token in tokens:
        phones = decoder.lookup_word(token.spoken) if token.spoken else None
        if token.spoken and phones is None:
            phones = espeak_phones(token.spoken) or None
            if phones:
                decoder.add_word(token.spoken, phones, True)
        counts.append(len(phones.split()) if phones else 0)
    return counts


def phone_count(text: str) -> float:
    """How many phones ``text`` is said with (English): a far better measure of its duration than its letters
    (numbers, abbreviations)."""
    with _decoder_lock:
        return float(sum(_pronounce(_tokens(text))))


def _phone_weight(text: str) -> float:
    return max(phone_count(text), 1.0)


def align_english(text: str, samples: np.ndarray, rate: int = RATE) -> tuple[list[Word], list[str]] | None:
    """Each word of ``text`` with its time in ``samples`` (16 kHz mono), and warnings; None when the speech does
    not fit the text at all (another text, another language). Words with nothing to say (a dash) are shown with
    the word before.

    Speech longer than ``CHUNK_SECONDS`` is cut into groups of whole sentences and each group aligned alone:
    PocketSphinx's search and its segmentation slow down more than in proportion to length (127 s took 14 s in
    one piece, 3 s in five). The cuts are the pauses where ``time_to_voice`` puts the sentence boundaries when
    each sentence weighs its number of phones (all 29 boundaries of a 127 s test script within 50 ms). A group
    that does not align is retried together with the next (a cut at the wrong pause); one that never does is
    timed sentence by sentence to the voice, with a warning.
    """
    if rate != RATE:
        raise ValueError(f"alignment needs {RATE} Hz audio")
    duration = len(samples) / rate
    sentences = split_sentences(text)
    weights = [phone_count(sentence) for sentence in sentences]
    if not any(weights):
        return None
    if duration <= CHUNK_SECONDS or len(sentences) < 2:
        whole = _align_words(" ".join(sentences), samples, 0.0)
        return None if whole is None else (whole, [])
    spans = time_to_voice([max(w, 1.0) for w in weights], voiced_segments(samples, rate), 0.0, duration)
    cuts = [0.0] + [(spans[k][1] + spans[k + 1][0]) / 2 for k in range(len(spans) - 1)] + [duration]
    groups: list[list[int]] = [[]]  # sentence indices, about CHUNK_SECONDS of speech each
    for k, (_, end) in enumerate(spans):
        if groups[-1] and end - spans[groups[-1][0]][0] > CHUNK_SECONDS:
            groups.append([])
        groups[-1].append(k)

    def piece_of(members: list[int]) -> tuple[str, np.ndarray, float]:
        lo, hi = cuts[members[0]], cuts[members[-1] + 1]
        return " ".join(sentences[k] for k in members), samples[int(lo * rate): int(hi * rate)], lo

    words: list[Word] = []
    warnings: list[str] = []
    aligned_any = False
    g = 0
    while g < len(groups):
        for width in (1, 2, 3):
            piece = _align_words(*piece_of([k for group in groups[g: g + width] for k in group]))
            if piece is not None or g + width >= len(groups):
                break
        if piece is None:  # never aligned: sentence timing for this group, then go on with the next
            width = 1
            chunk_text, chunk, offset = piece_of(groups[g])
            piece = time_sentences(chunk_text, chunk, rate, offset=offset, weigh=_phone_weight)
            warnings.append(f"{len(groups[g])} sentences from {offset:.1f} s could not be aligned word by word; "
                            "their captions are timed sentence by sentence")
        else:
            aligned_any = True
        words.extend(piece)
        g += width
    return (words, warnings) if aligned_any else None


def _align_words(text: str, samples: np.ndarray, offset: float) -> list[Word] | None:
    """Words of ``text`` aligned in ``samples`` (which start ``offset`` seconds into the audio), or None."""
    tokens = _tokens(text)
    pcm = (np.clip(_with_noise_floor(samples), -1.0, 1.0) * 32767).astype("<i2").tobytes()
    with _decoder_lock:  # one decoder per process; it is not thread-safe
        decoder = _decoder()
        said = [count > 0 for count in _pronounce(tokens)]  # per token: part of the aligned word sequence
        spoken = [t.spoken for t, s in zip(tokens, said, strict=True) if s]
        if not spoken:
            return None
        try:
            decoder.set_align_text(" ".join(spoken))
            decoder.start_utt()
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
        except RuntimeError:
            return None
        hypothesis = decoder.hyp()
        segments = [(re.sub(r"\(\d+\)$", "", s.word), s.start_frame, s.end_frame) for s in (decoder.seg() or [])]
    timed = [(w, a, b) for w, a, b in segments if not w.startswith(("<", "[", "+"))]
    if hypothesis is None or [w for w, _, _ in timed] != spoken:
        return None
    words: list[Word] = []
    pending = ""  # unspoken text before the first spoken word
    queue = iter(timed)
    for token, was_said in zip(tokens, said, strict=True):
        if was_said:
            _, first, last = next(queue)
            text_ = f"{pending} {token.text}" if pending else token.text
            words.append(Word(text_, round(offset + first * FRAME_SECONDS, 3),
                              round(offset + (last + 1) * FRAME_SECONDS, 3)))
            pending = ""
        elif words:  # nothing spoken (a dash, a symbol): shown with the word before
            words[-1] = Word(f"{words[-1].text} {token.text}", words[-1].start, words[-1].end)
        else:
            pending = f"{pending} {token.text}".strip()
    return words


# ------------------------------------------------------------------------------------------- dispatch


def align_text(text: str, samples: np.ndarray, language: str, rate: int = RATE) -> Alignment:
    """Time ``text`` to its speech: English word by word with PocketSphinx, anything else (or English that does
    not align) sentence by sentence to the voiced segments."""
    language = text_language(text, language)
    warnings: list[str] = []
    if language == "en":
        aligned = align_english(text, samples, rate)
        if aligned is not None:
            return Alignment(aligned[0], METHOD_POCKETSPHINX, language, aligned[1])
        warnings.append("the speech could not be aligned word by word to the text (does the transcript match the "
                        "audio?); captions are timed sentence by sentence to the voice instead")
    weigh = _phone_weight if language == "en" else spoken_weight
    return Alignment(time_sentences(text, samples, rate, weigh=weigh), METHOD_VOICED, language, warnings)
