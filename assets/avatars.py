"""Per-avatar assets: the normalized presenter template, and its face track (computed once per avatar)."""

# No `from __future__ import annotations`: Dagster reads the parameter annotations at definition time.
from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue, asset

from assets.common import GROUP_AVATARS, TRANSIENT_RETRY, stage_failures, thumbnail_markdown
from assets.partitions import avatar_partitions
from heygem_pipeline.engine import folders, stages
from heygem_pipeline.engine.media.previews import PREVIEW_AT, thumbnail_jpeg
from heygem_pipeline.engine.mouth.bank import MouthBank
from heygem_pipeline.factory.layout import avatar_dir, avatar_stamp_path, track_stamp_path
from heygem_pipeline.factory.state import CODE_VERSIONS, avatar_token, stamp, track_token
from heygem_pipeline.factory.uploads import find_upload
from resources.bucket import BucketResource
from resources.ffmpeg import FFmpegResource


@asset(partitions_def=avatar_partitions, group_name=GROUP_AVATARS, kinds={"video"},
       code_version=CODE_VERSIONS["avatar"], retry_policy=TRANSIENT_RETRY,
       description="The presenter template, upright, constant frame rate, H.264 (a photo becomes a still clip).")
def avatar_video(context: AssetExecutionContext, bucket: BucketResource, ffmpeg: FFmpegResource) -> MaterializeResult:
    key = context.partition_key
    store = bucket.get()
    media = ffmpeg.media_options()
    upload = find_upload(store, "avatar", key)
    token = avatar_token(upload.entry, media)
    folder = avatar_dir(store, key)
    with stage_failures(context, store, "avatar", key, token, source=store.uri(upload.rel)):
        with store.local_file(upload.rel) as local_upload, store.local_folder(
                folder, outputs=(folders.AVATAR_TEMPLATE, folders.AVATAR_RECORD)) as work:
            settings, limits = ffmpeg.encode_settings(), ffmpeg.tool_limits()
            intake = stages.prepare_avatar(local_upload, work, fps=media.fps, still_seconds=media.still_seconds,
                                             settings=settings, limits=limits)
            # A photo's clip shows the same picture throughout: its first frame decodes alone, without a seek.
            thumbnail = thumbnail_markdown(thumbnail_jpeg(
                work / folders.AVATAR_TEMPLATE, at=0.0 if intake.was_still else PREVIEW_AT,
                frames=intake.frame_count, fps=intake.fps, threads=settings.threads, limits=limits))
        store.write_json(avatar_stamp_path(store, key), stamp(token, source=upload.name))
    return MaterializeResult(metadata={
        "source": upload.name,
        "source_uri": MetadataValue.path(store.uri(upload.rel)),
        "path": MetadataValue.path(store.uri(f"{folder}/{folders.AVATAR_TEMPLATE}")),
        "resolution": f"{intake.width}x{intake.height}",
        "fps": float(intake.fps),
        "frames": int(intake.frame_count),
        "duration_s": round(float(intake.duration_s), 3),
        "from_still": bool(intake.was_still),
        "rotation_applied": int(intake.rotation_applied),
        "warnings": "; ".join(intake.warnings) or "none",
        "thumbnail": thumbnail,
    })


@asset(partitions_def=avatar_partitions, deps=[avatar_video], group_name=GROUP_AVATARS, kinds={"parquet"},
       code_version=CODE_VERSIONS["face_track"], retry_policy=TRANSIENT_RETRY,
       description="Per-frame face landmarks of the template (MediaPipe), smoothed, short gaps filled; and the "
                   "mouth bank (the template's own open mouths, by shape) collected from the same frames.")
def face_track(context: AssetExecutionContext, bucket: BucketResource, ffmpeg: FFmpegResource) -> MaterializeResult:
    key = context.partition_key
    store = bucket.get()
    upload = find_upload(store, "avatar", key)
    video_stamp = store.read_json(avatar_stamp_path(store, key))
    token = track_token(video_stamp["token"] if video_stamp else avatar_token(upload.entry, ffmpeg.media_options()))
    folder = avatar_dir(store, key)
    with stage_failures(context, store, "face_track", key, token, source=store.uri(upload.rel)):
        if video_stamp is None:
            raise Failure(description=f"{store.uri(folder)}: no normalized template; materialize avatar_video first",
                          allow_retries=False)
        with store.local_folder(folder, inputs=(folders.AVATAR_TEMPLATE,),
                                outputs=(folders.AVATAR_TRACK, folders.AVATAR_BANK)) as work:
            track = stages.track_avatar(work, limits=ffmpeg.tool_limits())
            bank = MouthBank.load(work / folders.AVATAR_BANK)
        store.write_json(track_stamp_path(store, key), stamp(token, source=upload.name))
    summary = track.summary()
    return MaterializeResult(metadata={
        "source": upload.name,
        "path": MetadataValue.path(store.uri(f"{folder}/{folders.AVATAR_TRACK}")),
        "frames": int(summary["frames"]),
        "face_coverage": float(summary["coverage"]),
        "interpolated_frames": int(summary["interpolated_frames"]),
        "mean_face_height_px": float(summary["mean_face_height_px"]),
        "longest_gap_frames": int(summary["longest_gap_frames"]),
        "flagged_gaps": len(summary["flagged_gaps"]),
        "mouth_bank_samples": len(bank) if bank is not None else 0,
        "mouth_bank_source": "donor (the template never opens its mouth)" if bank is None or bank.donor else "template",
    })

