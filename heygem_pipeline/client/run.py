"""``heygem run`` / ``heygem demo``: a client of the Dagster instance in ``DAGSTER_HOME``.

It registers the bucket's uploads as partitions, submits the runs the chosen campaigns need to the instance's run
queue, and follows them until every pair is delivered or failed. Dagster does the rest: the daemon dequeues each run,
the Celery run launcher starts it on a warm worker (queue ``gpu`` renders, ``cpu`` does the rest), run monitoring
fails a run whose worker died and run retries launch it again. The one ordering decided here is the simplest:
a run is submitted once the runs it needs have succeeded (a pair's render after its script and avatar; its checks
after the render; a campaign's deliverables after all its pairs). Dagster's own orderings (asset backfills,
automation conditions) wait for daemon ticks of 30 s between stages: measured in the README.

Runs of the same work are recognised by their tags (``heygem/item`` + ``heygem/token``) and created with run ids
derived from them, so two clients on one bucket never run the same work twice: the second follows the first's run.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from assets.names import CAMPAIGN_TAG, SESSION_TAG, TRIGGER_TAG
from heygem_pipeline.client.report import FactoryReport, RunOutcome, build_report
from heygem_pipeline.errors import HeygemError, NotInBucketError
from heygem_pipeline.factory.bucket import Bucket
from heygem_pipeline.factory.campaigns import Campaign, MediaOptions, RenderOptions
from heygem_pipeline.factory.deliver import deliverables_digest
from heygem_pipeline.factory.layout import campaign_record_path, manifest_csv_path, manifest_parquet_path, zip_path
from heygem_pipeline.factory.plan import Stage, WorkItem, plan_items, plan_work
from heygem_pipeline.factory.records import CampaignRecord
from heygem_pipeline.factory.state import FactoryState
from heygem_pipeline.factory.uploads import BucketScan, scan_bucket
from heygem_pipeline.settings import Settings

ProgressFn = Callable[[int, int, str], None]  # (pairs done, pairs total, what just happened)
log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]
POLL_SECONDS = 1.0  # each look at the instance is a few queries; runs last seconds at least
WAITING_NOTE_SECONDS = 15.0  # a progress line at least this often while nothing finishes
RETRY_TAG_GRACE_SECONDS = 2.0  # Dagster tags a failed run "will retry" just after storing its failure


class FactoryError(HeygemError):
    """The run cannot start: unknown campaign, unreadable bucket, no daemon for an instance with its own."""


class ItemState(Enum):
    WAITING = "waiting"  # for the runs it needs
    SUBMITTED = "submitted"  # its run is in the instance: queued, starting, started, or retried
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    BLOCKED = "blocked"  # a run it needs failed: it will not run


@dataclass
class Followed:
    """A planned work item, and the runs this command followed for it."""

    item: WorkItem
    state: ItemState = ItemState.WAITING
    run_id: str = ""
    runs: list[str] = field(default_factory=list)  # every run followed, retries included
    errors: tuple[str, ...] = ()
    submitted_at: float = 0.0
    finished_at: float = 0.0

    @property
    def key(self) -> str:
        return str(self.item.key)

    @property
    def stage(self) -> Stage:
        return self.item.stage

    @property
    def deps(self) -> tuple[str, ...]:
        return self.item.deps

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        return self.item.pairs

    @property
    def finished(self) -> bool:
        return self.state in (ItemState.SUCCEEDED, ItemState.FAILED, ItemState.BLOCKED)


# -------------------------------------------------------------------------------------------------- the client


class Client:
    """Submits the items' runs in dependency order and follows them in the instance until all are finished."""

    def __init__(self, instance, submitter, bucket_url: str, items: dict[str, Followed],
                 session_tags: dict[str, str],
                 deliverables_token: Callable[[str], str], item_tags: Callable[[WorkItem], dict[str, str]],
                 progress: ProgressFn, total_pairs: int, planned_at: float,
                 deliverables_current: Callable[[str, str], bool] | None = None) -> None:
        """``deliverables_current(campaign, token)``: whether that campaign's deliverables in the bucket were built
        from exactly the state ``token`` stands for, and are all there."""
        self.instance, self.submitter, self.bucket_url, self.items = instance, submitter, bucket_url, items
        self.deliverables_current = deliverables_current
        self.planned_at = planned_at  # when the bucket was read (epoch seconds)
        self.session_tags, self.deliverables_token, self.item_tags = session_tags, deliverables_token, item_tags
        self.progress, self.total_pairs = progress, total_pairs
        self.started = time.monotonic()
        self.last_note = self.started
        self.done_at_start = self.pairs_done()
        self.retry_wait: dict[str, float] = {}

    # -- submitting

    def _submit(self, item: Followed) -> None:
        from dagster import DagsterRunStatus, RunsFilter

        from assets.jobs import JOB_OF_STAGE
        from assets.runs import job_partition, run_config, work_tags
        from heygem_pipeline.client.submit import work_run_id

        if item.stage is Stage.CAMPAIGN:
            item.item.token = self.deliverables_token(item.item.key.name)
        token = item.item.token
        tags = work_tags(item.key, token)
        existing = self.instance.get_run_records(RunsFilter(tags=tags))  # newest first; Dagster's retries too
        # Another client or the sensor is doing this work, or did it since this client looked at the bucket: its
        # run is this item's. A run that ended before that did not leave what the bucket needs now: do it again.
        current = [r for r in existing if not r.dagster_run.is_finished or (r.end_time or 0) >= self.planned_at]
        if current:
            self._follow(item, current[0].dagster_run.run_id)
            return
        if (item.stage is Stage.CAMPAIGN and existing and existing[0].dagster_run.status is DagsterRunStatus.SUCCESS
                and self.deliverables_current is not None
                and self.deliverables_current(item.item.key.name, token)):
            # Built from exactly this state by a run that succeeded, and still there: a new run would only write the
            # same files again (and a zip of other dates). The bucket sensor leaves them alone the same way.
            item.state = ItemState.SUCCEEDED
            self._finished(item, "up to date")
            return
        run_id = work_run_id(item.key, token, attempt=len(existing))
        self.submitter.submit(JOB_OF_STAGE[item.stage], job_partition(item.item),
                              run_config(self.bucket_url, item.item.options),
                              {**tags, **self.session_tags, **self.item_tags(item.item)}, run_id)
        self._follow(item, run_id)  # created here or, at the same moment, by another client: the same work

    def _follow(self, item: Followed, run_id: str) -> None:
        item.state, item.run_id, item.submitted_at = ItemState.SUBMITTED, run_id, time.monotonic()
        item.runs.append(run_id)

    def _submit_ready(self) -> None:
        for item in self.items.values():
            if item.state is not ItemState.WAITING:
                continue
            deps = [self.items[d] for d in item.deps]
            if item.stage is not Stage.CAMPAIGN and any(d.state in (ItemState.FAILED, ItemState.BLOCKED)
                                                        for d in deps):
                item.state = ItemState.BLOCKED  # a campaign still delivers its other pairs and the failures
                self._finished(item)
            elif all(d.finished if item.stage is Stage.CAMPAIGN else d.state is ItemState.SUCCEEDED
                     for d in deps):
                self._submit(item)

    # -- following

    def _poll(self) -> None:
        from dagster import DagsterRunStatus, RunsFilter

        followed = {i.run_id: i for i in self.items.values() if i.state is ItemState.SUBMITTED}
        if not followed:
            return
        for record in self.instance.get_run_records(RunsFilter(run_ids=list(followed))):
            run, item = record.dagster_run, followed[record.dagster_run.run_id]
            if not run.is_finished:
                continue
            if run.status is DagsterRunStatus.SUCCESS:
                item.state = ItemState.SUCCEEDED
            elif (retry := self._retry_of(run)) is not None:
                if retry:
                    self._follow(item, retry)
                continue
            else:
                item.state, item.errors = ItemState.FAILED, failure_messages(self.instance, run)
            self._finished(item)

    def _retry_of(self, run) -> str | None:
        """The run Dagster retries ``run`` with; "" while that retry is due but not created; None: no retry."""
        from dagster._core.storage.tags import AUTO_RETRY_RUN_ID_TAG, WILL_RETRY_TAG

        will_retry = run.tags.get(WILL_RETRY_TAG)
        if will_retry is None:  # tagged just after the failure is stored: give it a moment
            first_seen = self.retry_wait.setdefault(run.run_id, time.monotonic())
            return "" if time.monotonic() - first_seen < RETRY_TAG_GRACE_SECONDS else None
        if will_retry != "true":
            return None
        return run.tags.get(AUTO_RETRY_RUN_ID_TAG, "")

    def _finished(self, item: Followed, verdict: str = "") -> None:
        item.finished_at = time.monotonic()
        if not verdict and item.state is ItemState.SUCCEEDED:
            verdict = "done"
        elif not verdict and item.state is ItemState.BLOCKED:
            verdict = "not run: an input failed"
        elif not verdict:
            verdict = "FAILED: " + ("; ".join(item.errors) or "see the run in the Dagster UI")
        seconds = f" ({item.finished_at - item.submitted_at:.1f} s)" if item.submitted_at else ""
        self.progress(self.pairs_done(), self.total_pairs, f"{item.key}: {verdict}{seconds}{self._eta()}")
        self.last_note = time.monotonic()

    def pairs_done(self) -> int:
        open_pairs = {p for i in self.items.values() if not i.finished for p in i.pairs}
        return self.total_pairs - len(open_pairs)

    def _eta(self) -> str:
        """"; ETA 2 min 5 s" from the pace of the pairs finished so far by this command ("" when none or all)."""
        done = self.pairs_done()
        finished_here = done - self.done_at_start
        if not finished_here or done >= self.total_pairs:
            return "" if done >= self.total_pairs else "; ETA after the first pair"
        seconds = round((time.monotonic() - self.started) * (self.total_pairs - done) / finished_here)
        return f"; ETA {seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"; ETA {seconds} s"

    def _note_waiting(self) -> None:
        now = time.monotonic()
        if now - self.last_note < WAITING_NOTE_SECONDS:
            return
        self.last_note = now
        submitted = [i for i in self.items.values() if i.state is ItemState.SUBMITTED]
        running = ", ".join(i.key for i in submitted[:3]) + (" …" if len(submitted) > 3 else "")
        self.progress(self.pairs_done(), self.total_pairs,
                      f"waiting on {len(submitted)} run(s) ({running}){self._eta()}")

    def run(self, check_services: Callable[[], None]) -> None:
        """Until every item is finished; ``check_services`` raises when the services stopped under it."""
        while True:
            self._submit_ready()
            if all(i.finished for i in self.items.values()):
                return
            self._poll()
            self._note_waiting()
            check_services()
            time.sleep(POLL_SECONDS)

    def cancel(self) -> None:
        """Ctrl-C: cancel this session's unfinished runs through the run coordinator (queued ones are dropped,
        started ones interrupted, their partial files removed), and wait a little for them to stop."""
        unfinished = [i.run_id for i in self.items.values() if i.state is ItemState.SUBMITTED]
        for run_id in unfinished:
            run = self.instance.get_run_by_id(run_id)
            if run is not None and not run.is_finished:
                self.instance.run_coordinator.cancel_run(run_id)  # what the UI's Terminate does
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            runs = [self.instance.get_run_by_id(r) for r in unfinished]
            if all(r is None or r.is_finished for r in runs):
                return
            time.sleep(POLL_SECONDS)


