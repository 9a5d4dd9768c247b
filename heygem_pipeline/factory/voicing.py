"""Which voice speaks each text script, and the script keys of voiced copies.

A campaign's ``voice:`` (or the default setting) gives one voice, or one for English and one for Mandarin. A
text script written mostly in Chinese characters takes the Mandarin one; every other text takes the other. A
text voiced by the default voice keeps its own key (``hello``); voiced by another, it is a script of its own,
``hello@<variant>``: its own partition, its own prepared folder, its own renders. So two campaigns voicing one
text differently keep both copies, and changing one campaign's voice re-voices only that campaign's copies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from heygem_pipeline.engine.audio.voices.choice import EspeakChoice, KokoroChoice, PiperChoice
from heygem_pipeline.engine.captions.text import text_language
from heygem_pipeline.settings import DEFAULT_VOICE

VOICED_MARK = "@"  # never in an upload's id (safe_id keeps letters, digits and . - _)
ENGLISH, MANDARIN = "en", "zh"
VOICE_LANGUAGES = (ENGLISH, MANDARIN)
MANDARIN_ESPEAK = "cmn"

Voice = EspeakChoice | PiperChoice | KokoroChoice


def voiced_key(script: str, variant: str = "") -> str:
    """The key of ``script`` voiced by the voice of ``variant`` ("" for the default voice: the script's own key)."""
    return f"{script}{VOICED_MARK}{variant}" if variant else script


def split_voiced_key(key: str) -> tuple[str, str]:
    """(the upload's key, the voice variant or "") of a script key."""
    script, _, variant = key.partition(VOICED_MARK)
    return script, variant


def upload_key(key: str) -> str:
    """The upload a script key (voiced or not) is made from."""
    return key.partition(VOICED_MARK)[0]


def text_voice_language(text: str) -> str:
    """Which voice of a plan a text takes: ``zh`` when written mostly in Chinese characters, else ``en``."""
    return text_language(text, ENGLISH)


@dataclass(frozen=True)
class VoicePlan:
    """The voice for each kind of text: ``en`` (every text not in Chinese characters) and ``zh``."""

    voices: Mapping[str, Voice] = field(default_factory=dict)

    def choose(self, text: str) -> Voice | None:
        return self.voices.get(text_voice_language(text))

    def variants(self) -> dict[str, Voice]:
        return {voice.variant: voice for voice in self.voices.values()}

    @classmethod
    def single(cls, voice: Voice) -> VoicePlan:
        """One voice for every text; with an espeak-ng voice, Chinese texts still get espeak-ng's Mandarin."""
        mandarin = EspeakChoice(speaker=MANDARIN_ESPEAK) if isinstance(voice, EspeakChoice) else voice
        return cls({ENGLISH: voice, MANDARIN: mandarin})


def default_voice(*, voice: str, model: str | None = None, vectors: str | None = None, speed: float = 1.0) -> Voice:
    """The default voice from the settings: ``voice`` is an espeak-ng voice, or with ``model`` the speaker of a
    Kokoro model (``vectors``: its voices file) or of a Piper voice (no ``vectors``; the espeak-ng default voice
    name means its first speaker)."""
    if not model:
        return EspeakChoice(speaker=voice)
    if vectors:
        return KokoroChoice(model=model, voices=vectors, speaker=voice, speed=speed)
    speaker: str | int | None = None if voice == DEFAULT_VOICE else voice
    return PiperChoice(model=model, speaker=int(speaker) if isinstance(speaker, str) and speaker.isdigit()
                       else speaker, speed=speed)


_TEXTS: dict[str, str] = {}


def script_text(fingerprint: str, read: Callable[[], str]) -> str:
    """A text script's words, read once per upload version (``fingerprint``) in a process."""
    if fingerprint not in _TEXTS:
        if len(_TEXTS) > 4096:
            _TEXTS.clear()
        _TEXTS[fingerprint] = read()
    return _TEXTS[fingerprint]
