"""Per-script assets: the normalized voice and its features (Wav2Lip Mel + viseme mouth track), one intake step."""

# No `from __future__ import annotations`: Dagster reads the parameter annotations at definition time.
import contextlib
from collections.abc import Iterator

from dagster import AssetExecutionContext, AssetSpec, MaterializeResult, MetadataValue, multi_asset

from assets.common import GROUP_SCRIPTS, TRANSIENT_RETRY, stage_failures
from assets.partitions import script_partitions
from heygem_pipeline.engine import folders, stages
from heygem_pipeline.errors import InputError
from heygem_pipeline.factory.layout import script_dir, script_stamp_path
from heygem_pipeline.factory.state import CODE_VERSIONS, FactoryState, stamp
from heygem_pipeline.factory.uploads import find_transcript, find_upload, scan_bucket
from heygem_pipeline.factory.voicing import split_voiced_key
from resources.bucket import BucketResource
from resources.ffmpeg import FFmpegResource

SCRIPT_OUTPUTS = (folders.SCRIPT_SOURCE, folders.SCRIPT_ANALYSIS, folders.SCRIPT_FEATURES, folders.SCRIPT_RECORD,
                  folders.SCRIPT_CAPTIONS)

script_audio_spec = AssetSpec(
    "script_audio", group_name=GROUP_SCRIPTS, kinds={"audio"},
    description="The voice as uploaded (kept for the final mux) and its 16 kHz mono analysis copy.")
script_features_spec = AssetSpec(
    "script_features", deps=[script_audio_spec], group_name=GROUP_SCRIPTS, kinds={"numpy"},
    description="Wav2Lip Mel spectrogram and the viseme mouth track of the voice, and its captions (timed to the "
                "voice when its text is known: a .txt script, or transcripts/<script stem>.txt): once per script.")


# One step writes both: the features come from the normalized audio in memory, and splitting would decode twice.
@multi_asset(specs=[script_audio_spec, script_features_spec], name="script_intake", partitions_def=script_partitions,
             code_version=CODE_VERSIONS["script"], retry_policy=TRANSIENT_RETRY)
def script_intake(context: AssetExecutionContext, bucket: BucketResource,
                  ffmpeg: FFmpegResource) -> Iterator[MaterializeResult]:
    key = context.partition_key  # an upload's key, or a text's voiced copy: "<script>@<voice variant>"
    store = bucket.get()
    base, variant = split_voiced_key(key)
    upload = find_upload(store, "script", base)  # InputError when it vanished: handled below with the others
    transcript = find_transcript(store, upload)
    state = FactoryState(store, scan_bucket(store, logger=context.log), ffmpeg.media_options())
    voice = state.script_voice(key)
    token = state.script_token(key)
    folder = script_dir(store, key)
    with stage_failures(context, store, "script", key, token, source=store.uri(upload.rel)):
        if voice is None:
            raise InputError(store.uri(upload.rel), f"no campaign voices it with {variant} any more",
                             "render it through a campaign whose voice: is that voice")
        with contextlib.ExitStack() as stack:
            local_upload = stack.enter_context(store.local_file(upload.rel))
            local_text = stack.enter_context(store.local_file(transcript.rel)) if transcript else None
            work = stack.enter_context(store.local_folder(folder, outputs=SCRIPT_OUTPUTS))
            record = stages.prepare_script(local_upload, work, voice=voice, transcript=local_text,
                                             limits=ffmpeg.tool_limits())
        store.write_json(script_stamp_path(store, key),
                         stamp(token, source=upload.name, duration_s=record["duration_s"]))
    common = {"source": upload.name, "source_uri": MetadataValue.path(store.uri(upload.rel)),
              "duration_s": round(float(record["duration_s"]), 3)}
    captions = record.get("captions") or {}
    warnings = record.get("warnings") or []
    yield MaterializeResult(asset_key="script_audio", metadata={
        **common,
        "path": MetadataValue.path(store.uri(f"{folder}/{folders.SCRIPT_ANALYSIS}")),
        "codec": str(record.get("codec")), "sample_rate": int(record.get("sample_rate") or 0),
        "channels": int(record.get("channels") or 0), "language": str(record.get("language")),
        "text": str(record.get("text") or ""), "warnings": "; ".join(warnings) or "none",
        "voice": str(record.get("voice") or "none (an audio script)"),
    })
    yield MaterializeResult(asset_key="script_features", metadata={
        **common,
        "path": MetadataValue.path(store.uri(f"{folder}/{folders.SCRIPT_FEATURES}")),
        "mel_columns": int(record["mel_columns"]),
        "captions": str(captions.get("status", folders.NO_TRANSCRIPT)),
        "captions_source": str(captions.get("source") or "none"),
        "captions_timing": str(captions.get("method") or "none"),
        "caption_cues": int(captions.get("cues") or 0),
        "caption_warnings": "; ".join(captions.get("warnings") or []) or "none",
    })