def failure_messages(instance, run) -> tuple[str, ...]:
    """One line per failed step (the intake's message for bad input), or the run's own failure."""
    from dagster import DagsterEventType

    messages = []
    kinds = {DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE, DagsterEventType.RUN_CANCELING}
    for event in instance.all_logs(run.run_id, of_type=kinds):
        dagster_event = event.dagster_event
        if dagster_event.is_step_failure:
            data = dagster_event.step_failure_data
            if data.user_failure_data is not None and data.user_failure_data.description:
                messages.append(f"{event.step_key}: {data.user_failure_data.description}")
            elif data.error is not None:
                messages.append(f"{event.step_key}: {data.error.message.strip().splitlines()[-1]}")
        elif not messages and event.message:
            messages.append(event.message.strip().splitlines()[0])
    return tuple(messages) or (f"run {run.run_id} ended {run.status.value}",)


# --------------------------------------------------------------------------------------------- the factory


def _select_campaigns(scan: BucketScan, campaign: str | None) -> list[Campaign]:
    if campaign is None:
        return list(scan.campaigns.values())
    try:
        return [scan.campaign(campaign)]
    except NotInBucketError as error:
        raise FactoryError(str(error)) from error


def _print_progress(done: int, total: int, message: str) -> None:
    print(f"[{done}/{total} pairs] {message}", file=sys.stderr, flush=True)


