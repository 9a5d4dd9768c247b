"""`heygem ui` runs the webserver with the services its runs need; what a user does on the Runs page works on runs
that `heygem run` submitted: Terminate stops a render and frees the `gpu` slot, and "Re-execute from failure"
reruns a failed pair. The UI's buttons are GraphQL mutations, sent here as the UI sends them. The API
(`heygem_pipeline.api`, `heygem submit`/`status`) submits and follows requests over the same GraphQL endpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

from heygem_pipeline.demo_media import write_still
from heygem_pipeline.engine.audio.intake import synthesize_speech
from heygem_pipeline.instance.services import RunDir, read_state, supervisor_alive
from tests.helpers import REPO, dagster_home_env
from tests.helpers.servers import free_port, wait_for

pytestmark = pytest.mark.slow

SIZE = {"width": 640, "height": 360}


def graphql(url: str, query: str, variables: dict) -> dict:
    request = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": query, "variables": variables})
                                     .encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.loads(response.read())
    assert "errors" not in body, body
    return body["data"]


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    with dagster_home_env(tmp_path_factory.mktemp("dagster_home")) as home:
        yield from _running_ui(home, tmp_path_factory)


def _running_ui(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """`heygem ui` on ``home`` (the DAGSTER_HOME set), until Ctrl-C; it must leave nothing running."""
    # The UI's own sensor watches a bucket of its own, empty: the tests' buckets are driven by what they test.
    env = {**os.environ, "DAGSTER_HOME": str(home), "HEYGEM_BUCKET": str(tmp_path_factory.mktemp("ui-bucket"))}
    port = free_port()
    log = (tmp_path_factory.mktemp("logs") / "ui.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "heygem_pipeline.cli", "ui", "--port", str(port)], env=env,
                               cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def serving() -> bool:
        assert process.poll() is None, Path(log.name).read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(serving, 180, "the webserver")
        wait_for(lambda: read_state(RunDir(home)).get("ready"), 120, "the services")
        yield {"url": url, "home": home, "env": env, "instance": DagsterInstance.get()}
    finally:
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C
        process.wait(timeout=60)
        log.close()
        assert not supervisor_alive(RunDir(home)), "heygem ui left its services running"


def heygem_run(bucket: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "heygem_pipeline.cli", "run", "--bucket", str(bucket)], env=env,
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_heygem_run_uses_the_services_of_the_running_ui(ui: dict, tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    synthesize_speech("Good morning everybody, and welcome to the studio.", bucket / "scripts" / "morning.wav")
    write_still(bucket / "avatars" / "portrait.png", **SIZE)
    supervisor = read_state(RunDir(ui["home"]))["pid"]
    run = heygem_run(bucket, ui["env"])
    output, _ = run.communicate(timeout=300)
    assert run.returncode == 0, output
    state = read_state(RunDir(ui["home"]))
    assert state["pid"] == supervisor and state["ready"]  # the same services, still up for the UI
    runs = ui["instance"].get_run_records(RunsFilter(tags={"heygem/trigger": "cli"}))
    assert len(runs) == 5 and all(r.dagster_run.status == DagsterRunStatus.SUCCESS for r in runs)


def test_terminate_stops_a_render_and_frees_the_gpu_slot(ui: dict, tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    synthesize_speech("A long take that nobody wants any more. " * 30, bucket / "scripts" / "long take.wav")
    write_still(bucket / "avatars" / "portrait.png", **SIZE)
    instance: DagsterInstance = ui["instance"]
    run = heygem_run(bucket, ui["env"])

    def rendering() -> str | None:
        for record in instance.get_run_records(RunsFilter(job_name="pair_job", statuses=[DagsterRunStatus.STARTED])):
            if instance.all_logs(record.dagster_run.run_id, of_type=DagsterEventType.STEP_START):
                return record.dagster_run.run_id
        return None

    run_id = wait_for(rendering, 240, "the render")
    wait_for(lambda: list((bucket / "work" / "renders").rglob("*.tmp*")), 60, "the render's partial output")
    result = graphql(ui["url"], "mutation($id: String!) { terminateRun(runId: $id) { __typename } }", {"id": run_id})
    assert result["terminateRun"]["__typename"] == "TerminateRunSuccess"
    wait_for(lambda: instance.get_run_by_id(run_id).is_finished, 60, "the run to stop")
    assert instance.get_run_by_id(run_id).status == DagsterRunStatus.CANCELED, instance.all_logs(run_id)[-5:]
    info = instance.event_log_storage.get_concurrency_info("gpu")
    assert not info.claimed_slots and not info.pending_steps
    assert not list((bucket / "work" / "renders").rglob("*.tmp*"))  # the partial video went with the render
    output, _ = run.communicate(timeout=300)
    assert run.returncode == 1 and "long_take" in output and "failed" in output.lower(), output


def test_reexecute_from_failure_reruns_a_failed_pair(ui: dict, tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    synthesize_speech("Second time lucky, as they always say.", bucket / "scripts" / "retry.wav")
    write_still(bucket / "avatars" / "portrait.png", **SIZE)
    instance: DagsterInstance = ui["instance"]
    # Prepare the inputs, then damage the face track behind the factory's back: the render fails (after its
    # retries), the rest of its run never started.
    first = heygem_run(bucket, ui["env"])
    first.communicate(timeout=300)
    track = next((bucket / "work" / "avatars").rglob("face_track.parquet"))
    kept = track.read_bytes()
    track.write_bytes(kept[: len(kept) // 3])
    (bucket / "work" / "renders").rename(tmp_path / "old-renders")
    failed = heygem_run(bucket, ui["env"])
    output, _ = failed.communicate(timeout=300)
    assert failed.returncode == 1, output
    (record,) = instance.get_run_records(RunsFilter(job_name="pair_job", statuses=[DagsterRunStatus.FAILURE]))
    track.write_bytes(kept)  # repaired

    result = graphql(ui["url"], """
        mutation($id: String!) {
          launchRunReexecution(reexecutionParams: {parentRunId: $id, strategy: FROM_FAILURE}) {
            __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
          }
        }""", {"id": record.dagster_run.run_id})["launchRunReexecution"]
    assert result["__typename"] == "LaunchRunSuccess", result
    rerun = result["run"]["runId"]
    wait_for(lambda: instance.get_run_by_id(rerun).is_finished, 240, "the re-execution")
    run = instance.get_run_by_id(rerun)
    assert run.status == DagsterRunStatus.SUCCESS and run.parent_run_id == record.dagster_run.run_id
    assert run.tags["dagster-celery/queue"] == "gpu" and run.tags["dagster/partition"] == "portrait|retry"
    assert list((bucket / "work" / "renders").rglob("portrait.mp4"))


def test_submit_and_query_through_the_graphql_api(ui: dict, tmp_path: Path) -> None:
    from heygem_pipeline.api import FactoryClient, RequestState
    from heygem_pipeline.api import PairProgressState as State

    bucket = tmp_path / "bucket"
    (bucket / "scripts").mkdir(parents=True)
    (bucket / "scripts" / "hello.txt").write_text("Hello from the factory's own API, with captions.")
    write_still(bucket / "avatars" / "portrait.png", **SIZE)
    write_still(bucket / "avatars" / "anchor.png", **SIZE)
    (bucket / "campaigns").mkdir()
    (bucket / "campaigns" / "launch.yaml").write_text("scripts: ['*']\navatars: ['*']\n")
    client = FactoryClient(ui["url"])

    request = client.submit(campaign="launch", bucket=str(bucket))
    seen = set()
    deadline = time.monotonic() + 600
    while not (status := client.status(request)).finished:
        seen |= {p.state for p in status.pairs}
        assert time.monotonic() < deadline, status
        time.sleep(1)
    assert status.state == RequestState.DONE and status.campaign == "launch", status
    assert seen & {State.RENDERING, State.CHECKING, State.PREPARING, State.QUEUED}  # progress showed
    assert [p.state for p in status.pairs] == [State.RENDERED, State.RENDERED]
    for pair in status.pairs:
        assert Path(pair.output).stat().st_size > 1000 and pair.output.startswith(str(bucket / "outputs" / "launch"))
        assert [Path(s).suffix for s in pair.subtitles] == [".srt", ".vtt"]
        assert "captions" in Path(pair.subtitles[0]).read_text()
    runs = ui["instance"].get_run_records(RunsFilter(tags={"heygem/request": request}))
    assert {r.dagster_run.job_name for r in runs} == {"script_job", "avatar_job", "pair_job", "check_job",
                                                      "campaign_job"}

    # One pair of it, already up to date: nothing is rendered again, and the request is delivered.
    again = client.wait(client.submit(campaign="launch", script="hello", avatar="portrait", bucket=str(bucket)),
                        timeout=300)
    assert again.state == RequestState.DONE and [p.state for p in again.pairs] == [State.UP_TO_DATE]
    assert again.pairs[0].output.endswith("hello__portrait.mp4")

    # A request the bucket cannot serve fails at once, saying why.
    bad = client.wait(client.submit(campaign="nope", bucket=str(bucket)), timeout=300)
    assert bad.state == RequestState.FAILED and "no campaign 'nope'" in bad.error

    # The same from the command line.
    result = subprocess.run([sys.executable, "-m", "heygem_pipeline.cli", "status", request, "--url", ui["url"]],
                            cwd=REPO, capture_output=True, text=True, env=ui["env"])
    assert result.returncode == 0 and "done, campaign launch, 2/2 pairs settled" in result.stdout, result.stdout
    assert "hello.txt × anchor.png: rendered" in result.stdout
