"""Settings from environment variables, with the defaults a first run needs.

One place reads the environment; everything else receives a ``Settings``. ``from_env`` validates every variable
once: a bad value raises ``SettingsError``, one line naming the variable, what it must be and what it was
(``HEYGEM_CRF must be an integer 0–51, got 'abc'``). The README's configuration table lists the same variables.

Every default is written here once (the ``DEFAULT_*`` constants); option dataclasses, resource fields and the
engine's keyword defaults take theirs from these.

``Settings`` and ``ToolLimits`` are pydantic dataclasses rather than ``BaseModel``s: they stay plain frozen
dataclasses to their callers (positional construction, ``dataclasses.replace``, hashing), and every construction
is validated, not only ``from_env``'s.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError
from pydantic.dataclasses import dataclass

from heygem_pipeline.errors import SettingsError

ENGINE_NAMES = ("viseme", "wav2lip", "musetalk")  # created by engine/lipsync/registry.py
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")

DEFAULT_BUCKET = "data/bucket"
DEFAULT_ENGINE = "viseme"
DEFAULT_FPS = 25.0
DEFAULT_STILL_SECONDS = 5.0
DEFAULT_VOICE = "en-us"  # espeak-ng voice of .txt scripts
DEFAULT_CRF = 18
DEFAULT_PRESET = "veryfast"
DEFAULT_WAV2LIP_BATCH = 128
DEFAULT_MUSETALK_BATCH = 8  # the reference's inference batch
DEFAULT_TIMEZONE = "UTC"
DEFAULT_DAGSTER_HOME = ".dagster_home"
DEFAULT_STALL_SECONDS = 60.0
DEFAULT_TIMEOUT_FACTOR = 10.0
MIN_STILL_SECONDS = 1.0  # engine/avatar.py refuses a template shorter than this (MIN_AVATAR_SECONDS)

WAV2LIP_CHECKPOINT_VAR = "HEYGEM_WAV2LIP_CHECKPOINT"
_ON, _OFF = ("on", "1", "true", "yes"), ("off", "0", "false", "no")


def _one_of(choices: tuple[str, ...]) -> AfterValidator:
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"not one of {choices}")
        return value

    return AfterValidator(check)


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as error:  # not in the time zone database, or not a zone's name
        raise ValueError("unknown time zone") from error
    return value


def _threads(value: int | None) -> int | None:
    if value is not None and value < 0:
        raise ValueError("negative")
    return value or None  # 0: ffmpeg's choice


def _switch(value: Any) -> Any:
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _ON or word in _OFF:
            return word in _ON
        raise ValueError("not on or off")
    return value


Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


@dataclass(frozen=True)
class ToolLimits:
    """How long an external tool (ffmpeg, ffprobe, espeak-ng) may take before it is killed.

    A tool that shows no progress (no frame or byte through its pipes, no advance in ffmpeg's progress report)
    for ``stall_seconds`` is stopped; so is one that runs longer than ``total(media seconds)`` in all, which
    scales with the length of the media it works on. Tools that report no progress (ffprobe, espeak-ng) get
    only the total limit.
    """

    stall_seconds: Positive = DEFAULT_STALL_SECONDS
    timeout_factor: Positive = DEFAULT_TIMEOUT_FACTOR  # seconds of tool time allowed per second of media

    def total(self, media_seconds: float | None) -> float:
        return self.stall_seconds + self.timeout_factor * max(media_seconds or 0.0, 0.0)

    def run_seconds(self, media_seconds: float | None) -> int:
        """The time limit of a whole run over media this long (Dagster's ``dagster/max_runtime``): a backstop
        over its tools' own limits, with room for the several tools a stage runs one after another."""
        return round(5 * self.stall_seconds + 2 * self.timeout_factor * max(media_seconds or 0.0, 0.0))

    @classmethod
    def from_env(cls) -> ToolLimits:
        """``HEYGEM_STALL_SECONDS`` and ``HEYGEM_TOOL_TIMEOUT_FACTOR``, read at each call (tests and workers may
        change them between items). ``SettingsError`` for a value that is not a positive number."""
        return _from_env(cls, TOOL_LIMIT_VARIABLES)


@dataclass(frozen=True)
class Settings:
    bucket: str = DEFAULT_BUCKET
    fps: Positive = DEFAULT_FPS
    still_seconds: Annotated[float, Field(ge=MIN_STILL_SECONDS, allow_inf_nan=False)] = DEFAULT_STILL_SECONDS
    engine: Annotated[str, _one_of(ENGINE_NAMES)] = DEFAULT_ENGINE
    voice: str = DEFAULT_VOICE  # an espeak-ng voice; with voice_model, the model's speaker
    voice_model: str | None = None  # a Piper .onnx (its .onnx.json beside it) or a Kokoro .onnx (with voice_vectors)
    voice_vectors: str | None = None  # a Kokoro model's voices file (voices-v1.0.bin)
    voice_speed: Annotated[float, Field(gt=0.25, le=4.0, allow_inf_nan=False)] = 1.0
    crf: Annotated[int, Field(ge=0, le=51)] = DEFAULT_CRF
    preset: Annotated[str, _one_of(X264_PRESETS)] = DEFAULT_PRESET
    ffmpeg_threads: Annotated[int | None, AfterValidator(_threads)] = None  # None: ffmpeg's choice
    wav2lip_checkpoint: str | None = None
    musetalk_models: str | None = None  # the folder of MuseTalk 1.5's weights (its README layout)
    wav2lip_batch_size: Annotated[int, Field(gt=0)] = DEFAULT_WAV2LIP_BATCH
    timezone: Annotated[str, AfterValidator(_time_zone)] = DEFAULT_TIMEZONE
    work_prefix: str = "work"
    dagster_home: Path = field(default_factory=lambda: Path(DEFAULT_DAGSTER_HOME).resolve())
    tool_limits: ToolLimits = field(default_factory=ToolLimits)
    # The bucket sensor and the nightly schedule run by default; `heygem run` starts its services without them, so
    # that a one-off command does only what it was asked for.
    automation: Annotated[bool, BeforeValidator(_switch)] = True

    @classmethod
    def from_env(cls) -> Settings:
        """Every ``HEYGEM_*`` variable (and ``DAGSTER_HOME``), validated; a blank variable counts as unset.

        Raises ``SettingsError`` (one line per bad variable, joined by "; ") for any value out of range."""
        home = Path(os.environ.get("DAGSTER_HOME", "").strip() or DEFAULT_DAGSTER_HOME).resolve()
        return _from_env(cls, SETTINGS_VARIABLES, dagster_home=home, tool_limits=ToolLimits.from_env(),
                         wav2lip_checkpoint=wav2lip_checkpoint_from_env())


def wav2lip_checkpoint_from_env() -> str | None:
    """``HEYGEM_WAV2LIP_CHECKPOINT`` (None when unset or blank): the default weights of the wav2lip engine."""
    return os.environ.get(WAV2LIP_CHECKPOINT_VAR, "").strip() or None


# variable → (the field it sets, what its value must be: the error message says so)
TOOL_LIMIT_VARIABLES: Mapping[str, tuple[str, str]] = {
    "HEYGEM_STALL_SECONDS": ("stall_seconds", "a positive number"),
    "HEYGEM_TOOL_TIMEOUT_FACTOR": ("timeout_factor", "a positive number"),
}
SETTINGS_VARIABLES: Mapping[str, tuple[str, str]] = {
    "HEYGEM_BUCKET": ("bucket", "a path or an fsspec URL"),
    "HEYGEM_FPS": ("fps", "a positive number"),
    "HEYGEM_STILL_SECONDS": ("still_seconds", f"a number of seconds ≥ {MIN_STILL_SECONDS:g}"),
    "HEYGEM_ENGINE": ("engine", "one of " + ", ".join(ENGINE_NAMES)),
    "HEYGEM_VOICE": ("voice", "an espeak-ng voice (espeak-ng --voices lists them), or the speaker of "
                     "HEYGEM_VOICE_MODEL"),
    "HEYGEM_VOICE_MODEL": ("voice_model", "the path of a Piper or Kokoro voice model (.onnx)"),
    "HEYGEM_VOICE_VECTORS": ("voice_vectors", "the path of a Kokoro model's voices file (voices-v1.0.bin)"),
    "HEYGEM_VOICE_SPEED": ("voice_speed", "a number above 0.25 and at most 4"),
    "HEYGEM_CRF": ("crf", "an integer 0–51"),
    "HEYGEM_PRESET": ("preset", "an x264 preset (" + ", ".join(X264_PRESETS) + ")"),
    "HEYGEM_FFMPEG_THREADS": ("ffmpeg_threads", "a whole number of threads (0: ffmpeg's choice)"),
    "HEYGEM_WAV2LIP_BATCH": ("wav2lip_batch_size", "a positive integer"),
    "HEYGEM_MUSETALK_MODELS": ("musetalk_models", "the folder of MuseTalk's weights (musetalkV15/, sd-vae/, whisper/, "
                               "face-parse-bisent/)"),
    "HEYGEM_TIMEZONE": ("timezone", "an IANA time zone such as UTC or Europe/Berlin"),
    "HEYGEM_AUTOMATION": ("automation", "on or off (1/0, true/false, yes/no)"),
}


def _from_env(cls: type, variables: Mapping[str, tuple[str, str]], **values: Any) -> Any:
    """``cls`` built from the set (non-blank) ``variables`` and ``values``; ``SettingsError`` names each bad one."""
    raw = {name: os.environ.get(name, "").strip() for name in variables}
    given = {variables[name][0]: text for name, text in raw.items() if text}
    try:
        return cls(**given, **values)
    except ValidationError as error:
        bad = list(dict.fromkeys(str(e["loc"][0]) for e in error.errors() if e["loc"]))
        by_field = {attribute: (name, must) for name, (attribute, must) in variables.items()}
        lines = [f"{by_field[f][0]} must be {by_field[f][1]}, got {raw[by_field[f][0]]!r}" for f in bad
                 if f in by_field]
        raise SettingsError("; ".join(lines) or str(error).replace("\n", " ")) from None
