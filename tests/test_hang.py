"""No stuck jobs, through Dagster: a render whose encoder hangs (a fake ``ffmpeg`` first on PATH that never reads
its input, for one avatar only) fails with a clear one-line reason within its stall limit, frees the `gpu` slot and
leaves no partial file, while the other pair of the campaign is rendered and delivered. Renders and checks carry a
maximum runtime (Dagster's run monitoring) that grows with the voice's length."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import MAX_RUNTIME_SECONDS_TAG, DagsterInstance, DagsterRunStatus, RunsFilter

from heygem_pipeline.demo_media import write_still
from heygem_pipeline.engine.audio.intake import synthesize_speech
from heygem_pipeline.settings import ToolLimits
from tests.helpers import REPO

pytestmark = pytest.mark.slow

SIZE = {"width": 640, "height": 360}
STALL_SECONDS = 3


@pytest.mark.usefixtures("dagster_home")  # `heygem run` makes its instance there
def test_a_hung_render_fails_alone_within_its_limit(tmp_path: Path) -> None:
    real = shutil.which("ffmpeg")
    tools = tmp_path / "bin"
    tools.mkdir()
    # The encoder of the `stuck` avatar's renders never reads a frame; every other ffmpeg call is the real one.
    (tools / "ffmpeg").write_text(f'#!/bin/sh\ncase "$*" in *renders*stuck*) sleep 1000 ;; esac\nexec {real} "$@"\n')
    (tools / "ffmpeg").chmod(0o755)
    bucket = tmp_path / "bucket"
    synthesize_speech("Nothing waits for ever in this factory, and every hang has its limit.",
                      bucket / "scripts" / "limits.wav")
    synthesize_speech("A shorter one, still.", bucket / "scripts" / "short.wav")
    write_still(bucket / "avatars" / "presenter.png", **SIZE)
    write_still(bucket / "avatars" / "stuck.png", **SIZE)
    env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}", "HEYGEM_STALL_SECONDS": str(STALL_SECONDS)}
    run = subprocess.run([sys.executable, "-m", "heygem_pipeline.cli", "run", "--bucket", str(bucket)], env=env,
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stdout + run.stderr
    failures = [line for line in run.stdout.splitlines() if "× stuck.png" in line and "failed" in line]
    assert len(failures) == 2, run.stdout
    assert all(f"made no progress for {STALL_SECONDS} s" in line and "stopped" in line for line in failures)
    assert all("ffmpeg" in line and "/renders/" in line for line in failures)  # names the tool and the file
    assert run.stdout.count(" ok ") == 2  # the presenter's pairs were delivered

    instance = DagsterInstance.get()
    stuck = instance.get_run_records(RunsFilter(job_name="pair_job", statuses=[DagsterRunStatus.FAILURE]))
    assert {r.dagster_run.tags["dagster/partition"] for r in stuck} == {"stuck|limits", "stuck|short"}
    for record in stuck:
        assert record.end_time - record.start_time < STALL_SECONDS + 30  # its own limit, plus start-up
        assert "dagster/auto_retry_run_id" not in record.dagster_run.tags  # a hang is not retried for ever
    info = instance.event_log_storage.get_concurrency_info("gpu")
    assert not info.claimed_slots and not info.pending_steps
    assert not [p for p in bucket.rglob("*") if ".tmp" in p.name]
    assert sorted(p.name for p in (bucket / "outputs" / "default").glob("*.mp4")) == [
        "limits__presenter.mp4", "short__presenter.mp4"]

    # Every render and check carries a maximum runtime that grows with its voice.
    limits = {}
    for record in instance.get_run_records(RunsFilter(tags={"heygem/trigger": "cli"})):
        run_tags = record.dagster_run.tags
        if record.dagster_run.job_name in ("pair_job", "check_job"):
            limits[run_tags["dagster/partition"].split("|")[1]] = int(run_tags[MAX_RUNTIME_SECONDS_TAG])
        else:
            assert MAX_RUNTIME_SECONDS_TAG not in run_tags  # dagster.yaml's default
    tool_limits = ToolLimits(stall_seconds=STALL_SECONDS)
    assert limits["limits"] > limits["short"] >= tool_limits.run_seconds(0)
