"""The code location loads, and is wired as designed: lineage, partitions, pool, retries, checks, automation."""

from __future__ import annotations

import subprocess
import sys

import pytest
from dagster import (
    AssetKey,
    Backoff,
    DagsterInvalidConfigError,
    Definitions,
    MultiPartitionsDefinition,
    validate_run_config,
)

from heygem_pipeline.definitions import defs
from tests.helpers import REPO


def test_definitions_load() -> None:
    Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == {
        "script_audio", "script_features", "avatar_video", "face_track", "lipsync_video", "campaign_manifest",
        "campaign_zip"}


def test_lineage_and_partitions() -> None:
    graph = defs.resolve_asset_graph()

    def parents(name: str) -> set[str]:
        return {key.to_user_string() for key in graph.get(AssetKey(name)).parent_keys}

    assert parents("script_features") == {"script_audio"}
    assert parents("face_track") == {"avatar_video"}
    assert parents("lipsync_video") == {"script_audio", "script_features", "avatar_video", "face_track"}
    assert parents("campaign_manifest") == {"lipsync_video"}
    assert parents("campaign_zip") == {"campaign_manifest"}
    video = graph.get(AssetKey("lipsync_video"))
    assert isinstance(video.partitions_def, MultiPartitionsDefinition)
    assert {d.name for d in video.partitions_def.partitions_defs} == {"script", "avatar"}
    assert graph.get(AssetKey("face_track")).partitions_def.name == "avatar"
    assert graph.get(AssetKey("campaign_zip")).partitions_def.name == "campaign"


def test_inference_runs_in_the_gpu_pool_with_retries_and_checks() -> None:
    video = defs.resolve_assets_def("lipsync_video")
    assert video.op.pool == "gpu"
    policy = video.op.retry_policy
    assert policy.max_retries >= 1 and policy.backoff == Backoff.EXPONENTIAL
    for name in ("script_audio", "avatar_video", "face_track", "campaign_manifest"):
        assert defs.resolve_assets_def(name).op.retry_policy is not None
        assert defs.resolve_assets_def(name).op.pool is None  # only inference holds the GPU slot
    checks = {key.name for key in defs.resolve_asset_graph().asset_check_keys
              if key.asset_key == AssetKey("lipsync_video")}
    assert checks == {"av_sync_within_1_frame", "duration_matches_audio", "face_coverage"}


def test_jobs_sensor_schedule_and_resources() -> None:
    jobs = {"script_job", "avatar_job", "pair_job", "check_job", "campaign_job"}
    assert {job.name for job in defs.jobs} == jobs | {"request_job"}
    for name in ("bucket_sensor", "request_sensor"):
        assert {job.name for job in defs.resolve_sensor_def(name).jobs} == jobs
    schedule = defs.resolve_schedule_def("nightly_campaigns")
    assert schedule.cron_schedule == "0 2 * * *" and schedule.job_name == "pair_job"
    assert set(defs.resources) == {"bucket", "engine", "ffmpeg"}


def test_renders_go_to_the_gpu_queue_and_everything_else_to_the_cpu_queue() -> None:
    queues = {job.name: job.tags.get("dagster-celery/queue") for job in defs.jobs}
    assert queues == {"script_job": "cpu", "avatar_job": "cpu", "pair_job": "gpu", "check_job": "cpu",
                      "campaign_job": "cpu", "request_job": "cpu"}
    # A render run renders only: its checks run on a CPU worker, beside the next render.
    assert [node.name for node in defs.resolve_job_def("pair_job").nodes] == ["lipsync_video"]
    assert [node.name for node in defs.resolve_job_def("check_job").nodes] == ["lipsync_quality_checks"]


def test_engine_modules_never_import_dagster() -> None:
    """At run time too (import-linter checks the imports written; this, what loading really pulls in)."""
    modules = ("heygem_pipeline.engine.stages", "heygem_pipeline.engine.quality", "heygem_pipeline.factory.plan",
               "heygem_pipeline.factory.deliver", "heygem_pipeline.engine.lipsync.registry")
    code = (f"import sys, {', '.join(modules)}; bad = sorted(m for m in sys.modules if m.split('.')[0] == 'dagster'); "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_render_options_travel_as_run_config_the_launchpad_checks() -> None:
    from assets.runs import run_config
    from assets.videos import RenderConfig
    from heygem_pipeline.engine.captions.burnin import subtitle_options
    from heygem_pipeline.factory.campaigns import RenderOptions
    from resources.engine import LipSyncEngineResource
    from resources.ffmpeg import FFmpegResource

    pair_job = defs.resolve_job_def("pair_job")
    burn = RenderOptions(crf=23, subtitles=subtitle_options({"mode": "burn", "size": 7, "position": "top"}, "x"))
    for options in (RenderOptions(), burn):
        config = run_config("/tmp/bucket", options)
        validate_run_config(pair_job, config)
        render = RenderConfig(**config["ops"]["lipsync_video"]["config"])
        back = render.options(LipSyncEngineResource(), FFmpegResource())
        assert back == options and back.variant == options.variant  # the same video folder
    assert burn.as_config()["subtitles"]["style"]["size"] == 7
    # A mistake is refused at launch, not in the render.
    for subtitles in ({"mode": "loud"}, {"mode": "burn", "style": {"colour": "red"}}):
        config = run_config("/tmp/bucket", burn)
        config["ops"]["lipsync_video"]["config"]["subtitles"] = subtitles
        with pytest.raises(DagsterInvalidConfigError, match="subtitles"):
            validate_run_config(pair_job, config)
    # Runs made before the mapping held a JSON string: Dagster refuses to re-execute them (README, How it runs).
    config = run_config("/tmp/bucket", burn)
    config["ops"]["lipsync_video"]["config"]["subtitles"] = burn.subtitles.model_dump_json()
    with pytest.raises(DagsterInvalidConfigError, match="subtitles must be dict"):
        validate_run_config(pair_job, config)
