"""Piper voices (``<voice>.onnx`` + ``<voice>.onnx.json``) run on onnxruntime: no GPL piper-tts package.

A Piper voice is a VITS network. Its json gives the sample rate, the espeak-ng voice its phonemes come from, the
``phoneme_id_map`` and the inference scales. The text goes sentence by sentence: IPA from the espeak-ng program
(``espeak_ipa``), ids as Piper lays them out (``^`` bos, ``_`` pad after bos and after every phoneme, ``$`` eos),
one network run a chunk, each chunk's samples appended to the WAV at once: memory stays flat in the length of the
text. Deterministic by default: noise and noise_w are 0 (the voice's own noise scales make every run differ).

Where the model exposes its per-phoneme durations (the ``w_ceil`` tensor, in frames of ``hop_length`` samples) as
a second output, the result carries exact phoneme timing; otherwise ``timing`` is None. A voice that returns only
audio (every voice piper-voices publishes) gets that output added in memory at load time (``durations``), checked
on a short probe run; a model where it cannot be found or does not add up runs as it is, without timing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile

from heygem_pipeline.engine.audio.voices.durations import with_durations_output
from heygem_pipeline.engine.audio.voices.espeak_ipa import Sentence, phonemize
from heygem_pipeline.engine.audio.voices.session import cpu_session
from heygem_pipeline.engine.audio.voices.speech import PhonemeTiming, VoicedSpeech, chunk_timing
from heygem_pipeline.engine.media.files import atomic_output
from heygem_pipeline.errors import UnvoiceableTextError, VoiceModelError
from heygem_pipeline.settings import ToolLimits

BOS, EOS, PAD = "^", "$", "_"
DEFAULT_HOP_LENGTH = 256  # samples a duration frame lasts in every Piper voice (VITS decoder upsampling)
MAX_CHUNK_PHONEMES = 400  # a longer sentence is cut at word gaps: the network's memory grows with its input
REQUIRED_INPUTS = {"input": "tensor(int64)", "input_lengths": "tensor(int64)", "scales": "tensor(float)"}
OPTIONAL_INPUTS = {"sid": "tensor(int64)"}
_EXPECTED = "input (int64 [1, N]), input_lengths (int64 [1]), scales (float32 [3]) and optionally sid (int64 [1])"
_DOWNLOAD_FIX = ("download the voice's .onnx and its .onnx.json together (rhasspy/piper-voices) and give the path "
                 "of the .onnx")

@dataclass(frozen=True)
class PiperConfig:
    """What a Piper voice's ``.onnx.json`` says (the parts the runner uses)."""

    sample_rate: int
    espeak_voice: str
    phoneme_id_map: Mapping[str, tuple[int, ...]]
    noise_scale: float
    length_scale: float
    noise_w: float
    hop_length: int
    num_speakers: int
    speaker_id_map: Mapping[str, int]

    @classmethod
    def read(cls, path: Path) -> PiperConfig:
        """Parse and check a voice's json; ``VoiceModelError`` naming ``path`` if it is not a Piper config."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problem = " ".join(str(exc).split())
            raise VoiceModelError(path, f"is not a readable Piper voice config ({problem})", _DOWNLOAD_FIX) from exc
        try:
            id_map = {str(key): tuple(int(i) for i in ids) for key, ids in raw["phoneme_id_map"].items()}
            audio, inference = raw.get("audio", {}), raw.get("inference", {})
            config = cls(
                sample_rate=int(audio["sample_rate"]),
                espeak_voice=str(raw.get("espeak", {}).get("voice", "en-us")),
                phoneme_id_map=id_map,
                noise_scale=float(inference.get("noise_scale", 0.667)),
                length_scale=float(inference.get("length_scale", 1.0)),
                noise_w=float(inference.get("noise_w", 0.8)),
                hop_length=int(audio.get("hop_length", DEFAULT_HOP_LENGTH)),
                num_speakers=int(raw.get("num_speakers", 1)),
                speaker_id_map={str(k): int(v) for k, v in (raw.get("speaker_id_map") or {}).items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise VoiceModelError(path, f"is not a Piper voice config (missing or bad {exc})", _DOWNLOAD_FIX) from exc
        missing = [mark for mark in (BOS, EOS, PAD) if not id_map.get(mark)]
        if missing or config.sample_rate <= 0 or config.hop_length <= 0 or config.length_scale <= 0:
            what = (f"its phoneme_id_map lacks {' '.join(missing)}" if missing else
                    "its sample rate, hop length or length scale is not positive")
            raise VoiceModelError(path, f"is not a Piper voice config ({what})", _DOWNLOAD_FIX)
        return config


def config_path_of(model: Path) -> Path:
    """Where a Piper voice's json lies: beside the model, named ``<model>.json`` (``voice.onnx.json``)."""
    return model.with_name(model.name + ".json")