def _absolute(url: str) -> str:
    """Workers resolve the bucket themselves, from another working directory: a local path must be absolute."""
    return url if "://" in url else str(Path(url).resolve())


def run_factory(bucket: str, campaign: str | None = None, progress: ProgressFn | None = _print_progress
                ) -> FactoryReport:
    """Render and deliver the bucket's campaigns (or only ``campaign``) through Dagster; never raises for a
    failed pair (see the report), only when the run cannot start (``FactoryError``)."""
    from heygem_pipeline.instance.services import session
    from heygem_pipeline.instance.setup import dagster_home, prepare_home

    started = time.perf_counter()
    progress = progress or (lambda done, total, message: None)
    settings = Settings.from_env()
    store = Bucket(_absolute(bucket), work_prefix=settings.work_prefix)
    if store.is_process_local:
        raise FactoryError(f"{bucket}: a memory:// bucket is only visible to this process; Dagster's workers "
                           "need a bucket they can read (a local folder, file://, s3://…)")
    home = prepare_home(dagster_home())
    planned_at = time.time()
    scan = scan_bucket(store)
    selected = _select_campaigns(scan, campaign)
    media = MediaOptions.from_settings(settings)
    defaults = RenderOptions.from_settings(settings, settings.engine)
    # The services start in the background while this process plans and loads Dagster.
    with session(home, REPO_ROOT / "workspace.yaml", automation=False) as services:
        state = FactoryState(store, scan, media, defaults)
        work = plan_work(state, selected, retry_failed=True)
        items = {key: Followed(item) for key, item in plan_items(state, work, selected).items()}
        total = len({(s.script, s.avatar) for states in work.states.values() for s in states})

        def deliverables_token(key: str) -> str:
            now = FactoryState(store, scan_bucket(store, logger=log), media, defaults)
            chosen = now.scan.campaigns[key]
            return deliverables_digest(chosen, now.campaign_pairs(chosen))

        def deliverables_current(key: str, token: str) -> bool:
            record = CampaignRecord.load(store.read_json(campaign_record_path(store, key)))
            return record is not None and record.digest == token and all(
                store.exists(rel) for rel in (manifest_csv_path(key), manifest_parquet_path(key), zip_path(key)))

        def item_tags(item: WorkItem) -> dict[str, str]:
            from assets.runs import item_tags

            # A fresh state: the script's stamp (its length) is written by its intake run, after planning.
            audio_s = FactoryState(store, scan, media, defaults).script_seconds(item.key.script) if item.pairs else None
            return item_tags(item, audio_s, settings.tool_limits)

        session_tags = {TRIGGER_TAG: "cli", SESSION_TAG: uuid.uuid4().hex[:12],
                        **({CAMPAIGN_TAG: selected[0].key} if campaign else {})}
        _follow_work(services, store.url, state.partition_keys(), items, session_tags, deliverables_token, item_tags,
                     progress, total, len(selected), planned_at, deliverables_current)
    from assets.jobs import JOB_OF_STAGE

    runs = [RunOutcome(item.key, JOB_OF_STAGE[item.stage], item.run_id, item.state.value, item.errors)
            for item in items.values() if item.run_id]
    report = build_report(store, selected, media, defaults, str(home), runs, scan.skipped)
    report.seconds = time.perf_counter() - started
    return report


