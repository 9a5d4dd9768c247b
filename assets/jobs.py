"""Jobs, one per partitioning (Dagster cannot mix them in one run), the queue each runs on, and how runs of them
are requested and recognised."""

from __future__ import annotations

import hashlib
from typing import Any

from dagster import AssetSelection, DagsterInstance, DagsterRunStatus, RunsFilter, define_asset_job
from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG

from assets.avatars import avatar_video, face_track
from assets.campaigns import campaign_manifest, campaign_zip
from assets.scripts import script_intake
from assets.videos import lipsync_video
from heygem_pipeline.campaigns import RenderOptions

# The Celery queue of each job's runs (the run launcher routes by this tag; dagster.yaml limits runs per queue):
# `gpu` workers render, `cpu` workers do everything else, so a GPU host never spends its GPU's time on CPU work.
GPU_QUEUE, CPU_QUEUE = {DAGSTER_CELERY_QUEUE_TAG: "gpu"}, {DAGSTER_CELERY_QUEUE_TAG: "cpu"}

# Tags naming the work a run does and the input version it does it for: clients and the sensor recognise runs of
# the same work by them, whoever submitted them.
ITEM_TAG, TOKEN_TAG = "heygem/item", "heygem/token"

script_job = define_asset_job(
    "script_job", selection=AssetSelection.assets(script_intake), tags=CPU_QUEUE,
    description="Prepare one script: normalized audio, Mel and viseme features.")
avatar_job = define_asset_job(
    "avatar_job", selection=AssetSelection.assets(avatar_video, face_track), tags=CPU_QUEUE,
    description="Prepare one avatar: normalized template and face track.")
pair_job = define_asset_job(
    "pair_job", selection=AssetSelection.assets(lipsync_video).without_checks(), tags=GPU_QUEUE,
    description="Render one script × avatar pair (gpu pool and queue); check_job measures the result.")
# A job of checks alone has no partitions definition (Dagster infers it from assets): its runs carry their pair's
# partition in their tags (`assets.partitions.partition_tags`), which is where Dagster keeps a run's partition.
check_job = define_asset_job(
    "check_job", selection=AssetSelection.checks_for_assets(lipsync_video), tags=CPU_QUEUE,
    description="Measure one rendered pair on the delivered file: A/V sync, duration, face coverage.")
campaign_job = define_asset_job(
    "campaign_job", selection=AssetSelection.assets(campaign_manifest, campaign_zip), tags=CPU_QUEUE,
    description="Build one campaign's deliverables: videos, manifest.csv/.parquet, zip.")

JOBS = (script_job, avatar_job, pair_job, check_job, campaign_job)

NOT_FINISHED = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
                DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


def run_config(bucket_url: str, render: RenderOptions | None = None) -> dict[str, Any]:
    """Run config naming the bucket (and, for render runs, the render options), so a re-execution repeats it.
    The console logger stays quiet: every event is in the UI, and workers' logs need only the warnings."""
    config: dict[str, Any] = {"resources": {"bucket": {"config": {"url": bucket_url}}},
                              "loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    if render is not None:
        config["ops"] = {"lipsync_video": {"config": render.as_config()}}
    return config


def digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def run_key(*parts: str) -> str:
    """A run key of readable parts plus a short digest of the last one (tokens are long)."""
    *readable, token = parts
    return ":".join((*readable, digest(token)))


def work_tags(item: str, token: str) -> dict[str, str]:
    """``item``: what the run does (``render:<variant>:<script>|<avatar>``); ``token``: the inputs it does it for."""
    return {ITEM_TAG: item, TOKEN_TAG: digest(token)}


def in_flight(instance: DagsterInstance) -> set[tuple[str, str]]:
    """(job name, partition key) of every queued or running run, so nothing is requested twice."""
    records = instance.get_run_records(RunsFilter(statuses=NOT_FINISHED), limit=10_000)
    return {(r.dagster_run.job_name, r.dagster_run.tags.get("dagster/partition", "")) for r in records}
