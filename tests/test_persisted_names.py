"""Golden values: every name and format the factory persists, pinned as it is today.

Each value below is a key into what already exists: bucket paths, stamps and records (outputs), or asset keys, job
names, partition keys, tags, run keys and run ids (Dagster's run history). Changing one silently orphans what was
written under the old one, so the expected values are literals, never recomputed from the code under test. When one
has to change, it changes here too, deliberately, with a migration of what exists. A refactor that moves modules
rewrites the imports of this file and nothing else.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib
import inspect
import json
import logging
import os
import re
import uuid
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml
from dagster import AssetKey, Failure, MultiPartitionKey, RunRequest

import assets.avatars as avatars_module
import assets.checks as checks_module
from assets.avatars import avatar_video, face_track
from assets.campaigns import campaign_manifest, campaign_zip
from assets.checks import DURATION_CHECK, FACE_CHECK, SYNC_CHECK, lipsync_quality_checks
from assets.jobs import CPU_QUEUE, GPU_QUEUE, JOB_OF_STAGE
from assets.names import ITEM_TAG, TOKEN_TAG
from assets.partitions import pair_of, pair_partition_key, partition_tags
from assets.requests import REQUEST_TAG, RequestConfig, campaign_request
from assets.runs import campaign_run, digest, run_config, run_key, runtime_limit_tags, stage_runs, work_tags
from assets.schedules import nightly_campaigns
from assets.scripts import SCRIPT_OUTPUTS, script_intake
from assets.sensors import BucketCursor, bucket_sensor
from assets.videos import RenderConfig, lipsync_video
from heygem_pipeline import api
from heygem_pipeline.client.submit import RUN_ID_NAMESPACE, work_run_id
from heygem_pipeline.definitions import defs
from heygem_pipeline.engine import folders, stages
from heygem_pipeline.engine.audio.voices.choice import EspeakChoice, KokoroChoice, PiperChoice
from heygem_pipeline.engine.captions.burnin import SubtitleOptions, subtitle_options
from heygem_pipeline.engine.quality import SyncReport
from heygem_pipeline.engine.render import RenderResult
from heygem_pipeline.errors import HeygemError, UnsafeNameError
from heygem_pipeline.factory.bucket import Bucket, BucketEntry
from heygem_pipeline.factory.campaigns import DEFAULT_CAMPAIGN, Campaign, MediaOptions, RenderOptions, implicit_campaign
from heygem_pipeline.factory.deliver import MANIFEST_COLUMNS, output_names
from heygem_pipeline.factory.layout import (
    AVATARS_PREFIX,
    CAMPAIGN_EXTENSIONS,
    CAMPAIGNS_PREFIX,
    OUTPUTS_PREFIX,
    PREFIXES,
    SCRIPTS_PREFIX,
    SUBTITLE_SIDECARS,
    TRANSCRIPTS_PREFIX,
    avatar_dir,
    avatar_stamp_path,
    campaign_record_path,
    error_path,
    outputs_dir,
    pair_key_text,
    quality_record_path,
    render_error_key,
    render_path,
    render_record_path,
    script_dir,
    script_stamp_path,
    track_stamp_path,
)
from heygem_pipeline.factory.plan import SETTLED_STATUSES, Stage, Work, plan_items
from heygem_pipeline.factory.records import RenderRecord
from heygem_pipeline.factory.state import (
    CHECK_FAILED,
    CODE_VERSIONS,
    DELIVERABLE_STATUSES,
    FAILED,
    MISSING,
    OK,
    STALE,
    UNCHECKED,
    FactoryState,
    PairState,
    avatar_token,
    render_inputs_token,
    script_token,
    stamp,
    track_token,
    write_error,
)
from heygem_pipeline.factory.uploads import BucketScan, Upload
from heygem_pipeline.factory.voicing import split_voiced_key, voiced_key
from heygem_pipeline.instance.services import LOCATION_NAME, RunDir, _workspace_yaml
from heygem_pipeline.naming import safe_id
from heygem_pipeline.settings import ToolLimits
from heygem_pipeline.studio.handlers import SINGLE_PREFIX
from resources import BucketResource, FFmpegResource
from tests.helpers import REPO

VARIANT = "viseme-crf18-veryfast"  # RenderOptions() today; pinned in test_render_variants_and_run_config

# Fixed listings (size, version): the tokens built from them are fixed strings.
SCRIPT_ENTRY = BucketEntry("scripts/hello.wav", 1000, "1700000000.0")
AVATAR_ENTRY = BucketEntry("avatars/anna.mp4", 2000, "1700000000.0")
SCRIPT_TOKEN = "1000:1700000000.0|script-v2|voice=en-us|transcript=none"
AVATAR_TOKEN = "2000:1700000000.0|avatar-v1|fps=25|still=5"
TRACK_TOKEN = "2000:1700000000.0|avatar-v1|fps=25|still=5|track-v2"
INPUTS_TOKEN = f"{SCRIPT_TOKEN}#{TRACK_TOKEN}"
RENDER_TOKEN = f"{INPUTS_TOKEN}|viseme-crf18-veryfast|render-v2"
CHECKS_TOKEN = f"{RENDER_TOKEN}|checks"


# ------------------------------------------------------------------------------------------- Dagster names


def test_dagster_definition_names() -> None:
    """Asset keys, checks, jobs, sensors and schedules name materializations, runs and ticks in the run history."""
    graph = defs.resolve_asset_graph()
    code_versions = {key.to_user_string(): graph.get(key).code_version for key in graph.get_all_asset_keys()}
    assert code_versions == {
        "script_audio": "2", "script_features": "2", "avatar_video": "1", "face_track": "2", "lipsync_video": "2",
        "campaign_manifest": "2", "campaign_zip": "2"}
    # The same numbers decide staleness outside Dagster (stamps, records): asset code_version == CODE_VERSIONS.
    assert CODE_VERSIONS == {"script": "2", "avatar": "1", "face_track": "2", "render": "2", "checks": "2",
                             "campaign": "2"}
    assert {name: CODE_VERSIONS[stage] for name, stage in (
        ("script_audio", "script"), ("script_features", "script"), ("avatar_video", "avatar"),
        ("face_track", "face_track"), ("lipsync_video", "render"), ("campaign_manifest", "campaign"),
        ("campaign_zip", "campaign"))} == code_versions
    assert {(key.asset_key.to_user_string(), key.name) for key in graph.asset_check_keys} == {
        ("lipsync_video", "av_sync_within_1_frame"), ("lipsync_video", "duration_matches_audio"),
        ("lipsync_video", "face_coverage")}
    assert (SYNC_CHECK, DURATION_CHECK, FACE_CHECK) == (
        "av_sync_within_1_frame", "duration_matches_audio", "face_coverage")
    # Step keys (op names) of the multi-asset and the check, as runs and step logs record them.
    assert defs.resolve_assets_def(AssetKey("script_audio")).op.name == "script_intake"
    assert lipsync_quality_checks.node_def.name == "lipsync_quality_checks"
    assert {job.name: dict(job.tags) for job in defs.jobs} == {
        "script_job": {"dagster-celery/queue": "cpu"}, "avatar_job": {"dagster-celery/queue": "cpu"},
        "pair_job": {"dagster-celery/queue": "gpu"}, "check_job": {"dagster-celery/queue": "cpu"},
        "campaign_job": {"dagster-celery/queue": "cpu"}, "request_job": {"dagster-celery/queue": "cpu"}}
    assert sorted(sensor.name for sensor in defs.sensors) == ["bucket_sensor", "request_sensor"]
    assert [(s.name, s.cron_schedule, s.job_name) for s in defs.schedules] == [
        ("nightly_campaigns", "0 2 * * *", "pair_job")]
    assert sorted(defs.resources) == ["bucket", "engine", "ffmpeg"]  # run configs name them


def test_partitions_and_the_pair_key_format() -> None:
    """Partition keys are how Dagster stores each materialization; a pair's is "avatar|script" (dimensions by name)."""
    graph = defs.resolve_asset_graph()
    names = {key.to_user_string(): graph.get(key).partitions_def for key in graph.get_all_asset_keys()}
    assert {key: definition.name for key, definition in names.items() if key != "lipsync_video"} == {
        "script_audio": "script", "script_features": "script", "avatar_video": "avatar", "face_track": "avatar",
        "campaign_manifest": "campaign", "campaign_zip": "campaign"}
    pairs = names["lipsync_video"]
    assert [(d.name, d.partitions_def.name) for d in pairs.partitions_defs] == [
        ("avatar", "avatar"), ("script", "script")]
    key = pair_partition_key("hello", "anna")
    assert str(key) == "anna|hello" == pair_key_text("hello", "anna")
    assert key.keys_by_dimension == {"script": "hello", "avatar": "anna"}
    assert pair_of("anna|hello") == pair_of(key) == ("hello", "anna")
    assert partition_tags(key) == {"dagster/partition": "anna|hello", "dagster/partition/avatar": "anna",
                                   "dagster/partition/script": "hello"}
    assert partition_tags("hello") == {"dagster/partition": "hello"}