class PiperVoice:
    """A loaded Piper voice: its checked config and an onnxruntime session on the CPU.

    ``durations``: add the model's ``w_ceil`` tensor as a durations output when it has none (about a second more
    to load a medium voice; the audio is unchanged); False runs the file exactly as it is. ``durations_added``
    tells whether that happened. Raises ``VoiceModelError`` (naming the file and the fix) for a missing model or
    json, a file that is not an ONNX model, or a model whose inputs are not a Piper voice's.
    """

    def __init__(self, model: str | os.PathLike[str], *, threads: int | None = None, durations: bool = True) -> None:
        self.model = Path(model).expanduser()
        if not self.model.is_file():
            raise VoiceModelError(self.model, "voice model file does not exist", _DOWNLOAD_FIX)
        self.config_path = config_path_of(self.model)
        if not self.config_path.is_file():
            raise VoiceModelError(self.model, f"has no {self.config_path.name} beside it (a Piper voice is the .onnx "
                                  "and its .onnx.json)", f"put {self.config_path.name} (downloaded with the voice) "
                                  "in the same folder")
        self.config = PiperConfig.read(self.config_path)
        edited = with_durations_output(self.model) if durations else None
        self.session = cpu_session(self.model, _DOWNLOAD_FIX, threads=threads, edited=edited[0] if edited else None)
        inputs = {i.name: i.type for i in self.session.get_inputs()}
        outputs = self.session.get_outputs()
        wrong = [name for name, kind in REQUIRED_INPUTS.items() if inputs.get(name) != kind]
        extra = [name for name, kind in inputs.items()
                 if name not in REQUIRED_INPUTS and OPTIONAL_INPUTS.get(name) != kind]
        if wrong or extra or not outputs or outputs[0].type != "tensor(float)" or len(outputs) > 2:
            found = ", ".join(f"{name} ({kind.removeprefix('tensor(').rstrip(')')})" for name, kind in inputs.items())
            raise VoiceModelError(self.model, f"is not a Piper voice: its inputs are {found or 'none'}, a Piper voice "
                                  f"takes {_EXPECTED} and returns float32 audio",
                                  "give the .onnx of a Piper voice, or the engine this model belongs to (a Kokoro "
                                  "model takes tokens, style and speed)")
        self.has_speaker_input = "sid" in inputs
        self.audio_output = outputs[0].name
        self.durations_output = outputs[1].name if len(outputs) == 2 else None
        self.durations_added = edited is not None and self._durations_add_up()
        if edited is not None and not self.durations_added:
            self.durations_output = None  # the tensor found is not the durations: no timing rather than a wrong one

    def _durations_add_up(self) -> bool:
        """Whether the added output gives one value per id summing to the audio's length (a bos-pad-eos probe)."""
        id_map = self.config.phoneme_id_map
        ids = [*id_map[BOS], *id_map[PAD], *id_map[EOS]]
        feed: dict[str, Any] = {"input": np.asarray([ids], dtype=np.int64),
                                "input_lengths": np.asarray([len(ids)], dtype=np.int64),
                                "scales": np.asarray([0.0, self.config.length_scale, 0.0], dtype=np.float32)}
        if self.has_speaker_input:
            feed["sid"] = np.asarray([0], dtype=np.int64)
        try:
            audio, frames = self.session.run([self.audio_output, self.durations_output], feed)
        except Exception:  # onnxruntime's own error types: the output cannot be computed alone
            return False
        frames = np.asarray(frames, dtype=np.float64).reshape(-1)
        return frames.size == len(ids) and float(frames.sum()) * self.config.hop_length == np.asarray(audio).size

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    def speaker_id(self, speaker: int | str | None) -> int | None:
        """The ``sid`` to pass for ``speaker`` (a name from the json or a number); None for one-speaker voices."""
        if not self.has_speaker_input:
            if speaker not in (None, 0):
                raise VoiceModelError(self.model, f"has one speaker, not {speaker!r}", "leave out the speaker")
            return None
        if speaker is None:
            return 0
        if isinstance(speaker, str) and speaker in self.config.speaker_id_map:
            return self.config.speaker_id_map[speaker]
        if isinstance(speaker, int) and 0 <= speaker < max(1, self.config.num_speakers):
            return speaker
        names = ", ".join(sorted(self.config.speaker_id_map)[:8]) or f"0 to {self.config.num_speakers - 1}"
        raise VoiceModelError(self.model, f"has no speaker {speaker!r}", f"choose one of: {names}")

    def unknown_phonemes(self, phonemes: str) -> list[str]:
        """The phonemes of ``phonemes`` that this voice's ``phoneme_id_map`` lacks, in order, without repeats."""
        id_map = self.config.phoneme_id_map
        return list(dict.fromkeys(p for p in phonemes if p not in id_map))

    def phoneme_ids(self, phonemes: str) -> tuple[list[int], list[int]]:
        """Ids as Piper lays them out (bos pad, then each phoneme and a pad, then eos) and, for each id, the index
        of the timing entry it belongs to (0: "^", i: the i-th phoneme, last: "$")."""
        id_map = self.config.phoneme_id_map
        ids = [*id_map[BOS], *id_map[PAD]]
        owners = [0] * len(ids)
        for index, phoneme in enumerate(phonemes, start=1):
            these = [*id_map[phoneme], *id_map[PAD]]
            ids += these
            owners += [index] * len(these)
        ids += id_map[EOS]
        owners += [len(phonemes) + 1] * len(id_map[EOS])
        return ids, owners

    def run(self, ids: Sequence[int], scales: tuple[float, float, float], sid: int | None
            ) -> tuple[np.ndarray, np.ndarray | None]:
        """One network run: float32 samples and, if the model gives them, each id's duration in samples."""
        feed: dict[str, Any] = {
            "input": np.asarray([ids], dtype=np.int64),
            "input_lengths": np.asarray([len(ids)], dtype=np.int64),
            "scales": np.asarray(scales, dtype=np.float32),
        }
        if sid is not None:
            feed["sid"] = np.asarray([sid], dtype=np.int64)
        names = [self.audio_output] + ([self.durations_output] if self.durations_output else [])
        results = self.session.run(names, feed)
        audio = np.asarray(results[0], dtype=np.float32).reshape(-1)
        if self.durations_output is None:
            return audio, None
        frames = np.asarray(results[1]).reshape(-1)
        if frames.size != len(ids):
            raise VoiceModelError(self.model, f"its second output {self.durations_output!r} has {frames.size} values "
                                  f"for {len(ids)} phoneme ids, so it is not Piper's per-phoneme durations",
                                  "export the voice with its duration output (w_ceil) or without a second output")
        return audio, np.rint(frames.astype(np.float64) * self.config.hop_length).astype(np.int64)


