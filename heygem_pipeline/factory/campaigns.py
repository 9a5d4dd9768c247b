"""Campaign files: which scripts × avatars to render, and with which options."""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from heygem_pipeline.engine.audio.voices.choice import VOICE_ENGINES, VoiceChoice
from heygem_pipeline.engine.captions.burnin import SubtitleOptions, SubtitlesValue, subtitle_problem
from heygem_pipeline.errors import InputError
from heygem_pipeline.factory.bucket import BucketEntry
from heygem_pipeline.factory.layout import PREFIXES
from heygem_pipeline.factory.voicing import VoicePlan, default_voice
from heygem_pipeline.naming import safe_id, safe_id_or_none, stem_and_ext
from heygem_pipeline.settings import (
    DEFAULT_CRF,
    DEFAULT_ENGINE,
    DEFAULT_FPS,
    DEFAULT_PRESET,
    DEFAULT_STILL_SECONDS,
    DEFAULT_VOICE,
    ENGINE_NAMES,
)

if TYPE_CHECKING:
    from heygem_pipeline.factory.uploads import Upload

DEFAULT_CAMPAIGN = "default"


class CampaignError(InputError):
    """A campaign file that cannot be used (bad YAML, an unknown key, a bad value). Scanning the bucket skips the
    file with this message; retrying will not help, fixing the file will."""

    def __init__(self, source: str, problem: str, fix: str = "") -> None:
        super().__init__(source, problem, fix)


class MediaSettings(Protocol):
    """What ``MediaOptions.from_settings`` reads: a ``Settings``, or the Dagster ffmpeg resource built from one."""

    fps: float
    still_seconds: float
    voice: str
    voice_model: str | None
    voice_vectors: str | None
    voice_speed: float


class OutputSettings(Protocol):
    """What ``RenderOptions.from_settings`` reads: a ``Settings``, or the Dagster ffmpeg resource built from one."""

    crf: int
    preset: str


@dataclass(frozen=True)
class MediaOptions:
    """Settings that change what the script and avatar stages write (part of their stamps)."""

    fps: float = DEFAULT_FPS
    still_seconds: float = DEFAULT_STILL_SECONDS
    voice: VoicePlan = field(default_factory=lambda: VoicePlan.single(default_voice(voice=DEFAULT_VOICE)))

    @classmethod
    def from_settings(cls, settings: MediaSettings) -> MediaOptions:
        voice = default_voice(voice=settings.voice, model=settings.voice_model, vectors=settings.voice_vectors,
                              speed=settings.voice_speed)
        return cls(fps=settings.fps, still_seconds=settings.still_seconds, voice=VoicePlan.single(voice))


@dataclass(frozen=True)
class RenderOptions:
    """What a render depends on besides its inputs. Different options render to different folders."""

    engine: str = DEFAULT_ENGINE
    crf: int = DEFAULT_CRF
    preset: str = DEFAULT_PRESET
    checkpoint: str | None = None  # wav2lip weights; None: the engine resource's (HEYGEM_WAV2LIP_CHECKPOINT)
    models: str | None = None  # musetalk's weights folder; None: the engine resource's (HEYGEM_MUSETALK_MODELS)
    subtitles: SubtitleOptions = field(default_factory=SubtitleOptions)  # burnt in, or sidecars only

    @classmethod
    def from_settings(cls, settings: OutputSettings, engine: str) -> RenderOptions:
        """The defaults a campaign's own options override: ``engine`` (a ``Settings``'s, or the engine resource's)
        with the settings' encoder quality and speed."""
        return cls(engine=engine, crf=settings.crf, preset=settings.preset)

    @property
    def variant(self) -> str:
        weights = ""
        if self.engine == "wav2lip" and self.checkpoint:  # other weights, other videos
            weights = "-" + hashlib.sha1(self.checkpoint.encode()).hexdigest()[:8]
        elif self.engine == "musetalk" and self.models:
            weights = "-" + hashlib.sha1(self.models.encode()).hexdigest()[:8]
        burnt = f"-{self.subtitles.variant()}" if self.subtitles.burn else ""  # captions in the picture
        return safe_id(f"{self.engine}{weights}-crf{self.crf}-{self.preset}{burnt}")

    def as_config(self) -> dict[str, Any]:
        """The render asset's run config (``assets.videos.RenderConfig``); ``subtitles`` only when burnt in, as the
        nested ``{mode, style: {…}}`` mapping (older runs held a JSON string: README, "How it runs")."""
        config: dict[str, Any] = {"engine": self.engine, "crf": self.crf, "preset": self.preset}
        if self.checkpoint:
            config["checkpoint"] = self.checkpoint
        if self.models:
            config["models"] = self.models
        if self.subtitles.burn:
            config["subtitles"] = self.subtitles.model_dump(mode="json")
        return config


