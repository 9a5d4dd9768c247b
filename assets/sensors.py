"""The bucket sensor: new or edited uploads become partitions and runs, stage after stage, until delivered.

Each tick lists the bucket, registers new scripts/avatars/campaigns as dynamic partitions and requests, for every
campaign, whatever its pairs still need: script and avatar preparation first, the pair renders once both inputs
are prepared (a later tick), the campaign deliverables once every pair has settled. The cursor remembers what each
file looked like (an upload whose size or time still changes between ticks is not touched) and which work was
requested for which input version, so a tick with nothing new skips and an edited file is processed again.
"""

# No `from __future__ import annotations`: Dagster reads the parameter annotations at definition time.
import json
from dataclasses import dataclass, field

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from assets.jobs import JOBS
from assets.names import TRIGGER_TAG
from assets.partitions import (
    avatar_partitions,
    campaign_partitions,
    script_partitions,
)
from assets.runs import StageRun, campaign_run, in_flight, stage_runs
from heygem_pipeline.factory.deliver import deliverables_digest
from heygem_pipeline.factory.layout import (
    AVATARS_PREFIX,
    CAMPAIGNS_PREFIX,
    SCRIPTS_PREFIX,
    TRANSCRIPTS_PREFIX,
    campaign_record_path,
)
from heygem_pipeline.factory.plan import plan_items, plan_work
from heygem_pipeline.factory.records import CampaignRecord
from heygem_pipeline.factory.state import FactoryState
from heygem_pipeline.factory.uploads import scan_bucket, settled_since
from heygem_pipeline.settings import Settings
from resources.bucket import BucketResource
from resources.engine import LipSyncEngineResource
from resources.ffmpeg import FFmpegResource

TICK_SECONDS = 30
# A file whose modification time is this old counts as completely uploaded on first sight; a newer one must look
# the same on two ticks in a row.
SETTLE_SECONDS = 60.0


def default_status(settings: Settings) -> DefaultSensorStatus:
    """Off in services that `heygem run` starts for itself (HEYGEM_AUTOMATION=off); the UI can still turn it on."""
    return DefaultSensorStatus.RUNNING if settings.automation else DefaultSensorStatus.STOPPED


@dataclass
class BucketCursor:
    seen: dict[str, str] = field(default_factory=dict)  # bucket path -> "size:version" at the last tick
    requested: dict[str, str] = field(default_factory=dict)  # work item -> input token it was requested for

    @classmethod
    def parse(cls, text: str | None) -> "BucketCursor":
        if not text:
            return cls()
        data = json.loads(text)
        return cls(seen=dict(data.get("seen", {})), requested=dict(data.get("requested", {})))

    def dumps(self) -> str:
        return json.dumps({"seen": self.seen, "requested": self.requested}, sort_keys=True)


def make_bucket_sensor(settings: Settings) -> SensorDefinition:
    return sensor(name="bucket_sensor", jobs=list(JOBS), minimum_interval_seconds=TICK_SECONDS,
                  default_status=default_status(settings),
                  description="Registers uploads as partitions and requests the runs every campaign still needs.",
                  )(bucket_sensor)


def bucket_sensor(context: SensorEvaluationContext, bucket: BucketResource, engine: LipSyncEngineResource,
                  ffmpeg: FFmpegResource) -> SensorResult | SkipReason:
    cursor = BucketCursor.parse(context.cursor)
    store = bucket.get()
    listing = [e for prefix in (SCRIPTS_PREFIX, AVATARS_PREFIX, TRANSCRIPTS_PREFIX, CAMPAIGNS_PREFIX)
               for e in store.list_files(prefix)]
    scan = scan_bucket(store, settled=settled_since(cursor.seen, settle_seconds=SETTLE_SECONDS), logger=context.log)
    cursor.seen = {entry.rel: entry.fingerprint for entry in listing}

    instance = context.instance
    state = FactoryState(store, scan, ffmpeg.media_options(), ffmpeg.render_defaults(engine.engine))
    adds = []
    for definition in (script_partitions, avatar_partitions, campaign_partitions):
        new = sorted(set(state.partition_keys()[definition.name]) - set(instance.get_dynamic_partitions(
            definition.name)))
        if new:
            context.log.info(f"new {definition.name} partitions: {', '.join(new)}")
            adds.append(definition.build_add_request(new))

    work = plan_work(state, scan.campaigns.values(), retry_failed=False)
    running = in_flight(instance)
    requests: list[RunRequest] = []
    requested: dict[str, str] = {}

    def want(run: StageRun) -> None:
        requested[run.item] = run.token
        if cursor.requested.get(run.item) == run.token or (run.job, run.partition) in running:
            return  # already asked for this exact input version (Dagster also dedupes the run key)
        requests.append(run.request)

    for run in stage_runs(state, plan_items(state, work).values(), limits=ffmpeg.tool_limits(),
                          tags={TRIGGER_TAG: "sensor"}):
        want(run)
    for key, campaign in work.campaigns.items():
        if not work.states[key] or not work.settled(key) or any(campaign.mentions(e) for e in scan.unsettled):
            continue  # deliverables wait for pairs, until every pair and every upload still arriving has settled
        digest = deliverables_digest(campaign, work.states[key])
        built = CampaignRecord.load(store.read_json(campaign_record_path(store, key)))
        if built is not None and built.digest == digest:
            requested[f"campaign:{key}"] = digest
            continue
        want(campaign_run(store.url, key, digest, tags={TRIGGER_TAG: "sensor"}))

    cursor.requested = requested  # work no longer wanted is forgotten, so it is requested again if it returns
    if not requests and not adds:
        return SensorResult(skip_reason=SkipReason("nothing new in the bucket"), cursor=cursor.dumps())
    context.log.info(f"requesting {len(requests)} runs")
    return SensorResult(run_requests=requests, dynamic_partitions_requests=adds, cursor=cursor.dumps())
