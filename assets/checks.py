"""Quality checks on every rendered video, measured on the delivered file itself (picture and sound).

One step measures (face mesh on every frame, so it runs outside the ``gpu`` pool) and reports three checks:
A/V sync within ±1 frame, video duration within one frame of the voice, and face coverage. The verdicts also go
to the bucket (``<render>.quality.json``) so the campaign manifest can show them.
"""

# No `from __future__ import annotations`: Dagster reads the parameter annotations at definition time.
import warnings
from collections.abc import Iterator

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetRecordsFilter,
    Failure,
    PreviewWarning,
    multi_asset_check,
)

from assets.common import TRANSIENT_RETRY, stage_failures
from assets.partitions import pair_of, pair_partitions
from assets.videos import lipsync_video
from heygem_pipeline.engine import folders
from heygem_pipeline.engine.face.track import FaceTrack
from heygem_pipeline.engine.quality import (
    MIN_FACE_COVERAGE,
    SAMPLE_SECONDS,
    duration_verdict,
    face_verdict,
    measure_sync,
    sync_verdict,
)
from heygem_pipeline.factory.layout import avatar_dir, quality_record_path, render_error_key
from heygem_pipeline.factory.records import QualityRecord, RenderRecord
from heygem_pipeline.factory.state import CODE_VERSIONS
from resources.bucket import BucketResource

SYNC_CHECK, DURATION_CHECK, FACE_CHECK = "av_sync_within_1_frame", "duration_matches_audio", "face_coverage"
# Per-partition check results are a preview feature in Dagster 1.13; they are what makes a failed check show on
# its own pair in the UI, so the feature is used knowingly and its warning silenced here only.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", PreviewWarning)
    quality_check_specs = [
        AssetCheckSpec(SYNC_CHECK, asset=lipsync_video, partitions_def=pair_partitions,
                       description="Mouth-vs-voice lag measured on the output is within ±1 frame, with positive "
                                   "correlation; a clip with too little speech to measure passes with a note."),
        AssetCheckSpec(DURATION_CHECK, asset=lipsync_video, partitions_def=pair_partitions,
                       description="Video and muxed audio last as long as the voice, within one frame."),
        AssetCheckSpec(FACE_CHECK, asset=lipsync_video, partitions_def=pair_partitions,
                       description=f"The face is found in at least {MIN_FACE_COVERAGE:.0%} of the measured frames "
                                   f"(the {SAMPLE_SECONDS:g} s with the most speech)."),
    ]


def _latest_render(context: AssetCheckExecutionContext) -> dict:
    """Metadata of the materialization this check looks at: the latest one of this pair."""
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=lipsync_video.key, asset_partitions=[context.partition_key]), limit=1).records
    if not records or records[0].asset_materialization is None:
        raise Failure(description=f"{context.partition_key}: no rendered video to check", allow_retries=False)
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


@multi_asset_check(specs=quality_check_specs, name="lipsync_quality_checks", retry_policy=TRANSIENT_RETRY)
def lipsync_quality_checks(context: AssetCheckExecutionContext, bucket: BucketResource) -> Iterator[AssetCheckResult]:
    script, avatar = pair_of(context.partition_key)
    store = bucket.get()
    render = _latest_render(context)
    record = RenderRecord.load(store.read_json(str(render["record"])))
    if record is None or None in (record.variant, record.path, record.fps, record.duration_s):
        raise Failure(description=f"{render['record']}: render record missing; render the pair again",
                      allow_retries=False)
    variant = record.variant
    error_key = render_error_key(variant, script, avatar)
    with stage_failures(context, store, "checks", error_key, record.render_id), \
            store.local_file(record.path) as video, \
            store.local_file(f"{avatar_dir(store, avatar)}/{folders.AVATAR_TRACK}") as track_file:
        report = measure_sync(video, face_track=FaceTrack.load(track_file))
    fps = report.fps or record.fps
    frame = 1.0 / fps
    voice_s = record.duration_s
    video_s = report.frames / fps
    audio_s = report.audio_duration_s
    results = {SYNC_CHECK: sync_verdict(report), DURATION_CHECK: duration_verdict(report, voice_s, fps),
               FACE_CHECK: face_verdict(report)}
    verdicts = {name: result.passed for name, result in results.items()}
    sync_ok, duration_ok, face_ok = (verdicts[name] for name in (SYNC_CHECK, DURATION_CHECK, FACE_CHECK))
    failed = [name for name, ok in verdicts.items() if not ok]
    details = {name: result.detail for name, result in results.items()}
    # An unmeasurable clip has no offset to report: the manifest shows none rather than a meaningless lag.
    offset = report.offset_frames if report.measurable else None
    store.write_json(quality_record_path(store, variant, script, avatar), QualityRecord(
        render_id=record.render_id, passed=not failed, checks=verdicts,
        code_version=CODE_VERSIONS["checks"], sync_offset_frames=offset,
        sync_confidence=round(report.confidence, 3), sync_measurable=report.measurable,
        sync_note="" if report.measurable else details[SYNC_CHECK], face_coverage=round(report.face_coverage, 3),
        video_duration_s=round(video_s, 4), audio_duration_s=round(audio_s, 4), voice_duration_s=voice_s,
        summary="; ".join(f"{name}: {details[name]}" for name in failed),
    ).dump())
    shared = {"render_id": record.render_id, "variant": variant}
    yield AssetCheckResult(check_name=SYNC_CHECK, asset_key=lipsync_video.key, passed=sync_ok,
                           severity=AssetCheckSeverity.ERROR, description=details[SYNC_CHECK], metadata={
                               **shared, "sync_offset_frames": report.offset_frames,
                               "sync_confidence": round(report.confidence, 3), "sync_measurable": report.measurable,
                               "speech_s": round(report.speech_s, 2), "fps": fps})
    yield AssetCheckResult(check_name=DURATION_CHECK, asset_key=lipsync_video.key, passed=duration_ok,
                           severity=AssetCheckSeverity.ERROR, description=details[DURATION_CHECK], metadata={
                               **shared, "video_duration_s": round(video_s, 4), "audio_duration_s": round(audio_s, 4),
                               "voice_duration_s": voice_s, "frame_s": round(frame, 4)})
    yield AssetCheckResult(check_name=FACE_CHECK, asset_key=lipsync_video.key, passed=face_ok,
                           severity=AssetCheckSeverity.ERROR, description=details[FACE_CHECK], metadata={
                               **shared, "output_face_coverage": round(report.face_coverage, 3),
                               "frames": report.frames})
