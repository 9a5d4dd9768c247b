"""Campaign files: which scripts × avatars to render, and with which options."""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import yaml

from heygem_pipeline.engine.captions.burnin import SubtitleOptions, subtitle_options
from heygem_pipeline.errors import HeygemError
from heygem_pipeline.factory.bucket import BucketEntry
from heygem_pipeline.factory.layout import PREFIXES
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


class CampaignError(HeygemError):
    """A campaign file that cannot be used (bad YAML, unknown keys, unknown engine)."""


class MediaSettings(Protocol):
    """What ``MediaOptions.from_settings`` reads: a ``Settings``, or the Dagster ffmpeg resource built from one."""

    fps: float
    still_seconds: float
    voice: str


class OutputSettings(Protocol):
    """What ``RenderOptions.from_settings`` reads: a ``Settings``, or the Dagster ffmpeg resource built from one."""

    crf: int
    preset: str


@dataclass(frozen=True)
class MediaOptions:
    """Settings that change what the script and avatar stages write (part of their stamps)."""

    fps: float = DEFAULT_FPS
    still_seconds: float = DEFAULT_STILL_SECONDS
    voice: str = DEFAULT_VOICE

    @classmethod
    def from_settings(cls, settings: MediaSettings) -> MediaOptions:
        return cls(fps=settings.fps, still_seconds=settings.still_seconds, voice=settings.voice)


@dataclass(frozen=True)
class RenderOptions:
    """What a render depends on besides its inputs. Different options render to different folders."""

    engine: str = DEFAULT_ENGINE
    crf: int = DEFAULT_CRF
    preset: str = DEFAULT_PRESET
    checkpoint: str | None = None  # wav2lip weights; None: the engine resource's (HEYGEM_WAV2LIP_CHECKPOINT)
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
        burnt = f"-{self.subtitles.variant()}" if self.subtitles.burn else ""  # captions in the picture
        return safe_id(f"{self.engine}{weights}-crf{self.crf}-{self.preset}{burnt}")

    def as_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"engine": self.engine, "crf": self.crf, "preset": self.preset}
        if self.checkpoint:
            config["checkpoint"] = self.checkpoint
        if self.subtitles.burn:
            config["subtitles"] = self.subtitles.model_dump_json()
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
    subtitles: SubtitleOptions = field(default_factory=SubtitleOptions)
    fingerprint: str = ""

    def render_options(self, defaults: RenderOptions) -> RenderOptions:
        return RenderOptions(engine=self.engine or defaults.engine,
                             crf=self.crf if self.crf is not None else defaults.crf,
                             preset=self.preset or defaults.preset,
                             checkpoint=self.checkpoint or defaults.checkpoint, subtitles=self.subtitles)

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


CAMPAIGN_KEYS = {"scripts", "avatars", "engine", "checkpoint", "crf", "preset", "output", "subtitles", "description",
                 "name"}


def _patterns(value: Any, field_name: str, source: str) -> tuple[str, ...]:
    if value is None:
        return ("*",)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
        raise CampaignError(f"{source}: '{field_name}:' must be a list of names or globs")
    return tuple(str(v) for v in value)


def parse_campaign(text: str | bytes, source: str, fingerprint: str = "") -> Campaign:
    """Parse a ``campaigns/<name>.yaml``; ``CampaignError`` names the file and the problem."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise CampaignError(f"{source}: not valid YAML ({error})") from error
    if not isinstance(data, dict):
        raise CampaignError(f"{source}: expected a mapping with 'scripts:' and 'avatars:' lists")
    unknown = sorted(set(map(str, data)) - CAMPAIGN_KEYS)
    if unknown:
        raise CampaignError(f"{source}: unknown keys {unknown}; allowed: {sorted(CAMPAIGN_KEYS)}")
    output = data.get("output") or {}
    if not isinstance(output, dict) or set(output) - {"crf", "preset"}:
        raise CampaignError(f"{source}: 'output:' may only hold 'crf' and 'preset'")
    engine = data.get("engine")
    if engine is not None and engine not in ENGINE_NAMES:
        raise CampaignError(f"{source}: unknown engine {engine!r}; choose one of {', '.join(ENGINE_NAMES)}")
    crf = data.get("crf", output.get("crf"))
    if crf is not None and (not isinstance(crf, int) or not 0 <= crf <= 51):
        raise CampaignError(f"{source}: crf must be an integer from 0 to 51")
    preset = data.get("preset", output.get("preset"))
    checkpoint = data.get("checkpoint")
    if checkpoint is not None and not isinstance(checkpoint, str):
        raise CampaignError(f"{source}: 'checkpoint:' must be the path of a wav2lip .pth file")
    return Campaign(key=safe_id(source), source=source, scripts=_patterns(data.get("scripts"), "scripts", source),
                    avatars=_patterns(data.get("avatars"), "avatars", source), engine=engine, crf=crf,
                    preset=str(preset) if preset is not None else None,
                    checkpoint=os.path.expanduser(checkpoint) if checkpoint else None,
                    subtitles=subtitle_options(data.get("subtitles"), source), fingerprint=fingerprint)


def implicit_campaign() -> Campaign:
    return Campaign(key=DEFAULT_CAMPAIGN, source="(implicit: every script × every avatar)", fingerprint="implicit")
