"""The nightly schedule: every pair of every campaign that is missing or stale is rendered again.

Stale means its inputs changed, or the engine, render options or render code version did. Failed pairs are
retried too (the sensor only retries after the file changes). Each night's requests carry that date in their run
keys. The deliverables of every campaign are rebuilt by the bucket sensor as soon as its pairs have settled.
"""

# No `from __future__ import annotations`: Dagster reads the parameter annotations at definition time.
from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from assets.jobs import in_flight, pair_job, run_config, runtime_limit_tags, work_tags
from assets.partitions import pair_partition_key
from heygem_pipeline.factory.layout import pair_key_text
from heygem_pipeline.factory.plan import plan_work
from heygem_pipeline.factory.state import FactoryState
from heygem_pipeline.factory.uploads import scan_bucket, settled_since
from heygem_pipeline.settings import Settings
from resources.bucket import BucketResource
from resources.engine import LipSyncEngineResource
from resources.ffmpeg import FFmpegResource

NIGHTLY_CRON = "0 2 * * *"
# Off in services that `heygem run` starts for itself (HEYGEM_AUTOMATION=off); the UI can still turn it on.
DEFAULT_STATUS = DefaultScheduleStatus.RUNNING if Settings.from_env().automation else DefaultScheduleStatus.STOPPED
SETTLE_SECONDS = 60.0


@schedule(name="nightly_campaigns", cron_schedule=NIGHTLY_CRON, job=pair_job,
          execution_timezone=Settings.from_env().timezone,
          default_status=DEFAULT_STATUS,
          description="02:00: render every missing or stale pair of every campaign (HEYGEM_TIMEZONE sets the zone).")
def nightly_campaigns(context: ScheduleEvaluationContext, bucket: BucketResource, engine: LipSyncEngineResource,
                      ffmpeg: FFmpegResource) -> list[RunRequest] | SkipReason:
    store = bucket.get()
    scan = scan_bucket(store, settled=settled_since({}, settle_seconds=SETTLE_SECONDS), logger=context.log)
    state = FactoryState(store, scan, ffmpeg.media_options(), ffmpeg.render_defaults(engine.engine))
    work = plan_work(state, scan.campaigns.values(), retry_failed=True)
    running = in_flight(context.instance)
    night = context.scheduled_execution_time.strftime("%Y-%m-%d")
    requests = []
    for pair in work.renders:
        if not pair.inputs_ready:
            context.log.info(f"{pair.script} × {pair.avatar}: inputs not prepared yet (the bucket sensor does that)")
            continue
        if ("pair_job", pair_key_text(pair.script, pair.avatar)) in running:
            continue
        key = pair_partition_key(pair.script, pair.avatar)
        requests.append(RunRequest(
            partition_key=key, run_key=f"{night}:{pair.variant}:{key}", run_config=run_config(store.url, pair.options),
            tags={"heygem/trigger": "nightly", "heygem/variant": pair.variant,
                  "heygem/reason": pair.reason or pair.status,
                  **work_tags(f"render:{pair.variant}:{pair.script}|{pair.avatar}", pair.render_token),
                  **runtime_limit_tags(state.script_seconds(pair.script))}))
    if not requests:
        return SkipReason(f"every pair of {len(work.campaigns)} campaign(s) is up to date")
    context.log.info(f"{len(requests)} pairs to render tonight")
    return requests
