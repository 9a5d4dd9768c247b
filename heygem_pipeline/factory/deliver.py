"""Deliverables: videos and subtitles copied to outputs/, manifest.csv/.parquet and the zip."""

from __future__ import annotations

import contextlib
import hashlib
import io
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heygem_pipeline.factory.bucket import Bucket
from heygem_pipeline.factory.campaigns import Campaign, RenderOptions
from heygem_pipeline.factory.layout import (
    SUBTITLE_SIDECARS,
    manifest_csv_path,
    manifest_parquet_path,
    outputs_dir,
    render_path,
    script_dir,
    zip_path,
)
from heygem_pipeline.factory.records import CaptionsSummary
from heygem_pipeline.factory.state import (
    CHECK_FAILED,
    CODE_VERSIONS,
    DELIVERABLE_STATUSES,
    FAILED,
    MISSING,
    STALE,
    UNCHECKED,
    FactoryState,
    PairState,
)
from heygem_pipeline.factory.uploads import BucketScan

if TYPE_CHECKING:
    import pandas as pd  # at run time imported lazily, in manifest_frame

MANIFEST_COLUMNS = (
    "campaign", "script", "avatar", "status", "output", "duration_s", "frames", "fps", "width", "height", "engine",
    "sync_offset_frames", "sync_confidence", "checks_passed", "subtitles", "captions_timing", "error",
)


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


def subtitles_delivered(captions: CaptionsSummary, options: RenderOptions) -> str:
    """What the manifest says of a delivered video's subtitles: ``srt+vtt`` (and ``burnt in``), or why none."""
    if captions.status != "captioned":
        return str(captions.status or "no transcript")
    return "srt+vtt, burnt in" if options.subtitles.burn else "srt+vtt"


def manifest_row(state: PairState, scan: BucketScan, output: str, captions: CaptionsSummary) -> dict[str, Any]:
    """``captions``: the summary of the script's captions (its intake record's ``captions``)."""
    # A video is delivered (and described) only when the pair is fresh.
    record = state.record if state.status in DELIVERABLE_STATUSES else None
    quality = state.quality if record is not None else None
    error = state.reason if state.status in (FAILED, CHECK_FAILED, STALE, MISSING, UNCHECKED) else ""
    return {
        "campaign": state.campaign,
        "script": scan.scripts[state.upload_script].name,
        "avatar": scan.avatars[state.avatar].name,
        "status": state.status,
        "output": output if record else "",
        "duration_s": record.duration_s if record else None,
        "frames": record.frames if record else None,
        "fps": record.fps if record else None,
        "width": record.width if record else None,
        "height": record.height if record else None,
        "engine": record.engine if record else state.options.engine,
        "sync_offset_frames": quality.sync_offset_frames if quality else None,
        "sync_confidence": quality.sync_confidence if quality else None,
        "checks_passed": quality.passed if quality else None,
        "subtitles": subtitles_delivered(captions, state.options) if record else "",
        "captions_timing": str(captions.method or "") if record else "",
        "error": error,
    }


def manifest_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
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
                               str(state.record.render_id if state.record else None),
                               str(state.quality.render_id if state.quality else None))))
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]


def _write_sidecars(bucket: Bucket, script: str, video_rel: str) -> list[str]:
    """``<video>.srt`` and ``.vtt`` beside a delivered video, from its script's captions; [] when it has none."""
    from heygem_pipeline.engine.captions.cues import CaptionTrack, to_srt, to_webvtt
    from heygem_pipeline.engine.folders import SCRIPT_CAPTIONS

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
    names = output_names([(s.upload_script, s.avatar) for s in states])
    rows, videos, delivered = [], [], set()
    for pair in states:
        name = names[(pair.upload_script, pair.avatar)]
        if pair.status in DELIVERABLE_STATUSES:
            bucket.copy(render_path(bucket, pair.variant, pair.script, pair.avatar), f"{folder}/{name}")
            videos.append(f"{folder}/{name}")
            delivered |= {f"{folder}/{name}", *_write_sidecars(bucket, pair.script, f"{folder}/{name}")}
        rows.append(manifest_row(pair, state.scan, name, state.script_record(pair.script).captions))
    # Videos (and subtitles) of pairs no longer in the campaign, or no longer fresh, must not be delivered.
    for entry in bucket.list_files(folder):
        if entry.name.endswith((".mp4", *SUBTITLE_SIDECARS)) and entry.rel not in delivered:
            bucket.remove(entry.rel)
    frame = manifest_frame(rows)
    csv_rel, parquet_rel = manifest_csv_path(campaign.key), manifest_parquet_path(campaign.key)
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
               if e.name.endswith((".mp4", *SUBTITLE_SIDECARS)) or e.rel == manifest_csv_path(campaign)]
    zip_rel = zip_path(campaign)
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