def load_piper_voice(model: str | os.PathLike[str], *, threads: int | None = None,
                     durations: bool = True) -> PiperVoice:
    """Load and check a Piper voice (``model`` is the ``.onnx``; its ``.onnx.json`` lies beside it); with
    ``durations``, its per-phoneme durations are exposed when the file does not already return them."""
    return PiperVoice(model, threads=threads, durations=durations)


def _chunks(sentences: Iterator[Sentence]) -> Iterator[str]:
    """Phoneme strings of at most ``MAX_CHUNK_PHONEMES``: a sentence each, long ones cut at word gaps."""
    for sentence in sentences:
        phonemes = sentence.phonemes
        while len(phonemes) > MAX_CHUNK_PHONEMES:
            cut = phonemes.rfind(" ", 0, MAX_CHUNK_PHONEMES)
            cut = cut if cut > 0 else MAX_CHUNK_PHONEMES
            yield phonemes[:cut]
            phonemes = phonemes[cut:].lstrip(" ")
        if phonemes:
            yield phonemes


def _check_voiceable(voice: PiperVoice, sentences: list[Sentence], subject: str | os.PathLike[str]) -> None:
    unknown: dict[str, None] = {}
    first: Sentence | None = None
    for sentence in sentences:
        missing = voice.unknown_phonemes(sentence.phonemes)
        if missing and first is None:
            first = sentence
        unknown.update(dict.fromkeys(missing))
    if first is not None:
        shown = " ".join(first.text.split())
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        symbols = " ".join(repr(p) for p in unknown)
        raise UnvoiceableTextError(subject, f"the Piper voice {voice.model.name} cannot speak phonemes {symbols} "
                                   f"(espeak voice {voice.config.espeak_voice!r}), first in \"{shown}\"",
                                   "rewrite those words (spell out symbols, numbers and foreign words) or choose a "
                                   "voice for the script's language")
    if not sentences:
        raise UnvoiceableTextError(subject, "the text has no words to speak (only symbols or punctuation)",
                                   "write the script's words into the file")


