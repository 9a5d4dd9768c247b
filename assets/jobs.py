"""Jobs, one per partitioning (Dagster cannot mix them in one run), the queue each runs on, and how runs of them
are requested and recognised."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dagster import (
    MAX_RUNTIME_SECONDS_TAG,
    AssetSelection,
    DagsterInstance,
    DagsterRunStatus,
    MultiPartitionKey,
    RunRequest,
    RunsFilter,
    define_asset_job,
)
from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG

from assets.avatars import avatar_video, face_track
from assets.campaigns import campaign_manifest, campaign_zip
from assets.partitions import pair_partition_key
from assets.scripts import script_intake
from assets.videos import lipsync_video
from heygem_pipeline.factory.campaigns import RenderOptions
from heygem_pipeline.factory.plan import Work
from heygem_pipeline.factory.state import FactoryState, PairState
from heygem_pipeline.settings import ToolLimits

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


def runtime_limit_tags(audio_s: float | None) -> dict[str, str]:
    """The maximum runtime of a run over a voice this long (a render or its checks): run monitoring stops it past
    that, so a hung run frees its queue and its `gpu` slot. Other runs have dagster.yaml's default limit."""
    return {MAX_RUNTIME_SECONDS_TAG: str(ToolLimits.from_env().run_seconds(audio_s))}


@dataclass(frozen=True)
class StageRun:
    """A run some campaign needs now, and the work it does (to recognise it among runs in flight)."""

    item: str  # heygem/item: "render:<variant>:<script>|<avatar>"
    token: str  # the inputs it is for
    job: str
    partition: str  # as Dagster writes it in the run's dagster/partition tag
    request: RunRequest


def stage_run(store_url: str, item: str, token: str, job: str, partition: str | MultiPartitionKey, *,
              run_key_parts: tuple[str, ...], render: RenderOptions | None = None,
              tags: Mapping[str, str] | None = None) -> StageRun:
    """The run request for one item of work, with its work tags (`heygem run` gives its runs the same ones)."""
    run_tags = {**(tags or {}), **work_tags(item, token)}
    if job == check_job.name:  # checks carry their partition as a tag (see check_job)
        partition_key, run_tags = None, {**run_tags, "dagster/partition": str(partition)}
    else:
        partition_key = partition
    return StageRun(item, token, job, str(partition), RunRequest(
        job_name=job, partition_key=partition_key, run_key=run_key(*run_key_parts, token),
        run_config=run_config(store_url, render), tags=run_tags))


def stage_runs(state: FactoryState, work: Work, *, run_key_prefix: tuple[str, ...] = (),
               tags: Mapping[str, str] | None = None) -> list[StageRun]:
    """The runs ``work`` needs now, stage after stage: intake of its scripts and avatars, the renders whose script
    and avatar are prepared, the checks of renders not measured yet. Deliverables are the caller's to request (when
    they are due differs between the bucket sensor and a request)."""
    url, tags = state.bucket.url, dict(tags or {})
    runs = [stage_run(url, f"script:{s}", state.script_token(s), script_job.name, s,
                      run_key_parts=(*run_key_prefix, "script", s), tags=tags) for s in work.scripts]
    runs += [stage_run(url, f"avatar:{a}", state.avatar_token(a), avatar_job.name, a,
                       run_key_parts=(*run_key_prefix, "avatar", a), tags=tags) for a in work.avatars]
    for pair in work.renders:
        if not pair.inputs_ready:
            continue  # later, once its script and avatar are prepared
        key = pair_partition_key(pair.script, pair.avatar)
        runs.append(stage_run(url, f"render:{pair.variant}:{pair.script}|{pair.avatar}", pair.render_token,
                              pair_job.name, key, run_key_parts=(*run_key_prefix, "pair", pair.variant, str(key)),
                              render=pair.options, tags=_pair_tags(state, pair, tags)))
    for pair in work.checks:
        key = pair_partition_key(pair.script, pair.avatar)
        render_id = str((pair.record or {}).get("render_id"))
        runs.append(stage_run(url, f"checks:{pair.variant}:{pair.script}|{pair.avatar}", f"{pair.render_token}|checks",
                              check_job.name, key, tags=_pair_tags(state, pair, tags),
                              run_key_parts=(*run_key_prefix, "checks", pair.variant, str(key), render_id)))
    return runs


def _pair_tags(state: FactoryState, pair: PairState, tags: Mapping[str, str]) -> dict[str, str]:
    """A render's or check's tags: its variant, and a maximum runtime that grows with its voice."""
    return {**tags, "heygem/variant": pair.variant, **runtime_limit_tags(state.script_seconds(pair.script))}


def in_flight(instance: DagsterInstance) -> set[tuple[str, str]]:
    """(job name, partition key) of every queued or running run, so nothing is requested twice."""
    records = instance.get_run_records(RunsFilter(statuses=NOT_FINISHED), limit=10_000)
    return {(r.dagster_run.job_name, r.dagster_run.tags.get("dagster/partition", "")) for r in records}
