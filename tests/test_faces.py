"""Face tracking: coverage, accuracy against known head motion, stability, no hopping, gaps, Parquet, One-Euro."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import ffmpeg
import numpy as np
import pytest

from heygem_pipeline.demo_media import _layer, head_motion
from heygem_pipeline.engine.face.landmarks import LANDMARK_COUNT, FaceFrame, face_height
from heygem_pipeline.engine.face.track import (
    FACE_TRACK_SCHEMA_VERSION,
    FaceTrack,
    FaceTrackFormatError,
    OneEuroFilter,
    smooth_sequence,
    track_faces,
)
from heygem_pipeline.engine.face.tracker import FaceTracker
from heygem_pipeline.engine.media.frames import FrameWriter
from heygem_pipeline.engine.media.tools import ff_path, run_ffmpeg
from heygem_pipeline.errors import NoFaceError
from tests.helpers.avatar_factory import FAST, make_portrait, make_template_video

FPS = 25


@pytest.fixture(scope="module")
def tracker() -> FaceTracker:
    with FaceTracker() as shared:  # loading the models once keeps the suite fast
        yield shared


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_template_video(tmp_path_factory.mktemp("faces") / "talking head.mp4", seconds=3.0)


@pytest.fixture(scope="module")
def template_track(template: Path, tracker: FaceTracker) -> FaceTrack:
    return track_faces(template, tracker=tracker)


def write_frames(path: Path, frames: list[np.ndarray]) -> Path:
    height, width = frames[0].shape[:2]
    with FrameWriter(path, width, height, FPS, settings=FAST) as writer:
        for frame in frames:
            writer.write(frame)
    return path


def test_talking_head_is_tracked_in_every_frame(template_track: FaceTrack) -> None:
    track = template_track
    assert len(track) == 75 and track.landmarks.shape == (75, LANDMARK_COUNT, 3)
    assert track.landmarks.dtype == np.float32 and track.boxes.shape == (75, 4)
    summary = track.summary()
    assert summary["coverage"] >= 0.95 and summary["frames"] == 75
    assert 50 < summary["mean_face_height_px"] < 80  # the 360p demo face is ≈62 px forehead to chin
    assert summary["flagged_gaps"] == [] and (track.width, track.height, track.fps) == (640, 360, 25.0)
    face = track.frame(10)
    assert isinstance(face, FaceFrame) and face.found and face.confidence > 0.5
    assert face.landmarks.shape == (LANDMARK_COUNT, 3) and face.box.shape == (4,)
    x0, y0, x1, y1 = face.box
    assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 360


def test_landmarks_follow_the_known_head_motion(template_track: FaceTrack, tracker: FaceTracker) -> None:
    # The template is the still portrait moved by known affine transforms, so the truth for every frame is the
    # still portrait's landmarks moved the same way.
    tracker.reset()
    still = make_portrait()
    base = np.mean([tracker.process(still).landmarks[:, :2] for _ in range(5)], axis=0)
    tracker.reset()
    _, _, centre = _layer(640, 360)
    ones = np.ones((LANDMARK_COUNT, 1))
    truth = np.stack([np.hstack([base, ones]) @ head_motion(i / FPS, centre, 360).T for i in range(75)])
    error = np.linalg.norm(template_track.landmarks[:, :, :2] - truth, axis=-1)
    assert np.median(error) < 1.0 and np.percentile(error, 95) < 2.5  # px, face ≈62 px tall


def test_still_face_is_stable(tmp_path: Path, tracker: FaceTracker) -> None:
    video = make_template_video(tmp_path / "still.mp4", seconds=1.6, motion=False)
    track = track_faces(video, tracker=tracker)
    assert track.found.all()
    assert track.landmarks[:, :, :2].std(axis=0).max() < 1.0  # px, every landmark


def test_two_faces_track_stays_on_one(tmp_path: Path) -> None:
    # Left presenter stays put; the right one grows past her and drifts, and both vanish for a moment. A tracker
    # that re-picks "the largest face" would hop to the right.
    half = make_portrait((320, 360))
    frames = []
    for i in range(60):
        zoom = 0.85 + 0.45 * i / 59
        right = cv2.warpAffine(half, cv2.getRotationMatrix2D((160.0, 120.0), 0, zoom), (320, 360),
                               borderMode=cv2.BORDER_REPLICATE)
        frame = np.hstack([half, right])
        frames.append(np.zeros_like(frame) if 30 <= i < 34 else frame)
    video = write_frames(tmp_path / "two.mp4", frames)
    # In two halves, the second half's own tracker starts on the larger face after the blank frames; where the
    # halves meet the faces differ, so the first tracker carries on through the second half instead.
    for parallel in (False, True):
        with FaceTracker(redetect_every=4) as eager:  # check against the detector often, where a hop could happen
            track = track_faces(video, tracker=eager, parallel=parallel)
        centres = (track.boxes[track.found, 0] + track.boxes[track.found, 2]) / 2
        assert track.found.sum() == 56 and track.interpolated[30:34].all()
        assert centres.max() < 320, f"the track hopped to the other presenter (parallel={parallel})"
        assert np.ptp(centres) < 5


def test_tracking_in_two_halves_matches_one_pass(template: Path, template_track: FaceTrack,
                                                 tracker: FaceTracker) -> None:
    halves = track_faces(template, tracker=tracker, parallel=True)
    assert len(halves) == len(template_track) and halves.found.all()
    assert np.abs(halves.landmarks[..., :2] - template_track.landmarks[..., :2]).mean() < 0.5


def test_gaps_are_interpolated_or_flagged(tmp_path: Path, tracker: FaceTracker) -> None:
    portrait = make_portrait()
    blank = np.zeros_like(portrait)
    frames = [blank if 10 <= i < 16 or 30 <= i < 50 else portrait for i in range(60)]
    progress: list[tuple[int, int | None]] = []
    track = track_faces(write_frames(tmp_path / "gaps.mp4", frames), max_gap_frames=12,
                        progress=lambda done, total: progress.append((done, total)), tracker=tracker)

    assert track.found.sum() == 34
    assert track.interpolated[10:16].all() and not track.interpolated[30:50].any()
    summary = track.summary()
    assert summary["coverage"] == pytest.approx(34 / 60, abs=1e-3)
    assert summary["longest_gap_frames"] == 20
    assert summary["flagged_gaps"] == [{"start": 30, "stop": 50, "frames": 20, "seconds": 0.8}]
    assert track.frame(12).found and not track.frame(40).found  # interpolated frames are usable, flagged not
    np.testing.assert_array_equal(track.landmarks[35], track.landmarks[29])  # held from the nearest found frame
    np.testing.assert_array_equal(track.landmarks[45], track.landmarks[50])
    assert progress[-1] == (60, 60) and len(progress) >= 3


def test_no_face_raises_naming_the_file(tmp_path: Path, tracker: FaceTracker) -> None:
    video = tmp_path / "test pattern.mp4"
    run_ffmpeg(ffmpeg.input("testsrc=size=640x360:rate=25", f="lavfi", t=1.2)
               .output(ff_path(video), vcodec="libx264", preset="ultrafast", pix_fmt="yuv420p").overwrite_output(),
               "making test media")
    with pytest.raises(NoFaceError, match=re.escape(str(video))) as info:
        track_faces(video, tracker=tracker)
    assert "face is visible and frontal" in info.value.fix


def test_parquet_round_trip(template_track: FaceTrack, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = template_track.save(tmp_path / "face_track.parquet")
    schema = pq.read_schema(path)
    assert schema.metadata[b"schema_version"] == FACE_TRACK_SCHEMA_VERSION.encode()
    assert schema.field("landmarks").type.list_size == LANDMARK_COUNT * 3
    assert pq.read_metadata(path).num_rows == len(template_track)

    loaded = FaceTrack.load(path)
    for name in ("found", "interpolated", "confidence", "boxes", "landmarks"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(template_track, name))
        assert getattr(loaded, name).dtype == getattr(template_track, name).dtype
    assert (loaded.width, loaded.height, loaded.fps) == (640, 360, 25.0)
    assert loaded.summary() == template_track.summary()


def test_load_refuses_another_schema_version(template_track: FaceTrack, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = template_track.save(tmp_path / "face_track.parquet")
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, b"schema_version": b"0"}), path)
    with pytest.raises(FaceTrackFormatError, match="schema version '0'"):
        FaceTrack.load(path)


def test_face_height_scale() -> None:
    landmarks = np.zeros((2, LANDMARK_COUNT, 3), np.float32)
    landmarks[:, 152, 1] = [100, 50]
    np.testing.assert_allclose(face_height(landmarks), [100, 50])


def test_one_euro_reduces_jitter_without_lag() -> None:
    rng = np.random.default_rng(7)
    n, jitter = 100, 0.5
    still = 10.0 + rng.normal(0, jitter, (n, 200))
    step = np.where(np.arange(n)[:, None] >= 50, 30.0, 10.0) + rng.normal(0, jitter, (n, 200))

    causal = OneEuroFilter(FPS, min_cutoff=1.0, beta=0.1)
    filtered = np.stack([causal(sample) for sample in still])
    assert filtered[10:].std() < 0.5 * still[10:].std()

    causal.reset()
    followed = np.stack([causal(sample) for sample in step])
    assert np.abs(followed[52:] - 30.0).mean() < 0.5  # on the new level within 3 frames (0.12 s) of the step
    assert np.abs(followed[:50] - 10.0).mean() < 0.3
    plain = OneEuroFilter(FPS, min_cutoff=1.0, beta=0.0)  # the same smoothing at rest, without speed adaptation
    lagging = np.stack([plain(sample) for sample in step])
    assert np.abs(lagging[52] - 30.0).mean() > 5.0

    both = smooth_sequence(step, FPS, min_cutoff=1.0, beta=0.1)  # the offline (forward-backward) variant
    assert np.abs(both[:48] - 10.0).mean() < 0.3 and np.abs(both[52:] - 30.0).mean() < 0.3
    assert both[10:45].std() < 0.5 * step[10:45].std()


def test_worker_stderr_filter_drops_mediapipe_noise_only() -> None:
    import subprocess
    import sys

    code = (
        "import os\n"
        "from heygem_pipeline.engine.face.tracker import filter_native_stderr\n"
        "finish = filter_native_stderr()\n"
        "os.write(2, b'W0000 00:00:1 123 inference_feedback_manager.cc:114] Feedback manager requires a model\\n')\n"
        "os.write(2, b'a real problem\\nand its second line\\n')\n"
        "os.write(2, b'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\nno newline at the end')\n"
        "finish()\n"
        "os._exit(0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert result.stderr.decode() == "a real problem\nand its second line\nno newline at the end"
