"""The bucket sensor and the nightly schedule, ticked by hand against a real instance and a real bucket.

The requested runs are executed for real between ticks, as the daemon would, so each stage sees the previous
stage's outputs: preparation first, then exactly the campaign pairs, then the deliverables, then nothing.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Iterator

import pytest
from dagster import DagsterInstance, RunRequest, SkipReason, build_schedule_context, build_sensor_context

from heygem_pipeline.demo_media import write_still, write_template_video
from heygem_pipeline.engine.audio.intake import synthesize_speech
from heygem_pipeline.factory.bucket import Bucket
from heygem_pipeline.factory.campaigns import RenderOptions
from heygem_pipeline.factory.layout import render_record_path
from heygem_pipeline.settings import Settings
from tests.helpers import dagster_home_env

pytestmark = pytest.mark.slow

SIZE = {"width": 640, "height": 360}
LONG_AGO = time.time() - 3600


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    with dagster_home_env(tmp_path_factory.mktemp("dagster_home")):
        yield _sensor_env(tmp_path_factory)


def _sensor_env(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An instance (in the DAGSTER_HOME set), a bucket of two campaigns, the definitions and their resources."""
    from heygem_pipeline.instance.setup import init

    instance = init()
    bucket = tmp_path_factory.mktemp("bucket")
    synthesize_speech("Hello, and welcome to the launch.", bucket / "scripts" / "hello.wav")
    write_template_video(bucket / "avatars" / "presenter.mp4", 1.0, fps=25, **SIZE)
    write_still(bucket / "avatars" / "portrait.png", **SIZE)
    (bucket / "campaigns").mkdir()
    (bucket / "campaigns" / "launch.yaml").write_text("scripts: [hello]\navatars: ['*']\n")
    (bucket / "campaigns" / "late.yaml").write_text("scripts: [late]\navatars: [presenter]\n")
    for path in bucket.rglob("*"):  # uploaded long ago: complete on first sight
        if path.is_file():
            os.utime(path, (LONG_AGO, LONG_AGO))
    from heygem_pipeline.definitions import defs
    from resources import BucketResource, build_resources

    resources = {**build_resources(Settings()), "bucket": BucketResource(url=str(bucket))}
    return {"instance": instance, "bucket": bucket, "defs": defs, "resources": resources, "cursor": None}


def tick(env: dict) -> tuple[list[RunRequest], dict[str, list[str]], object]:
    """One sensor evaluation; partitions it adds are applied as the daemon would. Returns requests, adds, skip."""
    instance: DagsterInstance = env["instance"]
    sensor = env["defs"].resolve_sensor_def("bucket_sensor")
    context = build_sensor_context(instance=instance, cursor=env["cursor"], definitions=env["defs"],
                                   resources=env["resources"])
    result = sensor(context)
    env["cursor"] = result.cursor
    adds = {}
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        adds[request.partitions_def_name] = list(request.partition_keys)
    return list(result.run_requests or []), adds, result.skip_reason


def execute(env: dict, requests: list[RunRequest]) -> None:
    for request in requests:
        job = env["defs"].resolve_job_def(request.job_name)
        result = job.execute_in_process(run_config=request.run_config, instance=env["instance"],
                                        partition_key=request.partition_key, tags=request.tags)
        assert result.success


def summary(requests: list[RunRequest]) -> set[tuple[str, str]]:
    return {(r.job_name, str(r.partition_key or r.tags["dagster/partition"])) for r in requests}


def test_sensor_waits_for_partial_uploads(env: dict) -> None:
    (env["bucket"] / "scripts" / "late.txt").write_text("Hello")  # the upload has just started
    requests, adds, _ = tick(env)
    # Everything that was complete is registered and its preparation requested; late.txt is left alone.
    assert adds == {"script": ["hello"], "avatar": ["portrait", "presenter"], "campaign": ["late", "launch"]}
    assert summary(requests) == {("script_job", "hello"), ("avatar_job", "portrait"), ("avatar_job", "presenter")}
    assert all(r.run_key and r.run_config["resources"]["bucket"]["config"]["url"] == str(env["bucket"])
               for r in requests)
    env["prep"] = requests
    with (env["bucket"] / "scripts" / "late.txt").open("a") as file:
        file.write(" from the script that arrived late.")  # still growing at the next tick
    requests, adds, skip = tick(env)
    assert requests == [] and adds == {} and skip is not None
    requests, adds, _ = tick(env)  # unchanged since the last tick: complete
    assert adds == {"script": ["late"]} and summary(requests) == {("script_job", "late")}
    env["prep"] += requests
    requests, adds, skip = tick(env)
    assert requests == [] and adds == {} and "nothing new" in skip.skip_message