# ------------------------------------------------------------------------------------------------- tags


def test_tag_keys_and_queues() -> None:
    """Runs are found again by their tags (work item, token, request, trigger) and routed by their queue tag."""
    assert (ITEM_TAG, TOKEN_TAG) == ("heygem/item", "heygem/token")
    assert REQUEST_TAG == api.REQUEST_TAG == "heygem/request"
    assert api.REQUEST_JOB == "request_job"
    assert (GPU_QUEUE, CPU_QUEUE) == ({"dagster-celery/queue": "gpu"}, {"dagster-celery/queue": "cpu"})
    assert work_tags("script:hello", SCRIPT_TOKEN) == {"heygem/item": "script:hello", "heygem/token": "ab40dbb5e352"}
    assert list(runtime_limit_tags(2.0, ToolLimits())) == ["dagster/max_runtime"]
    # Every heygem/* tag key and every trigger the code writes (the source, since some are set only by a service).
    folders = [p for p in REPO.iterdir() if p.is_dir() and p.name not in ("tests", "data") and p.name[0] != "."]
    sources = [path.read_text(encoding="utf-8") for folder in folders for path in folder.rglob("*.py")]
    assert sorted({key for text in sources for key in re.findall(r"\"(heygem/[a-z_]+)\"", text)}) == [
        "heygem/campaign", "heygem/item", "heygem/reason", "heygem/request", "heygem/session", "heygem/token",
        "heygem/trigger", "heygem/variant"]
    trigger = r"(?:\"heygem/trigger\"|TRIGGER_TAG): \"(\w+)\""
    assert sorted({value for text in sources for value in re.findall(trigger, text)}) == [
        "api", "cli", "nightly", "request", "sensor"]
    # dagster.yaml limits runs per queue by the same tag and values, and launches untagged runs on `cpu`.
    for config in (_yaml("dagster.yaml"), _yaml("deploy/dagster-postgres.yaml")):
        limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
        assert [(limit["key"], limit["value"]) for limit in limits] == [
            ("dagster-celery/queue", "gpu"), ("dagster-celery/queue", "cpu")]
        assert config["run_launcher"]["config"]["default_queue"] == "cpu"
    assert SINGLE_PREFIX == "try-"  # the studio's one-pair campaigns: campaigns/try-<time>.yaml


# ------------------------------------------------------------------------------------ variants and tokens


