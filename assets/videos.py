"""The per-pair asset: the lip-synced video of one script × avatar, rendered in the ``gpu`` pool."""

# No `from __future__ import annotations`: Dagster reads the parameter annotations at definition time.
import time
import uuid
from copy import copy
from typing import Literal

from dagster import AssetExecutionContext, Config, Failure, MaterializeResult, MetadataValue, asset
from pydantic import Field, create_model

from assets.avatars import avatar_video, face_track
from assets.common import GROUP_VIDEOS, TRANSIENT_RETRY, human_size, stage_failures, thumbnail_markdown
from assets.partitions import pair_of, pair_partitions
from assets.scripts import script_audio_spec, script_features_spec
from heygem_pipeline.engine import folders, stages
from heygem_pipeline.engine.captions.burnin import CaptionStyle, SubtitleOptions
from heygem_pipeline.engine.contact_sheet import sheet_jpeg
from heygem_pipeline.factory.campaigns import RenderOptions
from heygem_pipeline.factory.layout import (
    avatar_dir,
    avatar_stamp_path,
    render_error_key,
    render_path,
    render_record_path,
    script_dir,
    script_stamp_path,
    track_stamp_path,
)
from heygem_pipeline.factory.records import RenderRecord, Stamp
from heygem_pipeline.factory.state import CODE_VERSIONS, render_inputs_token, render_token
from resources.bucket import BucketResource
from resources.engine import LipSyncEngineResource
from resources.ffmpeg import FFmpegResource

PROGRESS_LOG_SECONDS = 15.0


CaptionStyleConfig = create_model(
    "CaptionStyleConfig", __base__=Config, __doc__="How burnt-in captions look: burnin.CaptionStyle's fields "
    "(lengths are percentages of the frame height).",
    **{name: (field.annotation, copy(field)) for name, field in CaptionStyle.model_fields.items()})


class SubtitlesConfig(Config):
    """A campaign's ``subtitles:`` (burnin.SubtitleOptions) as run config, so the launchpad checks it."""

    mode: Literal["sidecar", "burn"] = Field(default="sidecar", description="burn: also burnt into the picture; "
                                             "sidecar: .srt/.vtt beside the video only")
    style: CaptionStyleConfig = CaptionStyleConfig()  # type: ignore[valid-type]

    def options(self) -> SubtitleOptions:
        return SubtitleOptions.model_validate(self.model_dump())


class RenderConfig(Config):
    """Per-run render options; a campaign's run passes its own, a run from the UI gets the resources' defaults."""

    engine: str | None = Field(default=None, description="viseme or wav2lip (default: the engine resource's)")
    crf: int | None = Field(default=None, description="x264 quality (default: the ffmpeg resource's)")
    preset: str | None = Field(default=None, description="x264 preset (default: the ffmpeg resource's)")
    checkpoint: str | None = Field(default=None, description="wav2lip .pth (default: the engine resource's)")
    models: str | None = Field(default=None, description="musetalk weights folder (default: the engine resource's)")
    subtitles: SubtitlesConfig = Field(default=SubtitlesConfig(), description="captions burnt into the picture: a "
                                       "campaign's `subtitles:` (default: none burnt in; sidecars are the "
                                       "deliverables')")

    def options(self, engine: LipSyncEngineResource, ffmpeg: FFmpegResource) -> RenderOptions:
        return RenderOptions(engine=self.engine or engine.engine, crf=ffmpeg.crf if self.crf is None else self.crf,
                             preset=self.preset or ffmpeg.preset, checkpoint=self.checkpoint,
                             models=self.models,
                             subtitles=self.subtitles.options())


@asset(partitions_def=pair_partitions, deps=[script_audio_spec, script_features_spec, avatar_video, face_track],
       group_name=GROUP_VIDEOS, kinds={"video"}, pool="gpu", retry_policy=TRANSIENT_RETRY,
       code_version=CODE_VERSIONS["render"],
       description="The presenter template speaking the script: mouth from the engine, audio muxed, H.264 MP4.")