def test_sensor_requests_exactly_the_campaign_pairs_once_inputs_are_prepared(env: dict) -> None:
    execute(env, env.pop("prep"))
    requests, adds, _ = tick(env)
    assert adds == {}
    assert summary(requests) == {("pair_job", "portrait|hello"), ("pair_job", "presenter|hello"),
                                 ("pair_job", "presenter|late")}  # late × portrait is in no campaign
    assert all(r.run_config["ops"]["lipsync_video"]["config"] == RenderOptions().as_config() for r in requests)
    assert tick(env)[0] == []  # requested once
    assert all(r.tags["heygem/item"].startswith("render:") and r.tags["heygem/token"] for r in requests)
    execute(env, requests)
    requests, _, _ = tick(env)  # rendered: each is measured on a CPU worker
    assert summary(requests) == {("check_job", "portrait|hello"), ("check_job", "presenter|hello"),
                                 ("check_job", "presenter|late")}
    execute(env, requests)
    requests, _, _ = tick(env)
    assert summary(requests) == {("campaign_job", "launch"), ("campaign_job", "late")}
    execute(env, requests)
    assert (env["bucket"] / "outputs" / "launch" / "launch.zip").exists()
    assert (env["bucket"] / "outputs" / "late" / "presenter__late.mp4").exists() is False
    assert (env["bucket"] / "outputs" / "late" / "late__presenter.mp4").exists()
    requests, _, skip = tick(env)
    assert requests == [] and skip is not None


def nightly(env: dict, monkeypatch: pytest.MonkeyPatch) -> list[RunRequest] | SkipReason:
    import assets.schedules

    monkeypatch.setattr(assets.schedules, "SETTLE_SECONDS", 0.0)
    schedule = env["defs"].resolve_schedule_def("nightly_campaigns")
    context = build_schedule_context(instance=env["instance"], resources=env["resources"],
                                     scheduled_execution_time=datetime.datetime(2026, 11, 22, 2, 0))
    return schedule(context)


def test_schedule_requests_only_missing_or_stale_pairs(env: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    schedule = env["defs"].resolve_schedule_def("nightly_campaigns")
    assert schedule.cron_schedule == "0 2 * * *" and schedule.execution_timezone == Settings.from_env().timezone
    assert isinstance(nightly(env, monkeypatch), SkipReason)  # everything is fresh
    bucket = Bucket(str(env["bucket"]))
    variant = RenderOptions().variant
    (env["bucket"] / render_record_path(bucket, variant, "hello", "portrait")).unlink()  # missing
    record = bucket.read_json(render_record_path(bucket, variant, "hello", "presenter"))
    bucket.write_json(render_record_path(bucket, variant, "hello", "presenter"), {**record, "code_version": "0"})
    (env["bucket"] / "campaigns" / "late.yaml").write_text("scripts: [late]\navatars: [presenter]\ncrf: 30\n")
    requests = nightly(env, monkeypatch)
    assert summary(requests) == {("pair_job", "portrait|hello"), ("pair_job", "presenter|hello"),
                                 ("pair_job", "presenter|late")}
    reasons = {str(r.partition_key): r.tags["heygem/reason"] for r in requests}
    assert reasons == {"portrait|hello": "not rendered yet", "presenter|hello": "render code version changed",
                       "presenter|late": "not rendered yet"}  # new output options: a new variant
    late = next(r for r in requests if str(r.partition_key) == "presenter|late")
    assert late.run_config["ops"]["lipsync_video"]["config"]["crf"] == 30
    assert all(r.run_key.startswith("2026-11-22:") for r in requests)


def test_sensor_runs_edited_files_again(env: dict) -> None:
    for _ in range(2):  # the campaign edit of the previous test: seen, then settled (its new pair requested)
        tick(env)
    synthesize_speech("Hello again, this is the new take.", env["bucket"] / "scripts" / "hello.wav")
    requests, _, _ = tick(env)
    assert requests == []  # just written: wait one tick for the upload to settle
    requests, _, _ = tick(env)
    assert ("script_job", "hello") in summary(requests)
    assert tick(env)[0] == []
