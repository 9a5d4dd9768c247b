"""S3 for real: the README's scale-out bucket (``HEYGEM_BUCKET=s3://…``) against a local S3-compatible server.

moto's server runs in a process of its own on a free port; the factory reaches it through the standard AWS
variables only (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``),
which every process it starts inherits. Uploads and read-backs go through boto3, a client independent of the
factory's s3fs, as a user's tools would. One module-scoped ``heygem run`` delivers a campaign (intake, render,
checks, manifests, zip, all on S3); the bucket sensor then sees a later upload only once it is complete; large
media is staged to local scratch in a stream.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import time
import tracemalloc
import zipfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterInstance, RunRequest, build_schedule_context, build_sensor_context

from heygem_pipeline.demo_media import write_template_video
from heygem_pipeline.engine.audio.intake import synthesize_speech
from heygem_pipeline.engine.media.probe import probe
from heygem_pipeline.factory.bucket import Bucket
from heygem_pipeline.factory.deliver import MANIFEST_COLUMNS
from heygem_pipeline.factory.uploads import scan_bucket, settled_since
from tests.helpers import REPO
from tests.helpers.servers import s3_server

pytestmark = pytest.mark.slow

BUCKET = "heygem-factory"
PREFIX = "studio-a"  # the factory's bucket is a folder inside the S3 bucket
URL = f"s3://{BUCKET}/{PREFIX}"
SIZE = {"width": 640, "height": 360}


def key(rel: str) -> str:
    return f"{PREFIX}/{rel}"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The server, the AWS variables pointing at it, a Dagster home, and an S3 bucket holding one campaign."""
    folder = tmp_path_factory.mktemp("s3")
    with s3_server(folder / "moto.log") as endpoint, pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL", endpoint)
        env.setenv("AWS_ACCESS_KEY_ID", "heygem-test")
        env.setenv("AWS_SECRET_ACCESS_KEY", "heygem-test-secret")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("DAGSTER_HOME", str(folder / "dagster_home"))
        env.setenv("HEYGEM_BUCKET", URL)
        import boto3

        client = boto3.client("s3")  # the user's own tool: reads the same variables
        client.create_bucket(Bucket=BUCKET)
        local = folder / "uploads"
        synthesize_speech("Hello from a bucket in the cloud.", local / "hello.wav")
        write_template_video(local / "presenter.mp4", 1.0, fps=25, **SIZE)
        for name, rel in (("hello.wav", "scripts/hello.wav"), ("presenter.mp4", "avatars/presenter.mp4")):
            client.upload_file(str(local / name), BUCKET, key(rel))
        client.put_object(Bucket=BUCKET, Key=key("transcripts/hello.txt"), Body=b"Hello from a bucket in the cloud.")
        client.put_object(Bucket=BUCKET, Key=key("campaigns/launch.yaml"),
                          Body=b"scripts: ['*']\navatars: [presenter]\n")
        yield {"client": client, "folder": folder, "local": local}


def read(s3: dict, rel: str) -> bytes:
    return s3["client"].get_object(Bucket=BUCKET, Key=key(rel))["Body"].read()


def keys(s3: dict) -> list[str]:
    pages = s3["client"].get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{PREFIX}/")
    return sorted(item["Key"][len(PREFIX) + 1:] for page in pages for item in page.get("Contents", []))


