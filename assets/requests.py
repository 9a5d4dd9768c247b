"""Requests through the API (``heygem submit``, ``heygem_pipeline.api``): a run of ``request_job`` asks for one
campaign, or one pair of it, to be brought up to date and delivered; its run id is the request's id.

``request_job`` checks the request against the bucket, registers its uploads as partitions and records the plan
(the pairs and where their videos will be delivered). The ``request_sensor`` then requests each stage's runs as
soon as the previous stage has succeeded (every few seconds, not the bucket sensor's settling pace), each tagged
with the request's id, and ends every request with its campaign's deliverables. What failed before the request is
tried again once; what fails during it stays failed, in the manifest.
"""

# No `from __future__ import annotations`: Dagster reads the parameter annotations at definition time.
import datetime
import json
import time

from dagster import (
    Config,
    DagsterRunStatus,
    Failure,
    MetadataValue,
    OpExecutionContext,
    Output,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    job,
    op,
    sensor,
)
from pydantic import Field

from assets.jobs import CPU_QUEUE, JOBS, campaign_job
from assets.names import REQUEST_JOB, REQUEST_TAG, TRIGGER_TAG
from assets.runs import StageRun, campaign_run, in_flight, stage_runs
from assets.sensors import default_status
from heygem_pipeline.errors import NotInBucketError
from heygem_pipeline.factory.bucket import Bucket
from heygem_pipeline.factory.campaigns import Campaign
from heygem_pipeline.factory.deliver import deliverables_digest, output_names
from heygem_pipeline.factory.layout import outputs_dir
from heygem_pipeline.factory.plan import SETTLED_STATUSES, plan_items, plan_work
from heygem_pipeline.factory.state import FactoryState
from heygem_pipeline.factory.uploads import BucketScan, scan_bucket
from heygem_pipeline.settings import Settings
from resources.bucket import BucketResource
from resources.engine import LipSyncEngineResource
from resources.ffmpeg import FFmpegResource

REQUEST_TICK_SECONDS = 5
REQUEST_DAYS = 7  # requests older than this are no longer driven


class RequestConfig(Config):
    campaign: str | None = Field(default=None, description="the campaign (file name, stem or id); default: the "
                                 "bucket's only campaign, or `default`")
    script: str | None = Field(default=None, description="with avatar: only this pair (file name, stem or id)")
    avatar: str | None = Field(default=None, description="with script: only this pair")


def resolve(scan: BucketScan, config: RequestConfig) -> tuple[Campaign, list[tuple[str, str]]]:
    """The request's campaign and the pairs it covers; a ``Failure`` naming what is unknown."""
    try:
        campaign = scan.campaign(config.campaign)
        if config.script or config.avatar:
            return campaign, [scan.pair(campaign, config.script, config.avatar)]
    except NotInBucketError as error:
        raise Failure(description=str(error), allow_retries=False) from error
    return campaign, scan.campaign_pairs(campaign)


@op(description="Check a request against the bucket, register its uploads, and record its plan.")
def campaign_request(context: OpExecutionContext, config: RequestConfig, bucket: BucketResource,
                     ffmpeg: FFmpegResource) -> Output:
    store = bucket.get()
    scan = scan_bucket(store, logger=context.log)
    campaign, pairs = resolve(scan, config)
    for name, keys in FactoryState(store, scan, ffmpeg.media_options()).partition_keys().items():
        new = sorted(set(keys) - set(context.instance.get_dynamic_partitions(name)))
        if new:
            context.instance.add_dynamic_partitions(name, new)
    names = output_names(scan.campaign_pairs(campaign))
    folder = outputs_dir(campaign.key)
    plan = {"campaign": campaign.key, "bucket": store.url, "folder": store.uri(folder), "pairs": [
        {"script": scan.scripts[s].name, "avatar": scan.avatars[a].name, "script_id": s, "avatar_id": a,
         "output": store.uri(f"{folder}/{names[(s, a)]}")} for s, a in pairs]}
    context.log.info(f"request for campaign {campaign.key}: {len(pairs)} pair(s)")
    return Output(None, metadata={"plan": MetadataValue.json(plan), "pairs": len(pairs),
                                  "campaign": campaign.key})


@job(name=REQUEST_JOB, tags=CPU_QUEUE,
     description="A request through the API: one campaign (or one pair of it) brought up to date and delivered.")
def request_job() -> None:
    campaign_request()


