"""The demo bucket is made offline, from espeak-ng and the public-domain portrait inside scikit-image."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from heygem_pipeline.demo import DEMO_SCRIPTS, DemoSize, build_demo_bucket
from heygem_pipeline.engine.audio.intake import decode_audio
from heygem_pipeline.engine.media.frames import FrameReader
from heygem_pipeline.engine.media.probe import probe
from heygem_pipeline.engine.quality import frame_loudness


def test_demo_bucket_has_two_voices_and_two_avatars(tmp_path: Path) -> None:
    root = build_demo_bucket(tmp_path / "bucket", DemoSize(width=640, height=360, template_seconds=2.0))
    scripts = sorted((root / "scripts").iterdir())
    avatars = sorted((root / "avatars").iterdir())
    assert [p.stem for p in scripts] == sorted(DEMO_SCRIPTS)
    transcripts = sorted((root / "transcripts").iterdir())  # the videos get subtitles
    assert [p.name for p in transcripts] == [f"{name}.txt" for name in sorted(DEMO_SCRIPTS)]
    assert transcripts[1].read_text() == "Hello and welcome to the HeyGem content factory.\n"
    assert [p.name for p in avatars] == ["portrait.png", "presenter.mp4"]

    durations = {p.stem: len(decode_audio(p)) / 16000 for p in scripts}
    assert durations["pauses"] > durations["welcome"] + 2  # different lengths
    # The pause script really has pauses: runs of near-silent 40 ms frames of at least half a second.
    level = frame_loudness(decode_audio(root / "scripts" / "pauses.wav"), int(durations["pauses"] * 25), 25)
    quiet = level < level.max() - 40
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(int), [0]]))))[::2]
    assert (runs >= 12).sum() >= 2

    video = probe(root / "avatars" / "presenter.mp4").video
    assert video is not None and (video.width, video.height) == (640, 360) and abs(video.fps - 25) < 1e-6
    with FrameReader(root / "avatars" / "presenter.mp4") as reader:
        frames = [frame.astype(np.int16) for frame in reader]
    assert len(frames) == 50
    assert np.abs(frames[0] - frames[25]).mean() > 1.0, "the template has head motion"
    still = probe(root / "avatars" / "portrait.png").video
    assert still is not None and still.is_image


def test_building_again_keeps_existing_files(tmp_path: Path) -> None:
    size = DemoSize(width=640, height=360, template_seconds=1.0)
    root = build_demo_bucket(tmp_path / "bucket", size)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    build_demo_bucket(tmp_path / "bucket", size)
    after = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert before == after
