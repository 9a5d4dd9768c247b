"""Freshness: what each stage was made from (tokens), whether it is current (stamps and records against the
current uploads and settings), and where every pair of a campaign stands (``PairState``, ``FactoryState``).

Every stage writes a *stamp* (a token of exactly what it was computed from: upload size and modification
version, settings, code version) after its files; a stage is fresh when its stamp matches the token the current
uploads and settings give, leaving out the settings an upload does not depend on. Uploads are identified by
``naming.safe_id`` of their file name.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import Enum
from typing import Any

from heygem_pipeline.engine.audio.intake import TEXT_EXTENSIONS
from heygem_pipeline.engine.avatar import AVATAR_IMAGE_EXTENSIONS
from heygem_pipeline.engine.folders import SCRIPT_RECORD
from heygem_pipeline.factory.bucket import Bucket, BucketEntry
from heygem_pipeline.factory.campaigns import Campaign, MediaOptions, RenderOptions
from heygem_pipeline.factory.layout import (
    avatar_stamp_path,
    error_path,
    quality_record_path,
    render_error_key,
    render_record_path,
    script_dir,
    script_stamp_path,
    track_stamp_path,
)
from heygem_pipeline.factory.records import QualityRecord, RenderRecord, ScriptRecord, StageError, Stamp
from heygem_pipeline.factory.uploads import BucketScan
from heygem_pipeline.factory.voicing import Voice, script_text, split_voiced_key, upload_key, voiced_key

# Bump a stage's version when its code changes what it writes: every output computed by the old code becomes
# stale, and the sensor (scripts, avatars) or the nightly schedule (renders) computes it again. The Dagster
# assets declare the same numbers as their `code_version`, so the UI shows the same staleness.
CODE_VERSIONS = {"script": "2", "avatar": "1", "face_track": "2", "render": "2", "checks": "2", "campaign": "2"}


class PairStatus(str, Enum):
    """Where a pair stands; the values are the manifest's ``status`` column."""

    OK = "ok"
    CHECK_FAILED = "check_failed"
    UNCHECKED = "unchecked"
    STALE = "stale"
    MISSING = "missing"
    FAILED = "failed"

    def __str__(self) -> str:  # the value, in f-strings, CSV and Parquet alike
        return self.value


OK, CHECK_FAILED, UNCHECKED = PairStatus.OK, PairStatus.CHECK_FAILED, PairStatus.UNCHECKED
STALE, MISSING, FAILED = PairStatus.STALE, PairStatus.MISSING, PairStatus.FAILED
DELIVERABLE_STATUSES = (OK, CHECK_FAILED, UNCHECKED)  # a fresh video exists

# Token fields that only some uploads depend on: the voice only matters to a text script, the still length only to
# a photo. Tokens keep them (their format is persisted), and comparisons leave them out where they do not apply, so
# changing HEYGEM_VOICE re-voices text scripts only and HEYGEM_STILL_SECONDS re-makes photos only.
VOICE_FIELD, STILL_FIELD = "voice", "still"


def script_token(upload: BucketEntry, voice: Voice, transcript: BucketEntry | None = None) -> str:
    """``voice``: the one that speaks a text script (any voice for audio: the field is ignored for them)."""
    text = transcript.fingerprint if transcript is not None else "none"
    return f"{upload.fingerprint}|script-v{CODE_VERSIONS['script']}|voice={voice.identity()}|transcript={text}"


def avatar_token(upload: BucketEntry, media: MediaOptions) -> str:
    return (f"{upload.fingerprint}|avatar-v{CODE_VERSIONS['avatar']}|fps={media.fps:g}"
            f"|still={media.still_seconds:g}")


def track_token(avatar_video_token: str) -> str:
    return f"{avatar_video_token}|track-v{CODE_VERSIONS['face_track']}"


def render_inputs_token(script_tok: str, track_tok: str) -> str:
    return f"{script_tok}#{track_tok}"


def render_token(inputs_token: str, options: RenderOptions) -> str:
    """What a render is made from: its inputs, its variant (engine and output options) and the render code."""
    return f"{inputs_token}|{options.variant}|render-v{CODE_VERSIONS['render']}"


def checks_token(render_token: str) -> str:
    return f"{render_token}|checks"


def same_token(written: str | None, current: str, ignored: Collection[str] = ()) -> bool:
    """Whether a stamp's or record's token is the current one, leaving out the ``name=value`` fields in
    ``ignored`` (settings the upload does not depend on)."""
    if written is None:
        return False
    if not ignored:
        return written == current

    def kept(token: str) -> list[str]:
        return [part for part in token.split("|") if part.partition("=")[0] not in ignored]

    return kept(written) == kept(current)


def stamp(token: str, **extra: Any) -> dict[str, Any]:
    return Stamp.now(token, **extra).dump()