def _follow_work(services, bucket_url: str, partitions: Mapping[str, list[str]], items: dict[str, Followed],
                 session_tags: dict[str, str],
                 deliverables_token: Callable[[str], str], item_tags: Callable[[WorkItem], dict[str, str]],
                 progress: ProgressFn, total: int, campaigns: int, planned_at: float,
                 deliverables_current: Callable[[str, str], bool]) -> None:
    from heygem_pipeline.client.submit import RunSubmitter
    from heygem_pipeline.instance.services import LOCATION_NAME
    from heygem_pipeline.instance.setup import init

    instance = init()
    if not services.embedded:
        _require_daemon(instance)
    for name, keys in partitions.items():
        new = sorted(set(keys) - set(instance.get_dynamic_partitions(name)))
        if new:
            instance.add_dynamic_partitions(name, new)
    with RunSubmitter(instance, services.workspace(), LOCATION_NAME) as submitter:
        client = Client(instance, submitter, bucket_url, items, session_tags, deliverables_token, item_tags, progress,
                        total, planned_at, deliverables_current)
        renders = sum(i.stage is Stage.RENDER for i in items.values())
        progress(client.pairs_done(), total, f"{campaigns} campaign(s), {total} pairs: {len(items)} runs to "
                 f"submit ({renders} renders)")
        try:
            client.run(services.check)
        except KeyboardInterrupt:
            print("interrupted: cancelling this command's Dagster runs…", file=sys.stderr, flush=True)
            client.cancel()
            raise


def _require_daemon(instance) -> None:
    heartbeats = instance.get_daemon_heartbeats()
    if not any(time.time() - beat.timestamp < 120 for beat in heartbeats.values()):
        raise FactoryError(f"no dagster-daemon is running for the instance in {instance.root_directory} (it has its "
                           "own broker): start `dagster-daemon run -w workspace.yaml` and the workers (README, "
                           "Scaling out)")

