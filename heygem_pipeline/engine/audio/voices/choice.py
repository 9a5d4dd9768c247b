"""Which voice speaks a text script: espeak-ng, a Piper voice or a Kokoro voice, as a campaign file writes it.

A choice is validated data (pydantic), so a campaign's ``voice:``, the CLI's ``--voice``/``--voice-model`` and the
default setting all become the same objects. Each choice has two names:

- ``variant``: readable and file-name safe, made from what the user wrote (engine, model, speaker, speed). The
  factory keeps one voiced copy of a script per variant, so two campaigns voicing one text differently keep both.
- ``identity()``: what the voice *is*, for stamps: the model's and the voice files' content hashes (a model
  replaced under the same name re-voices), speaker and speed. espeak-ng's is its voice name alone, as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

import soundfile
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr

from heygem_pipeline.engine.audio.voices.espeak import synthesize_speech
from heygem_pipeline.engine.audio.voices.kokoro import load_kokoro_voice, voice_with_kokoro
from heygem_pipeline.engine.audio.voices.piper import VoicedSpeech, config_path_of, voice_with_piper
from heygem_pipeline.settings import DEFAULT_VOICE, ToolLimits

ESPEAK, PIPER, KOKORO = "espeak", "piper", "kokoro"
VOICE_ENGINES = (ESPEAK, PIPER, KOKORO)
MISSING = "missing"  # in an identity: the file is not there (yet); voicing will say so


def _slug(*parts: str) -> str:
    """A variant name: lower case, letters, digits, ``-`` and ``_`` only (no dots: keys are not file names)."""
    return re.sub(r"[^a-z0-9_-]+", "_", "-".join(parts).lower()).strip("_-")


def _pace(speed: float) -> str:
    return "x" + f"{speed:g}".replace(".", "p")  # 1.2 -> x1p2


def _expand(path: str) -> str:
    return os.path.expanduser(path)


ModelPath = Annotated[StrictStr, Field(min_length=1), AfterValidator(_expand)]
Speed = Annotated[float, Field(gt=0.25, le=4.0, allow_inf_nan=False)]


@lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def content_digest(path: str | os.PathLike[str], length: int = 16) -> str:
    """The first ``length`` hex digits of the file's sha256 (hashed once per size and mtime in a process), or
    ``missing`` when there is no such file."""
    try:
        status = os.stat(path)
    except OSError:
        return MISSING
    return _digest(os.fspath(path), status.st_size, status.st_mtime_ns)[:length]


class _Choice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EspeakChoice(_Choice):
    """espeak-ng, a separate program: nothing to download; ``speaker`` is its voice (``espeak-ng --voices``)."""

    engine: Literal["espeak"] = "espeak"
    speaker: StrictStr = DEFAULT_VOICE

    @property
    def variant(self) -> str:
        return _slug("espeak", self.speaker)

    def identity(self) -> str:
        return self.speaker  # tokens made before neural voices hold the espeak voice name alone

    def language(self) -> str:
        """The language this voice speaks (``en-us`` -> ``en``, ``cmn`` -> ``zh``)."""
        primary = self.speaker.split("+")[0].split("-")[0].lower()
        return {"cmn": "zh", "yue": "zh"}.get(primary, primary)


class PiperChoice(_Choice):
    """A Piper voice: ``model`` is its ``.onnx``, with the ``.onnx.json`` beside it."""

    engine: Literal["piper"] = "piper"
    model: ModelPath
    speaker: StrictStr | StrictInt | None = None  # for voices with several speakers: a name or a number
    speed: Speed = 1.0

    @property
    def variant(self) -> str:
        where = hashlib.sha1(os.path.abspath(self.model).encode()).hexdigest()[:6]
        speaker = f"-{self.speaker}" if self.speaker is not None else ""
        return _slug("piper", Path(self.model).name.removesuffix(".onnx") + speaker, _pace(self.speed), where)

    def identity(self) -> str:
        files = f"{content_digest(self.model)}+{content_digest(config_path_of(Path(self.model)), 8)}"
        return f"piper:{files}:speaker={self.speaker if self.speaker is not None else ''}:speed={self.speed:g}"

    def language(self) -> str:
        """The language of the espeak-ng voice its json names ("en" when the json cannot be read now)."""
        try:
            raw = json.loads(config_path_of(Path(self.model)).read_text(encoding="utf-8"))
            return EspeakChoice(speaker=str(raw["espeak"]["voice"])).language()
        except (OSError, ValueError, KeyError, TypeError):
            return "en"


class KokoroChoice(_Choice):
    """A Kokoro voice: ``model`` the network (``kokoro-v1.0.onnx``), ``voices`` its voice vectors
    (``voices-v1.0.bin``), ``speaker`` one of them (``af_heart``, ``zf_xiaobei``…)."""

    engine: Literal["kokoro"] = "kokoro"
    model: ModelPath
    voices: ModelPath
    speaker: StrictStr
    speed: Speed = 1.0

    @property
    def variant(self) -> str:
        where = hashlib.sha1(f"{os.path.abspath(self.model)}\n{os.path.abspath(self.voices)}".encode()).hexdigest()
        return _slug("kokoro", self.speaker, _pace(self.speed), where[:6])

    def identity(self) -> str:
        files = f"{content_digest(self.model)}+{content_digest(self.voices, 8)}"
        return f"kokoro:{files}:speaker={self.speaker}:speed={self.speed:g}"

    def language(self) -> str:
        """Kokoro speakers are named by language first (a/b English, z Mandarin, j Japanese…); this runner speaks
        English and Mandarin, so any other speaker reads a text in Latin letters as English, with its accent."""
        return "zh" if self.speaker[:1].lower() == "z" else "en"


VoiceChoice = Annotated[EspeakChoice | PiperChoice | KokoroChoice, Field(discriminator="engine")]


def voice_text(choice: EspeakChoice | PiperChoice | KokoroChoice, text: str, dest_wav: str | os.PathLike[str], *,
               language: str, subject: str | os.PathLike[str] | None = None,
               limits: ToolLimits | None = None) -> VoicedSpeech:
    """Voice ``text`` with ``choice`` into ``dest_wav`` (written atomically). ``language``: the script's (Kokoro
    picks its phonemizer by it; espeak-ng and Piper voices speak their own). Errors name ``subject`` (the script)
    or the model file, on one line, with the fix."""
    if isinstance(choice, PiperChoice):
        return voice_with_piper(text, dest_wav, choice.model, subject=subject, speed=choice.speed,
                                speaker=choice.speaker, limits=limits)
    if isinstance(choice, KokoroChoice):
        return voice_with_kokoro(text, dest_wav, load_kokoro_voice(choice.model, choice.voices),
                                 speaker=choice.speaker, speed=choice.speed, language=language, subject=subject,
                                 limits=limits)
    path = synthesize_speech(text, dest_wav, voice=choice.speaker, subject=subject, limits=limits)
    info = soundfile.info(path)
    return VoicedSpeech(path, int(info.samplerate), float(info.frames) / info.samplerate, None)
