"""The viseme engine and the renderer, end to end on generated media (real ffmpeg, real MediaPipe)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf

from heygem_pipeline.engine import folders, stages
from heygem_pipeline.engine.audio.features import frame_count
from heygem_pipeline.engine.audio.intake import decode_audio
from heygem_pipeline.engine.audio.visemes import mouth_at, sample_track
from heygem_pipeline.engine.face.track import FaceTrack
from heygem_pipeline.engine.lipsync.base import RenderItem
from heygem_pipeline.engine.lipsync.registry import create_engine
from heygem_pipeline.engine.media.frames import EncodeSettings, FrameReader
from heygem_pipeline.engine.media.previews import thumbnail_jpeg
from heygem_pipeline.engine.media.probe import probe
from heygem_pipeline.engine.mouth.warp import render_mouth, render_mouth_i420
from heygem_pipeline.engine.quality import SyncReport, best_lag, measure_sync
from heygem_pipeline.engine.render import RenderResult, pingpong_indices, template_frames
from tests.helpers.avatar_factory import make_template_video
from tests.helpers.media_factory import make_speech

FPS = 25.0
PAUSE_S = 1.2


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("render")


@pytest.fixture(scope="module")
def avatar_dir(work: Path) -> Path:
    """A 2 s 360p talking-head template (natural head motion), normalized and tracked."""
    template = make_template_video(work / "presenter.mp4", seconds=2.0)
    stages.prepare_avatar(template, work / "avatar", fps=FPS)
    stages.track_avatar(work / "avatar")
    return work / "avatar"


@pytest.fixture(scope="module")
def pause_script(work: Path) -> tuple[Path, list[tuple[float, float]]]:
    """About 6-7 s of English speech with a clear pause in the middle; returns the folder and the pause span."""
    first = make_speech(work / "a.wav", "Every script is analysed once, and every face is tracked once.")
    second = make_speech(work / "b.wav", "Then each pair is rendered and checked.")
    a, rate = sf.read(first, dtype="float32")
    b, _ = sf.read(second, dtype="float32")
    voice = np.concatenate([a, np.zeros(int(PAUSE_S * rate), np.float32), b])
    sf.write(work / "pauses.wav", voice, rate)
    # Pause boundaries from the audio itself: espeak's own trailing/leading silence extends the pause.
    level = np.abs(voice)
    speech = np.flatnonzero(level > 0.02)
    gap_start = speech[speech < len(a)].max() / rate
    gap_end = speech[speech >= len(a)].min() / rate
    stages.prepare_script(work / "pauses.wav", work / "script")
    return work / "script", [(gap_start, gap_end)]


@pytest.fixture(scope="module")
def render_result(work: Path, avatar_dir: Path, pause_script: tuple[Path, list]) -> RenderResult:
    result = stages.render_pair(pause_script[0], avatar_dir, work / "pair.mp4", create_engine("viseme"))
    assert result.path.exists()
    return result


@pytest.fixture(scope="module")
def rendered(render_result: RenderResult) -> Path:
    return render_result.path


@pytest.fixture(scope="module")
def sync(rendered: Path) -> SyncReport:
    return measure_sync(rendered)


def test_frame_count_and_duration_match_the_audio(rendered: Path, work: Path) -> None:
    audio_s = len(decode_audio(work / "pauses.wav")) / 16000
    info = probe(rendered)
    frames = sum(1 for _ in FrameReader(rendered).__enter__())
    assert frames == frame_count(audio_s, FPS)
    assert info.video is not None and info.audio is not None
    assert abs(frames / FPS - audio_s) <= 1 / FPS
    assert info.video.codec == "h264" and info.audio.codec == "aac"
    assert not list(rendered.parent.glob(".*tmp*")), "no temporary files left behind"


def test_sync_offset_is_zero_with_positive_correlation(sync: SyncReport) -> None:
    assert abs(sync.offset_frames) <= 1
    assert sync.confidence > 0.3
    assert sync.face_coverage > 0.95


def test_mouth_is_closed_in_pauses(sync: SyncReport, pause_script: tuple[Path, list]) -> None:
    (start, end), = pause_script[1]
    # Allow the coarticulation ramp (about 80 ms) at each edge of the pause.
    inside = np.arange(int((start + 0.12) * FPS) + 1, int((end - 0.12) * FPS))
    assert len(inside) >= 10
    # What the engine asks for: a closed mouth for the whole pause...
    features = stages.load_script(pause_script[0])
    assert features.visemes is not None
    opening = sample_track(features.visemes, len(sync.aperture), FPS)[:, 0]
    assert opening[inside].max() < 0.02
    # ...and what a viewer sees, measured by the face mesh on the delivered video (a 360p face is ~60 px tall,
    # so a closed smile measures up to ~2 px of lip gap).
    speaking = np.setdiff1d(np.flatnonzero(opening > 0.3), inside)
    assert np.nanmedian(sync.aperture[inside]) < 0.02, "lips must not move in a pause"
    assert np.nanmedian(sync.aperture[speaking]) > 2 * np.nanmedian(sync.aperture[inside])
    assert np.nanpercentile(sync.aperture, 90) > 0.04, "the mouth must open while speaking"


def test_short_template_loops_without_a_jump(rendered: Path, avatar_dir: Path) -> None:
    template_frames_count = len(FaceTrack.load(avatar_dir / folders.AVATAR_TRACK))
    diffs = []
    previous = None
    with FrameReader(rendered) as reader:
        for frame in reader:
            # The upper part of the frame (head and background, above the mouth) shows the head motion.
            top = cv2.cvtColor(frame[: frame.shape[0] // 3], cv2.COLOR_BGR2GRAY).astype(np.float32)
            if previous is not None:
                diffs.append(float(np.abs(top - previous).mean()))
            previous = top
    diffs = np.asarray(diffs)
    assert len(diffs) + 1 > 2 * template_frames_count, "the script must be longer than the template here"
    # A jump cut back to frame 0 would show as one frame-to-frame change far above the motion's usual step.
    assert diffs.max() < 3 * np.median(diffs) + 1.0


def test_pingpong_schedule() -> None:
    assert pingpong_indices(10, 4).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert pingpong_indices(3, 10).tolist() == [0, 1, 2]
    assert pingpong_indices(4, 1).tolist() == [0, 0, 0, 0]
    order = pingpong_indices(9, 4)
    assert np.all(np.abs(np.diff(order)) == 1)


def test_backward_runs_stream_the_right_frames(avatar_dir: Path) -> None:
    template = avatar_dir / folders.AVATAR_TEMPLATE
    info = probe(template)
    assert info.video is not None
    with FrameReader(template) as reader:
        forward = [frame.copy() for frame in reader]
    order = pingpong_indices(len(forward) * 2 + 5, len(forward))
    played = list(template_frames(template, order, info.video.width, info.video.height, FPS))
    assert len(played) == len(order)
    for index, frame in zip(order, played, strict=True):
        assert np.array_equal(frame, forward[index])


def test_only_the_mouth_region_changes(avatar_dir: Path, pause_script: tuple[Path, list], tmp_path: Path) -> None:
    track = FaceTrack.load(avatar_dir / folders.AVATAR_TRACK)
    features = stages.load_script(pause_script[0])
    template = avatar_dir / folders.AVATAR_TEMPLATE
    engine = create_engine("viseme")
    with FrameReader(template) as reader:
        frames = [frame.copy() for _, frame in zip(range(40), reader, strict=False)]
    items = [RenderItem(i, frame.copy(), track.frame(i)) for i, frame in enumerate(frames)]
    outputs = list(engine.render(items, features, FPS))
    opened = 0
    for i, (before, after) in enumerate(zip(frames, outputs, strict=True)):
        landmarks = track.landmarks[i]
        height = np.linalg.norm(landmarks[10, :2] - landmarks[152, :2])
        changed = np.any(before != after, axis=-1)
        ys, xs = np.nonzero(changed)
        if len(ys):
            # Everything that changed lies below the eyes and near the mouth and jaw.
            mouth = landmarks[13, :2]
            assert ys.min() > landmarks[168, 1], "nothing above the nose bridge may change"
            assert np.hypot(xs - mouth[0], ys - mouth[1]).max() < 0.75 * height
        gap = np.linalg.norm(landmarks[13, :2] - landmarks[14, :2])
        opened += int(changed.sum() > gap)
        if i in (5, 20, 35):  # for a person to look at while developing: open/closed mouths
            cv2.imwrite(str(tmp_path / f"frame{i:02d}.png"), np.hstack([before, after]))
    assert opened > 10, "speech must change the mouth in most frames"


def test_a_chinese_script_moves_the_mouth(work: Path, avatar_dir: Path) -> None:
    text = work / "zh.txt"
    text.write_text("你好，欢迎来到内容工厂。我们每天都会制作新的视频。", encoding="utf-8")
    record = stages.prepare_script(text, work / "zh", voice="cmn")
    assert record["language"] == "zh" and record["text"].startswith("你好")
    output = stages.render_pair(work / "zh", avatar_dir, work / "zh.mp4", create_engine("viseme")).path
    report = measure_sync(output)
    assert np.nanpercentile(report.aperture, 90) > 0.04
    assert np.nanstd(report.aperture) > 0.01
    assert abs(report.offset_frames) <= 1 and report.confidence > 0.3


def test_best_lag_finds_a_known_shift() -> None:
    rng = np.random.default_rng(3)
    loudness = np.convolve(rng.standard_normal(300), np.ones(5) / 5, mode="same")
    aperture = np.roll(loudness, 2)  # mouth trails the sound by 2 frames
    lag, r = best_lag(aperture, loudness)
    assert lag == 2 and r > 0.9


def test_i420_drawing_matches_bgr_and_leaves_the_rest_bit_identical(avatar_dir: Path) -> None:
    template = avatar_dir / folders.AVATAR_TEMPLATE
    track = FaceTrack.load(avatar_dir / folders.AVATAR_TRACK)
    with FrameReader(template, max_frames=1) as reader:
        bgr = next(iter(reader)).copy()
    with FrameReader(template, max_frames=1, pix_fmt="yuv420p") as reader:
        i420 = next(iter(reader)).copy()
    params = np.array([0.8, 0.2, 0.0, 0.0], np.float32)
    landmarks = track.landmarks[0]
    drawn_bgr = render_mouth(bgr, landmarks, params)
    drawn_i420 = render_mouth_i420(i420.copy(), landmarks, params)
    changed = drawn_i420 != i420
    height = bgr.shape[0]
    rows = np.nonzero(changed[:height].any(axis=1))[0]
    # Untouched luma rows (above the lower face) are bit-identical; something was drawn.
    assert len(rows) > 0 and rows.min() > landmarks[168, 1]
    via_i420 = cv2.cvtColor(drawn_i420, cv2.COLOR_YUV2BGR_I420).astype(np.int16)
    mouth_box = (slice(int(landmarks[0, 1]) - 10, int(landmarks[17, 1]) + 10),
                 slice(int(landmarks[61, 0]) - 10, int(landmarks[291, 0]) + 10))
    # Same drawing either way, up to the colour conversions' rounding.
    assert np.abs(via_i420[mouth_box] - drawn_bgr[mouth_box]).mean() < 4


def test_preview_is_a_frame_of_the_render(render_result: RenderResult) -> None:
    preview = cv2.imdecode(np.frombuffer(render_result.preview_jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert preview is not None and preview.shape[1] == 320
    assert abs(preview.shape[0] / preview.shape[1] - render_result.height / render_result.width) < 0.01
    # The frame 40 % in, as encoded (up to JPEG and H.264 loss).
    index = int(render_result.frames * 0.4)
    with FrameReader(render_result.path, start_frame=index, max_frames=1, fps=render_result.fps) as reader:
        frame = next(iter(reader))
    small = cv2.resize(frame, (preview.shape[1], preview.shape[0]), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(np.int16) - preview).mean() < 4


def test_frame_reader_crops_and_scales_in_ffmpeg(avatar_dir: Path) -> None:
    template = avatar_dir / folders.AVATAR_TEMPLATE
    with FrameReader(template, max_frames=1) as reader:
        full = next(iter(reader)).copy()
    with FrameReader(template, max_frames=1, crop=(100, 40, 160, 120)) as reader:
        assert (reader.width, reader.height) == (160, 120)
        crop = next(iter(reader)).copy()
    assert crop.shape == (120, 160, 3)
    assert np.abs(crop.astype(np.int16) - full[40:160, 100:260]).mean() < 1
    with FrameReader(template, max_frames=1, crop=(100, 40, 160, 120), scale_to=(80, 60)) as reader:
        assert next(iter(reader)).shape == (60, 80, 3)


def test_render_with_one_ffmpeg_thread_gives_the_same_video(work: Path, avatar_dir: Path,
                                                           pause_script: tuple[Path, list],
                                                           render_result: RenderResult) -> None:
    # heygem run's lanes use fewer ffmpeg threads; the pictures must not change (x264 is thread-deterministic).
    single = stages.render_pair(pause_script[0], avatar_dir, work / "pair_one_thread.mp4", create_engine("viseme"),
                                  settings=EncodeSettings(threads=1))
    with FrameReader(render_result.path) as default, FrameReader(single.path) as one:
        pairs = list(zip((f.copy() for f in default), (f.copy() for f in one), strict=True))
    assert len(pairs) == render_result.frames and all(np.array_equal(a, b) for a, b in pairs)


def test_thumbnail_without_a_probe_is_the_same_picture(render_result: RenderResult) -> None:
    probed = thumbnail_jpeg(render_result.path)
    assert probed[:2] == b"\xff\xd8"  # a JPEG
    assert thumbnail_jpeg(render_result.path, frames=render_result.frames, fps=render_result.fps, threads=1) == probed


def test_frame_reader_with_one_decoder_thread_yields_the_same_frames(rendered: Path) -> None:
    with FrameReader(rendered) as several, FrameReader(rendered, threads=1) as one:
        pairs = list(zip((f.copy() for f in several), (f.copy() for f in one), strict=True))
    assert len(pairs) > 10 and all(np.array_equal(a, b) for a, b in pairs)


def test_sync_measured_on_the_face_region_agrees_with_the_full_frame(rendered: Path, sync: SyncReport,
                                                                     avatar_dir: Path) -> None:
    track = FaceTrack.load(avatar_dir / folders.AVATAR_TRACK)
    cropped = measure_sync(rendered, face_track=track)
    assert cropped.offset_frames == sync.offset_frames and cropped.frames == sync.frames
    assert abs(cropped.confidence - sync.confidence) < 0.1
    assert cropped.face_coverage == pytest.approx(sync.face_coverage, abs=0.02)
    assert cropped.audio_duration_s == pytest.approx(sync.audio_duration_s)


def test_mouth_at_samples_the_track_like_sample_track() -> None:
    track = np.random.default_rng(5).random((1003, 4)).astype(np.float32)  # 10 s at 100 Hz
    frames = 300  # 12 s at 25 fps: the last frames lie past the track's end and hold its last row
    every = np.stack([mouth_at(track, index, FPS) for index in range(frames)])
    np.testing.assert_allclose(every, sample_track(track, frames, FPS), atol=1e-6)


def test_the_mouth_closes_in_a_240_ms_pause(work: Path) -> None:
    words, rate = sf.read(make_speech(work / "hello.wav", "Hello and welcome."), dtype="float32")
    spoken = np.flatnonzero(np.abs(words) > 0.01)
    words = words[spoken[0]: spoken[-1]]  # without espeak's own leading and trailing silence
    pause = int(0.24 * rate)
    sf.write(work / "short_pause.wav", np.concatenate([words, np.zeros(pause, np.float32), words]), rate)
    stages.prepare_script(work / "short_pause.wav", work / "short_pause")
    features = stages.load_script(work / "short_pause")
    assert features.visemes is not None
    opening = sample_track(features.visemes, frame_count(features.duration, FPS), FPS)[:, 0]
    start, end = len(words) / rate, (len(words) + pause) / rate
    inside = opening[int(start * FPS) + 1: int(end * FPS) + 1]
    assert inside.min() < 0.01, "the lips must meet in a 240 ms pause"
    assert opening[: int(start * FPS)].max() > 0.3 and opening[int(end * FPS) + 1:].max() > 0.3
