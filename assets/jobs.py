"""Jobs, one per partitioning (Dagster cannot mix them in one run), and how runs of them are requested."""

from __future__ import annotations

import hashlib
from typing import Any

from dagster import AssetSelection, DagsterInstance, DagsterRunStatus, RunsFilter, define_asset_job

from assets.avatars import avatar_video, face_track
from assets.campaigns import campaign_manifest, campaign_zip
from assets.scripts import script_intake
from assets.videos import lipsync_video
from heygem_pipeline.campaigns import RenderOptions

RENDER_TAG = "heygem/stage"

script_job = define_asset_job(
    "script_job", selection=AssetSelection.assets(script_intake),
    description="Prepare one script: normalized audio, Mel and viseme features.")
avatar_job = define_asset_job(
    "avatar_job", selection=AssetSelection.assets(avatar_video, face_track),
    description="Prepare one avatar: normalized template and face track.")
# Materializing an asset runs its checks in the same run: a pair run renders, then measures.
# The tag lets the run queue hold pair runs back (dagster.yaml `tag_concurrency_limits`), so queued pair runs wait
# without occupying a run worker that would only spin on the busy `gpu` slot.
pair_job = define_asset_job(
    "pair_job", selection=AssetSelection.assets(lipsync_video), tags={RENDER_TAG: "render"},
    description="Render one script × avatar pair (gpu pool) and run its quality checks.")
campaign_job = define_asset_job(
    "campaign_job", selection=AssetSelection.assets(campaign_manifest, campaign_zip),
    description="Build one campaign's deliverables: videos, manifest.csv/.parquet, zip.")

JOBS = (script_job, avatar_job, pair_job, campaign_job)

NOT_FINISHED = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
                DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


def run_config(bucket_url: str, render: RenderOptions | None = None) -> dict[str, Any]:
    """Run config naming the bucket (and, for pair runs, the render options), so a re-execution repeats it."""
    config: dict[str, Any] = {"resources": {"bucket": {"config": {"url": bucket_url}}}}
    if render is not None:
        config["ops"] = {"lipsync_video": {"config": render.as_config()}}
    return config


def run_key(*parts: str) -> str:
    """A run key of readable parts plus a short digest of the last one (tokens are long)."""
    *readable, token = parts
    return ":".join((*readable, hashlib.sha1(token.encode()).hexdigest()[:12]))


def in_flight(instance: DagsterInstance) -> set[tuple[str, str]]:
    """(job name, partition key) of every queued or running run, so nothing is requested twice."""
    records = instance.get_run_records(RunsFilter(statuses=NOT_FINISHED), limit=10_000)
    return {(r.dagster_run.job_name, r.dagster_run.tags.get("dagster/partition", "")) for r in records}