def test_render_variants_and_run_config() -> None:
    """A variant names the render folder (work/renders/<variant>/); as_config is the run config a re-execution uses."""
    checkpoint = "/models/wav2lip_gan.pth"
    burn = SubtitleOptions(mode="burn")
    styled = subtitle_options({"mode": "burn", "size": 7, "position": "top"}, "launch.yaml")
    variants = {
        "default": RenderOptions(),
        "wav2lip": RenderOptions(engine="wav2lip"),
        "wav2lip weights": RenderOptions(engine="wav2lip", checkpoint=checkpoint),
        "viseme ignores weights": RenderOptions(checkpoint=checkpoint),
        "crf, preset": RenderOptions(crf=23, preset="medium"),
        "crf 0": RenderOptions(crf=0, preset="ultrafast"),
        "unsafe preset": RenderOptions(preset="Very Slow"),
        "sidecar subtitles": RenderOptions(subtitles=SubtitleOptions(mode="sidecar")),
        "burnt in": RenderOptions(subtitles=burn),
        "everything": RenderOptions(engine="wav2lip", checkpoint=checkpoint, crf=20, preset="fast", subtitles=styled),
        "musetalk": RenderOptions(engine="musetalk"),
        "musetalk weights": RenderOptions(engine="musetalk", models="/models/musetalk"),
        "wav2lip ignores musetalk's": RenderOptions(engine="wav2lip", models="/models/musetalk"),
    }
    assert {name: options.variant for name, options in variants.items()} == {
        "default": "viseme-crf18-veryfast",
        "wav2lip": "wav2lip-crf18-veryfast",
        "wav2lip weights": "wav2lip-087659d8-crf18-veryfast",
        "viseme ignores weights": "viseme-crf18-veryfast",
        "crf, preset": "viseme-crf23-medium",
        "crf 0": "viseme-crf0-ultrafast",
        "unsafe preset": "viseme-crf18-very_slow_fc768b84",
        "sidecar subtitles": "viseme-crf18-veryfast",
        "burnt in": "viseme-crf18-veryfast-subs-e6dfad98",
        "everything": "wav2lip-087659d8-crf20-fast-subs-2bdcaffe",
        "musetalk": "musetalk-crf18-veryfast",
        "musetalk weights": "musetalk-fb8cc5f8-crf18-veryfast",
        "wav2lip ignores musetalk's": "wav2lip-crf18-veryfast",
    }
    assert RenderOptions().as_config() == {"engine": "viseme", "crf": 18, "preset": "veryfast"}
    assert variants["musetalk weights"].as_config() == {"engine": "musetalk", "crf": 18, "preset": "veryfast",
                                                        "models": "/models/musetalk"}
    assert variants["everything"].as_config() == {
        "engine": "wav2lip", "crf": 20, "preset": "fast", "checkpoint": "/models/wav2lip_gan.pth",
        # Nested run config since issue 19 (a JSON string before: such old runs cannot be re-executed; README).
        "subtitles": {"mode": "burn", "style": {"font": "Noto Sans CJK SC", "size": 7.0, "position": "top",
                                                "outline": 0.35, "shadow": 0.0, "margin": 4.0, "color": "#FFFFFF",
                                                "outline_color": "#000000", "bold": False, "box": False}}}
    # The render step's config rebuilds the same variant from it.
    engine, ffmpeg = SimpleNamespace(engine="viseme"), FFmpegResource()
    for options in variants.values():
        assert RenderConfig(**options.as_config()).options(engine, ffmpeg).variant == options.variant
    assert run_config("memory://golden", RenderOptions()) == {
        "resources": {"bucket": {"config": {"url": "memory://golden"}}},
        "loggers": {"console": {"config": {"log_level": "WARNING"}}},
        "ops": {"lipsync_video": {"config": {"engine": "viseme", "crf": 18, "preset": "veryfast"}}}}
    assert run_config("data/bucket") == {"resources": {"bucket": {"config": {"url": "data/bucket"}}},
                                         "loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def test_tokens() -> None:
    """Tokens are written in stamps, records and error records: a stage is fresh when its stamp holds the same one."""
    transcript = BucketEntry("transcripts/hello.txt", 42, "9b2cf535f27731c974343645a3985328")
    assert SCRIPT_ENTRY.fingerprint == "1000:1700000000.0"
    assert script_token(SCRIPT_ENTRY, EspeakChoice()) == "1000:1700000000.0|script-v2|voice=en-us|transcript=none"
    assert script_token(SCRIPT_ENTRY, EspeakChoice(speaker="cmn"), transcript) == (
        "1000:1700000000.0|script-v2|voice=cmn|transcript=42:9b2cf535f27731c974343645a3985328")
    assert avatar_token(AVATAR_ENTRY, MediaOptions()) == "2000:1700000000.0|avatar-v1|fps=25|still=5"
    assert avatar_token(AVATAR_ENTRY, MediaOptions(fps=29.97, still_seconds=4.0)) == (
        "2000:1700000000.0|avatar-v1|fps=29.97|still=4")
    assert track_token(AVATAR_TOKEN) == "2000:1700000000.0|avatar-v1|fps=25|still=5|track-v2"
    assert render_inputs_token(SCRIPT_TOKEN, TRACK_TOKEN) == (
        "1000:1700000000.0|script-v2|voice=en-us|transcript=none#2000:1700000000.0|avatar-v1|fps=25|still=5|track-v2")
    pair = PairState("launch", "hello", "anna", RenderOptions(), MISSING, inputs_ready=True, inputs_token=INPUTS_TOKEN)
    assert pair.render_token == (
        "1000:1700000000.0|script-v2|voice=en-us|transcript=none#2000:1700000000.0|avatar-v1|fps=25|still=5|track-v2"
        "|viseme-crf18-veryfast|render-v2")
    # The checks token exists only inside the run planners: pinned through them in test_item_keys_and_run_keys.
    stamped = stamp(SCRIPT_TOKEN, source="hello.wav", duration_s=2.0)
    assert sorted(stamped) == ["duration_s", "source", "token", "written_at"]
    assert stamped["token"] == SCRIPT_TOKEN


# --------------------------------------------------------------------------------------------- the bucket


def test_voice_names(tmp_path: Path) -> None:
    """Voice variants name voiced copies of text scripts (their partitions, folders and renders); identities go into
    script tokens. Both are persisted: a change would voice every copy again under a new name."""
    model = tmp_path / "en_US-joe-medium.onnx"
    model.write_bytes(b"model")
    model.with_name(model.name + ".json").write_text("{}")
    vectors = tmp_path / "voices-v1.0.bin"
    vectors.write_bytes(b"vectors")
    piper = PiperChoice(model=str(model), speed=1.2)
    kokoro = KokoroChoice(model=str(model), voices=str(vectors), speaker="af_heart")
    where = hashlib.sha1(str(model).encode()).hexdigest()[:6]
    both = hashlib.sha1(f"{model}\n{vectors}".encode()).hexdigest()[:6]
    assert EspeakChoice().variant == "espeak-en-us" and EspeakChoice(speaker="en-us+f3").variant == "espeak-en-us_f3"
    assert piper.variant == f"piper-en_us-joe-medium-x1p2-{where}"
    assert PiperChoice(model=str(model), speaker="p225").variant == f"piper-en_us-joe-medium-p225-x1-{where}"
    assert kokoro.variant == f"kokoro-af_heart-x1-{both}"
    model_sha = hashlib.sha256(b"model").hexdigest()
    assert EspeakChoice(speaker="cmn").identity() == "cmn"
    assert piper.identity() == (f"piper:{model_sha[:16]}+{hashlib.sha256(b'{}').hexdigest()[:8]}:speaker=:speed=1.2")
    assert kokoro.identity() == (f"kokoro:{model_sha[:16]}+{hashlib.sha256(b'vectors').hexdigest()[:8]}"
                                 ":speaker=af_heart:speed=1")
    assert PiperChoice(model=str(tmp_path / "gone.onnx")).identity() == "piper:missing+missing:speaker=:speed=1"
    assert voiced_key("news", piper.variant) == f"news@{piper.variant}" and voiced_key("news") == "news"
    assert split_voiced_key(f"news@{piper.variant}") == ("news", piper.variant)
    assert script_dir(Bucket("memory://golden"), voiced_key("news", kokoro.variant)) == (
        f"work/scripts/news@{kokoro.variant}")


def test_bucket_layout() -> None:
    """Every path the factory reads back from the bucket: uploads, prepared folders, stamps, renders, outputs."""
    def layout(bucket: Bucket) -> dict[str, str]:
        return {
            "script_dir": script_dir(bucket, "hello"),
            "avatar_dir": avatar_dir(bucket, "anna"),
            "script_stamp": script_stamp_path(bucket, "hello"),
            "avatar_stamp": avatar_stamp_path(bucket, "anna"),
            "track_stamp": track_stamp_path(bucket, "anna"),
            "render": render_path(bucket, VARIANT, "hello", "anna"),
            "render_record": render_record_path(bucket, VARIANT, "hello", "anna"),
            "quality_record": quality_record_path(bucket, VARIANT, "hello", "anna"),
            "script_error": error_path(bucket, "script", "hello"),
            "render_error": error_path(bucket, "render", render_error_key(VARIANT, "hello", "anna")),
            "campaign_record": campaign_record_path(bucket, "launch"),
            "outputs": outputs_dir("launch"),
        }

    assert layout(Bucket("memory://golden")) == {
        "script_dir": "work/scripts/hello",
        "avatar_dir": "work/avatars/anna",
        "script_stamp": "work/scripts/hello/stamp.json",
        "avatar_stamp": "work/avatars/anna/video.stamp.json",
        "track_stamp": "work/avatars/anna/track.stamp.json",
        "render": "work/renders/viseme-crf18-veryfast/hello/anna.mp4",
        "render_record": "work/renders/viseme-crf18-veryfast/hello/anna.json",
        "quality_record": "work/renders/viseme-crf18-veryfast/hello/anna.quality.json",
        "script_error": "work/errors/script/hello.json",
        "render_error": "work/errors/render/viseme-crf18-veryfast.hello.anna.json",
        "campaign_record": "work/campaigns/launch.json",
        "outputs": "outputs/launch",
    }
    assert layout(Bucket("memory://golden", work_prefix="/cache/v2/")) == {
        "script_dir": "cache/v2/scripts/hello",
        "avatar_dir": "cache/v2/avatars/anna",
        "script_stamp": "cache/v2/scripts/hello/stamp.json",
        "avatar_stamp": "cache/v2/avatars/anna/video.stamp.json",
        "track_stamp": "cache/v2/avatars/anna/track.stamp.json",
        "render": "cache/v2/renders/viseme-crf18-veryfast/hello/anna.mp4",
        "render_record": "cache/v2/renders/viseme-crf18-veryfast/hello/anna.json",
        "quality_record": "cache/v2/renders/viseme-crf18-veryfast/hello/anna.quality.json",
        "script_error": "cache/v2/errors/script/hello.json",
        "render_error": "cache/v2/errors/render/viseme-crf18-veryfast.hello.anna.json",
        "campaign_record": "cache/v2/campaigns/launch.json",
        "outputs": "outputs/launch",  # outputs never move with the work prefix
    }
    assert Bucket("memory://golden", work_prefix="/").work("x") == "work/x"
    assert render_error_key(VARIANT, "hello", "anna") == "viseme-crf18-veryfast.hello.anna"
    assert (SCRIPTS_PREFIX, AVATARS_PREFIX, CAMPAIGNS_PREFIX, TRANSCRIPTS_PREFIX, OUTPUTS_PREFIX) == (
        "scripts", "avatars", "campaigns", "transcripts", "outputs")
    assert PREFIXES == {"script": "scripts", "avatar": "avatars"}
    assert sorted(CAMPAIGN_EXTENSIONS) == ["yaml", "yml"]
    assert SUBTITLE_SIDECARS == (".srt", ".vtt")
    assert DEFAULT_CAMPAIGN == "default"
    assert (implicit_campaign().key, implicit_campaign().fingerprint) == ("default", "implicit")
    assert BucketResource().url == "data/bucket" and BucketResource().work_prefix == "work"


def test_prepared_folder_file_names() -> None:
    """The files inside work/scripts/<id>/ and work/avatars/<id>/, which later stages and runs download by name."""
    assert (folders.SCRIPT_SOURCE, folders.SCRIPT_ANALYSIS, folders.SCRIPT_FEATURES, folders.SCRIPT_RECORD,
            folders.SCRIPT_CAPTIONS) == ("source.mka", "analysis.wav", "features.npz", "script.json", "captions.json")
    assert (folders.AVATAR_TEMPLATE, folders.AVATAR_RECORD, folders.AVATAR_TRACK, folders.AVATAR_BANK) == (
        "template.mp4", "avatar.json", "face_track.parquet", "mouth_bank.npz")
    assert SCRIPT_OUTPUTS == ("source.mka", "analysis.wav", "features.npz", "script.json", "captions.json")
    assert folders.NO_TRANSCRIPT == "no transcript"  # a captions status, in script.json and the manifest


def test_output_names() -> None:
    """Delivered videos are outputs/<campaign>/<script>__<avatar>.mp4; ids that would collide get a digest."""
    assert output_names([("hello", "anna"), ("hello", "bob"), ("a__b", "c"), ("a", "b__c")]) == {
        ("hello", "anna"): "hello__anna.mp4",
        ("hello", "bob"): "hello__bob.mp4",
        ("a__b", "c"): "a__b__c_36cc47.mp4",
        ("a", "b__c"): "a__b__c_feb530.mp4",
    }


def test_manifest_columns_and_statuses() -> None:
    """manifest.csv/.parquet columns and the status values in them are read by clients and the API."""
    assert MANIFEST_COLUMNS == (
        "campaign", "script", "avatar", "status", "output", "duration_s", "frames", "fps", "width", "height", "engine",
        "sync_offset_frames", "sync_confidence", "checks_passed", "subtitles", "captions_timing", "error")
    assert (OK, CHECK_FAILED, UNCHECKED, STALE, MISSING, FAILED) == (
        "ok", "check_failed", "unchecked", "stale", "missing", "failed")
    assert DELIVERABLE_STATUSES == ("ok", "check_failed", "unchecked")
    assert SETTLED_STATUSES == ("ok", "check_failed", "failed")


# ------------------------------------------------------------------------------------- runs and their keys


def _planned_state() -> tuple[FactoryState, Work, list[Campaign]]:
    """One campaign, one pair to render and the same pair to check, over fixed uploads (fixed tokens)."""
    scan = BucketScan(scripts={"hello": Upload("script", "hello", SCRIPT_ENTRY)},
                      avatars={"anna": Upload("avatar", "anna", AVATAR_ENTRY)})
    state = FactoryState(Bucket("memory://golden"), scan, MediaOptions(), RenderOptions())
    render = PairState("launch", "hello", "anna", RenderOptions(), MISSING, inputs_ready=True,
                       inputs_token=INPUTS_TOKEN)
    checks = PairState("launch", "hello", "anna", RenderOptions(), UNCHECKED, inputs_ready=True,
                       inputs_token=INPUTS_TOKEN,
                       record=RenderRecord.model_construct(render_id="0123456789abcdef0123456789abcdef"))
    work = Work(scripts=["hello"], avatars=["anna"], renders=[render], checks=[checks], states={"launch": [render]})
    return state, work, [Campaign(key="launch", source="launch.yaml")]


def test_item_keys_and_run_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """heygem/item values and run keys: clients, the sensor and the API recognise runs of the same work by them."""
    monkeypatch.delenv("HEYGEM_STALL_SECONDS", raising=False)
    monkeypatch.delenv("HEYGEM_TOOL_TIMEOUT_FACTOR", raising=False)
    assert run_key("script", "hello", SCRIPT_TOKEN) == "script:hello:ab40dbb5e352"
    assert digest(SCRIPT_TOKEN) == "ab40dbb5e352"
    state, work, campaigns = _planned_state()
    # Intake first; renders and checks of prepared inputs on a later tick (the plan holds both).
    intake = Work(scripts=work.scripts, avatars=work.avatars, states=work.states)
    renders = Work(renders=work.renders, states=work.states)
    checks = Work(checks=work.checks, states=work.states)
    runs = [run for step in (intake, renders, checks) for run in stage_runs(
        state, plan_items(state, step).values(), limits=ToolLimits(), run_key_prefix=("req-1",),
        tags={"heygem/trigger": "request"})]
    summary = [(run.item, run.token, run.job, run.partition, run.request.job_name, run.request.partition_key,
                run.request.run_key, run.request.tags) for run in runs]
    pair_tags = {"heygem/trigger": "request", "heygem/variant": "viseme-crf18-veryfast", "dagster/max_runtime": "300"}
    assert summary == [
        ("script:hello", SCRIPT_TOKEN, "script_job", "hello", "script_job", "hello", "req-1:script:hello:ab40dbb5e352",
         {"heygem/trigger": "request", "heygem/item": "script:hello", "heygem/token": "ab40dbb5e352"}),
        ("avatar:anna", AVATAR_TOKEN, "avatar_job", "anna", "avatar_job", "anna", "req-1:avatar:anna:90f414cdf33b",
         {"heygem/trigger": "request", "heygem/item": "avatar:anna", "heygem/token": "90f414cdf33b"}),
        ("render:viseme-crf18-veryfast:hello|anna", RENDER_TOKEN, "pair_job", "anna|hello", "pair_job",
         pair_partition_key("hello", "anna"), "req-1:pair:viseme-crf18-veryfast:anna|hello:2c02b2c41740",
         {**pair_tags, "heygem/item": "render:viseme-crf18-veryfast:hello|anna", "heygem/token": "2c02b2c41740"}),
        ("checks:viseme-crf18-veryfast:hello|anna", CHECKS_TOKEN, "check_job", "anna|hello", "check_job", None,
         "req-1:checks:viseme-crf18-veryfast:anna|hello:0123456789abcdef0123456789abcdef:373bd548a646",
         {**pair_tags, "heygem/item": "checks:viseme-crf18-veryfast:hello|anna", "heygem/token": "373bd548a646",
          "dagster/partition": "anna|hello"}),
    ]
    assert runs[2].request.run_config["ops"] == {"lipsync_video": {"config": {
        "engine": "viseme", "crf": 18, "preset": "veryfast"}}}
    deliverables = campaign_run("memory://golden", "launch", "f" * 16)
    assert deliverables.request.run_key == "campaign:launch:83fb23b393d6"
    # `heygem run` plans the same items, with the same keys and tokens.
    items = plan_items(state, work, campaigns)
    assert [(str(i.key), i.stage, JOB_OF_STAGE[i.stage], i.partition, i.token, i.deps) for i in items.values()] == [
        ("script:hello", Stage.SCRIPT, "script_job", "hello", SCRIPT_TOKEN, ()),
        ("avatar:anna", Stage.AVATAR, "avatar_job", "anna", AVATAR_TOKEN, ()),
        ("render:viseme-crf18-veryfast:hello|anna", Stage.RENDER, "pair_job", ("hello", "anna"), RENDER_TOKEN,
         ("script:hello", "avatar:anna")),
        ("checks:viseme-crf18-veryfast:hello|anna", Stage.CHECKS, "check_job", ("hello", "anna"), CHECKS_TOKEN,
         ("render:viseme-crf18-veryfast:hello|anna",)),
        ("campaign:launch", Stage.CAMPAIGN, "campaign_job", "launch", "",
         ("script:hello", "avatar:anna", "render:viseme-crf18-veryfast:hello|anna",
          "checks:viseme-crf18-veryfast:hello|anna")),
    ]
    assert [stage.value for stage in Stage] == ["script", "avatar", "render", "checks", "campaign"]


def test_run_ids() -> None:
    """`heygem run` derives run ids from (item, token, attempt): two clients of one instance must agree on them."""
    assert str(RUN_ID_NAMESPACE) == "8f0c6f61-6a39-4f8e-9a53-1f0a5c6b2d11"
    item = "render:viseme-crf18-veryfast:hello|anna"
    assert work_run_id(item, RENDER_TOKEN, attempt=0) == "2850297d-2fef-5d66-976b-45cd2894d811"
    assert work_run_id(item, RENDER_TOKEN, attempt=1) == "4c66747d-e110-559b-b4b6-19c29eb18cc1"
    assert work_run_id("script:hello", SCRIPT_TOKEN, attempt=0) == "a161e927-e376-5a6f-ae6d-23a2124fdc6e"


def test_sensor_cursor_format() -> None:
    """The bucket sensor's cursor is stored by Dagster between ticks: its format must keep parsing."""
    cursor = BucketCursor(seen={"scripts/hello.wav": "1000:1700000000.0"}, requested={"script:hello": SCRIPT_TOKEN})
    assert cursor.dumps() == ('{"requested": {"script:hello": "1000:1700000000.0|script-v2|voice=en-us|'
                              'transcript=none"}, "seen": {"scripts/hello.wav": "1000:1700000000.0"}}')
    assert BucketCursor.parse(cursor.dumps()) == cursor


# ---------------------------------------------------------------------------------------------------- ids


def test_safe_ids() -> None:
    """safe_id turns upload file names into partition keys and bucket folders: the same name must keep its id."""
    names = ["hello.wav", "Hello.wav", "anna smith.mp4", "Anna Smith.MP4", "anna_smith.mp4", "Ünïcödé Café.wav",
             "张伟.mp4", "日本語のスクリプト.txt", "v1.2.final.wav", "report.tar.gz", "-dash.wav", "_under.wav",
             "a--b.wav", "ok-name_1.wav", "🎤 intro.mp3", "  spaced  .wav", "---.wav", "noext", "UPPER",
             "dir/sub/anna.png", "C:\\uploads\\Anna.png", "x" * 70 + ".wav", "Long Name " * 8 + ".mp4", "launch.yaml",
             ""]
    assert {name: safe_id(name) for name in names} == {
        "hello.wav": "hello",
        "Hello.wav": "hello_f7ff9e8b",
        "anna smith.mp4": "anna_smith_e8db8003",
        "Anna Smith.MP4": "anna_smith_d272869a",
        "anna_smith.mp4": "anna_smith",
        "Ünïcödé Café.wav": "unicode_cafe_845e2134",
        "张伟.mp4": "id_4e999891",
        "日本語のスクリプト.txt": "id_13e36c43",
        "v1.2.final.wav": "v1_2_final_43cb8440",
        "report.tar.gz": "report_tar_df4d14c5",
        "-dash.wav": "dash_c7481947",
        "_under.wav": "under_f48ba724",
        "a--b.wav": "a--b",
        "ok-name_1.wav": "ok-name_1",
        "🎤 intro.mp3": "intro_0c950286",
        "  spaced  .wav": "spaced_56e5eb07",
        "---.wav": "id_58b63e27",
        "noext": "noext",
        "UPPER": "upper_1dacd1c3",
        "dir/sub/anna.png": "anna",
        "C:\\uploads\\Anna.png": "anna_0dc3c11c",
        "x" * 70 + ".wav": "x" * 64,
        "Long Name " * 8 + ".mp4": "long_name_long_name_long_name_long_name_long_name_long__3fcedcc8",
        "launch.yaml": "launch",
        "": "id_da39a3ee",
    }
    for hidden in (".hidden.wav", ".DS_Store", ".wav", "...wav"):
        with pytest.raises(UnsafeNameError) as raised:
            safe_id(hidden)
        assert (raised.value.path, raised.value.problem, raised.value.fix) == (
            hidden, "hidden file names are not inputs", "rename it without the leading dot")


# --------------------------------------------------------------------------------- code location, instance


def _yaml(rel: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / rel).read_text())