@dataclass(frozen=True)
class Campaign:
    """Which scripts × avatars to render, and how. Patterns match a file name, its stem or its id (globs ok)."""

    key: str
    source: str  # the campaign file's name, or "(implicit)" for the default campaign
    scripts: tuple[str, ...] = ("*",)
    avatars: tuple[str, ...] = ("*",)
    engine: str | None = None
    crf: int | None = None
    preset: str | None = None
    checkpoint: str | None = None
    models: str | None = None
    subtitles: SubtitleOptions = field(default_factory=SubtitleOptions)
    fingerprint: str = ""
    voice: VoicePlan | None = None  # who speaks its text scripts (None: the default voice)

    def render_options(self, defaults: RenderOptions) -> RenderOptions:
        return RenderOptions(engine=self.engine or defaults.engine,
                             crf=self.crf if self.crf is not None else defaults.crf,
                             preset=self.preset or defaults.preset,
                             checkpoint=self.checkpoint or defaults.checkpoint,
                             models=self.models or defaults.models, subtitles=self.subtitles)

    def select(self, uploads: Mapping[str, Upload], patterns: Sequence[str]) -> list[str]:
        return [key for key, upload in sorted(uploads.items()) if _matches(patterns, upload.name, key)]

    def mentions(self, entry: BucketEntry) -> bool:
        """Whether an upload (accepted or not yet) at ``entry`` would belong to this campaign."""
        kind = next((k for k, prefix in PREFIXES.items() if entry.rel.startswith(prefix + "/")), None)
        if kind is None:
            return False
        patterns = self.scripts if kind == "script" else self.avatars
        return _matches(patterns, entry.name, safe_id_or_none(entry.name) or "")

    def pairs(self, scripts: Mapping[str, Upload], avatars: Mapping[str, Upload]) -> list[tuple[str, str]]:
        return [(s, a) for s in self.select(scripts, self.scripts) for a in self.select(avatars, self.avatars)]


def _matches(patterns: Sequence[str], name: str, key: str) -> bool:
    stem, _ = stem_and_ext(name)
    return any(fnmatch.fnmatchcase(n, p) for p in patterns for n in {name, stem, key} if n)


Crf = Annotated[int, Field(ge=0, le=51, strict=True)]


def _scalar_text(value: Any) -> Any:
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


Preset = Annotated[str, BeforeValidator(_scalar_text)]  # an ffmpeg preset name (`preset: 5` reads as "5")


def _name_list(value: Any) -> Any:
    if value is None:
        return ["*"]
    return [value] if isinstance(value, str | int) else value


Patterns = Annotated[list[StrictStr | StrictInt], BeforeValidator(_name_list)]  # one name or glob, or a list
ANY_LANGUAGE = "any"


def _voice_by_language(value: Any) -> Any:
    """``voice: en-us`` (an espeak-ng voice), ``voice: {engine: …}`` (one voice) or ``voice: {en: {…}, zh: {…}}``
    all become a mapping by language; ``any``: one voice for every text."""
    def one(voice: Any) -> Any:
        return {"engine": "espeak", "speaker": voice} if isinstance(voice, str) else voice

    if isinstance(value, str) or (isinstance(value, Mapping) and "engine" in value):
        return {ANY_LANGUAGE: one(value)}
    return {key: one(voice) for key, voice in value.items()} if isinstance(value, Mapping) else value