def voice_with_piper(text: str, dest_wav: str | os.PathLike[str], voice: PiperVoice | str | os.PathLike[str], *,
                     subject: str | os.PathLike[str] | None = None, speed: float = 1.0,
                     speaker: int | str | None = None, noise_scale: float = 0.0, noise_w: float = 0.0,
                     subtype: Literal["PCM_16", "FLOAT"] = "PCM_16",
                     limits: ToolLimits | None = None) -> VoicedSpeech:
    """Voice ``text`` with a Piper voice into ``dest_wav`` (mono, the voice's rate), written atomically.

    ``voice``: a loaded ``PiperVoice`` or the path of its ``.onnx``. ``subject``: the script file, named in errors
    (default ``dest_wav``). ``speed`` > 1 speaks faster (the voice's length_scale divided by it). ``noise_scale``
    and ``noise_w``: 0 for byte-identical runs; the voice's json values for Piper's livelier default. The whole
    text is phonemized and checked first, so a word the voice cannot speak fails before any audio is computed;
    then each chunk's samples go to the WAV as soon as they exist. Raises ``VoiceModelError``,
    ``UnvoiceableTextError`` (both one line, naming the file and the fix) or espeak-ng's tool errors.
    """
    if not text.strip():
        raise ValueError("no text to voice")
    if speed <= 0:
        raise ValueError(f"speed must be positive, not {speed}")
    loaded = voice if isinstance(voice, PiperVoice) else load_piper_voice(voice)
    dest = Path(dest_wav)
    subject = subject or dest
    sid = loaded.speaker_id(speaker)
    sentences = list(phonemize(text, loaded.config.espeak_voice, subject=subject, limits=limits))
    _check_voiceable(loaded, sentences, subject)
    scales = (noise_scale, loaded.config.length_scale / speed, noise_w)
    rate = loaded.sample_rate
    timing: list[PhonemeTiming] | None = [] if loaded.durations_output else None
    written = 0
    with atomic_output(dest) as tmp, soundfile.SoundFile(tmp, "w", samplerate=rate, channels=1, subtype=subtype,
                                                        format="WAV") as wav:
        for phonemes in _chunks(iter(sentences)):
            ids, owners = loaded.phoneme_ids(phonemes)
            audio, id_samples = loaded.run(ids, scales, sid)
            wav.write(np.clip(audio, -1.0, 1.0))
            if timing is not None and id_samples is not None:
                timing += chunk_timing(phonemes, owners, id_samples, audio.size, written, rate)
            written += audio.size
    return VoicedSpeech(dest, rate, written / rate, tuple(timing) if timing is not None else None,
                        loaded.config.espeak_voice, tuple(sentences))