def test_code_location_and_instance_classes() -> None:
    """Runs in the history name their code location; dagster.yaml files in every DAGSTER_HOME name these classes."""
    assert LOCATION_NAME == "heygem_pipeline.definitions"
    # workspace.yaml's python_module entry has no location_name: Dagster names the location after the module.
    assert _yaml("workspace.yaml") == {"load_from": [{"python_module": {
        "module_name": "heygem_pipeline.definitions", "working_directory": "."}}]}
    embedded = yaml.safe_load(_workspace_yaml(RunDir(Path("/home"))))
    assert embedded["load_from"][0]["grpc_server"]["location_name"] == "heygem_pipeline.definitions"
    expected = {
        "dagster.yaml": {
            "run_coordinator": ("dagster.core.run_coordinator", "QueuedRunCoordinator"),
            "run_launcher": ("heygem_pipeline.run_launcher", "CeleryRunLauncher"),
            "compute_logs": ("heygem_pipeline.instance_storage", "FileComputeLogManager"),
            "event_log_storage": ("heygem_pipeline.instance_storage", "SharedIndexSqliteEventLogStorage"),
        },
        "deploy/dagster-postgres.yaml": {
            "run_coordinator": ("dagster.core.run_coordinator", "QueuedRunCoordinator"),
            "run_launcher": ("heygem_pipeline.run_launcher", "CeleryRunLauncher"),
            "compute_logs": ("heygem_pipeline.instance_storage", "FileComputeLogManager"),
        },
    }
    for rel, classes in expected.items():
        config = _yaml(rel)
        named = {key: (value["module"], value["class"]) for key, value in config.items()
                 if isinstance(value, dict) and "module" in value}
        assert named == classes, rel
    # Dagster reads its own legacy dagster.core.* path as dagster._core.*; the project's classes import as named
    # (the modules dagster.yaml names re-export them from heygem_pipeline.instance).
    for module, name in expected["dagster.yaml"].values():
        if module.startswith("heygem_pipeline."):
            cls = getattr(importlib.import_module(module), name)
            assert inspect.isclass(cls) and cls.__name__ == name