VoiceByLanguage = Annotated[dict[Literal["any", "en", "zh"], VoiceChoice], BeforeValidator(_voice_by_language)]


class OutputOptions(BaseModel):
    """A campaign file's ``output:`` (the same keys are accepted at the top level, which wins)."""

    model_config = ConfigDict(extra="forbid")

    crf: Crf | None = None
    preset: Preset | None = None


class CampaignFile(BaseModel):
    """What a ``campaigns/<name>.yaml`` may hold (validated by ``parse_campaign``; see the README's example)."""

    model_config = ConfigDict(extra="forbid")

    scripts: Patterns = ["*"]
    avatars: Patterns = ["*"]
    engine: Literal[ENGINE_NAMES] | None = None  # type: ignore[valid-type]
    checkpoint: StrictStr | None = None
    models: StrictStr | None = None
    crf: Crf | None = None
    preset: Preset | None = None
    output: OutputOptions | None = None
    subtitles: SubtitlesValue = SubtitleOptions()
    voice: VoiceByLanguage | None = None
    description: Any = None  # for people; not used
    name: Any = None  # for people (the studio writes the batch's name); the file name is the campaign's

    def campaign(self, source: str, fingerprint: str = "") -> Campaign:
        output = self.output or OutputOptions()
        preset = self.preset if self.preset is not None else output.preset
        return Campaign(key=safe_id(source), source=source, scripts=tuple(map(str, self.scripts)),
                        avatars=tuple(map(str, self.avatars)), engine=self.engine,
                        crf=self.crf if self.crf is not None else output.crf, preset=preset,
                        checkpoint=os.path.expanduser(self.checkpoint) if self.checkpoint else None,
                        models=os.path.expanduser(self.models) if self.models else None,
                        subtitles=self.subtitles, fingerprint=fingerprint, voice=self.voice_plan())

    def voice_plan(self) -> VoicePlan | None:
        if not self.voice:
            return None
        if ANY_LANGUAGE in self.voice:
            return VoicePlan.single(self.voice[ANY_LANGUAGE])
        return VoicePlan({str(language): voice for language, voice in self.voice.items()})


CAMPAIGN_KEYS = frozenset(CampaignFile.model_fields)
_OUTPUT_KEYS = frozenset(OutputOptions.model_fields)
_MUST = {  # what a key must be, for the messages
    "scripts": "must be a name or glob, or a list of names or globs",
    "avatars": "must be a name or glob, or a list of names or globs",
    "checkpoint": "must be the path of a wav2lip .pth file",
    "models": "must be the folder of MuseTalk's weights (musetalkV15/, sd-vae/, whisper/, face-parse-bisent/)",
    "crf": "must be an integer from 0 to 51",
    "preset": "must be an ffmpeg preset name such as veryfast",
    "output": "must be a mapping with 'crf:' and/or 'preset:'",
    "voice": "must be an espeak-ng voice name, a voice ({engine: kokoro|piper|espeak, …}) or one per language "
             "({en: {…}, zh: {…}})",
}
_VOICE_KEYS = {"espeak": "speaker", "piper": "model, speaker, speed", "kokoro": "model, voices, speaker, speed"}


