"""Scale-out on this machine with real servers: a campaign on a PostgreSQL instance with Redis and two Celery
worker "hosts" (separate processes, scratch folders and DAGSTER_HOMEs, the README's deploy/dagster-postgres.yaml on
each), one of which renders (queue gpu). That host is killed with kill -9 in the middle of a render, as a crashed
machine would be: Dagster's run monitoring must notice, run retries launch the render again on the GPU host that
takes over, and the pair is delivered exactly once, with no partial file in outputs/ and a right manifest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

from heygem_pipeline.demo_media import write_still, write_template_video
from heygem_pipeline.engine.audio.intake import synthesize_speech
from tests.helpers import REPO
from tests.helpers.servers import kill_group, postgres_server, redis_server, start_group, wait_for

pytestmark = pytest.mark.slow

SIZE = {"width": 640, "height": 360}
SENTENCE = "Every host takes the work of its own queue, and the renders go to the graphics card. "


def host_home(root: Path, name: str, env: dict[str, str]) -> tuple[Path, dict[str, str]]:
    """A host's own DAGSTER_HOME holding the README's scale-out dagster.yaml, and its environment."""
    home = root / name / "dagster_home"
    home.mkdir(parents=True)
    shutil.copyfile(REPO / "deploy" / "dagster-postgres.yaml", home / "dagster.yaml")
    scratch = root / name / "scratch"
    scratch.mkdir()
    return home, {**env, "DAGSTER_HOME": str(home), "TMPDIR": str(scratch)}


def render_step_running(instance: DagsterInstance) -> str | None:
    for record in instance.get_run_records(RunsFilter(job_name="pair_job", statuses=[DagsterRunStatus.STARTED])):
        run_id = record.dagster_run.run_id
        if instance.all_logs(run_id, of_type=DagsterEventType.STEP_START):
            return run_id
    return None


def test_killed_gpu_host_mid_render_is_retried_and_delivered_once(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = tmp_path / "bucket"
    synthesize_speech(SENTENCE * 5, bucket / "scripts" / "queues.wav")  # ~25 s: a render of several seconds
    write_template_video(bucket / "avatars" / "presenter.mp4", 2.0, fps=25, **SIZE)
    write_still(bucket / "avatars" / "portrait.png", **SIZE)
    (bucket / "campaigns").mkdir()
    (bucket / "campaigns" / "hosts.yaml").write_text("scripts: ['*']\navatars: ['*']\n")

    with postgres_server() as postgres_url, redis_server(tmp_path) as broker_url:
        env = {**os.environ, "HEYGEM_POSTGRES_URL": postgres_url, "HEYGEM_BROKER_URL": broker_url}
        _, client_env = host_home(tmp_path, "client", env)
        subprocess.run([sys.executable, "-m", "heygem_pipeline.instance", "init"], env=client_env, cwd=REPO,
                       check=True)
        for name, value in client_env.items():
            monkeypatch.setenv(name, value)
        instance = DagsterInstance.get()
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"  # no SQLite workaround

        daemon_home, daemon_env = host_home(tmp_path, "daemon", env)
        cpu_home, cpu_env = host_home(tmp_path, "host-a", env)
        gpu_home, gpu_env = host_home(tmp_path, "host-b", env)
        spare_home, spare_env = host_home(tmp_path, "host-c", env)
        worker = [sys.executable, "-m", "heygem_pipeline.cli", "worker"]
        processes = [
            start_group([str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", "workspace.yaml"],
                        daemon_home / "daemon.log", daemon_env, cwd=REPO),
            start_group([*worker, "--queues", "cpu", "--name", "cpu@host-a"], cpu_home / "worker.log", cpu_env),
        ]
        gpu = start_group([*worker, "--queues", "gpu", "--name", "gpu@host-b"], gpu_home / "worker.log", gpu_env)
        processes.append(gpu)
        try:
            wait_for(lambda: instance.get_daemon_heartbeats(), 120, "the daemon's first heartbeat")
            client = subprocess.Popen([sys.executable, "-m", "heygem_pipeline.cli", "run", "--bucket", str(bucket)],
                                      env=client_env, cwd=tmp_path, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
            killed = wait_for(lambda: render_step_running(instance), 240, "a render in progress")
            time.sleep(1.5)
            kill_group(gpu)  # the GPU host dies with its run: no process of it is left to report anything
            processes.append(start_group([*worker, "--queues", "gpu", "--name", "gpu@host-c"],
                                         spare_home / "worker.log", spare_env))
            output, _ = client.communicate(timeout=400)
        finally:
            for process in processes:
                kill_group(process)
        assert client.returncode == 0, output

        # Run monitoring found the dead worker and failed its run; run retries launched the render again.
        dead = instance.get_run_by_id(killed)
        assert dead.status == DagsterRunStatus.FAILURE and dead.tags["dagster/will_retry"] == "true"
        failure = instance.all_logs(killed, of_type=DagsterEventType.RUN_FAILURE)[-1]
        assert "gpu@host-b does not answer" in failure.message
        retry = instance.get_run_by_id(dead.tags["dagster/auto_retry_run_id"])
        assert retry.status == DagsterRunStatus.SUCCESS and retry.tags["dagster/parent_run_id"] == killed
        assert retry.tags["dagster/partition"] == dead.tags["dagster/partition"]

        # Each pair rendered (materialized) exactly once, and delivered once.
        rendered = instance.fetch_materializations(AssetRecordsFilter(asset_key=AssetKey("lipsync_video")),
                                                   limit=100).records
        assert sorted(r.partition_key for r in rendered) == ["portrait|queues", "presenter|queues"]
        outputs = bucket / "outputs" / "hosts"
        assert sorted(p.name for p in outputs.iterdir()) == [
            "hosts.zip", "manifest.csv", "manifest.parquet", "queues__portrait.mp4", "queues__presenter.mp4"]
        manifest = pd.read_csv(outputs / "manifest.csv")
        assert list(manifest.status) == ["ok", "ok"] and manifest.checks_passed.all()
        assert set(manifest.output) == {"queues__portrait.mp4", "queues__presenter.mp4"}
        assert (manifest.sync_offset_frames.abs() <= 1).all()
        info = instance.event_log_storage.get_concurrency_info("gpu")
        assert info.slot_count == 1 and not info.claimed_slots  # the dead run's slot was given back