@dataclass
class PairState:
    """Where one script × avatar pair of a campaign stands, and why."""

    campaign: str
    script: str
    avatar: str
    options: RenderOptions
    status: PairStatus
    inputs_ready: bool  # script and avatar are prepared from the current uploads
    inputs_token: str = ""
    reason: str = ""
    record: RenderRecord | None = None
    quality: QualityRecord | None = None
    check_failed_to_run: bool = False  # UNCHECKED because its checks failed (not merely not run yet)

    @property
    def variant(self) -> str:
        return self.options.variant

    @property
    def upload_script(self) -> str:
        """The script's upload (``script`` may be a voiced copy of it)."""
        return upload_key(self.script)

    @property
    def render_token(self) -> str:
        return render_token(self.inputs_token, self.options)

    @property
    def checks_token(self) -> str:
        return checks_token(self.render_token)


class FactoryState:
    """Reads stamps and records once per evaluation (a sensor tick, a schedule, a run) and answers questions."""

    def __init__(self, bucket: Bucket, scan: BucketScan, media: MediaOptions,
                 defaults: RenderOptions | None = None, failures_since: float = 0.0) -> None:
        """``failures_since``: failures recorded before this time (epoch seconds) count as not final, so the work is
        planned again (a request through the API retries what failed before it, once)."""
        self.bucket, self.scan, self.media, self.defaults = bucket, scan, media, defaults or RenderOptions()
        self.failures_since = failures_since
        self._json: dict[str, dict | None] = {}

    def read(self, rel: str) -> dict | None:
        if rel not in self._json:
            self._json[rel] = self.bucket.read_json(rel)
        return self._json[rel]

    # -- upstream stages

    def is_text(self, script: str) -> bool:
        return self.scan.scripts[upload_key(script)].name.rpartition(".")[2].lower() in TEXT_EXTENSIONS

    def text(self, script: str) -> str:
        """The words of a text script (read once per upload version), for choosing its voice."""
        upload = self.scan.scripts[upload_key(script)]
        return script_text(upload.entry.fingerprint,
                           lambda: self.bucket.read_bytes(upload.rel).decode("utf-8-sig", errors="replace"))

    def voiced(self, campaign: Campaign, script: str) -> str:
        """The key of ``script`` as ``campaign`` voices it: its own key for audio and for the default voice."""
        if campaign.voice is None or not self.is_text(script):
            return script
        text = self.text(script)
        chosen, default = campaign.voice.choose(text), self.media.voice.choose(text)
        return script if chosen is None or chosen == default else voiced_key(script, chosen.variant)

    def script_voice(self, script: str) -> Voice | None:
        """The voice of a script key (for a voiced copy, found among the campaigns' voices); None when no campaign
        voices it so any more."""
        base, variant = split_voiced_key(script)
        if not self.is_text(base):
            return self.media.voice.voices.get("en")
        if not variant:
            return self.media.voice.choose(self.text(base))
        for campaign in self.scan.campaigns.values():
            if campaign.voice is not None and variant in campaign.voice.variants():
                return campaign.voice.variants()[variant]
        return None

    def script_keys(self) -> list[str]:
        """Every script key the campaigns use: uploads, and their voiced copies."""
        keys = dict.fromkeys(self.scan.scripts)
        for campaign in self.scan.campaigns.values():
            if campaign.voice is not None:
                keys.update(dict.fromkeys(self.voiced(campaign, s) for s in campaign.select(self.scan.scripts,
                                                                                             campaign.scripts)))
        return list(keys)

    def partition_keys(self) -> dict[str, list[str]]:
        """The keys of the dynamic partitions (by their names: script, avatar, campaign) the bucket needs now."""
        return {"script": self.script_keys(), "avatar": list(self.scan.avatars), "campaign": list(self.scan.campaigns)}

    def script_token(self, script: str) -> str:
        base = upload_key(script)
        voice = self.script_voice(script)
        if voice is None:  # a copy no campaign asks for: nothing can be current for it
            return f"{self.scan.scripts[base].entry.fingerprint}|voice=unknown:{split_voiced_key(script)[1]}"
        return script_token(self.scan.scripts[base].entry, voice, self.scan.transcript(base))

    def script_seconds(self, script: str) -> float | None:
        """How long a prepared script's voice lasts (None before it is prepared)."""
        found = Stamp.load(self.read(script_stamp_path(self.bucket, script)))
        return found.duration_s if found is not None else None

    def script_record(self, script: str) -> ScriptRecord:
        """What intake found about a prepared script (its captions' summary among it)."""
        found = ScriptRecord.load(self.read(f"{script_dir(self.bucket, script)}/{SCRIPT_RECORD}"))
        return found if found is not None else ScriptRecord()

    def avatar_token(self, avatar: str) -> str:
        return avatar_token(self.scan.avatars[avatar].entry, self.media)

    def script_ignores(self, script: str) -> frozenset[str]:
        """Token fields this script does not depend on (the voice, unless it is a text to voice)."""
        return frozenset() if self.is_text(script) else frozenset({VOICE_FIELD})

    def avatar_ignores(self, avatar: str) -> frozenset[str]:
        """Token fields this avatar does not depend on (the still length, unless it is a photo)."""
        photo = self.scan.avatars[avatar].name.rpartition(".")[2].lower() in AVATAR_IMAGE_EXTENSIONS
        return frozenset() if photo else frozenset({STILL_FIELD})

    def pair_ignores(self, script: str, avatar: str) -> frozenset[str]:
        return self.script_ignores(script) | self.avatar_ignores(avatar)

    def _stamp_token(self, rel: str) -> str | None:
        found = Stamp.load(self.read(rel))
        return found.token if found is not None else None

    def script_ready(self, script: str) -> bool:
        return same_token(self._stamp_token(script_stamp_path(self.bucket, script)), self.script_token(script),
                          self.script_ignores(script))

    def avatar_video_ready(self, avatar: str) -> bool:
        return same_token(self._stamp_token(avatar_stamp_path(self.bucket, avatar)), self.avatar_token(avatar),
                          self.avatar_ignores(avatar))

    def avatar_ready(self, avatar: str) -> bool:
        wanted = track_token(self.avatar_token(avatar))
        return self.avatar_video_ready(avatar) and same_token(
            self._stamp_token(track_stamp_path(self.bucket, avatar)), wanted, self.avatar_ignores(avatar))

    def stage_error(self, stage: str, key: str, token: str, ignored: Collection[str] = ()) -> str | None:
        """The message of a final failure of ``stage`` for this ``token`` (less ``ignored`` fields), if any."""
        error = StageError.load(self.read(error_path(self.bucket, stage, key)))
        if (error is not None and same_token(error.token, token, ignored) and error.final
                and error.at >= self.failures_since):
            return error.message
        return None

    def script_error(self, script: str) -> str | None:
        return self.stage_error("script", script, self.script_token(script), self.script_ignores(script))

    def avatar_error(self, avatar: str) -> str | None:
        token, ignored = self.avatar_token(avatar), self.avatar_ignores(avatar)
        return (self.stage_error("avatar", avatar, token, ignored)
                or self.stage_error("face_track", avatar, track_token(token), ignored))

    # -- pairs

    def pair(self, campaign: Campaign, script: str, avatar: str) -> PairState:
        options = campaign.render_options(self.defaults)
        state = PairState(campaign.key, script, avatar, options, MISSING, inputs_ready=False)
        script_tok, avatar_tok = self.script_token(script), self.avatar_token(avatar)
        state.inputs_token = render_inputs_token(script_tok, track_token(avatar_tok))
        record = RenderRecord.load(self.read(render_record_path(self.bucket, options.variant, script, avatar)))
        state.inputs_ready = self.script_ready(script) and self.avatar_ready(avatar)
        upstream_error = None
        if not self.script_ready(script) and (message := self.script_error(script)):
            upstream_error = f"script {self.scan.scripts[upload_key(script)].name}: {message}"
        elif not self.avatar_ready(avatar) and (message := self.avatar_error(avatar)):
            upstream_error = f"avatar {self.scan.avatars[avatar].name}: {message}"
        if upstream_error:
            state.status, state.reason = FAILED, upstream_error
            return state
        ignored = self.pair_ignores(script, avatar)
        if record is None:
            message = self.stage_error("render", render_error_key(options.variant, script, avatar),
                                      state.render_token, ignored)
            state.status, state.reason = (FAILED, message) if message else (MISSING, "not rendered yet")
            return state
        state.record = record
        if not same_token(record.inputs_token, state.inputs_token, ignored):
            state.status, state.reason = STALE, "inputs changed"
            return state
        if record.code_version != CODE_VERSIONS["render"]:
            state.status, state.reason = STALE, "render code version changed"
            return state
        quality = QualityRecord.load(self.read(quality_record_path(self.bucket, options.variant, script, avatar)))
        if quality is not None and quality.render_id == record.render_id:
            state.quality = quality
            state.status = OK if quality.passed else CHECK_FAILED
            state.reason = "" if quality.passed else quality.summary or "a check failed"
        else:
            message = self.stage_error("checks", render_error_key(options.variant, script, avatar),
                                      record.render_id)
            state.status, state.reason = UNCHECKED, message or "not checked yet"
            state.check_failed_to_run = message is not None
        return state

    def campaign_pairs(self, campaign: Campaign) -> list[PairState]:
        return [self.pair(campaign, self.voiced(campaign, s), a) for s, a in self.scan.campaign_pairs(campaign)]


def write_error(bucket: Bucket, stage: str, key: str, token: str, message: str, final: bool) -> None:
    bucket.write_json(error_path(bucket, stage, key), StageError.now(stage, key, token, message, final).dump())


def clear_error(bucket: Bucket, stage: str, key: str) -> None:
    bucket.remove(error_path(bucket, stage, key))