def _voice_problem(detail: Mapping[str, Any], data: Mapping[str, Any]) -> tuple[str, str]:
    """Where in ``voice:`` and what is wrong, from a validation error of the ``VoiceByLanguage`` field."""
    loc = [str(part) for part in detail["loc"][1:]]
    if not loc:
        return "voice", f"{_MUST['voice']}, got {data.get('voice')!r}"
    language, rest = loc[0], loc[1:]
    where = "voice" if language == ANY_LANGUAGE else f"voice.{language}"
    if detail["type"] == "literal_error" or (len(loc) == 1 and detail["type"] == "missing"):
        return "voice", f"unknown language {language!r}; give one voice, or voices for en and zh"
    if detail["type"] in ("union_tag_invalid", "union_tag_not_found"):
        return f"{where}.engine", f"must be one of {', '.join(VOICE_ENGINES)}"
    if rest and rest[0] in VOICE_ENGINES:
        engine, rest = rest[0], rest[1:]
        if detail["type"] == "extra_forbidden":
            return where, f"unknown key {rest[-1]!r} for engine {engine}; allowed: engine, {_VOICE_KEYS[engine]}"
        if detail["type"] == "missing":
            return f"{where}.{'.'.join(rest)}", f"is required for engine {engine}"
    if rest in (["model"], ["voices"]) and detail["type"] == "string_type":
        what = "voice model (.onnx)" if rest == ["model"] else "voices file"
        return f"{where}.{rest[0]}", f"must be the path of the {what}"
    if rest == ["speed"]:
        return f"{where}.speed", "must be a number above 0.25 and at most 4 (1: the voice's own pace)"
    return ".".join([where, *rest]), str(detail["msg"]).removeprefix("Value error, ")



def _problems(error: ValidationError, data: Mapping[str, Any]) -> dict[str, str]:
    """Where (``""`` for the file itself, a key, ``output.crf``, ``subtitles.size``) → what is wrong there: unknown
    keys first (a misspelt key is the likeliest mistake), then the others in the model's order."""
    unknown: dict[str, list[str]] = {}  # "" or "output" → the unknown keys it holds
    problems: dict[str, str] = {}
    for detail in error.errors():
        loc = detail["loc"]
        key = str(loc[0])
        if detail["type"] == "extra_forbidden" and key not in ("subtitles", "voice"):
            unknown.setdefault("output" if key == "output" else "", []).append(str(loc[-1]))
            continue
        if key == "subtitles":
            where, what = subtitle_problem({**detail, "loc": loc[1:]})
        elif key == "voice":
            where, what = _voice_problem(detail, data)
        elif key == "engine":
            where, what = key, f"unknown engine {data.get(key)!r}; choose one of {', '.join(ENGINE_NAMES)}"
        else:
            where, value = key, data.get(key)
            if key == "output" and len(loc) > 1 and isinstance(value, Mapping):
                where, value = f"output.{loc[1]}", value.get(loc[1])
            what = f"{_MUST.get(where.removeprefix('output.'), detail['msg'])}, got {value!r}"
        problems.setdefault(where, what)
    first: dict[str, str] = {}
    for where, keys in unknown.items():
        allowed = ", ".join(sorted(_OUTPUT_KEYS if where else CAMPAIGN_KEYS))
        first[where] = f"unknown key{'s' if len(keys) > 1 else ''} {', '.join(map(repr, keys))}; allowed: {allowed}"
    return first | problems


def parse_campaign(text: str | bytes, source: str, fingerprint: str = "") -> Campaign:
    """Parse a ``campaigns/<name>.yaml`` (see ``CampaignFile``). ``CampaignError`` names the file, the key and the
    first problem, on one line."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise CampaignError(source, f"not valid YAML ({' '.join(str(error).split())})") from error
    if not isinstance(data, dict):
        raise CampaignError(source, "expected a mapping with 'scripts:' and 'avatars:' lists")
    data = {str(k): v for k, v in data.items()}
    try:
        return CampaignFile.model_validate(data).campaign(source, fingerprint)
    except ValidationError as error:
        problems = _problems(error, data)
    where, what = next(iter(problems.items()))
    more = f"; and {len(problems) - 1} more" if len(problems) > 1 else ""
    raise CampaignError(source, f"{where}: {what}{more}" if where else what + more)


def implicit_campaign() -> Campaign:
    return Campaign(key=DEFAULT_CAMPAIGN, source="(implicit: every script × every avatar)", fingerprint="implicit")