# ---------------------------------------------------------------------------------- records in the bucket


def test_error_records() -> None:
    """work/errors/<stage>/<key>.json is read back by the planners (token, final, at) and shown in manifests."""
    bucket = Bucket(f"memory://golden-errors-{uuid.uuid4().hex[:8]}")
    try:
        key = render_error_key(VARIANT, "hello", "anna")
        write_error(bucket, "render", key, RENDER_TOKEN, "render hello × anna: boom", final=True)
        record = bucket.read_json("work/errors/render/viseme-crf18-veryfast.hello.anna.json")
        assert record is not None and sorted(record) == ["at", "final", "key", "message", "stage", "token"]
        assert {k: v for k, v in record.items() if k != "at"} == {
            "stage": "render", "key": "viseme-crf18-veryfast.hello.anna", "token": RENDER_TOKEN,
            "message": "render hello × anna: boom", "final": True}
    finally:
        bucket.fs.rm(bucket.root, recursive=True)


# ---------------------------------------------------------------------- one pair through every stage

# Each stage's own code (asset, check, sensor, schedule and request bodies, called with stand-in contexts) writes its
# stamps, records and outputs; only the media work (intake, tracking, rendering, measuring) is faked. The uploads
# are old, so settled at once, and their versions (modification times) are fixed, so are their tokens.
MTIME = 1_700_000_000
UPLOADS = {"scripts/hello.wav": b"RIFF" * 25, "avatars/anna.mp4": b"mp4" * 100,
           "campaigns/launch.yaml": b"scripts: ['*']\navatars: ['*']\n"}


