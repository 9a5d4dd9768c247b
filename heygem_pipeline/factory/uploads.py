"""Uploads: which files in the bucket are accepted scripts, avatars, transcripts and campaigns."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from heygem_pipeline.errors import InputError, NotInBucketError
from heygem_pipeline.factory.bucket import Bucket, BucketEntry, log
from heygem_pipeline.factory.campaigns import (
    DEFAULT_CAMPAIGN,
    Campaign,
    CampaignError,
    implicit_campaign,
    parse_campaign,
)
from heygem_pipeline.factory.layout import (
    CAMPAIGN_EXTENSIONS,
    CAMPAIGNS_PREFIX,
    EXTENSIONS,
    PREFIXES,
    TRANSCRIPTS_PREFIX,
)
from heygem_pipeline.naming import is_hidden, safe_id, safe_id_or_none, stem_and_ext


@dataclass(frozen=True)
class Upload:
    """An accepted input file: its partition key (safe id) and where it is."""

    kind: str  # "script" or "avatar"
    key: str
    entry: BucketEntry

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def rel(self) -> str:
        return self.entry.rel


@dataclass(frozen=True)
class Skipped:
    rel: str
    reason: str


def classify(kind: str, entries: Sequence[BucketEntry]) -> tuple[dict[str, Upload], list[Skipped]]:
    """Accepted uploads of one kind by key, and the files skipped with the reason (hidden, unsafe, ambiguous)."""
    by_key: dict[str, list[BucketEntry]] = {}
    skipped: list[Skipped] = []
    for entry in entries:
        if is_hidden(entry.name):
            skipped.append(Skipped(entry.rel, "hidden file"))
            continue
        _, ext = stem_and_ext(entry.name)
        if ext not in EXTENSIONS[kind]:
            skipped.append(Skipped(entry.rel, f"'.{ext}' is not a {kind} format" if ext else "no file extension"))
            continue
        if entry.size == 0:
            skipped.append(Skipped(entry.rel, "empty file (upload not finished?)"))
            continue
        try:
            key = safe_id(entry.name)
        except InputError as error:
            skipped.append(Skipped(entry.rel, f"unsafe name: {error.problem}"))
            continue
        by_key.setdefault(key, []).append(entry)
    uploads: dict[str, Upload] = {}
    for key, group in sorted(by_key.items()):
        if len(group) > 1:  # e.g. welcome.wav and welcome.mp3: which one is meant is not ours to guess
            names = ", ".join(e.name for e in group)
            skipped.extend(Skipped(e.rel, f"ambiguous: {names} all map to id {key!r}; rename one") for e in group)
            continue
        uploads[key] = Upload(kind, key, group[0])
    return uploads, skipped


def find_upload(bucket: Bucket, kind: str, key: str) -> Upload:
    """The upload behind partition ``key`` now; an ``InputError`` when it is gone or ambiguous."""
    prefix = PREFIXES[kind]
    uploads, skipped = classify(kind, bucket.list_files(prefix))
    if key in uploads:
        return uploads[key]
    for skip in skipped:
        if not is_hidden(PurePosixPath(skip.rel).name) and safe_id_or_none(PurePosixPath(skip.rel).name) == key:
            raise InputError(bucket.uri(skip.rel), skip.reason, f"fix the upload in {prefix}/")
    raise InputError(bucket.uri(f"{prefix}/{key}.*"), f"no {kind} upload has the id {key!r} any more",
                     f"upload it again to {prefix}/ or drop the partition")


def list_transcripts(bucket: Bucket) -> tuple[dict[str, BucketEntry], list[Skipped]]:
    """``transcripts/<script file stem>.txt`` files by that stem, and the files there that are not transcripts."""
    found: dict[str, BucketEntry] = {}
    skipped: list[Skipped] = []
    for entry in bucket.list_files(TRANSCRIPTS_PREFIX):
        stem, ext = stem_and_ext(entry.name)
        if is_hidden(entry.name) or ext != "txt" or entry.size == 0:
            skipped.append(Skipped(entry.rel, "not a transcript (transcripts/<script file stem>.txt, not empty)"))
        else:
            found[stem] = entry
    return found, skipped


def find_transcript(bucket: Bucket, upload: Upload) -> BucketEntry | None:
    """The transcript of a script upload, when there is one."""
    return list_transcripts(bucket)[0].get(stem_and_ext(upload.name)[0])



@dataclass
class BucketScan:
    """What the bucket holds now: accepted uploads, campaigns, and everything skipped with the reason."""

    scripts: dict[str, Upload] = field(default_factory=dict)
    avatars: dict[str, Upload] = field(default_factory=dict)
    campaigns: dict[str, Campaign] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    unsettled: list[BucketEntry] = field(default_factory=list)  # still being uploaded
    transcripts: dict[str, BucketEntry] = field(default_factory=dict)  # by the stem of the script they belong to

    def uploads(self, kind: str) -> dict[str, Upload]:
        return self.scripts if kind == "script" else self.avatars

    def transcript(self, script: str) -> BucketEntry | None:
        """The transcript of script ``script`` (``transcripts/<its file stem>.txt``), when there is one."""
        return self.transcripts.get(stem_and_ext(self.scripts[script].name)[0])

    def campaign_pairs(self, campaign: Campaign) -> list[tuple[str, str]]:
        return campaign.pairs(self.scripts, self.avatars)

    def campaign(self, name: str | None = None) -> Campaign:
        """The campaign a user means by ``name`` (its id, file name or file stem); without a name, the bucket's only
        campaign, or the default one. ``NotInBucketError`` names the campaigns there are."""
        campaigns = list(self.campaigns.values())
        if name:
            chosen = [c for c in campaigns if name in (c.key, c.source, stem_and_ext(c.source)[0])]
        else:
            chosen = campaigns if len(campaigns) == 1 else [c for c in campaigns if c.key == DEFAULT_CAMPAIGN]
        if not chosen:
            names = ", ".join(sorted(self.campaigns)) or "none"
            raise NotInBucketError(f"no campaign {name or '(unnamed)'!r} in the bucket (campaigns: {names})")
        return chosen[0]

    def upload_key(self, kind: str, name: str | None) -> str:
        """The id of the upload a user means by ``name`` (its id, file name or file stem)."""
        found = [k for k, u in self.uploads(kind).items() if name in (k, u.name, stem_and_ext(u.name)[0])]
        if not found:
            raise NotInBucketError(f"no {kind} {name!r} in the bucket")
        return found[0]

    def pair(self, campaign: Campaign, script: str | None, avatar: str | None) -> tuple[str, str]:
        """The (script, avatar) ids a user means, when they are a pair of ``campaign``."""
        pair = (self.upload_key("script", script), self.upload_key("avatar", avatar))
        if pair not in self.campaign_pairs(campaign):
            raise NotInBucketError(f"{script} × {avatar} is not a pair of campaign {campaign.key}")
        return pair


def scan_bucket(bucket: Bucket, settled: Callable[[BucketEntry], bool] | None = None,
                logger: logging.Logger | Any | None = None) -> BucketScan:
    """List uploads and campaigns. ``settled`` tells whether a file is completely uploaded (default: all are).

    Every skipped file is logged once per scan with its reason; it is never processed.
    """
    logger = logger or log
    scan = BucketScan()
    for kind in ("script", "avatar"):
        entries = bucket.list_files(PREFIXES[kind])
        ready = []
        for entry in entries:
            if settled is not None and not is_hidden(entry.name) and not settled(entry):
                scan.unsettled.append(entry)
            else:
                ready.append(entry)
        uploads, skipped = classify(kind, ready)
        scan.uploads(kind).update(uploads)
        scan.skipped.extend(skipped)
    transcripts, skipped = list_transcripts(bucket)
    scan.skipped.extend(skipped)
    for stem, entry in transcripts.items():
        if settled is not None and not settled(entry):
            scan.unsettled.append(entry)
        else:
            scan.transcripts[stem] = entry
    campaign_files = [e for e in bucket.list_files(CAMPAIGNS_PREFIX)]
    for entry in campaign_files:
        _, ext = stem_and_ext(entry.name)
        if is_hidden(entry.name) or ext not in CAMPAIGN_EXTENSIONS:
            scan.skipped.append(Skipped(entry.rel, "not a campaign file (campaigns/<name>.yaml)"))
            continue
        if settled is not None and not settled(entry):
            scan.unsettled.append(entry)
            continue
        try:
            campaign = parse_campaign(bucket.read_bytes(entry.rel), entry.name, entry.fingerprint)
        except CampaignError as error:  # its subtitles: key included
            scan.skipped.append(Skipped(entry.rel, str(error)))
            continue
        if campaign.key in scan.campaigns:
            scan.skipped.append(Skipped(entry.rel, f"another campaign file also has the id {campaign.key!r}"))
            continue
        scan.campaigns[campaign.key] = campaign
    if not campaign_files:
        scan.campaigns[DEFAULT_CAMPAIGN] = implicit_campaign()
    for skip in scan.skipped:
        logger.info(f"skipping {skip.rel}: {skip.reason}")
    for entry in scan.unsettled:
        logger.info(f"waiting for {entry.rel}: still being uploaded (size or time changed since the last look)")
    return scan


def settled_since(previous: Mapping[str, str], now: float | None = None,
                  settle_seconds: float = 60.0) -> Callable[[BucketEntry], bool]:
    """A ``settled`` test for sensors: a file is complete when a previous look saw the same size and version,
    or when its modification time is older than ``settle_seconds`` (so a restarted sensor need not wait)."""
    now = time.time() if now is None else now

    def settled(entry: BucketEntry) -> bool:
        if previous.get(entry.rel) == entry.fingerprint:
            return True
        # The time of the last change, not the version: on S3 the version is an ETag, which never parsed as one.
        return entry.modified is not None and now - entry.modified >= settle_seconds

    return settled
