"""The whole factory through Dagster on a real instance: tiny real media, real ffmpeg and MediaPipe, no mocks.

One module-scoped run renders a campaign of 1 script × 4 avatars, one of which shows no face; later tests add a
script, and inject a transient storage fault. Event-log counts prove what was (not) computed again.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import cv2
import fsspec
import numpy as np
import pandas as pd
import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterEventType, DagsterInstance
from fsspec.implementations.local import LocalFileSystem

from heygem_pipeline.client.run import FactoryReport, run_factory
from heygem_pipeline.demo_media import write_still, write_template_video
from heygem_pipeline.engine.audio.intake import synthesize_speech
from heygem_pipeline.factory.campaigns import RenderOptions
from heygem_pipeline.factory.deliver import MANIFEST_COLUMNS
from tests.helpers import REPO, dagster_home_env

pytestmark = pytest.mark.slow

SIZE = {"width": 640, "height": 360}


def make_inputs(root: Path) -> Path:
    """1 short script, 3 presenter avatars (two clips, one photo) and one photo with no face; one campaign."""
    synthesize_speech("Hello, and welcome to the launch.", root / "scripts" / "hello.wav")
    write_template_video(root / "avatars" / "presenter.mp4", 1.2, fps=25, **SIZE)
    write_template_video(root / "avatars" / "Studio Take.mp4", 1.0, fps=25, **SIZE)
    write_still(root / "avatars" / "portrait.png", **SIZE)
    gradient = np.tile(np.linspace(40, 200, SIZE["width"], dtype=np.uint8), (SIZE["height"], 1))
    cv2.imwrite(str(root / "avatars" / "empty_room.png"), cv2.merge([gradient, gradient, gradient]))
    (root / "avatars" / ".DS_Store").write_bytes(b"\x00junk")
    (root / "campaigns").mkdir(parents=True, exist_ok=True)
    (root / "campaigns" / "launch.yaml").write_text("scripts: ['*']\navatars: [presenter, 'Studio*', portrait.png, "
                                                    "empty_room]\n")
    return root


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from heygem_pipeline.instance.services import session
    from heygem_pipeline.instance.setup import prepare_home

    with dagster_home_env(tmp_path_factory.mktemp("dagster_home")) as home:
        prepare_home(home)
        # Held for the module, as `heygem ui` holds them: every run_factory below uses the same running services.
        with session(home, REPO / "workspace.yaml") as services:
            services.workspace()
            yield home


@pytest.fixture(scope="module")
def bucket(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_inputs(tmp_path_factory.mktemp("bucket"))


@pytest.fixture(scope="module")
def first_run(home: Path, bucket: Path) -> FactoryReport:
    seen: list[tuple[int, int]] = []
    report = run_factory(str(bucket), progress=lambda done, total, message: seen.append((done, total)))
    assert seen[0] == (0, 4) and seen[-1] == (4, 4)
    return report


@pytest.fixture(scope="module")
def instance(home: Path) -> DagsterInstance:
    return DagsterInstance.get()


def materializations(instance: DagsterInstance, asset: str) -> list:
    return list(instance.fetch_materializations(AssetRecordsFilter(asset_key=AssetKey(asset)), limit=1000).records)


def events(instance: DagsterInstance, report: FactoryReport, event_type: DagsterEventType) -> list:
    return [e for r in report.runs if r.run_id for e in instance.all_logs(r.run_id, of_type=event_type)]


def test_full_graph_renders_checks_and_delivers(first_run: FactoryReport, bucket: Path,
                                                instance: DagsterInstance) -> None:
    statuses = {p.avatar: p.status for p in first_run.pairs}
    assert statuses == {"presenter.mp4": "ok", "Studio Take.mp4": "ok", "portrait.png": "ok",
                        "empty_room.png": "failed"}
    assert not first_run.ok and [s.rel for s in first_run.skipped] == ["avatars/.DS_Store"]
    outputs = bucket / "outputs" / "launch"
    manifest = pd.read_csv(outputs / "manifest.csv")
    assert tuple(manifest.columns) == MANIFEST_COLUMNS and len(manifest) == 4
    good = manifest[manifest.status == "ok"]
    assert set(good.engine) == {"viseme"} and good.checks_passed.all()
    # A 2 s greeting is too little speech to measure a lag: no offset then (the check passed with a note).
    assert (good.sync_offset_frames.dropna().abs() <= 1).all() and (good.frames > 0).all()
    assert set(good.width) == {640} and set(good.height) == {360}
    for output in good.output:
        assert (outputs / output).stat().st_size > 1000
    assert pd.read_parquet(outputs / "manifest.parquet").shape == (4, len(MANIFEST_COLUMNS))
    with zipfile.ZipFile(outputs / "launch.zip") as archive:
        assert sorted(archive.namelist()) == sorted(["manifest.csv", *good.output])
        assert len(pd.read_csv(io.BytesIO(archive.read("manifest.csv")))) == 4
    # Every rendered video carries its metadata and a thumbnail, and has three passing checks.
    rendered = materializations(instance, "lipsync_video")
    assert len(rendered) == 3
    metadata = rendered[0].asset_materialization.metadata
    for key in ("duration_s", "frames", "fps", "resolution", "engine", "file_size", "script_source",
                "avatar_source", "path"):
        assert key in metadata
    assert metadata["thumbnail"].value.startswith("![thumbnail](data:image/jpeg;base64,")
    for avatar in materializations(instance, "avatar_video"):  # clips and the photo's still clip alike
        assert avatar.asset_materialization.metadata["thumbnail"].value.startswith("![thumbnail](data:image/jpeg")
    checks = events(instance, first_run, DagsterEventType.ASSET_CHECK_EVALUATION)
    assert len(checks) == 9
    assert all(e.dagster_event.event_specific_data.passed for e in checks)
    assert {e.dagster_event.event_specific_data.check_name for e in checks} == {
        "av_sync_within_1_frame", "duration_matches_audio", "face_coverage"}
    assert len(materializations(instance, "campaign_manifest")) == len(materializations(instance, "campaign_zip")) == 1


def test_every_run_was_enqueued_and_launched_by_dagster_onto_its_celery_queue(first_run: FactoryReport,
                                                                           instance: DagsterInstance) -> None:
    assert {r.job for r in first_run.runs} == {"script_job", "avatar_job", "pair_job", "check_job", "campaign_job"}
    for outcome in first_run.runs:
        run = instance.get_run_by_id(outcome.run_id)
        kinds = {e.dagster_event_type for e in instance.all_logs(outcome.run_id)}
        assert {DagsterEventType.RUN_ENQUEUED, DagsterEventType.RUN_STARTING} <= kinds, outcome
        assert run.tags["dagster-celery/task_id"] and run.tags["heygem/item"] == outcome.item
        assert run.tags["dagster-celery/queue"] == ("gpu" if outcome.job == "pair_job" else "cpu")


def test_bad_input_fails_its_pairs_once_with_the_intake_message(first_run: FactoryReport,
                                                                instance: DagsterInstance) -> None:
    (failure,) = first_run.failures
    assert failure.avatar == "empty_room.png" and "face was found in only" in failure.error
    assert "empty_room.png" in failure.error  # names the user's upload, not a temp file
    failures = events(instance, first_run, DagsterEventType.STEP_FAILURE)
    assert [e.step_key for e in failures] == ["face_track"]
    assert "face was found in only" in failures[0].dagster_event.step_failure_data.user_failure_data.description
    assert events(instance, first_run, DagsterEventType.STEP_UP_FOR_RETRY) == []  # bad input is not retried
    assert {r.job for r in first_run.runs if not r.success} == {"avatar_job"}


def test_adding_a_script_tracks_no_face_again(first_run: FactoryReport, bucket: Path,
                                              instance: DagsterInstance) -> None:
    tracks_before = len(materializations(instance, "face_track"))
    features_before = len(materializations(instance, "script_features"))
    assert (tracks_before, features_before) == (3, 1)
    synthesize_speech("Thanks for watching, see you soon.", bucket / "scripts" / "goodbye.wav")
    report = run_factory(str(bucket), "launch", progress=None)
    assert len(materializations(instance, "face_track")) == 3  # no face tracked again
    # Only the failed avatar was normalized again (the CLI retries failures): 4 in the first run, 1 now.
    assert len(materializations(instance, "avatar_video")) == 5
    assert len(materializations(instance, "script_features")) == 2  # only the new script's Mel
    assert len(materializations(instance, "lipsync_video")) == 6  # only the 3 new pairs rendered
    assert {(p.script, p.status) for p in report.pairs if p.avatar != "empty_room.png"} == {
        ("hello.wav", "ok"), ("goodbye.wav", "ok")}
    assert len(pd.read_csv(bucket / "outputs" / "launch" / "manifest.csv")) == 8
    # The bad avatar was tried again (the CLI retries failures) and failed the same way, for both scripts.
    assert {p.script for p in report.failures} == {"hello.wav", "goodbye.wav"}


class FlakyFileSystem(LocalFileSystem):
    """Local files behind a protocol of their own, whose next download of a face track fails once."""

    protocol = "flaky"
    faults: ClassVar[list[str]] = []

    @classmethod
    def _strip_protocol(cls, path):  # type: ignore[override]
        path = str(path)
        return super()._strip_protocol(path[len("flaky://"):] if path.startswith("flaky://") else path)

    def get_file(self, rpath, lpath, **kwargs):  # type: ignore[override]
        if str(rpath).endswith("face_track.parquet") and self.faults:
            raise ConnectionError(self.faults.pop())
        return super().get_file(rpath, lpath, **kwargs)


def test_transient_fault_is_retried_away(first_run: FactoryReport, bucket: Path, instance: DagsterInstance) -> None:
    from assets.partitions import pair_partition_key
    from assets.runs import run_config
    from heygem_pipeline.definitions import defs

    fsspec.register_implementation("flaky", FlakyFileSystem, clobber=True)
    FlakyFileSystem.faults[:] = ["connection reset by storage"]
    job = defs.resolve_job_def("pair_job")
    result = job.execute_in_process(
        run_config=run_config(f"flaky://{bucket}", RenderOptions()), instance=instance,
        partition_key=pair_partition_key("hello", "presenter"), raise_on_error=False)
    assert result.success
    retries = instance.all_logs(result.run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY)
    assert [e.step_key for e in retries] == ["lipsync_video"]
    assert FlakyFileSystem.faults == []
    assert not list((bucket / "work" / "errors" / "render").glob("*.hello.presenter.json"))  # cleared on success
