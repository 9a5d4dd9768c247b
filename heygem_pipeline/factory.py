"""The factory run behind ``heygem run``/``heygem demo``, and ``heygem ui``.

``run_factory`` materializes what the chosen campaigns need through Dagster, on the persistent instance in
``DAGSTER_HOME``: the same jobs, assets, checks and resources the UI, the sensor and the schedule run, so every run
shows in the UI afterwards. What is fresh is not recomputed (stamps in the bucket say what each output was made
from). Runs go to a small pool of worker processes: each keeps Dagster, the definitions and the loaded engine for
its lifetime, renders take turns (the ``gpu`` pool has one slot, and the scheduler here never queues a second
render behind it, which would only busy-wait), and preparation and quality checks run beside the render.
"""

from __future__ import annotations

import atexit
import concurrent.futures as futures
import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heygem_pipeline.campaigns import (
    DELIVERABLE_STATUSES,
    OK,
    Bucket,
    BucketScan,
    Campaign,
    FactoryState,
    MediaOptions,
    PairState,
    RenderOptions,
    Skipped,
    outputs_dir,
    plan_work,
    scan_bucket,
)
from heygem_pipeline.config import Settings
from heygem_pipeline.errors import HeygemError

ProgressFn = Callable[[int, int, str], None]  # (pairs done, pairs total, what just happened)
REPO_ROOT = Path(__file__).resolve().parents[1]
QUIET_LOGGERS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


class FactoryError(HeygemError):
    """The run cannot start: unknown campaign, unreadable bucket."""


# ------------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class RunSpec:
    """One Dagster run to execute: a job, a partition, and which part of the pair job (render or checks).

    Plain data, so the parent process plans runs without importing Dagster; the worker builds the run config.
    """

    job: str
    partition: str  # for pairs: "script|avatar" in this order (see `_partition_key`)
    bucket_url: str
    tags: dict[str, str]
    part: str = "all"  # "all", "render" (the asset alone) or "checks" (the checks alone)
    render: RenderOptions | None = None  # render runs: the campaign's options


@dataclass(frozen=True)
class RunOutcome:
    spec: RunSpec
    run_id: str
    success: bool
    errors: tuple[str, ...]
    seconds: float


@dataclass(frozen=True)
class PairOutcome:
    campaign: str
    script: str  # original file names
    avatar: str
    status: str
    output: str  # the delivered video's address, when there is one
    error: str
    duration_s: float | None = None
    sync_offset_frames: int | None = None
    checks_passed: bool | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass(frozen=True)
class CampaignOutcome:
    campaign: str
    folder: str
    manifest_csv: str
    manifest_parquet: str
    zip: str
    built: bool
    error: str = ""