def lipsync_video(context: AssetExecutionContext, config: RenderConfig, bucket: BucketResource,
                  engine: LipSyncEngineResource, ffmpeg: FFmpegResource) -> MaterializeResult:
    script, avatar = pair_of(context.partition_key)
    store = bucket.get()
    options = config.options(engine, ffmpeg)
    script_stamp = Stamp.load(store.read_json(script_stamp_path(store, script)))
    video_stamp = Stamp.load(store.read_json(avatar_stamp_path(store, avatar)))
    track_stamp = Stamp.load(store.read_json(track_stamp_path(store, avatar)))
    error_key = render_error_key(options.variant, script, avatar)
    missing = [name for name, found in (("script_features", script_stamp), ("avatar_video", video_stamp),
                                        ("face_track", track_stamp)) if found is None]
    if missing:  # upstream never succeeded: nothing to retry here
        raise Failure(description=f"{script} × {avatar}: materialize {', '.join(missing)} first", allow_retries=False)
    inputs_token = render_inputs_token(script_stamp.token, track_stamp.token)
    token = render_token(inputs_token, options)
    video_rel = render_path(store, options.variant, script, avatar)
    started = time.perf_counter()
    last_logged = [started]

    def progress(done: int, total: int) -> None:
        # Every log line is an event in the instance's storage: one per PROGRESS_LOG_SECONDS is enough to follow
        # a long render in the UI, and short renders log nothing but their result.
        now = time.perf_counter()
        if now - last_logged[0] >= PROGRESS_LOG_SECONDS and done < total:
            last_logged[0] = now
            context.log.info(f"rendered {done}/{total} frames ({now - started:.0f} s)")

    # A face track made before mouth banks has none beside it: the render then builds one from the template.
    avatar_inputs = (folders.AVATAR_TEMPLATE, folders.AVATAR_TRACK) + (
        (folders.AVATAR_BANK,) if store.exists(f"{avatar_dir(store, avatar)}/{folders.AVATAR_BANK}") else ())
    with stage_failures(context, store, "render", error_key, token):
        lip_sync = engine.get(options.engine, checkpoint=options.checkpoint, models=options.models)
        script_inputs = (folders.SCRIPT_FEATURES, folders.SCRIPT_SOURCE)
        if options.subtitles.burn and store.exists(f"{script_dir(store, script)}/{folders.SCRIPT_CAPTIONS}"):
            script_inputs += (folders.SCRIPT_CAPTIONS,)
        with (store.local_folder(script_dir(store, script), inputs=script_inputs) as script_work,
              store.local_folder(avatar_dir(store, avatar), inputs=avatar_inputs) as avatar_work,
              store.local_folder(video_rel.rpartition("/")[0], outputs=(video_rel.rpartition("/")[2],)) as out):
            result = stages.render_pair(script_work, avatar_work, out / video_rel.rpartition("/")[2], lip_sync,
                                          settings=ffmpeg.encode_settings(options.crf, options.preset),
                                          progress=progress, subtitles=options.subtitles,
                                          limits=ffmpeg.tool_limits())
            size = result.path.stat().st_size
            thumbnail = thumbnail_markdown(result.preview_jpeg)
            sheet = thumbnail_markdown(sheet_jpeg(result.contact_sheet_png)) if result.contact_sheet_png else None
        record = RenderRecord(
            script=script, avatar=avatar, script_source=script_stamp.source, avatar_source=video_stamp.source,
            variant=options.variant, engine=result.engine, crf=options.crf, preset=options.preset,
            inputs_token=inputs_token, code_version=CODE_VERSIONS["render"], render_id=uuid.uuid4().hex,
            run_id=context.run.run_id, frames=result.frames, fps=result.fps, width=result.width,
            height=result.height, duration_s=round(result.duration_s, 4),
            render_seconds=round(result.render_seconds, 3), size_bytes=size, path=video_rel, rendered_at=time.time(),
        )
        store.write_json(render_record_path(store, options.variant, script, avatar), record.dump())
    return MaterializeResult(metadata={
        "path": MetadataValue.path(store.uri(video_rel)),
        "record": render_record_path(store, options.variant, script, avatar),
        "variant": options.variant,
        "engine": result.engine,
        "duration_s": round(result.duration_s, 3),
        "frames": result.frames,
        "fps": float(result.fps),
        "resolution": f"{result.width}x{result.height}",
        "file_size_bytes": size,
        "file_size": human_size(size),
        "script_source": str(script_stamp.source),
        "avatar_source": str(video_stamp.source),
        "render_seconds": round(time.perf_counter() - started, 2),
        "render_fps": round(result.render_fps, 1),
        "render_id": record.render_id,
        "thumbnail": thumbnail,
        # The template's mouth, then the output's at the loudest and the quietest moments (as `heygem render
        # --contact-sheet` writes it).
        **({"mouth_contact_sheet": sheet} if sheet is not None else {}),
    })