def _body(definition: Any) -> Any:
    """The Python function under a Dagster asset, asset check, op, sensor or schedule (called with stand-ins)."""
    if callable(definition) and not hasattr(definition, "node_def") and not hasattr(definition, "compute_fn"):
        return definition  # a sensor's or schedule's function (its definition is made by make_*(settings))
    if hasattr(definition, "_raw_fn"):  # a sensor
        return definition._raw_fn
    if hasattr(definition, "_execution_fn"):  # a schedule
        return definition._execution_fn.decorated_fn
    return getattr(definition, "node_def", definition).compute_fn.decorated_fn


class _Instance:
    """The instance, as the stages, the sensor and the schedule ask it: no partitions, no runs in flight yet."""

    def __init__(self, render_metadata: dict[str, Any] | None = None) -> None:
        self.render_metadata = {label: SimpleNamespace(value=value) for label, value in (render_metadata or {}).items()}

    def get_dynamic_partitions(self, name: str) -> list[str]:
        return []

    def add_dynamic_partitions(self, name: str, keys: list[str]) -> None:
        pass

    def get_run_records(self, *args: Any, **kwargs: Any) -> list:
        return []

    def fetch_materializations(self, records_filter: Any, limit: int) -> SimpleNamespace:
        """The pair's latest render, for its quality check."""
        materialization = SimpleNamespace(metadata=self.render_metadata)
        return SimpleNamespace(records=[SimpleNamespace(asset_materialization=materialization)])


def _context(partition_key: str | MultiPartitionKey | None = None, **fields: Any) -> SimpleNamespace:
    fields = {"instance": _Instance(), **fields}
    return SimpleNamespace(partition_key=partition_key, log=logging.getLogger(__name__), retry_number=0,
                           run=SimpleNamespace(run_id="golden-run"), **fields)


def _touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).write_bytes(b"x")


def _prepare_script(upload: Path, work: Path, **_: Any) -> dict:
    _touch(work, folders.SCRIPT_SOURCE, folders.SCRIPT_ANALYSIS, folders.SCRIPT_FEATURES)
    record = {"duration_s": 2.0, "mel_columns": 160, "captions": {"status": folders.NO_TRANSCRIPT}}
    (work / folders.SCRIPT_RECORD).write_text(json.dumps(record))
    return record


def _prepare_avatar(upload: Path, work: Path, **_: Any) -> SimpleNamespace:
    _touch(work, folders.AVATAR_TEMPLATE, folders.AVATAR_RECORD)
    return SimpleNamespace(width=640, height=360, fps=25.0, frame_count=50, duration_s=2.0, was_still=False,
                           rotation_applied=0, warnings=[])


def _track_avatar(work: Path, **_: Any) -> SimpleNamespace:
    _touch(work, folders.AVATAR_TRACK, folders.AVATAR_BANK)
    return SimpleNamespace(summary=lambda: {"frames": 50, "coverage": 1.0, "interpolated_frames": 0,
                                            "mean_face_height_px": 120.0, "longest_gap_frames": 0,
                                            "flagged_gaps": []})


def _render_pair(script_work: Path, avatar_work: Path, dest: Path, engine: Any, **_: Any) -> RenderResult:
    dest.write_bytes(b"mp4")
    return RenderResult(path=dest, engine="viseme", frames=50, fps=25.0, width=640, height=360, duration_s=2.0,
                        render_seconds=1.0, preview_jpeg=b"jpeg")


def _render_fails(*args: Any, **kwargs: Any) -> RenderResult:
    raise HeygemError("the engine gave up")


