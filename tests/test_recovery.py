"""The embedded default under stress: `heygem run` killed with kill -9 mid-render (with everything it started) and
run again, and two `heygem run`s on one bucket at once. Real processes, services and media throughout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

from heygem_pipeline.demo_media import write_still, write_template_video
from heygem_pipeline.engine.audio.intake import synthesize_speech
from heygem_pipeline.instance.services import RunDir, supervisor_alive
from tests.helpers import REPO
from tests.helpers.servers import alive, descendants, wait_for

pytestmark = pytest.mark.slow

SIZE = {"width": 640, "height": 360}
SENTENCE = "A factory that stops in the middle of a render must pick up where Dagster says it left off. "


def make_bucket(root: Path, sentences: int = 4) -> Path:
    synthesize_speech(SENTENCE * sentences, root / "scripts" / "resume.wav")
    synthesize_speech("Short and sweet.", root / "scripts" / "short.wav")
    write_template_video(root / "avatars" / "presenter.mp4", 2.0, fps=25, **SIZE)
    write_still(root / "avatars" / "portrait.png", **SIZE)
    return root


def heygem_run(bucket: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "heygem_pipeline.cli", "run", "--bucket", str(bucket)], env=env,
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def render_step_running(instance: DagsterInstance) -> str | None:
    for record in instance.get_run_records(RunsFilter(job_name="pair_job", statuses=[DagsterRunStatus.STARTED])):
        if instance.all_logs(record.dagster_run.run_id, of_type=DagsterEventType.STEP_START):
            return record.dagster_run.run_id
    return None


def temporaries(bucket: Path) -> list[Path]:
    return [p for p in bucket.rglob("*") if ".tmp" in p.name]


@pytest.fixture
def home(dagster_home: Path) -> Path:
    from heygem_pipeline.instance.setup import init

    init(dagster_home)
    return dagster_home


def test_kill_9_mid_render_then_run_again(home: Path, tmp_path: Path) -> None:
    bucket = make_bucket(tmp_path / "bucket")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    instance = DagsterInstance.get()
    first = heygem_run(bucket, env)
    killed = wait_for(lambda: render_step_running(instance), 240, "a render in progress")
    wait_for(lambda: temporaries(bucket / "work" / "renders"), 60, "the render's partial output")
    # Power cut: the command, its supervisor, the daemon, the workers, their renders and ffmpeg, all at once.
    tree = descendants(first.pid) | {first.pid}
    for pid in tree:
        os.kill(pid, signal.SIGKILL)
    first.communicate()
    wait_for(lambda: not any(alive(pid) for pid in tree), 30, "the killed processes to be gone")
    assert instance.get_run_by_id(killed).status == DagsterRunStatus.STARTED  # nothing could record the crash

    second = heygem_run(bucket, env)
    output, _ = second.communicate(timeout=400)
    assert second.returncode == 0, output
    dead = instance.get_run_by_id(killed)
    assert dead.status == DagsterRunStatus.FAILURE  # marked failed by run monitoring, then retried by Dagster
    retry = instance.get_run_by_id(dead.tags["dagster/auto_retry_run_id"])
    assert retry.status == DagsterRunStatus.SUCCESS
    assert not [r for r in instance.get_run_records() if not r.dagster_run.is_finished]
    info = instance.event_log_storage.get_concurrency_info("gpu")
    assert info.slot_count == 1 and not info.claimed_slots and not info.pending_steps
    assert temporaries(bucket) == []  # the killed render's partial file is gone too
    assert output.count(" ok ") == 4, output
    # Nothing the second run started is left running.
    assert not supervisor_alive(RunDir(home))


def test_two_runs_on_one_bucket_share_the_work(home: Path, tmp_path: Path) -> None:
    bucket = make_bucket(tmp_path / "bucket", sentences=1)
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    instance = DagsterInstance.get()
    first = heygem_run(bucket, env)
    wait_for(lambda: instance.get_run_records(RunsFilter(tags={"heygem/trigger": "cli"})), 120, "the first run")
    second = heygem_run(bucket, env)
    outputs = [process.communicate(timeout=400)[0] for process in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs
    for output in outputs:
        assert output.count(" ok ") == 4 and "4 pairs, 0 not ok" in output, output

    def materialized(asset: str) -> list[str]:
        records = instance.fetch_materializations(AssetRecordsFilter(asset_key=AssetKey(asset)), limit=100).records
        return sorted(r.partition_key for r in records)

    assert materialized("script_features") == ["resume", "short"]  # each voice analysed once
    assert materialized("face_track") == ["portrait", "presenter"]  # each face tracked once
    assert materialized("lipsync_video") == sorted(f"{a}|{s}" for a in ("portrait", "presenter")
                                                   for s in ("resume", "short"))  # each pair rendered once
    assert len(materialized("campaign_zip")) == 1
    runs = instance.get_run_records(RunsFilter(tags={"heygem/trigger": "cli"}))
    work = [(r.dagster_run.tags["heygem/item"], r.dagster_run.tags["heygem/token"]) for r in runs]
    assert len(work) == len(set(work)) == 13  # 2 scripts, 2 avatars, 4 renders, 4 checks, 1 campaign
