"""The records the factory keeps in the bucket, typed: stamps, render and quality records, stage errors, campaign
records, and what it reads of a prepared script's intake record.

Each is a pydantic model that loads what any version of the factory wrote (keys it does not know are kept, a record
it cannot read counts as absent, as an unreadable JSON file does) and dumps exactly the keys it was given, so the
files stay as they are (tests/test_persisted_names.py pins their keys)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

R = TypeVar("R", bound="Record")


class Record(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    @classmethod
    def load(cls: type[R], data: Mapping[str, Any] | None) -> R | None:
        """The record in ``data`` (a JSON object read from the bucket); None when absent or not this record."""
        if data is None:
            return None
        try:
            return cls.model_validate(dict(data))
        except ValidationError:
            return None

    def dump(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


class Stamp(Record):
    """Written by a stage after its files: exactly what they were computed from (``token``)."""

    token: str
    written_at: float
    source: str | None = None  # the upload's file name
    duration_s: float | None = None  # scripts: how long the voice lasts

    @classmethod
    def now(cls, token: str, **extra: Any) -> Stamp:
        return cls(token=token, written_at=time.time(), **extra)


class RenderRecord(Record):
    """``<render>.json``: one rendered video, what it was made from and what it is. Freshness needs only the first
    three fields; a record without them counts as absent (the pair is rendered again)."""

    inputs_token: str
    code_version: str
    render_id: str
    script: str | None = None
    avatar: str | None = None
    variant: str | None = None
    engine: str | None = None
    path: str | None = None  # the video, relative to the bucket
    frames: int | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    script_source: str | None = None
    avatar_source: str | None = None
    crf: int | None = None
    preset: str | None = None
    run_id: str | None = None
    render_seconds: float | None = None
    size_bytes: int | None = None
    rendered_at: float | None = None


class QualityRecord(Record):
    """``<render>.quality.json``: the checks of one render (``render_id``), measured on the file itself."""

    render_id: str
    passed: bool
    checks: dict[str, bool] = {}
    code_version: str | None = None
    sync_offset_frames: int | None = None
    sync_confidence: float | None = None
    sync_measurable: bool | None = None
    sync_note: str | None = None
    face_coverage: float | None = None
    video_duration_s: float | None = None
    audio_duration_s: float | None = None
    voice_duration_s: float | None = None
    summary: str = ""


class StageError(Record):
    """``work/errors/<stage>/<key>.json``: the last failure of a stage, until it succeeds."""

    stage: str
    key: str
    token: str
    message: str = "failed"
    final: bool = True  # False: Dagster retries it
    at: float = 0.0

    @classmethod
    def now(cls, stage: str, key: str, token: str, message: str, final: bool) -> StageError:
        return cls(stage=stage, key=key, token=token, message=message, final=final, at=time.time())


class CampaignRecord(Record):
    """``work/campaigns/<campaign>.json``: what the deliverables were last built from."""

    digest: str
    counts: dict[str, int] = {}


class CaptionsSummary(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    status: str | None = None  # "captioned", or why there are none
    source: str | None = None
    method: str | None = None  # how the captions were timed
    cues: int | None = None
    warnings: list[str] = []


class ScriptRecord(Record):
    """What the factory reads of a prepared script's intake record (the engine writes it: ``engine.folders``)."""

    duration_s: float | None = None
    captions: CaptionsSummary = CaptionsSummary()
