"""A setting invalidates only what it applies to (issue 19): on a bucket the factory delivered (the upgrade fixture:
scripts hello.wav and thanks.mp3 (voices) and news.txt (a text voiced offline) × avatars anna.jpg (a photo) and
studio.mp4 (a video)), counted in the work the planner gives every entry point (`heygem run`, the sensors and the
schedule plan with it): the renders, the scripts and the avatars it would run again.

Outputs of unchanged settings are byte-identical when re-rendered, so only counting the work shows the waste."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from heygem_pipeline.engine.audio.voices.choice import EspeakChoice
from heygem_pipeline.factory.bucket import Bucket
from heygem_pipeline.factory.campaigns import MediaOptions, RenderOptions
from heygem_pipeline.factory.plan import plan_work
from heygem_pipeline.factory.state import FactoryState
from heygem_pipeline.factory.uploads import scan_bucket
from heygem_pipeline.factory.voicing import VoicePlan
from tests.helpers.upgrade_fixture import FIXTURE, restore_mtimes


@pytest.fixture(scope="module")
def delivered(tmp_path_factory: pytest.TempPathFactory) -> Bucket:
    root = tmp_path_factory.mktemp("scope") / "bucket"
    shutil.copytree(FIXTURE / "bucket", root)
    restore_mtimes(root)
    return Bucket(str(root))


def planned(bucket: Bucket, **media: object) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """(scripts, avatars, pairs) the planner would run again under these media settings."""
    scan = scan_bucket(bucket)
    state = FactoryState(bucket, scan, MediaOptions(**media), RenderOptions())  # type: ignore[arg-type]
    work = plan_work(state, scan.campaigns.values(), retry_failed=True)
    return work.scripts, work.avatars, sorted((p.script, p.avatar) for p in work.renders)


def test_nothing_is_due_with_the_settings_it_was_made_with(delivered: Bucket) -> None:
    assert planned(delivered) == ([], [], [])


def test_another_voice_revoices_the_text_script_only(delivered: Bucket) -> None:
    scripts, avatars, pairs = planned(delivered, voice=VoicePlan.single(EspeakChoice(speaker="en-gb")))
    assert (scripts, avatars) == (["news"], [])
    assert pairs == [("news", "anna"), ("news", "studio")]  # 2 renders, not 6


def test_another_still_length_remakes_the_photo_only(delivered: Bucket) -> None:
    scripts, avatars, pairs = planned(delivered, still_seconds=3.0)
    assert (scripts, avatars) == ([], ["anna"])
    assert pairs == [("hello", "anna"), ("news", "anna"), ("thanks", "anna")]  # 3 renders, not 6


def test_another_frame_rate_remakes_every_avatar(delivered: Bucket) -> None:
    """The frame rate applies to photos and videos alike: everything is due."""
    scripts, avatars, pairs = planned(delivered, fps=30.0)
    assert (scripts, avatars, len(pairs)) == ([], ["anna", "studio"], 6)


def test_a_new_transcript_recaptions_its_script_only(delivered: Bucket) -> None:
    root = Path(delivered.root)
    transcript = root / "transcripts" / "thanks.txt"
    transcript.parent.mkdir(exist_ok=True)
    transcript.write_text("Thank you for watching.\n")
    try:
        scripts, avatars, pairs = planned(delivered)
    finally:
        transcript.unlink()
    assert (scripts, avatars) == (["thanks"], [])
    assert pairs == [("thanks", "anna"), ("thanks", "studio")]
