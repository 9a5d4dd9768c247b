"""Jobs, one per partitioning (Dagster cannot mix them in one run), and the queue each runs on."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job
from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG

from assets.avatars import avatar_video, face_track
from assets.campaigns import campaign_manifest, campaign_zip
from assets.names import AVATAR_JOB, CAMPAIGN_JOB, CHECK_JOB, PAIR_JOB, SCRIPT_JOB
from assets.scripts import script_intake
from assets.videos import lipsync_video
from heygem_pipeline.factory.plan import Stage

# The Celery queue of each job's runs (the run launcher routes by this tag; dagster.yaml limits runs per queue):
# `gpu` workers render, `cpu` workers do everything else, so a GPU host never spends its GPU's time on CPU work.
GPU_QUEUE, CPU_QUEUE = {DAGSTER_CELERY_QUEUE_TAG: "gpu"}, {DAGSTER_CELERY_QUEUE_TAG: "cpu"}

script_job = define_asset_job(
    SCRIPT_JOB, selection=AssetSelection.assets(script_intake), tags=CPU_QUEUE,
    description="Prepare one script: normalized audio, Mel and viseme features.")
avatar_job = define_asset_job(
    AVATAR_JOB, selection=AssetSelection.assets(avatar_video, face_track), tags=CPU_QUEUE,
    description="Prepare one avatar: normalized template and face track.")
pair_job = define_asset_job(
    PAIR_JOB, selection=AssetSelection.assets(lipsync_video).without_checks(), tags=GPU_QUEUE,
    description="Render one script × avatar pair (gpu pool and queue); check_job measures the result.")
# A job of checks alone has no partitions definition (Dagster infers it from assets): its runs carry their pair's
# partition in their tags (`assets.partitions.partition_tags`), which is where Dagster keeps a run's partition.
check_job = define_asset_job(
    CHECK_JOB, selection=AssetSelection.checks_for_assets(lipsync_video), tags=CPU_QUEUE,
    description="Measure one rendered pair on the delivered file: A/V sync, duration, face coverage.")
campaign_job = define_asset_job(
    CAMPAIGN_JOB, selection=AssetSelection.assets(campaign_manifest, campaign_zip), tags=CPU_QUEUE,
    description="Build one campaign's deliverables: videos, manifest.csv/.parquet, zip.")

JOBS = (script_job, avatar_job, pair_job, check_job, campaign_job)
# The job that runs each stage of the plan (heygem_pipeline.factory.plan.Stage).
JOB_OF_STAGE = {Stage.SCRIPT: script_job.name, Stage.AVATAR: avatar_job.name, Stage.RENDER: pair_job.name,
                Stage.CHECKS: check_job.name, Stage.CAMPAIGN: campaign_job.name}