def _config(run) -> RequestConfig:
    return RequestConfig(**((run.run_config.get("ops") or {}).get("campaign_request", {}).get("config") or {}))


def _request_runs(store: Bucket, request_id: str, started: float, config: RequestConfig,
                  engine: LipSyncEngineResource, ffmpeg: FFmpegResource, running: set[tuple[str, str]],
                  instance) -> tuple[list[StageRun], bool]:
    """The runs request ``request_id`` needs now, and whether it is finished."""
    scan = scan_bucket(store)
    campaign, pairs = resolve(scan, config)
    state = FactoryState(store, scan, ffmpeg.media_options(), ffmpeg.render_defaults(engine.engine),
                         failures_since=started)
    work = plan_work(state, [campaign], retry_failed=False)
    scope = set(pairs)
    work.renders = [p for p in work.renders if (p.upload_script, p.avatar) in scope]
    work.checks = [p for p in work.checks if (p.upload_script, p.avatar) in scope]
    work.scripts = sorted({p.script for p in work.renders} & set(work.scripts))
    work.avatars = sorted({p.avatar for p in work.renders} & set(work.avatars))
    tags = {TRIGGER_TAG: "request", REQUEST_TAG: request_id}
    runs = stage_runs(state, plan_items(state, work).values(), limits=ffmpeg.tool_limits(),
                      run_key_prefix=(request_id,), tags=tags)
    mine = instance.get_run_records(RunsFilter(tags={REQUEST_TAG: request_id}))
    if any(r.dagster_run.status == DagsterRunStatus.CANCELED for r in mine):
        return [], True  # canceled (the studio's Cancel, Terminate in the UI): no further stage, no deliverables
    busy = any(not r.dagster_run.is_finished for r in mine)
    settled = not runs and not busy and all(s.status in SETTLED_STATUSES for s in work.states[campaign.key]
                                            if (s.upload_script, s.avatar) in scope)
    if not settled:
        return [r for r in runs if (r.job, r.partition) not in running], False
    delivered = [r for r in mine if r.dagster_run.job_name == campaign_job.name]
    if delivered:
        return [], True
    # Every request ends with its campaign's deliverables, as they are now.
    digest = deliverables_digest(campaign, work.states[campaign.key])
    return [campaign_run(store.url, campaign.key, digest, run_key_prefix=(request_id,), tags=tags)], False


def make_request_sensor(settings: Settings) -> SensorDefinition:
    return sensor(name="request_sensor", jobs=list(JOBS), minimum_interval_seconds=REQUEST_TICK_SECONDS,
                  default_status=default_status(settings),
                  description="Drives each request of the API (request_job) stage by stage, until it is delivered.",
                  )(request_sensor)


def request_sensor(context: SensorEvaluationContext, bucket: BucketResource, engine: LipSyncEngineResource,
                   ffmpeg: FFmpegResource) -> SensorResult | SkipReason:
    finished = set(json.loads(context.cursor or "[]"))
    instance = context.instance
    recent = time.time() - REQUEST_DAYS * 86400
    requests = instance.get_run_records(RunsFilter(job_name=REQUEST_JOB, statuses=[DagsterRunStatus.SUCCESS],
                                                   updated_after=datetime.datetime.fromtimestamp(recent, datetime.UTC)))
    open_requests = [r for r in requests if r.dagster_run.run_id not in finished and (r.end_time or 0) > recent]
    if not open_requests:
        return SkipReason("no request in progress")
    running = in_flight(instance)
    run_requests = []
    for record in open_requests:
        run = record.dagster_run
        url = ((run.run_config.get("resources") or {}).get("bucket") or {}).get("config", {}).get("url")
        store = Bucket(url, work_prefix=bucket.work_prefix) if url else bucket.get()  # the configured work/ too
        try:
            wanted, done = _request_runs(store, run.run_id, record.start_time or 0.0, _config(run), engine, ffmpeg,
                                         running, instance)
        except Failure as failure:  # the bucket changed under the request (a campaign file removed)
            context.log.warning(f"request {run.run_id}: {failure.description}")
            wanted, done = [], True
        if done:
            finished.add(run.run_id)
        run_requests += [r.request for r in wanted]
    # Only requests still recent are remembered: the cursor stays small.
    finished &= {r.dagster_run.run_id for r in requests if (r.end_time or 0) > recent}
    return SensorResult(run_requests=run_requests, cursor=json.dumps(sorted(finished)))