@pytest.fixture(scope="module")
def delivered(s3: dict) -> subprocess.CompletedProcess[str]:
    """``heygem run`` on the S3 bucket, as the README's recipe runs it: services, workers and all."""
    run = subprocess.run([sys.executable, "-m", "heygem_pipeline.cli", "run", "--bucket", URL, "--campaign", "launch"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def test_heygem_run_delivers_a_campaign_on_s3(s3: dict, delivered: subprocess.CompletedProcess[str],
                                              tmp_path: Path) -> None:
    assert re.search(r"^launch +hello\.wav +presenter\.mp4 +ok ", delivered.stdout, re.MULTILINE), delivered.stdout
    assert f"zip      {URL}/outputs/launch/launch.zip" in delivered.stdout  # where the summary says it is
    everything = keys(s3)
    # Intake, render and checks wrote their intermediates to the bucket; nothing half-written is left behind.
    for rel in ("work/scripts/hello/stamp.json", "work/avatars/presenter/video.stamp.json",
                "work/avatars/presenter/track.stamp.json"):
        assert rel in everything
    assert [rel for rel in everything if rel.startswith("work/renders/") and rel.endswith(".quality.json")]
    assert not [rel for rel in everything if ".tmp" in rel], everything
    outputs = sorted(rel for rel in everything if rel.startswith("outputs/launch/"))
    assert outputs == [f"outputs/launch/{name}" for name in (
        "hello__presenter.mp4", "hello__presenter.srt", "hello__presenter.vtt", "launch.zip", "manifest.csv",
        "manifest.parquet")]

    manifest = pd.read_csv(io.BytesIO(read(s3, "outputs/launch/manifest.csv")))
    assert tuple(manifest.columns) == MANIFEST_COLUMNS and len(manifest) == 1
    row = manifest.iloc[0]
    assert (row.script, row.avatar, row.status, row.output) == ("hello.wav", "presenter.mp4", "ok",
                                                                "hello__presenter.mp4")
    assert bool(row.checks_passed) and (row.width, row.height) == (640, 360) and row.subtitles == "srt+vtt"
    parquet = pd.read_parquet(io.BytesIO(read(s3, "outputs/launch/manifest.parquet")))
    assert parquet.shape == (1, len(MANIFEST_COLUMNS)) and parquet.status.tolist() == ["ok"]

    video = read(s3, "outputs/launch/hello__presenter.mp4")
    (tmp_path / "out.mp4").write_bytes(video)
    info = probe(tmp_path / "out.mp4")
    assert info.video is not None and info.audio is not None and (info.video.width, info.video.height) == (640, 360)
    assert "cloud" in read(s3, "outputs/launch/hello__presenter.srt").decode().lower()
    with zipfile.ZipFile(io.BytesIO(read(s3, "outputs/launch/launch.zip"))) as archive:
        assert sorted(archive.namelist()) == ["hello__presenter.mp4", "hello__presenter.srt", "hello__presenter.vtt",
                                              "manifest.csv"]
        assert archive.read("hello__presenter.mp4") == video
        assert archive.read("manifest.csv") == read(s3, "outputs/launch/manifest.csv")


def tick(env: dict) -> tuple[list[RunRequest], dict[str, list[str]], str]:
    """One evaluation of the real bucket sensor against the real instance; its partition requests are applied as
    the daemon would. Returns the run requests, the partitions added and the skip message."""
    instance: DagsterInstance = env["instance"]
    context = build_sensor_context(instance=instance, cursor=env["cursor"], definitions=env["defs"],
                                   resources=env["resources"])
    result = env["defs"].resolve_sensor_def("bucket_sensor")(context)
    env["cursor"] = result.cursor
    adds = {}
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        adds[request.partitions_def_name] = list(request.partition_keys)
    skip = result.skip_reason.skip_message if result.skip_reason else ""
    return list(result.run_requests or []), adds, skip


def test_bucket_sensor_takes_a_new_upload_only_once_it_is_complete(s3: dict, delivered) -> None:
    from heygem_pipeline.definitions import defs
    from heygem_pipeline.settings import Settings
    from resources import BucketResource, build_resources

    env = {"instance": DagsterInstance.get(), "defs": defs, "cursor": None,
           "resources": {**build_resources(Settings.from_env()), "bucket": BucketResource(url=URL)}}
    assert tick(env)[:2] == ([], {})  # what `heygem run` delivered is fresh: nothing to do
    assert tick(env)[:2] == ([], {})

    # A multipart upload in progress: its parts are on the server, the object is not there yet.
    client, late = s3["client"], synthesize_speech("I arrived late.", s3["local"] / "late.wav").read_bytes()
    upload = client.create_multipart_upload(Bucket=BUCKET, Key=key("scripts/late.wav"))
    part = client.upload_part(Bucket=BUCKET, Key=key("scripts/late.wav"), UploadId=upload["UploadId"],
                              PartNumber=1, Body=late)
    requests, adds, skip = tick(env)
    assert (requests, adds) == ([], {}) and "nothing new" in skip
    client.complete_multipart_upload(Bucket=BUCKET, Key=key("scripts/late.wav"), UploadId=upload["UploadId"],
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert tick(env)[:2] == ([], {})  # complete now, seen once: it must look the same on the next tick

    # Replaced before that tick, by content of the same size: only the ETag tells, and it is not settled yet.
    retake = bytearray(late)
    retake[-200:] = bytes(200)
    client.put_object(Bucket=BUCKET, Key=key("scripts/late.wav"), Body=bytes(retake))
    assert tick(env)[:2] == ([], {})
    requests, adds, _ = tick(env)  # unchanged since the last look: complete
    assert adds == {"script": ["late"]}
    assert [(r.job_name, r.partition_key) for r in requests] == [("script_job", "late")]
    assert requests[0].run_config["resources"]["bucket"]["config"]["url"] == URL
    assert tick(env)[0] == []  # requested once


def test_a_restarted_sensor_takes_old_s3_uploads_on_first_sight(s3: dict) -> None:
    """Objects appear on S3 only once complete; one older than the settle time needs no second look (a sensor
    whose cursor was lost must not wait a tick for every file)."""
    bucket = Bucket(URL)
    fresh = scan_bucket(bucket, settled=settled_since({}, now=time.time(), settle_seconds=3600.0))
    assert {e.rel for e in fresh.unsettled} >= {"scripts/hello.wav", "avatars/presenter.mp4"}
    later = scan_bucket(bucket, settled=settled_since({}, now=time.time() + 7200.0, settle_seconds=3600.0))
    assert later.unsettled == [] and {"hello", "presenter"} <= set(later.scripts) | set(later.avatars)


def test_nightly_schedule_renders_stale_pairs_of_an_s3_bucket(s3: dict, delivered,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The schedule looks once, with no earlier look to compare: S3 uploads must settle by their age."""
    import assets.schedules
    from heygem_pipeline.definitions import defs
    from heygem_pipeline.factory.campaigns import RenderOptions
    from heygem_pipeline.factory.layout import render_record_path
    from heygem_pipeline.settings import Settings
    from resources import BucketResource, build_resources

    monkeypatch.setattr(assets.schedules, "SETTLE_SECONDS", 0.0)
    bucket = Bucket(URL)
    record_rel = render_record_path(bucket, RenderOptions().variant, "hello", "presenter")
    bucket.write_json(record_rel, {**bucket.read_json(record_rel), "code_version": "0"})  # rendered by old code
    context = build_schedule_context(instance=DagsterInstance.get(), scheduled_execution_time=datetime(2026, 11, 22, 2),
                                     resources={**build_resources(Settings.from_env()),
                                                "bucket": BucketResource(url=URL)})
    requests = defs.resolve_schedule_def("nightly_campaigns")(context)
    assert [(str(r.partition_key), r.tags["heygem/reason"]) for r in requests] == [
        ("presenter|hello", "render code version changed")]  # late × presenter waits for its script's intake


def digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def test_large_media_is_staged_to_scratch_in_a_stream(s3: dict) -> None:
    """A 60 MB video (over s3fs's 50 MiB transfer part) is staged to local scratch for the engine: the bytes are
    streamed to disk, so the Python memory allocated while staging stays far below the file's size (a whole-file
    read, or s3fs's default of parts fetched in parallel, holds it all at once)."""
    big = s3["folder"] / "big.mp4"
    with big.open("wb") as file:
        for _ in range(60):
            file.write(os.urandom(1 << 20))
    bucket = Bucket(URL)
    bucket.upload(big, "work/avatars/big/template.mp4")
    assert bucket.size("work/avatars/big/template.mp4") == big.stat().st_size
    tracemalloc.start()
    try:
        with bucket.local_file("work/avatars/big/template.mp4") as staged:
            assert digest(staged) == digest(big)
            file_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        with bucket.local_folder("work/avatars/big", inputs=("template.mp4",)) as folder:
            assert digest(folder / "template.mp4") == digest(big)
            folder_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert file_peak < 4 << 20 and folder_peak < 4 << 20, (file_peak, folder_peak)
