"""One GPU: two runs started at the same time by separate processes never infer at once (the ``gpu`` pool).

Queues and workers aside, the pool is what keeps two hosts from rendering on one GPU together: here two processes
(as two run workers on two hosts would) execute a render run each, at the same moment, on one persistent instance
(a temporary DAGSTER_HOME set up as ``make setup`` does). The proof is read back from the event log: the runs were
alive together, their render steps were not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance

from heygem_pipeline.demo_media import write_still, write_template_video
from heygem_pipeline.engine.audio.intake import synthesize_speech

pytestmark = pytest.mark.slow

SIZE = {"width": 640, "height": 360}
RENDER_ONE = """
import json, sys
from dagster import DagsterInstance
from assets.runs import run_config
from assets.partitions import pair_partition_key
from heygem_pipeline.factory.campaigns import RenderOptions
from heygem_pipeline.definitions import defs
script, avatar = sys.argv[1].split("|")
result = defs.resolve_job_def("pair_job").execute_in_process(
    run_config=run_config(sys.argv[2], RenderOptions()), partition_key=pair_partition_key(script, avatar),
    instance=DagsterInstance.get(), tags={"test": "concurrency"}, raise_on_error=False)
print(json.dumps({"run_id": result.run_id, "success": result.success}))
"""


def step_window(instance: DagsterInstance, run_id: str, step: str) -> tuple[float, float]:
    events = instance.all_logs(run_id, of_type={DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS})
    start = min(e.timestamp for e in events if e.step_key == step
                and e.dagster_event_type == DagsterEventType.STEP_START)
    end = max(e.timestamp for e in events if e.step_key == step
              and e.dagster_event_type == DagsterEventType.STEP_SUCCESS)
    return start, end


def test_two_runs_never_infer_at_once(tmp_path: Path, dagster_home: Path) -> None:
    from heygem_pipeline.instance.setup import init

    instance = init()  # creates the schema once, before two processes race for it, and sets gpu = 1
    assert {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()} == {"gpu": 1}
    bucket = tmp_path / "bucket"
    synthesize_speech("One GPU serves every run, one inference step at a time, in the order they asked.",
                      bucket / "scripts" / "talk.wav")
    write_template_video(bucket / "avatars" / "presenter.mp4", 1.0, fps=25, **SIZE)
    write_still(bucket / "avatars" / "portrait.png", **SIZE)

    from assets.runs import run_config
    from heygem_pipeline.definitions import defs

    instance.add_dynamic_partitions("script", ["talk"])
    instance.add_dynamic_partitions("avatar", ["portrait", "presenter"])
    for job, key in (("script_job", "talk"), ("avatar_job", "presenter"), ("avatar_job", "portrait")):
        assert defs.resolve_job_def(job).execute_in_process(
            run_config=run_config(str(bucket)), instance=instance, partition_key=key).success

    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    processes = [subprocess.Popen([sys.executable, "-c", RENDER_ONE, f"talk|{avatar}", str(bucket)], env=env,
                                  cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
                 for avatar in ("presenter", "portrait")]
    outcomes = []
    for process in processes:
        stdout, _ = process.communicate(timeout=240)
        assert process.returncode == 0
        outcomes.append(json.loads(stdout.strip().splitlines()[-1]))
    assert all(o["success"] for o in outcomes), outcomes

    runs = [instance.get_run_stats(o["run_id"]) for o in outcomes]
    assert max(r.start_time for r in runs) < min(r.end_time for r in runs), "the two runs were not concurrent"
    (a_start, a_end), (b_start, b_end) = (step_window(instance, o["run_id"], "lipsync_video") for o in outcomes)
    assert a_end <= b_start or b_end <= a_start, "two inference steps overlapped"