@dataclass
class FactoryReport:
    bucket: str
    dagster_home: str
    campaigns: list[CampaignOutcome] = field(default_factory=list)
    pairs: list[PairOutcome] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    runs: list[RunOutcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failures(self) -> list[PairOutcome]:
        return [pair for pair in self.pairs if not pair.ok]

    @property
    def ok(self) -> bool:
        return not self.failures and all(c.built for c in self.campaigns)

    def summary_table(self) -> str:
        header = ("campaign", "script", "avatar", "status", "seconds", "sync", "checks")
        rows = [header]
        for p in self.pairs:
            rows.append((p.campaign, p.script, p.avatar, p.status,
                         "" if p.duration_s is None else f"{p.duration_s:.1f}",
                         "" if p.sync_offset_frames is None else f"{p.sync_offset_frames:+d}",
                         {True: "passed", False: "FAILED", None: "-"}[p.checks_passed]))
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
        lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def failure_lines(self) -> list[str]:
        lines = [f"{p.campaign}: {p.script} × {p.avatar}: {p.status}: {p.error or 'no reason recorded'}"
                 for p in self.failures]
        lines += [f"{c.campaign}: deliverables not built: {c.error}" for c in self.campaigns if not c.built]
        return lines


# -------------------------------------------------------------------------------------------- run workers

_WORKER: dict[str, Any] = {}


def _worker_init(dagster_home: str, niceness: int, ffmpeg_threads: int | None) -> None:
    os.environ["DAGSTER_HOME"] = dagster_home
    if ffmpeg_threads and not os.environ.get("HEYGEM_FFMPEG_THREADS"):  # the user's own setting wins
        os.environ["HEYGEM_FFMPEG_THREADS"] = str(ffmpeg_threads)
    if niceness:
        os.nice(niceness)
    # A worker interrupted by Ctrl-C would print a traceback per run; the parent handles the interrupt.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from heygem_pipeline.faces import filter_native_stderr

    _WORKER["stderr_done"] = filter_native_stderr()  # MediaPipe's start-up chatter would mix into the progress
    # Registered first, so it runs last: once every other exit handler has run, leave without the interpreter's
    # teardown of Dagster's and MediaPipe's modules (about a second per worker, at the end of every `heygem run`).
    # Nothing is in flight by then: the runs are finished and their events stored.
    atexit.register(_exit_now)


def _exit_now() -> None:
    sys.stdout.flush()
    _WORKER["stderr_done"]()
    os._exit(0)


def warm_up(open_instance: bool = False) -> None:
    """Load Dagster, the definitions and the media stack (OpenCV, SciPy; MediaPipe loads with the first face
    tracker) once, while the parent is still scanning the bucket; with ``open_instance`` (an instance that exists
    already), open it too, beside the worker that registers the partitions instead of after it."""
    from heygem_pipeline import quality  # noqa: F401 - imported for its side effect: the media stack loaded
    from heygem_pipeline.definitions import defs

    _WORKER.setdefault("defs", defs)
    if open_instance:
        _instance()


def _instance():
    if "instance" not in _WORKER:
        from dagster import DagsterInstance

        _WORKER["instance"] = DagsterInstance.get()
    return _WORKER["instance"]


def prepare_instance(partitions: dict[str, list[str]]) -> str:
    """Open (creating if needed) the instance in ``DAGSTER_HOME``, limit the ``gpu`` pool to one slot, and register
    the dynamic partitions the bucket has (``{"script": [...], "avatar": [...], "campaign": [...]}``) that the
    instance lacks. Returns the instance's folder. Runs in a worker, so the parent never imports Dagster."""
    from heygem_pipeline.instance import init

    instance = _WORKER["instance"] = init(instance=_WORKER.get("instance"))
    for name, keys in partitions.items():
        new = sorted(set(keys) - set(instance.get_dynamic_partitions(name)))
        if new:
            instance.add_dynamic_partitions(name, new)
    return str(instance.root_directory)


def _partition_key(spec: RunSpec):
    from dagster import MultiPartitionKey

    if spec.job == "pair_job":
        script, avatar = spec.partition.split("|")
        return MultiPartitionKey({"script": script, "avatar": avatar})
    return spec.partition


def _failure_messages(result) -> tuple[str, ...]:
    messages = []
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        data = event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            messages.append(f"{event.step_key}: {data.user_failure_data.description}")
        elif data.error is not None:
            messages.append(f"{event.step_key}: {data.error.message.strip().splitlines()[-1]}")
    return tuple(messages)


def execute_run(spec: RunSpec) -> RunOutcome:
    """Execute one run of the code location's job in this process, on the instance in ``DAGSTER_HOME``."""
    from dagster import AssetKey

    from assets.jobs import run_config  # the same run config the sensor and the schedule send

    started = time.perf_counter()
    if "defs" not in _WORKER:
        warm_up()
    defs, instance = _WORKER["defs"], _instance()
    job = defs.resolve_job_def(spec.job)
    if spec.part != "all":
        video = AssetKey("lipsync_video")
        checks = {key for key in job.asset_layer.asset_graph.asset_check_keys if key.asset_key == video}
        job = job.get_subset(asset_selection={video} if spec.part == "render" else set(),
                             asset_check_selection=set() if spec.part == "render" else checks)
    try:
        config = {**run_config(spec.bucket_url, spec.render), **QUIET_LOGGERS}
        result = job.execute_in_process(run_config=config, instance=instance,
                                        partition_key=_partition_key(spec), tags=spec.tags, raise_on_error=False)
    except Exception as error:  # a run that could not even start (bad config, storage error)
        return RunOutcome(spec, "", False, (f"{type(error).__name__}: {error}",), time.perf_counter() - started)
    return RunOutcome(spec, result.run_id, result.success, _failure_messages(result), time.perf_counter() - started)


# ------------------------------------------------------------------------------------------------ planning


@dataclass
class _Task:
    id: str
    spec: RunSpec
    kind: str  # script, avatar, render, checks, campaign
    deps: set[str] = field(default_factory=set)
    pairs: tuple[tuple[str, str], ...] = ()  # pairs this task finishes (render/checks) or depends on
    state: str = "waiting"  # waiting, running, done, failed, blocked
    outcome: RunOutcome | None = None


def _tasks(bucket: Bucket, work, campaigns: list[Campaign], run_tags: dict[str, str]) -> dict[str, _Task]:
    tasks: dict[str, _Task] = {}
    base = bucket.url
    needs_script, needs_avatar = set(work.scripts), set(work.avatars)

    def add(task: _Task) -> None:
        tasks.setdefault(task.id, task)

    # Preparation in the order the renders need it, so the first render can start as early as possible.
    for pair in work.renders:
        if pair.script in needs_script:
            add(_Task(f"script:{pair.script}", RunSpec("script_job", pair.script, base, run_tags), "script"))
        if pair.avatar in needs_avatar:
            add(_Task(f"avatar:{pair.avatar}", RunSpec("avatar_job", pair.avatar, base, run_tags), "avatar"))
    for key in work.scripts:
        add(_Task(f"script:{key}", RunSpec("script_job", key, base, run_tags), "script"))
    for key in work.avatars:
        add(_Task(f"avatar:{key}", RunSpec("avatar_job", key, base, run_tags), "avatar"))
    for pair in work.renders:
        deps = {d for d in (f"script:{pair.script}", f"avatar:{pair.avatar}") if d in tasks}
        partition = f"{pair.script}|{pair.avatar}"
        tags = {**run_tags, "heygem/variant": pair.variant}
        render_id = f"render:{pair.variant}:{partition}"
        add(_Task(render_id, RunSpec("pair_job", partition, base, tags, "render", pair.options), "render", deps,
                  ((pair.script, pair.avatar),)))
        # A checks-only run has no render step, so its config carries no render options.
        add(_Task(f"checks:{pair.variant}:{partition}", RunSpec("pair_job", partition, base, tags, "checks"),
                  "checks", {render_id}, ((pair.script, pair.avatar),)))
    for pair in work.checks:
        partition = f"{pair.script}|{pair.avatar}"
        add(_Task(f"checks:{pair.variant}:{partition}",
                  RunSpec("pair_job", partition, base, run_tags, "checks"), "checks",
                  set(), ((pair.script, pair.avatar),)))
    pair_tasks = [t for t in tasks.values() if t.kind in ("render", "checks")]
    for campaign in campaigns:
        mine = {(s.script, s.avatar) for s in work.states[campaign.key]}
        deps = {t.id for t in pair_tasks if set(t.pairs) & mine}
        add(_Task(f"campaign:{campaign.key}", RunSpec("campaign_job", campaign.key, base, run_tags), "campaign",
                  deps))
    return tasks


def _doomed(tasks: dict[str, _Task], task: _Task) -> bool:
    """A waiting task one of whose inputs failed (directly or further up): it will never run."""
    return task.kind != "campaign" and any(
        tasks[d].state in ("failed", "blocked") or _doomed(tasks, tasks[d]) for d in task.deps)


def _pairs_done(tasks: dict[str, _Task], total: int) -> int:
    unfinished = {pair for t in tasks.values() if t.state == "running" or (t.state == "waiting" and not
                  _doomed(tasks, t)) for pair in t.pairs}
    return total - len(unfinished)


ORDER = {"render": 0, "script": 1, "avatar": 1, "checks": 2, "campaign": 3}
# With this many check runs ready and waiting for the background lane, the render lane takes one before its next
# render: on a CPU-bound machine both lanes then finish at about the same time.
BACKLOG_TO_HELP = 2


def _next_task(tasks: dict[str, _Task], lane: str) -> _Task | None:
    """The next task for a lane. The ``render`` lane renders (one at a time: one GPU), else prepares the avatars
    renders need, else checks once no render is left; the ``background`` lane (lower CPU priority) never renders
    and is the only one to prepare scripts (the Mel code's imports cost ~1.8 s of CPU, paid once, not by both);
    the ``any`` lane (a single worker or inline) does everything, renders first."""
    for task in tasks.values():
        if task.state == "waiting" and _doomed(tasks, task):
            task.state = "blocked"
    ready = [t for t in tasks.values() if t.state == "waiting"
             and all(tasks[d].state in ("done", "failed", "blocked") for d in t.deps)]
    if lane == "background":
        ready = [t for t in ready if t.kind != "render"]
    elif lane == "render":
        ready = [t for t in ready if t.kind != "script"]
        if any(t.kind == "render" and t.state == "running" for t in tasks.values()):
            ready = [t for t in ready if t.kind != "render"]
        checks = [t for t in ready if t.kind == "checks"]
        if len(checks) >= BACKLOG_TO_HELP:  # the background lane is falling behind: help it once
            return checks[0]
        if any(t.kind == "render" and t.state == "waiting" for t in tasks.values()):
            ready = [t for t in ready if t.kind in ("render", "avatar")]
    ready.sort(key=lambda t: ORDER[t.kind])
    return ready[0] if ready else None


def _finish(task: _Task, outcome: RunOutcome, on_finish: Callable[[_Task], None]) -> None:
    task.outcome = outcome
    task.state = "done" if outcome.success else "failed"
    on_finish(task)


def _execute_inline(tasks: dict[str, _Task], on_finish: Callable[[_Task], None]) -> None:
    while (task := _next_task(tasks, "any")) is not None:
        task.state = "running"
        _finish(task, execute_run(task.spec), on_finish)


@contextlib.contextmanager
def _lanes(workers: int, dagster_home: str):
    """One process per lane, each warming up at once. Two workers: a ``render`` lane at normal priority (renders are
    the critical path) and a ``background`` lane at lower priority for preparation, checks and deliverables."""
    from heygem_pipeline.instance import is_created

    context = multiprocessing.get_context("spawn")  # forking a process that holds Dagster's threads is unsafe
    names = ["render", "background"] if workers >= 2 else ["any"]
    # Each lane's ffmpeg processes get the lane's share of the cores: ffmpeg's default (~1.5 threads a core, for a
    # process alone on the machine) would oversubscribe it when both lanes encode or decode at once.
    threads = max(1, (os.cpu_count() or 1) // len(names)) if len(names) > 1 else None
    pools = {name: futures.ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_worker_init,
                                               initargs=(dagster_home, 10 if name == "background" else 0, threads))
             for name in names}
    try:
        opened = is_created(Path(dagster_home))
        for pool in pools.values():
            pool.submit(warm_up, opened)
        yield pools
    except KeyboardInterrupt:
        print("interrupted: letting the runs in progress finish (their state stays right in Dagster)…",
              file=sys.stderr, flush=True)
        raise
    finally:
        for pool in pools.values():
            pool.shutdown(wait=True, cancel_futures=True)


def _execute_all(tasks: dict[str, _Task], pools: dict[str, futures.ProcessPoolExecutor],
                 on_finish: Callable[[_Task], None]) -> None:
    running: dict[futures.Future, tuple[str, _Task]] = {}
    try:
        while True:
            busy = {lane for lane, _ in running.values()}
            for lane, pool in pools.items():
                if lane not in busy and (task := _next_task(tasks, lane)) is not None:
                    future = pool.submit(execute_run, task.spec)
                    task.state = "running"
                    running[future] = (lane, task)
            if not running:
                break
            finished, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
            for future in finished:
                _, task = running.pop(future)
                _finish(task, future.result(), on_finish)  # BrokenProcessPool when a worker died: see below
    except futures.process.BrokenProcessPool as error:
        # A worker died (killed, out of memory, or a script without a __main__ guard re-imported by spawn):
        # the unfinished runs go on in this process rather than being lost.
        print(f"worker processes stopped ({error}); going on in this process", file=sys.stderr)
        for _, task in running.values():
            task.state = "waiting"
        _execute_inline(tasks, on_finish)


# --------------------------------------------------------------------------------------------- the factory


def _select_campaigns(scan: BucketScan, campaign: str | None) -> list[Campaign]:
    if campaign is None:
        return list(scan.campaigns.values())
    for candidate in scan.campaigns.values():
        if campaign in (candidate.key, candidate.source, Path(candidate.source).stem):
            return [candidate]
    available = ", ".join(sorted(scan.campaigns)) or "none"
    raise FactoryError(f"no campaign {campaign!r} in the bucket (campaigns: {available})")


def _print_progress(done: int, total: int, message: str) -> None:
    print(f"[{done}/{total} pairs] {message}", file=sys.stderr, flush=True)


def run_factory(bucket: str, campaign: str | None = None, progress: ProgressFn | None = _print_progress, *,
                workers: int | None = None) -> FactoryReport:
    """Render and deliver the bucket's campaigns (or only ``campaign``) through Dagster; never raises for a
    failed pair (see the report), only when the run cannot start (``FactoryError``).

    ``workers``: run processes (default: 2, or 1 on a single core; 0 runs everything in this process).
    """
    from heygem_pipeline.instance import dagster_home, prepare_home

    started = time.perf_counter()
    progress = progress or (lambda done, total, message: None)
    settings = Settings.from_env()
    store = Bucket(bucket, work_prefix=settings.work_prefix)
    home = str(prepare_home(dagster_home()))
    workers = (min(2, os.cpu_count() or 1) if workers is None else workers)
    if store.is_process_local:  # memory:// is only visible to this process
        workers = 0
    with contextlib.ExitStack() as stack:
        # The workers start loading Dagster and the models at once, while this process scans the bucket.
        pools = stack.enter_context(_lanes(workers, home)) if workers > 0 else {}
        return _run(store, campaign, progress, home, settings, pools, started)


def _run(store: Bucket, campaign: str | None, progress: ProgressFn, home: str, settings: Settings,
         pools: dict[str, futures.ProcessPoolExecutor], started: float) -> FactoryReport:
    scan = scan_bucket(store)
    selected = _select_campaigns(scan, campaign)
    partitions = {"script": list(scan.scripts), "avatar": list(scan.avatars), "campaign": list(scan.campaigns)}
    if pools:
        home = next(iter(pools.values())).submit(prepare_instance, partitions).result()
    else:
        home = prepare_instance(partitions)
    media = MediaOptions(fps=settings.fps, still_seconds=settings.still_seconds, voice=settings.voice)
    defaults = RenderOptions(engine=settings.engine, crf=settings.crf, preset=settings.preset)
    work = plan_work(FactoryState(store, scan, media, defaults), selected, retry_failed=True)
    total = len({(s.script, s.avatar) for states in work.states.values() for s in states})
    tags = {"heygem/trigger": "cli", **({"heygem/campaign": selected[0].key} if campaign else {})}
    tasks = _tasks(store, work, selected, tags)
    progress(_pairs_done(tasks, total), total,
             f"{len(selected)} campaign(s), {total} pairs: {len(work.renders)} to render, "
             f"{len(work.scripts)} scripts and {len(work.avatars)} avatars to prepare")

    def on_finish(task: _Task) -> None:
        outcome = task.outcome
        assert outcome is not None
        verdict = "done" if outcome.success else "FAILED: " + "; ".join(outcome.errors or ("see the run",))
        progress(_pairs_done(tasks, total), total,
                 f"{task.kind} {task.spec.partition}: {verdict} ({outcome.seconds:.1f} s)")

    if pools:
        _execute_all(tasks, pools, on_finish)
    else:
        _execute_inline(tasks, on_finish)
    report = _report(store, scan, selected, tasks, media, defaults, home)
    report.seconds = time.perf_counter() - started
    return report


def _report(store: Bucket, scan: BucketScan, selected: list[Campaign], tasks: dict[str, _Task],
            media: MediaOptions, defaults: RenderOptions, home: str) -> FactoryReport:
    report = FactoryReport(bucket=store.url, dagster_home=home, skipped=list(scan.skipped))
    report.runs = [t.outcome for t in tasks.values() if t.outcome is not None]
    # Read the final state back from the bucket: the manifest and this report tell the same story.
    state = FactoryState(store, scan_bucket(store, logger=_Silent()), media, defaults)
    run_errors = {t.spec.partition: "; ".join(t.outcome.errors) for t in tasks.values()
                  if t.outcome is not None and not t.outcome.success and t.outcome.errors}
    for campaign in selected:
        task = tasks.get(f"campaign:{campaign.key}")
        built = task is not None and task.state == "done"
        folder = outputs_dir(campaign.key)
        report.campaigns.append(CampaignOutcome(
            campaign.key, store.uri(folder), store.uri(f"{folder}/manifest.csv"),
            store.uri(f"{folder}/manifest.parquet"), store.uri(f"{folder}/{campaign.key}.zip"), built,
            "" if built or task is None or task.outcome is None else "; ".join(task.outcome.errors)))
        names = _output_names(state, campaign)
        for pair in state.campaign_pairs(campaign):
            report.pairs.append(_pair_outcome(store, state, pair, names, run_errors))
    return report


def _output_names(state: FactoryState, campaign: Campaign) -> dict[tuple[str, str], str]:
    from heygem_pipeline.campaigns import output_names

    return output_names(state.scan.campaign_pairs(campaign))


def _pair_outcome(store: Bucket, state: FactoryState, pair: PairState, names: dict[tuple[str, str], str],
                  run_errors: dict[str, str]) -> PairOutcome:
    delivered = pair.status in DELIVERABLE_STATUSES
    record, quality = pair.record or {}, pair.quality or {}
    error = pair.reason if pair.status != OK else ""
    if pair.status != OK and not error:
        error = run_errors.get(f"{pair.script}|{pair.avatar}", "")
    return PairOutcome(
        campaign=pair.campaign, script=state.scan.scripts[pair.script].name,
        avatar=state.scan.avatars[pair.avatar].name, status=pair.status,
        output=store.uri(f"{outputs_dir(pair.campaign)}/{names[(pair.script, pair.avatar)]}") if delivered else "",
        error=error, duration_s=record.get("duration_s") if delivered else None,
        sync_offset_frames=quality.get("sync_offset_frames") if delivered else None,
        checks_passed=quality.get("passed") if delivered and quality else None)


class _Silent:
    def info(self, *args: object) -> None:
        pass


# ---------------------------------------------------------------------------------------------- commands


def print_report(report: FactoryReport, stream=None) -> None:
    stream = stream or sys.stdout
    print(report.summary_table(), file=stream)
    print(file=stream)
    for outcome in report.campaigns:
        print(f"campaign {outcome.campaign}: videos in {outcome.folder}", file=stream)
        print(f"  manifest {outcome.manifest_csv} (+ .parquet)", file=stream)
        print(f"  zip      {outcome.zip}", file=stream)
    for skip in report.skipped:
        print(f"skipped {skip.rel}: {skip.reason}", file=stream)
    if report.failures or not report.ok:
        print(f"\n{len(report.failure_lines())} failure(s):", file=stream)
        for line in report.failure_lines():
            print(f"  {line}", file=stream)
    print(f"\n{len(report.pairs)} pairs, {len(report.failures)} not ok, {report.seconds:.1f} s; "
          f"runs are in the Dagster UI (DAGSTER_HOME={report.dagster_home})", file=stream)


def run_command(bucket: str, campaign: str | None = None) -> int:
    """``heygem run``: run, print the summary and failures; exit status 0 only when every pair is ok."""
    try:
        report = run_factory(bucket, campaign)
    except FactoryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_report(report)
    return 0 if report.ok else 1


def demo_main() -> int:
    """``heygem demo``: build the demo bucket (offline), run it, say where everything is and how to see it."""
    from heygem_pipeline.demo import DEMO_BUCKET, build_demo_bucket, describe_bucket

    print(f"building the demo bucket in {DEMO_BUCKET}/ …", file=sys.stderr, flush=True)
    root = build_demo_bucket(DEMO_BUCKET)
    for line in describe_bucket(root):
        print(f"  {line}", file=sys.stderr)
    status = run_command(str(root))
    print("\nOpen the Dagster UI on these runs with `make ui` (or `heygem ui`), then http://127.0.0.1:3000 "
          "(assets: the lineage graph; runs: every step of this demo).")
    return status


def _workspace_file() -> Path:
    workspace = REPO_ROOT / "workspace.yaml"
    if workspace.exists():
        return workspace
    generated = Path(tempfile.mkdtemp(prefix="heygem-ui-")) / "workspace.yaml"
    generated.write_text("load_from:\n  - python_module: heygem_pipeline.definitions\n")
    return generated


def start_ui(host: str = "127.0.0.1", port: int = 3000) -> int:
    """``heygem ui``: ``dagster dev`` (webserver + daemon: sensor, schedule, run queue) on the persistent instance."""
    from heygem_pipeline.instance import init

    home = str(init().root_directory)
    workspace = _workspace_file()
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster) if dagster.exists() else "dagster", "dev", "-w", str(workspace), "-h", host,
               "-p", str(port)]
    print(f"Dagster UI on http://{host}:{port} (DAGSTER_HOME={home}); Ctrl-C stops it.", file=sys.stderr, flush=True)
    # Its own process group, so that stopping it reaches the webserver, the daemon and their code servers.
    process = subprocess.Popen(command, cwd=workspace.parent, env={**os.environ, "DAGSTER_HOME": home},
                               start_new_session=True)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        return process.wait()
    except KeyboardInterrupt:
        os.killpg(process.pid, signal.SIGINT)
        try:
            return process.wait(timeout=20)
        except subprocess.TimeoutExpired:  # dagster dev may ignore signals: stop it for good
            os.killpg(process.pid, signal.SIGKILL)
            return process.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # python -m heygem_pipeline.factory BUCKET [CAMPAIGN]
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(run_command(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