def _measure_sync(video: Path, face_track: Any) -> SyncReport:
    return SyncReport(offset_frames=0, confidence=0.9, frames=50, fps=25.0, face_coverage=1.0, audio_duration_s=2.0,
                      aperture=np.zeros(1), loudness_db=np.zeros(1), speech_s=2.0, speech_bursts=6)


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A campaign of one pair, from upload to delivery, in the order the bucket sensor asks for its stages."""
    root = tmp_path_factory.mktemp("bucket")
    for rel, data in UPLOADS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        os.utime(root / rel, (MTIME, MTIME))
    bucket, ffmpeg = BucketResource(url=str(root)), FFmpegResource()
    engine = SimpleNamespace(engine="viseme", get=lambda name=None, checkpoint=None, models=None: None)
    resources = {"bucket": bucket, "engine": engine, "ffmpeg": ffmpeg}
    seen: dict[str, Any] = {"root": root, "ticks": []}

    def tick() -> Any:
        cursor = seen["ticks"][-1].cursor if seen["ticks"] else None
        seen["ticks"].append(_body(bucket_sensor)(_context(cursor=cursor), **resources))
        return seen["ticks"][-1]

    pair = pair_partition_key("hello", "anna")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stages, "prepare_script", _prepare_script)
        patch.setattr(stages, "prepare_avatar", _prepare_avatar)
        patch.setattr(stages, "track_avatar", _track_avatar)
        patch.setattr(avatars_module, "thumbnail_jpeg", lambda *args, **kwargs: b"jpeg")
        patch.setattr(avatars_module, "MouthBank", SimpleNamespace(load=lambda path: None))
        patch.setattr(checks_module, "measure_sync", _measure_sync)
        patch.setattr(checks_module, "FaceTrack", SimpleNamespace(load=lambda path: None))
        tick()  # intake
        list(_body(script_intake)(_context("hello"), bucket=bucket, ffmpeg=ffmpeg))
        _body(avatar_video)(_context("anna"), bucket=bucket, ffmpeg=ffmpeg)
        _body(face_track)(_context("anna"), bucket=bucket, ffmpeg=ffmpeg)
        render_request = tick().run_requests[0]
        night = datetime.datetime(2024, 5, 1, 2, 0, tzinfo=datetime.timezone.utc)
        seen["nightly"] = _body(nightly_campaigns)(_context(scheduled_execution_time=night), **resources)
        config = RenderConfig(**render_request.run_config["ops"]["lipsync_video"]["config"])
        patch.setattr(stages, "render_pair", _render_fails)
        with pytest.raises(Failure):
            _body(lipsync_video)(_context(pair), config=config, bucket=bucket, engine=engine, ffmpeg=ffmpeg)
        seen["render_error"] = Bucket(str(root)).read_json(
            "work/errors/render/viseme-crf18-veryfast.hello.anna.json")
        patch.setattr(stages, "render_pair", _render_pair)
        seen["render"] = _body(lipsync_video)(_context(pair), config=config, bucket=bucket, engine=engine,
                                              ffmpeg=ffmpeg)
        tick()  # checks
        checks_context = _context("anna|hello", instance=_Instance(render_metadata=seen["render"].metadata))
        seen["checks"] = list(_body(lipsync_quality_checks)(checks_context, bucket=bucket))
        tick()  # deliverables
        seen["manifest"] = _body(campaign_manifest)(_context("launch"), bucket=bucket, engine=engine, ffmpeg=ffmpeg)
        seen["zip"] = _body(campaign_zip)(_context("launch"), bucket=bucket)
        request = _body(campaign_request)(_context(), config=RequestConfig(campaign="launch"), bucket=bucket,
                                              ffmpeg=ffmpeg)
        seen["plan"] = request.metadata["plan"].value
    return seen


# The chain's uploads give these tokens (sizes 100 and 300, version = the modification time).
CHAIN_SCRIPT_TOKEN = "100:1700000000.0|script-v2|voice=en-us|transcript=none"
CHAIN_AVATAR_TOKEN = "300:1700000000.0|avatar-v1|fps=25|still=5"
CHAIN_TRACK_TOKEN = f"{CHAIN_AVATAR_TOKEN}|track-v2"
CHAIN_INPUTS_TOKEN = f"{CHAIN_SCRIPT_TOKEN}#{CHAIN_TRACK_TOKEN}"
CHAIN_RENDER_TOKEN = f"{CHAIN_INPUTS_TOKEN}|viseme-crf18-veryfast|render-v2"


def test_stamps_and_records_written_by_the_stages(factory: dict[str, Any]) -> None:
    """Stamps and records are read back by later stages, the planners and the manifest: their keys are a format."""
    bucket = Bucket(str(factory["root"]))
    script_stamp = bucket.read_json("work/scripts/hello/stamp.json")
    video_stamp = bucket.read_json("work/avatars/anna/video.stamp.json")
    track_stamp = bucket.read_json("work/avatars/anna/track.stamp.json")
    assert script_stamp is not None and video_stamp is not None and track_stamp is not None
    assert sorted(script_stamp) == ["duration_s", "source", "token", "written_at"]
    assert sorted(video_stamp) == sorted(track_stamp) == ["source", "token", "written_at"]
    assert (script_stamp["token"], script_stamp["source"], script_stamp["duration_s"]) == (
        CHAIN_SCRIPT_TOKEN, "hello.wav", 2.0)
    assert (video_stamp["token"], video_stamp["source"]) == (CHAIN_AVATAR_TOKEN, "anna.mp4")
    assert (track_stamp["token"], track_stamp["source"]) == (CHAIN_TRACK_TOKEN, "anna.mp4")

    record = bucket.read_json("work/renders/viseme-crf18-veryfast/hello/anna.json")
    assert record is not None and sorted(record) == [
        "avatar", "avatar_source", "code_version", "crf", "duration_s", "engine", "fps", "frames", "height",
        "inputs_token", "path", "preset", "render_id", "render_seconds", "rendered_at", "run_id", "script",
        "script_source", "size_bytes", "variant", "width"]
    assert {key: record[key] for key in ("script", "avatar", "script_source", "avatar_source", "variant", "engine",
                                         "crf", "preset", "inputs_token", "code_version", "path", "run_id")} == {
        "script": "hello", "avatar": "anna", "script_source": "hello.wav", "avatar_source": "anna.mp4",
        "variant": "viseme-crf18-veryfast", "engine": "viseme", "crf": 18, "preset": "veryfast",
        "inputs_token": CHAIN_INPUTS_TOKEN, "code_version": "2",
        "path": "work/renders/viseme-crf18-veryfast/hello/anna.mp4", "run_id": "golden-run"}
    assert re.fullmatch(r"[0-9a-f]{32}", record["render_id"])

    quality = bucket.read_json("work/renders/viseme-crf18-veryfast/hello/anna.quality.json")
    assert quality is not None and sorted(quality) == [
        "audio_duration_s", "checks", "code_version", "face_coverage", "passed", "render_id", "summary",
        "sync_confidence", "sync_measurable", "sync_note", "sync_offset_frames", "video_duration_s",
        "voice_duration_s"]
    assert quality["checks"] == {"av_sync_within_1_frame": True, "duration_matches_audio": True,
                                 "face_coverage": True}
    assert (quality["render_id"], quality["passed"], quality["code_version"], quality["summary"]) == (
        record["render_id"], True, "2", "")
    assert [result.check_name for result in factory["checks"]] == [
        "av_sync_within_1_frame", "duration_matches_audio", "face_coverage"]

    # The render that failed first recorded its failure under the render token, and the success cleared it.
    error = factory["render_error"]
    assert sorted(error) == ["at", "final", "key", "message", "stage", "token"]
    assert {k: v for k, v in error.items() if k != "at"} == {
        "stage": "render", "key": "viseme-crf18-veryfast.hello.anna", "token": CHAIN_RENDER_TOKEN,
        "message": "the engine gave up", "final": True}
    assert not bucket.exists("work/errors/render/viseme-crf18-veryfast.hello.anna.json")

    campaign = bucket.read_json("work/campaigns/launch.json")
    assert campaign is not None and sorted(campaign) == ["counts", "digest"]
    assert campaign["counts"] == {"ok": 1} and re.fullmatch(r"[0-9a-f]{16}", campaign["digest"])


def test_metadata_read_back_from_the_run_history(factory: dict[str, Any]) -> None:
    """Materialization and output metadata that checks, the API and the studio read back from past runs."""
    root = factory["root"]
    render = factory["render"].metadata
    assert render["record"] == "work/renders/viseme-crf18-veryfast/hello/anna.json"  # the quality check reads it
    assert render["path"].value == f"{root}/work/renders/viseme-crf18-veryfast/hello/anna.mp4"  # the API reads it
    assert render["variant"] == "viseme-crf18-veryfast"
    manifest = factory["manifest"].metadata
    assert [column.name for column in manifest["manifest"].value.schema.columns] == list(MANIFEST_COLUMNS)
    assert manifest["path"].value == f"{root}/outputs/launch/manifest.csv"
    assert manifest["parquet"].value == f"{root}/outputs/launch/manifest.parquet"
    assert factory["zip"].metadata["path"].value == f"{root}/outputs/launch/launch.zip"
    assert factory["plan"] == {  # request_job's output: the API's and the studio's plan of a request
        "campaign": "launch", "bucket": str(root), "folder": f"{root}/outputs/launch",
        "pairs": [{"script": "hello.wav", "avatar": "anna.mp4", "script_id": "hello", "avatar_id": "anna",
                   "output": f"{root}/outputs/launch/hello__anna.mp4"}]}


def test_the_bucket_after_one_delivered_pair(factory: dict[str, Any]) -> None:
    """Every file a campaign of one pair leaves in the bucket, by the name clients and the next runs look for."""
    root = factory["root"]
    files = sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())
    assert files == [
        "avatars/anna.mp4",
        "campaigns/launch.yaml",
        "outputs/launch/hello__anna.mp4",
        "outputs/launch/launch.zip",
        "outputs/launch/manifest.csv",
        "outputs/launch/manifest.parquet",
        "scripts/hello.wav",
        "work/avatars/anna/avatar.json",
        "work/avatars/anna/face_track.parquet",
        "work/avatars/anna/mouth_bank.npz",
        "work/avatars/anna/template.mp4",
        "work/avatars/anna/track.stamp.json",
        "work/avatars/anna/video.stamp.json",
        "work/campaigns/launch.json",
        "work/renders/viseme-crf18-veryfast/hello/anna.json",
        "work/renders/viseme-crf18-veryfast/hello/anna.mp4",
        "work/renders/viseme-crf18-veryfast/hello/anna.quality.json",
        "work/scripts/hello/analysis.wav",
        "work/scripts/hello/features.npz",
        "work/scripts/hello/script.json",
        "work/scripts/hello/source.mka",
        "work/scripts/hello/stamp.json",
    ]
    header, row = (root / "outputs/launch/manifest.csv").read_text().splitlines()
    assert header == ("campaign,script,avatar,status,output,duration_s,frames,fps,width,height,engine,"
                      "sync_offset_frames,sync_confidence,checks_passed,subtitles,captions_timing,error")
    assert row.startswith("launch,hello.wav,anna.mp4,ok,hello__anna.mp4,")
    with zipfile.ZipFile(root / "outputs/launch/launch.zip") as archive:
        assert archive.namelist() == ["hello__anna.mp4", "manifest.csv"]


def test_sensor_and_schedule_requests(factory: dict[str, Any]) -> None:
    """What the bucket sensor and the nightly schedule ask for: partitions, run keys, tags and their cursor."""
    intake, render, checks, deliverables = factory["ticks"]
    assert [(r.partitions_def_name, list(r.partition_keys)) for r in intake.dynamic_partitions_requests] == [
        ("script", ["hello"]), ("avatar", ["anna"]), ("campaign", ["launch"])]
    assert [(r.job_name, r.partition_key, r.run_key, r.tags) for r in intake.run_requests] == [
        ("script_job", "hello", "script:hello:521da7e87a03", {
            "heygem/trigger": "sensor", "heygem/item": "script:hello", "heygem/token": "521da7e87a03"}),
        ("avatar_job", "anna", "avatar:anna:f7138f6a9ab2", {
            "heygem/trigger": "sensor", "heygem/item": "avatar:anna", "heygem/token": "f7138f6a9ab2"}),
    ]
    assert json.loads(intake.cursor) == {
        "seen": {"avatars/anna.mp4": "300:1700000000.0", "campaigns/launch.yaml": "30:1700000000.0",
                 "scripts/hello.wav": "100:1700000000.0"},
        "requested": {"script:hello": CHAIN_SCRIPT_TOKEN, "avatar:anna": CHAIN_AVATAR_TOKEN}}
    [request] = render.run_requests
    assert (request.job_name, str(request.partition_key), request.run_key) == (
        "pair_job", "anna|hello", "pair:viseme-crf18-veryfast:anna|hello:2bf89ab81378")
    assert {k: v for k, v in request.tags.items() if k != "dagster/max_runtime"} == {
        "heygem/trigger": "sensor", "heygem/variant": "viseme-crf18-veryfast",
        "heygem/item": "render:viseme-crf18-veryfast:hello|anna", "heygem/token": "2bf89ab81378"}
    [request] = checks.run_requests
    render_id = factory["render"].metadata["render_id"]
    assert (request.job_name, request.partition_key, request.run_key) == (
        "check_job", None, f"checks:viseme-crf18-veryfast:anna|hello:{render_id}:9493d3649381")
    assert request.tags["heygem/item"] == "checks:viseme-crf18-veryfast:hello|anna"
    assert request.tags["dagster/partition"] == "anna|hello"
    [request] = deliverables.run_requests
    assert (request.job_name, request.partition_key, request.tags["heygem/item"]) == (
        "campaign_job", "launch", "campaign:launch")
    assert re.fullmatch(r"campaign:launch:[0-9a-f]{12}", request.run_key)
    [nightly] = factory["nightly"]
    assert isinstance(nightly, RunRequest)
    assert (str(nightly.partition_key), nightly.run_key) == (
        "anna|hello", "2024-05-01:viseme-crf18-veryfast:anna|hello")
    assert {k: v for k, v in nightly.tags.items() if k != "dagster/max_runtime"} == {
        "heygem/trigger": "nightly", "heygem/variant": "viseme-crf18-veryfast", "heygem/reason": "not rendered yet",
        "heygem/item": "render:viseme-crf18-veryfast:hello|anna", "heygem/token": "2bf89ab81378"}
