"""Work items (``heygem_pipeline.factory.plan``) as Dagster runs: the one place that makes their run requests, tags,
run keys, run config and runtime limits, for the bucket sensor, the request sensor, the schedule and ``heygem run``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dagster import (
    MAX_RUNTIME_SECONDS_TAG,
    DagsterInstance,
    DagsterRunStatus,
    MultiPartitionKey,
    RunRequest,
    RunsFilter,
)

from assets.jobs import JOB_OF_STAGE
from assets.names import ITEM_TAG, TOKEN_TAG, VARIANT_TAG
from assets.partitions import pair_partition_key
from heygem_pipeline.engine.lipsync.registry import RENDER_SLOWDOWN
from heygem_pipeline.factory.campaigns import RenderOptions
from heygem_pipeline.factory.plan import ItemKey, Stage, WorkItem
from heygem_pipeline.factory.state import FactoryState
from heygem_pipeline.settings import ToolLimits

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
    """``item``: what the run does (an item key); ``token``: the inputs it does it for."""
    return {ITEM_TAG: item, TOKEN_TAG: digest(token)}


def runtime_limit_tags(audio_s: float | None, limits: ToolLimits) -> dict[str, str]:
    """The maximum runtime of a run over a voice this long (a render or its checks): run monitoring stops it past
    that, so a hung run frees its queue and its `gpu` slot. Other runs have dagster.yaml's default limit."""
    return {MAX_RUNTIME_SECONDS_TAG: str(limits.run_seconds(audio_s))}


def item_tags(item: WorkItem, audio_s: float | None, limits: ToolLimits) -> dict[str, str]:
    """A render's or check's own tags: its variant, and a maximum runtime that grows with its voice."""
    if item.stage not in (Stage.RENDER, Stage.CHECKS):
        return {}  # dagster.yaml's default limit
    if item.stage is Stage.RENDER and item.options is not None and audio_s is not None:
        audio_s *= RENDER_SLOWDOWN.get(item.options.engine, 1.0)  # a slow engine's render may take that much longer
    return {VARIANT_TAG: item.key.variant, **runtime_limit_tags(audio_s, limits)}


def job_partition(item: WorkItem) -> str | MultiPartitionKey:
    return pair_partition_key(*item.pairs[0]) if item.pairs else item.key.name


def default_run_key_parts(item: WorkItem) -> tuple[str, ...]:
    key = item.key
    if item.stage is Stage.RENDER:
        return ("pair", key.variant, str(job_partition(item)))
    if item.stage is Stage.CHECKS:
        return ("checks", key.variant, str(job_partition(item)), item.render_id)
    return (key.stage.value, key.name)


@dataclass(frozen=True)
class StageRun:
    """A run some campaign needs now, and the work it does (to recognise it among runs in flight)."""

    item: str  # heygem/item
    token: str  # the inputs it is for
    job: str
    partition: str  # as Dagster writes it in the run's dagster/partition tag
    request: RunRequest


def to_run_request(item: WorkItem, bucket_url: str, *, limits: ToolLimits,
                   run_key_parts: tuple[str, ...] | None = None, run_key_text: str | None = None,
                   tags: Mapping[str, str] | None = None, audio_s: float | None = None) -> StageRun:
    """The run request of one item, with its work tags (`heygem run` gives its runs the same ones). Its run key is
    ``run_key_parts`` (default: the stage and partition) plus a digest of the item's token, or ``run_key_text``."""
    job, partition = JOB_OF_STAGE[item.stage], job_partition(item)
    run_tags = {**(tags or {}), **item_tags(item, audio_s, limits), **work_tags(str(item.key), item.token)}
    partition_key: str | MultiPartitionKey | None = partition
    if item.stage is Stage.CHECKS:  # checks carry their partition as a tag (see assets.jobs.check_job)
        partition_key, run_tags = None, {**run_tags, "dagster/partition": str(partition)}
    key = run_key_text or run_key(*(run_key_parts or default_run_key_parts(item)), item.token)
    return StageRun(str(item.key), item.token, job, str(partition), RunRequest(
        job_name=job, partition_key=partition_key, run_key=key,
        run_config=run_config(bucket_url, item.options), tags=run_tags))


def stage_runs(state: FactoryState, items: Iterable[WorkItem], *, limits: ToolLimits,
               run_key_prefix: tuple[str, ...] = (), tags: Mapping[str, str] | None = None) -> list[StageRun]:
    """The run requests of the items that can run now (the sensors request later stages on later ticks);
    ``limits``: the tool limits the runs' maximum runtimes follow (the ffmpeg resource's)."""
    url = state.bucket.url
    return [to_run_request(item, url, limits=limits, run_key_parts=(*run_key_prefix, *default_run_key_parts(item)),
                           tags=tags, audio_s=state.script_seconds(item.key.script) if item.pairs else None)
            for item in items if item.runnable_now]


def campaign_run(bucket_url: str, campaign: str, digest_text: str, *, run_key_prefix: tuple[str, ...] = (),
                 tags: Mapping[str, str] | None = None) -> StageRun:
    """A campaign's deliverables, for the inputs that ``digest_text`` (``deliverables_digest``) describes."""
    item = WorkItem(ItemKey(Stage.CAMPAIGN, campaign), digest_text)
    # Deliverables run under dagster.yaml's default limit: the tool limits play no part in their tags.
    return to_run_request(item, bucket_url, limits=ToolLimits(), run_key_parts=(*run_key_prefix, "campaign", campaign),
                          tags=tags)


def in_flight(instance: DagsterInstance) -> set[tuple[str, str]]:
    """(job name, partition key) of every queued or running run, so nothing is requested twice."""
    records = instance.get_run_records(RunsFilter(statuses=NOT_FINISHED), limit=10_000)
    return {(r.dagster_run.job_name, r.dagster_run.tags.get("dagster/partition", "")) for r in records}
