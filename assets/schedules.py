"""The nightly schedule: every pair of every campaign that is missing or stale is rendered again.

Stale means its inputs changed, or the engine, render options or render code version did. Failed pairs are
retried too (the sensor only retries after the file changes). Each night's requests carry that date in their run
keys. The deliverables of every campaign are rebuilt by the bucket sensor as soon as its pairs have settled.
"""

# No `from __future__ import annotations`: Dagster reads the parameter annotations at definition time.
from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from assets.jobs import pair_job
from assets.names import REASON_TAG, TRIGGER_TAG
from assets.runs import in_flight, job_partition, to_run_request
from heygem_pipeline.factory.layout import pair_key_text
from heygem_pipeline.factory.plan import Stage, plan_items, plan_work
from heygem_pipeline.factory.state import FactoryState
from heygem_pipeline.factory.uploads import scan_bucket, settled_since
from heygem_pipeline.settings import Settings
from resources.bucket import BucketResource
from resources.engine import LipSyncEngineResource
from resources.ffmpeg import FFmpegResource

NIGHTLY_CRON = "0 2 * * *"
SETTLE_SECONDS = 60.0


def make_nightly_schedule(settings: Settings) -> ScheduleDefinition:
    """Off in services that `heygem run` starts for itself (HEYGEM_AUTOMATION=off); the UI can still turn it on."""
    status = DefaultScheduleStatus.RUNNING if settings.automation else DefaultScheduleStatus.STOPPED
    return schedule(name="nightly_campaigns", cron_schedule=NIGHTLY_CRON, job=pair_job,
                    execution_timezone=settings.timezone, default_status=status,
                    description="02:00: render every missing or stale pair of every campaign (HEYGEM_TIMEZONE sets "
                    "the zone).")(nightly_campaigns)


def nightly_campaigns(context: ScheduleEvaluationContext, bucket: BucketResource, engine: LipSyncEngineResource,
                      ffmpeg: FFmpegResource) -> list[RunRequest] | SkipReason:
    store = bucket.get()
    scan = scan_bucket(store, settled=settled_since({}, settle_seconds=SETTLE_SECONDS), logger=context.log)
    state = FactoryState(store, scan, ffmpeg.media_options(), ffmpeg.render_defaults(engine.engine))
    work = plan_work(state, scan.campaigns.values(), retry_failed=True)
    renders = {(pair.script, pair.avatar, pair.variant): pair for pair in work.renders}
    running = in_flight(context.instance)
    night = context.scheduled_execution_time.strftime("%Y-%m-%d")
    requests = []
    for item in plan_items(state, work).values():
        if item.stage is not Stage.RENDER:
            continue
        pair = renders[(item.key.script, item.key.avatar, item.key.variant)]
        if not pair.inputs_ready:
            context.log.info(f"{pair.script} × {pair.avatar}: inputs not prepared yet (the bucket sensor does that)")
            continue
        if (pair_job.name, pair_key_text(pair.script, pair.avatar)) in running:
            continue
        # One run per pair and variant each night: the night is its run key, not the inputs.
        requests.append(to_run_request(
            item, store.url, limits=ffmpeg.tool_limits(), run_key_text=f"{night}:{pair.variant}:{job_partition(item)}",
            tags={TRIGGER_TAG: "nightly", REASON_TAG: pair.reason or pair.status.value},
            audio_s=state.script_seconds(pair.script)).request)
    if not requests:
        return SkipReason(f"every pair of {len(work.campaigns)} campaign(s) is up to date")
    context.log.info(f"{len(requests)} pairs to render tonight")
    return requests
