"""The factory's bookkeeping over the bucket: uploads, campaigns, what is fresh or stale, manifests and zips.

Plain Python over fsspec (no Dagster): the Dagster assets, sensor, schedule and the CLI all decide "what exists,
what is stale, what to deliver" with these functions, and the tests exercise them without an instance.

Bucket layout (``HEYGEM_BUCKET``; a local path, ``file://``, ``memory://``, ``s3://``…)::

    scripts/<name>.<audio|video|txt>         uploads (voice tracks)
    avatars/<name>.<video|image>             uploads (presenter templates)
    transcripts/<script stem>.txt            optional: what an audio script says (captions are timed to it)
    campaigns/<campaign>.yaml                optional: which scripts × avatars, engine, output and subtitle options
    work/scripts/<script>/…                  prepared script (normalized audio, Mel + visemes) + stamp.json
    work/avatars/<avatar>/…                  normalized template + video.stamp.json, face track + track.stamp.json
    work/renders/<variant>/<script>/<avatar>.mp4 (+ .json record, .quality.json)
    work/errors/<stage>/<key>.json           the last failure of a stage, until it succeeds
    work/campaigns/<campaign>.json           what the deliverables were built from
    outputs/<campaign>/<script>__<avatar>.mp4 (+ .srt, .vtt), manifest.csv, manifest.parquet, <campaign>.zip

Every stage writes a *stamp* (a token of exactly what it was computed from: upload size and modification
version, settings, code version) after its files; a stage is fresh when its stamp matches the token the current
uploads and settings give. Uploads are identified by ``naming.safe_id`` of their file name.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
import yaml
from fsspec.implementations.local import LocalFileSystem

from heygem_pipeline.audio import SCRIPT_EXTENSIONS
from heygem_pipeline.avatar import AVATAR_EXTENSIONS
from heygem_pipeline.burnin import SubtitleOptions, SubtitleOptionsError, subtitle_options
from heygem_pipeline.errors import HeygemError, InputError
from heygem_pipeline.media import atomic_output
from heygem_pipeline.naming import is_hidden, safe_id, stem_and_ext

log = logging.getLogger(__name__)

SCRIPTS_PREFIX = "scripts"
AVATARS_PREFIX = "avatars"
CAMPAIGNS_PREFIX = "campaigns"
TRANSCRIPTS_PREFIX = "transcripts"
OUTPUTS_PREFIX = "outputs"
DEFAULT_CAMPAIGN = "default"
CAMPAIGN_EXTENSIONS = frozenset({"yaml", "yml"})
EXTENSIONS = {"script": SCRIPT_EXTENSIONS, "avatar": AVATAR_EXTENSIONS}
PREFIXES = {"script": SCRIPTS_PREFIX, "avatar": AVATARS_PREFIX}

# Bump a stage's version when its code changes what it writes: every output computed by the old code becomes
# stale, and the sensor (scripts, avatars) or the nightly schedule (renders) computes it again. The Dagster
# assets declare the same numbers as their `code_version`, so the UI shows the same staleness.
CODE_VERSIONS = {"script": "2", "avatar": "1", "face_track": "2", "render": "2", "checks": "2", "campaign": "2"}

MANIFEST_COLUMNS = (
    "campaign", "script", "avatar", "status", "output", "duration_s", "frames", "fps", "width", "height", "engine",
    "sync_offset_frames", "sync_confidence", "checks_passed", "subtitles", "captions_timing", "error",
)
SUBTITLE_SIDECARS = (".srt", ".vtt")

# Pair statuses, in the manifest and in the CLI's report.
OK, CHECK_FAILED, UNCHECKED, STALE, MISSING, FAILED = "ok", "check_failed", "unchecked", "stale", "missing", "failed"
DELIVERABLE_STATUSES = (OK, CHECK_FAILED, UNCHECKED)  # a fresh video exists


class CampaignError(HeygemError):
    """A campaign file that cannot be used (bad YAML, unknown keys, unknown engine)."""


# ----------------------------------------------------------------------------------------------------- bucket


@dataclass(frozen=True)
class BucketEntry:
    """One file in the bucket, as a listing reports it."""

    rel: str  # path relative to the bucket root, '/'-separated
    size: int
    version: str  # modification time or ETag: changes whenever the content is replaced

    @property
    def name(self) -> str:
        return PurePosixPath(self.rel).name

    @property
    def fingerprint(self) -> str:
        return f"{self.size}:{self.version}"


def _version(info: Mapping[str, Any]) -> str:
    for key in ("ETag", "etag", "mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if value is not None:
            return str(value).strip('"')
    return ""


class Bucket:
    """An fsspec location with the factory's layout; every write is atomic (temp name, then move/rename)."""

    def __init__(self, url: str, work_prefix: str = "work") -> None:
        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/") or "/"
        self.work_prefix = work_prefix.strip("/") or "work"

    def __repr__(self) -> str:
        return f"Bucket({self.url!r})"

    @property
    def is_local(self) -> bool:
        """Plain local files (a path or file://): the engine can work on them in place."""
        return isinstance(self.fs, LocalFileSystem) and "file" in _protocols(self.fs)

    @property
    def is_process_local(self) -> bool:
        """True for ``memory://``: other processes cannot see its files, so runs must stay in this process."""
        return "memory" in _protocols(self.fs)

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}".rstrip("/") if rel else self.root

    def uri(self, rel: str) -> str:
        """A full address for metadata and messages: a local path, or protocol://…"""
        return self.path(rel) if self.is_local else self.fs.unstrip_protocol(self.path(rel))

    def local_path(self, rel: str) -> Path:
        if not self.is_local:
            raise ValueError(f"{self.url} is not a local bucket")
        return Path(self.path(rel))

    def work(self, *parts: str) -> str:
        return "/".join((self.work_prefix, *parts))

    # -- listing and reading

    def list_files(self, prefix: str) -> list[BucketEntry]:
        """Files directly under ``prefix`` (not recursive), sorted by path; an absent folder lists empty."""
        try:
            infos = self.fs.ls(self.path(prefix), detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        entries = []
        base = self.root.rstrip("/") + "/"
        for info in infos:
            if info.get("type") != "file":
                continue
            name = str(info["name"])
            rel = name[len(base):] if name.startswith(base) else f"{prefix}/{PurePosixPath(name).name}"
            entries.append(BucketEntry(rel=rel, size=int(info.get("size") or 0), version=_version(info)))
        return sorted(entries, key=lambda e: e.rel)

    def exists(self, rel: str) -> bool:
        return bool(self.fs.exists(self.path(rel)))

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self.path(rel))

    def read_json(self, rel: str) -> dict | None:
        """The JSON object at ``rel``, or None when it does not exist or is not readable JSON."""
        try:
            data = json.loads(self.read_bytes(rel))
        except (FileNotFoundError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def size(self, rel: str) -> int:
        return int(self.fs.size(self.path(rel)))

    # -- atomic writes

    def _temp_rel(self, rel: str) -> str:
        parent, name = rel.rpartition("/")[0], rel.rpartition("/")[2]
        temp = f".{name}.{uuid.uuid4().hex[:8]}.tmp"  # hidden: scans skip it, readers never open it
        return f"{parent}/{temp}" if parent else temp

    def write_bytes(self, rel: str, data: bytes) -> None:
        if self.is_local:
            with atomic_output(self.local_path(rel)) as tmp:
                tmp.write_bytes(data)
            return
        tmp_rel = self._temp_rel(rel)
        self.fs.pipe_file(self.path(tmp_rel), data)
        self.fs.mv(self.path(tmp_rel), self.path(rel))

    def write_json(self, rel: str, data: Mapping[str, Any]) -> None:
        self.write_bytes(rel, json.dumps(data, indent=2, sort_keys=True, default=str).encode())

    def upload(self, local: str | os.PathLike[str], rel: str) -> None:
        """Copy a local file to ``rel`` atomically (for a local bucket, a copy beside it then a rename)."""
        local = Path(local)
        if self.is_local:
            dest = self.local_path(rel)
            if dest.resolve() == local.resolve():
                return
            with atomic_output(dest) as tmp:
                shutil.copyfile(local, tmp)
            return
        tmp_rel = self._temp_rel(rel)
        self.fs.put_file(str(local), self.path(tmp_rel))
        self.fs.mv(self.path(tmp_rel), self.path(rel))

    def download(self, rel: str, local: str | os.PathLike[str]) -> Path:
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        self.fs.get_file(self.path(rel), str(local))
        return local

    def copy(self, src_rel: str, dest_rel: str) -> None:
        """Copy inside the bucket, atomically (a hard link when local: no second copy of a video on disk)."""
        if self.is_local:
            src, dest = self.local_path(src_rel), self.local_path(dest_rel)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(PurePosixPath(self._temp_rel(dest_rel)).name)
            try:
                try:
                    os.link(src, tmp)
                except OSError:  # another file system, or links not allowed: copy the bytes
                    self.upload(src, dest_rel)
                    return
                os.replace(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)
            return
        tmp_rel = self._temp_rel(dest_rel)
        self.fs.copy(self.path(src_rel), self.path(tmp_rel))
        self.fs.mv(self.path(tmp_rel), self.path(dest_rel))

    def remove(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(rel))

    # -- local staging for the engine, which works on local folders

    @contextlib.contextmanager
    def local_file(self, rel: str) -> Iterator[Path]:
        """A local path holding ``rel``: the file itself when local, else a temporary copy with the same name."""
        if self.is_local:
            yield self.local_path(rel)
            return
        with tempfile.TemporaryDirectory(prefix="heygem-") as tmp:
            yield self.download(rel, Path(tmp) / PurePosixPath(rel).name)

    @contextlib.contextmanager
    def local_folder(self, rel_dir: str, inputs: Iterable[str] = (), outputs: Iterable[str] = ()) -> Iterator[Path]:
        """A local folder standing for bucket folder ``rel_dir``.

        Local bucket: the folder itself (the engine's stages write atomically). Otherwise a temporary folder with
        ``inputs`` downloaded, whose ``outputs`` are uploaded (each atomically) when the block succeeds; an output
        the block did not leave (a stage that has nothing to write, such as captions without a text) is removed
        from the bucket, so the folder holds what the stage wrote, as a local one would.
        """
        if self.is_local:
            folder = self.local_path(rel_dir)
            folder.mkdir(parents=True, exist_ok=True)
            yield folder
            return
        with tempfile.TemporaryDirectory(prefix="heygem-") as tmp:
            folder = Path(tmp)
            for name in inputs:
                self.download(f"{rel_dir}/{name}", folder / name)
            yield folder
            for name in outputs:
                if (folder / name).exists():
                    self.upload(folder / name, f"{rel_dir}/{name}")
                else:
                    self.remove(f"{rel_dir}/{name}")


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


# ----------------------------------------------------------------------------------------------- the layout


def script_dir(bucket: Bucket, script: str) -> str:
    return bucket.work("scripts", script)


def avatar_dir(bucket: Bucket, avatar: str) -> str:
    return bucket.work("avatars", avatar)


def script_stamp_path(bucket: Bucket, script: str) -> str:
    return f"{script_dir(bucket, script)}/stamp.json"


def avatar_stamp_path(bucket: Bucket, avatar: str) -> str:
    return f"{avatar_dir(bucket, avatar)}/video.stamp.json"


def track_stamp_path(bucket: Bucket, avatar: str) -> str:
    return f"{avatar_dir(bucket, avatar)}/track.stamp.json"


def render_path(bucket: Bucket, variant: str, script: str, avatar: str) -> str:
    # One folder per script keeps names unambiguous whatever the ids contain.
    return bucket.work("renders", variant, script, f"{avatar}.mp4")


def render_record_path(bucket: Bucket, variant: str, script: str, avatar: str) -> str:
    return render_path(bucket, variant, script, avatar)[: -len(".mp4")] + ".json"


def quality_record_path(bucket: Bucket, variant: str, script: str, avatar: str) -> str:
    return render_path(bucket, variant, script, avatar)[: -len(".mp4")] + ".quality.json"


def error_path(bucket: Bucket, stage: str, key: str) -> str:
    return bucket.work("errors", stage, f"{key}.json")


def campaign_record_path(bucket: Bucket, campaign: str) -> str:
    return bucket.work("campaigns", f"{campaign}.json")


def outputs_dir(campaign: str) -> str:
    return f"{OUTPUTS_PREFIX}/{campaign}"


def pair_key_text(script: str, avatar: str) -> str:
    """The pair as Dagster writes a multi-partition key (dimensions in alphabetical order: avatar|script)."""
    return f"{avatar}|{script}"


# ------------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class MediaOptions:
    """Settings that change what the script and avatar stages write (part of their stamps)."""

    fps: float = 25.0
    still_seconds: float = 5.0
    voice: str = "en-us"


@dataclass(frozen=True)
class RenderOptions:
    """What a render depends on besides its inputs. Different options render to different folders."""

    engine: str = "viseme"
    crf: int = 18
    preset: str = "veryfast"
    checkpoint: str | None = None  # wav2lip weights; None: the engine resource's (HEYGEM_WAV2LIP_CHECKPOINT)
    subtitles: SubtitleOptions = field(default_factory=SubtitleOptions)  # burnt in, or sidecars only

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


def script_token(upload: BucketEntry, media: MediaOptions, transcript: BucketEntry | None = None) -> str:
    # The voice only matters for .txt scripts, but keeping it always is simpler and harmless.
    text = transcript.fingerprint if transcript is not None else "none"
    return f"{upload.fingerprint}|script-v{CODE_VERSIONS['script']}|voice={media.voice}|transcript={text}"


def avatar_token(upload: BucketEntry, media: MediaOptions) -> str:
    return (f"{upload.fingerprint}|avatar-v{CODE_VERSIONS['avatar']}|fps={media.fps:g}"
            f"|still={media.still_seconds:g}")


def track_token(avatar_video_token: str) -> str:
    return f"{avatar_video_token}|track-v{CODE_VERSIONS['face_track']}"


def render_inputs_token(script_tok: str, track_tok: str) -> str:
    return f"{script_tok}#{track_tok}"


def stamp(token: str, **extra: Any) -> dict[str, Any]:
    return {"token": token, "written_at": time.time(), **extra}


# ------------------------------------------------------------------------------------------------ uploads


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
        if not is_hidden(PurePosixPath(skip.rel).name) and _safe_or_none(PurePosixPath(skip.rel).name) == key:
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


def _safe_or_none(name: str) -> str | None:
    try:
        return safe_id(name)
    except InputError:
        return None


# ----------------------------------------------------------------------------------------------- campaigns


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
        return _matches(patterns, entry.name, _safe_or_none(entry.name) or "")

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
    from heygem_pipeline.engines.registry import ENGINE_NAMES

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


# ------------------------------------------------------------------------------------------------ scanning


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
        except (CampaignError, InputError, SubtitleOptionsError) as error:
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
        try:
            modified = float(entry.version)
        except ValueError:
            return False
        return now - modified >= settle_seconds

    return settled


# ------------------------------------------------------------------------------------------------- states


@dataclass
class PairState:
    """Where one script × avatar pair of a campaign stands, and why."""

    campaign: str
    script: str
    avatar: str
    options: RenderOptions
    status: str  # OK, CHECK_FAILED, UNCHECKED, STALE, MISSING, FAILED
    inputs_ready: bool  # script and avatar are prepared from the current uploads
    inputs_token: str = ""
    reason: str = ""
    record: dict | None = None
    quality: dict | None = None

    @property
    def variant(self) -> str:
        return self.options.variant

    @property
    def needs_render(self) -> bool:
        return self.status in (STALE, MISSING, FAILED)

    @property
    def render_token(self) -> str:
        return f"{self.inputs_token}|{self.variant}|render-v{CODE_VERSIONS['render']}"


class FactoryState:
    """Reads stamps and records once per evaluation (a sensor tick, a schedule, a run) and answers questions."""

    def __init__(self, bucket: Bucket, scan: BucketScan, media: MediaOptions, defaults: RenderOptions,
                 failures_since: float = 0.0) -> None:
        """``failures_since``: failures recorded before this time (epoch seconds) count as not final, so the work is
        planned again (a request through the API retries what failed before it, once)."""
        self.bucket, self.scan, self.media, self.defaults = bucket, scan, media, defaults
        self.failures_since = failures_since
        self._json: dict[str, dict | None] = {}

    def read(self, rel: str) -> dict | None:
        if rel not in self._json:
            self._json[rel] = self.bucket.read_json(rel)
        return self._json[rel]

    # -- upstream stages

    def script_token(self, script: str) -> str:
        return script_token(self.scan.scripts[script].entry, self.media, self.scan.transcript(script))

    def script_seconds(self, script: str) -> float | None:
        """How long a prepared script's voice lasts (None before it is prepared)."""
        seconds = (self.read(script_stamp_path(self.bucket, script)) or {}).get("duration_s")
        return float(seconds) if seconds is not None else None

    def script_record(self, script: str) -> dict:
        """What intake found about a prepared script (its captions' summary among it)."""
        from heygem_pipeline.pipeline import SCRIPT_RECORD  # the engine's heavy modules, only when needed

        return self.read(f"{script_dir(self.bucket, script)}/{SCRIPT_RECORD}") or {}

    def avatar_token(self, avatar: str) -> str:
        return avatar_token(self.scan.avatars[avatar].entry, self.media)

    def script_ready(self, script: str) -> bool:
        return (self.read(script_stamp_path(self.bucket, script)) or {}).get("token") == self.script_token(script)

    def avatar_video_ready(self, avatar: str) -> bool:
        return (self.read(avatar_stamp_path(self.bucket, avatar)) or {}).get("token") == self.avatar_token(avatar)

    def avatar_ready(self, avatar: str) -> bool:
        wanted = track_token(self.avatar_token(avatar))
        return self.avatar_video_ready(avatar) and (self.read(track_stamp_path(self.bucket, avatar)) or {}).get(
            "token") == wanted

    def stage_error(self, stage: str, key: str, token: str) -> str | None:
        """The message of a final failure of ``stage`` for exactly this ``token``, if there is one."""
        record = self.read(error_path(self.bucket, stage, key))
        if (record and record.get("token") == token and record.get("final", True)
                and float(record.get("at", 0.0)) >= self.failures_since):
            return str(record.get("message", "failed"))
        return None

    def script_error(self, script: str) -> str | None:
        return self.stage_error("script", script, self.script_token(script))

    def avatar_error(self, avatar: str) -> str | None:
        token = self.avatar_token(avatar)
        return self.stage_error("avatar", avatar, token) or self.stage_error("face_track", avatar, track_token(token))

    # -- pairs

    def pair(self, campaign: Campaign, script: str, avatar: str) -> PairState:
        options = campaign.render_options(self.defaults)
        state = PairState(campaign.key, script, avatar, options, MISSING, inputs_ready=False)
        script_tok, avatar_tok = self.script_token(script), self.avatar_token(avatar)
        state.inputs_token = render_inputs_token(script_tok, track_token(avatar_tok))
        record = self.read(render_record_path(self.bucket, options.variant, script, avatar))
        state.inputs_ready = self.script_ready(script) and self.avatar_ready(avatar)
        upstream_error = None
        if not self.script_ready(script) and (message := self.script_error(script)):
            upstream_error = f"script {self.scan.scripts[script].name}: {message}"
        elif not self.avatar_ready(avatar) and (message := self.avatar_error(avatar)):
            upstream_error = f"avatar {self.scan.avatars[avatar].name}: {message}"
        if upstream_error:
            state.status, state.reason = FAILED, upstream_error
            return state
        if record is None:
            message = self.stage_error("render", render_error_key(options.variant, script, avatar),
                                      state.render_token)
            state.status, state.reason = (FAILED, message) if message else (MISSING, "not rendered yet")
            return state
        state.record = record
        if record.get("inputs_token") != state.inputs_token:
            state.status, state.reason = STALE, "inputs changed"
            return state
        if record.get("code_version") != CODE_VERSIONS["render"]:
            state.status, state.reason = STALE, "render code version changed"
            return state
        quality = self.read(quality_record_path(self.bucket, options.variant, script, avatar))
        if quality and quality.get("render_id") == record.get("render_id"):
            state.quality = quality
            state.status = OK if quality.get("passed") else CHECK_FAILED
            state.reason = "" if quality.get("passed") else quality.get("summary", "a check failed")
        else:
            message = self.stage_error("checks", render_error_key(options.variant, script, avatar),
                                      str(record.get("render_id")))
            state.status, state.reason = UNCHECKED, message or "not checked yet"
        return state

    def campaign_pairs(self, campaign: Campaign) -> list[PairState]:
        return [self.pair(campaign, s, a) for s, a in self.scan.campaign_pairs(campaign)]


def render_error_key(variant: str, script: str, avatar: str) -> str:
    return f"{variant}.{script}.{avatar}"


def write_error(bucket: Bucket, stage: str, key: str, token: str, message: str, final: bool) -> None:
    bucket.write_json(error_path(bucket, stage, key),
                      {"stage": stage, "key": key, "token": token, "message": message, "final": final,
                       "at": time.time()})


def clear_error(bucket: Bucket, stage: str, key: str) -> None:
    bucket.remove(error_path(bucket, stage, key))


# ------------------------------------------------------------------------------------------ deliverables


def output_names(pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """``<script>__<avatar>.mp4`` per pair; ids holding ``__`` could collide, and then get a short digest."""
    names: dict[tuple[str, str], str] = {}
    counts: dict[str, int] = {}
    for script, avatar in pairs:
        counts[f"{script}__{avatar}"] = counts.get(f"{script}__{avatar}", 0) + 1
    for script, avatar in pairs:
        base = f"{script}__{avatar}"
        if counts[base] > 1:
            base += "_" + hashlib.sha1(f"{script}\0{avatar}".encode()).hexdigest()[:6]
        names[(script, avatar)] = f"{base}.mp4"
    return names


def subtitles_delivered(captions: Mapping[str, Any], options: RenderOptions) -> str:
    """What the manifest says of a delivered video's subtitles: ``srt+vtt`` (and ``burnt in``), or why none."""
    if captions.get("status") != "captioned":
        return str(captions.get("status") or "no transcript")
    return "srt+vtt, burnt in" if options.subtitles.burn else "srt+vtt"


def manifest_row(state: PairState, scan: BucketScan, output: str, captions: Mapping[str, Any]) -> dict[str, Any]:
    """``captions``: the summary of the script's captions (its intake record's ``captions``)."""
    record, quality = state.record or {}, state.quality or {}
    rendered = state.status in DELIVERABLE_STATUSES
    checks_passed = quality.get("passed") if rendered and quality else None
    error = state.reason if state.status in (FAILED, CHECK_FAILED, STALE, MISSING, UNCHECKED) else ""
    return {
        "campaign": state.campaign,
        "script": scan.scripts[state.script].name,
        "avatar": scan.avatars[state.avatar].name,
        "status": state.status,
        "output": output if rendered else "",
        "duration_s": record.get("duration_s") if rendered else None,
        "frames": record.get("frames") if rendered else None,
        "fps": record.get("fps") if rendered else None,
        "width": record.get("width") if rendered else None,
        "height": record.get("height") if rendered else None,
        "engine": record.get("engine") if rendered else state.options.engine,
        "sync_offset_frames": quality.get("sync_offset_frames") if rendered else None,
        "sync_confidence": quality.get("sync_confidence") if rendered else None,
        "checks_passed": checks_passed,
        "subtitles": subtitles_delivered(captions, state.options) if rendered else "",
        "captions_timing": str(captions.get("method") or "") if rendered else "",
        "error": error,
    }


def manifest_frame(rows: Sequence[Mapping[str, Any]]):  # -> pandas.DataFrame (pandas imported lazily)
    import pandas as pd

    frame = pd.DataFrame(list(rows), columns=list(MANIFEST_COLUMNS))
    # Fixed dtypes, so an all-empty column still has the right type in Parquet.
    for column in ("duration_s", "fps", "sync_confidence"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in ("frames", "width", "height", "sync_offset_frames"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    frame["checks_passed"] = frame["checks_passed"].astype("boolean")
    for column in ("campaign", "script", "avatar", "status", "output", "engine", "subtitles", "captions_timing",
                   "error"):
        frame[column] = frame[column].fillna("").astype(str)
    return frame


@dataclass
class Deliverables:
    campaign: str
    folder: str  # outputs/<campaign>
    manifest_csv: str
    manifest_parquet: str
    videos: list[str]
    states: list[PairState]
    digest: str
    frame: Any = None  # pandas.DataFrame

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for state in self.states:
            counts[state.status] = counts.get(state.status, 0) + 1
        return counts


def deliverables_digest(campaign: Campaign, states: Sequence[PairState]) -> str:
    """Changes whenever the deliverables would differ: campaign file, pair statuses, renders, checks, errors."""
    parts = [campaign.key, campaign.fingerprint, CODE_VERSIONS["campaign"]]
    for state in states:
        parts.append("|".join((state.script, state.avatar, state.status, state.reason,
                               str((state.record or {}).get("render_id")),
                               str((state.quality or {}).get("render_id")))))
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]


def _write_sidecars(bucket: Bucket, script: str, video_rel: str) -> list[str]:
    """``<video>.srt`` and ``.vtt`` beside a delivered video, from its script's captions; [] when it has none."""
    from heygem_pipeline.captions import CaptionTrack, to_srt, to_webvtt
    from heygem_pipeline.pipeline import SCRIPT_CAPTIONS

    with contextlib.suppress(FileNotFoundError):
        with bucket.local_file(f"{script_dir(bucket, script)}/{SCRIPT_CAPTIONS}") as local:
            track = CaptionTrack.load(local)
        stem = video_rel[: -len(".mp4")]
        bucket.write_bytes(f"{stem}.srt", to_srt(track.cues).encode("utf-8"))
        bucket.write_bytes(f"{stem}.vtt", to_webvtt(track.cues).encode("utf-8"))
        return [f"{stem}.srt", f"{stem}.vtt"]
    return []


def write_manifest(bucket: Bucket, state: FactoryState, campaign: Campaign) -> Deliverables:
    """Copy the campaign's fresh videos to ``outputs/<campaign>/`` with their subtitles (SRT and WebVTT, when the
    script has captions) and write ``manifest.csv`` + ``.parquet``."""
    states = state.campaign_pairs(campaign)
    folder = outputs_dir(campaign.key)
    names = output_names([(s.script, s.avatar) for s in states])
    rows, videos, delivered = [], [], set()
    for pair in states:
        name = names[(pair.script, pair.avatar)]
        if pair.status in DELIVERABLE_STATUSES:
            bucket.copy(render_path(bucket, pair.variant, pair.script, pair.avatar), f"{folder}/{name}")
            videos.append(f"{folder}/{name}")
            delivered |= {f"{folder}/{name}", *_write_sidecars(bucket, pair.script, f"{folder}/{name}")}
        rows.append(manifest_row(pair, state.scan, name, state.script_record(pair.script).get("captions") or {}))
    # Videos (and subtitles) of pairs no longer in the campaign, or no longer fresh, must not be delivered.
    for entry in bucket.list_files(folder):
        if entry.name.endswith((".mp4", *SUBTITLE_SIDECARS)) and entry.rel not in delivered:
            bucket.remove(entry.rel)
    frame = manifest_frame(rows)
    csv_rel, parquet_rel = f"{folder}/manifest.csv", f"{folder}/manifest.parquet"
    bucket.write_bytes(csv_rel, frame.to_csv(index=False).encode())
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    bucket.write_bytes(parquet_rel, buffer.getvalue())
    return Deliverables(campaign.key, folder, csv_rel, parquet_rel, videos, states,
                        deliverables_digest(campaign, states), frame)


def write_zip(bucket: Bucket, campaign: str) -> tuple[str, list[str]]:
    """``outputs/<campaign>/<campaign>.zip`` with the delivered videos, their subtitles and the manifest; returns it
    and its members."""
    folder = outputs_dir(campaign)
    members = [e for e in bucket.list_files(folder)
               if e.name.endswith((".mp4", *SUBTITLE_SIDECARS)) or e.name == "manifest.csv"]
    zip_rel = f"{folder}/{campaign}.zip"
    with tempfile.TemporaryDirectory(prefix="heygem-zip-") as tmp:
        local_zip = Path(tmp) / f"{campaign}.zip"
        # Videos are already compressed: store them; deflate the text files.
        with zipfile.ZipFile(local_zip, "w") as archive:
            for entry in members:
                compression = zipfile.ZIP_STORED if entry.name.endswith(".mp4") else zipfile.ZIP_DEFLATED
                with bucket.local_file(entry.rel) as local:
                    archive.write(local, arcname=entry.name, compress_type=compression)
        bucket.upload(local_zip, zip_rel)
    return zip_rel, [e.name for e in members]


# ------------------------------------------------------------------------------------------------ planning


SETTLED_STATUSES = (OK, CHECK_FAILED, FAILED)


@dataclass
class Work:
    """What the selected campaigns still need, stage by stage (the sensor, the schedule and the CLI all use it)."""

    scripts: list[str] = field(default_factory=list)  # to prepare (missing or stale stamp)
    avatars: list[str] = field(default_factory=list)
    renders: list[PairState] = field(default_factory=list)  # pairs to (re)render, one per variant × pair
    checks: list[PairState] = field(default_factory=list)  # rendered but never checked
    states: dict[str, list[PairState]] = field(default_factory=dict)  # every pair, by campaign
    campaigns: dict[str, Campaign] = field(default_factory=dict)

    def settled(self, campaign: str) -> bool:
        """No pair of the campaign is waiting for anything (each is delivered, failed, or checked-and-failed)."""
        pending_scripts, pending_avatars = set(self.scripts), set(self.avatars)
        for state in self.states[campaign]:
            if state.script in pending_scripts or state.avatar in pending_avatars:
                return False
            if state.status not in SETTLED_STATUSES and not (state.status == UNCHECKED and state.reason
                                                              != "not checked yet"):
                return False
        return True


def plan_work(state: FactoryState, campaigns: Iterable[Campaign], *, retry_failed: bool) -> Work:
    """The stage work the ``campaigns`` need now. Failures recorded for the current inputs are only tried
    again with ``retry_failed`` (the CLI and the nightly schedule; the sensor waits for the file to change)."""
    work = Work()
    scripts: set[str] = set()
    avatars: set[str] = set()
    renders: dict[tuple[str, str, str], PairState] = {}
    checks: dict[tuple[str, str, str], PairState] = {}
    for campaign in campaigns:
        work.campaigns[campaign.key] = campaign
        states = work.states[campaign.key] = state.campaign_pairs(campaign)
        for pair in states:
            if not state.script_ready(pair.script) and (retry_failed or not state.script_error(pair.script)):
                scripts.add(pair.script)
            if not state.avatar_ready(pair.avatar) and (retry_failed or not state.avatar_error(pair.avatar)):
                avatars.add(pair.avatar)
            key = (pair.variant, pair.script, pair.avatar)
            if pair.status in (MISSING, STALE) or (pair.status == FAILED and retry_failed):
                renders.setdefault(key, pair)
            elif pair.status == UNCHECKED and (retry_failed or pair.reason == "not checked yet"):
                checks.setdefault(key, pair)
    work.scripts, work.avatars = sorted(scripts), sorted(avatars)
    work.renders = [renders[k] for k in sorted(renders)]
    work.checks = [checks[k] for k in sorted(checks)]
    return work
