"""Per-campaign deliverables: the videos of every pair with their manifest (CSV + Parquet), and the zip."""

# No `from __future__ import annotations`: Dagster reads the parameter annotations at definition time.
from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    Failure,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from assets.common import GROUP_DELIVERABLES, TRANSIENT_RETRY, human_size
from assets.partitions import campaign_partitions
from assets.videos import lipsync_video
from heygem_pipeline.factory.deliver import MANIFEST_COLUMNS, write_manifest, write_zip
from heygem_pipeline.factory.layout import campaign_record_path, outputs_dir
from heygem_pipeline.factory.records import CampaignRecord
from heygem_pipeline.factory.state import CODE_VERSIONS, FactoryState
from heygem_pipeline.factory.uploads import scan_bucket
from resources.bucket import BucketResource
from resources.engine import LipSyncEngineResource
from resources.ffmpeg import FFmpegResource

PREVIEW_ROWS = 50


def _cell(value: object) -> object:
    if value is None or value != value:  # None, NaN, pandas NA
        return ""
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


@asset(partitions_def=campaign_partitions, group_name=GROUP_DELIVERABLES, kinds={"csv", "parquet"},
       deps=[AssetDep(lipsync_video, partition_mapping=AllPartitionMapping())], code_version=CODE_VERSIONS["campaign"],
       retry_policy=TRANSIENT_RETRY,
       description="outputs/<campaign>/: every pair's video and manifest.csv/.parquet (status, metadata, checks, "
                   "errors), including pairs that failed.")
def campaign_manifest(context: AssetExecutionContext, bucket: BucketResource, engine: LipSyncEngineResource,
                      ffmpeg: FFmpegResource) -> MaterializeResult:
    key = context.partition_key
    store = bucket.get()
    scan = scan_bucket(store, logger=context.log)
    campaign = scan.campaigns.get(key)
    if campaign is None:
        raise Failure(description=f"campaign {key!r} has no campaigns/{key}.yaml (or it is invalid) in {store.url}",
                      allow_retries=False)
    state = FactoryState(store, scan, ffmpeg.media_options(), ffmpeg.render_defaults(engine.engine))
    delivered = write_manifest(store, state, campaign)
    store.write_json(campaign_record_path(store, key),
                     CampaignRecord(digest=delivered.digest, counts=delivered.counts()).dump())
    frame = delivered.frame
    schema = TableSchema(columns=[TableColumn(name) for name in MANIFEST_COLUMNS])
    preview = [TableRecord({c: _cell(v) for c, v in row.items()})
               for row in frame.head(PREVIEW_ROWS).to_dict(orient="records")]
    counts = delivered.counts()
    return MaterializeResult(metadata={
        "path": MetadataValue.path(store.uri(delivered.manifest_csv)),
        "parquet": MetadataValue.path(store.uri(delivered.manifest_parquet)),
        "folder": MetadataValue.path(store.uri(outputs_dir(key))),
        "campaign_file": campaign.source,
        "pairs": len(delivered.states),
        "delivered_videos": len(delivered.videos),
        **{f"pairs_{status}": count for status, count in sorted(counts.items())},
        "manifest": MetadataValue.table(preview, schema=schema),
        "digest": delivered.digest,
    })


@asset(partitions_def=campaign_partitions, deps=[campaign_manifest], group_name=GROUP_DELIVERABLES, kinds={"zip"},
       code_version=CODE_VERSIONS["campaign"], retry_policy=TRANSIENT_RETRY,
       description="outputs/<campaign>/<campaign>.zip: the delivered videos and manifest.csv in one download.")
def campaign_zip(context: AssetExecutionContext, bucket: BucketResource) -> MaterializeResult:
    key = context.partition_key
    store = bucket.get()
    zip_rel, members = write_zip(store, key)
    size = store.size(zip_rel)
    return MaterializeResult(metadata={
        "path": MetadataValue.path(store.uri(zip_rel)),
        "files": len(members),
        "videos": sum(name.endswith(".mp4") for name in members),
        "file_size_bytes": size,
        "file_size": human_size(size),
    })
