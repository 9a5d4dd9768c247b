"""The Wav2Lip engine: reference preprocessing, feathered compositing, streaming, and a render through the pipeline.

No real weights exist here: one checkpoint with seeded random weights is written in the official layout per module
(≈145 MB, deleted afterwards). Random weights make the mouth region visibly wrong, which is what these tests need:
they check *where* the engine changes pixels, how many frames it makes and how it streams, not how lips look.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from heygem_pipeline.demo_media import write_template_video
from heygem_pipeline.engine.audio.features import ScriptFeatures, frame_count
from heygem_pipeline.engine.face.landmarks import FaceFrame
from heygem_pipeline.engine.face.track import FaceTrack
from heygem_pipeline.engine.lipsync.base import RenderItem
from heygem_pipeline.engine.lipsync.boxes import smooth_boxes
from heygem_pipeline.engine.lipsync.registry import create_engine
from heygem_pipeline.engine.lipsync.wav2lip import ENV_VAR, Wav2Lip, save_wav2lip_checkpoint
from heygem_pipeline.engine.lipsync.wav2lip.engine import (
    BROW_TOP,
    FACE_OVAL,
    Wav2LipEngine,
    boxed_items,
    composite,
    crop_face,
    face_box,
    face_input,
    lower_face_mask,
    mel_input,
    pad_box,
)
from heygem_pipeline.engine.media.frames import FrameReader
from heygem_pipeline.engine.render import pingpong_indices, template_frames
from heygem_pipeline.engine.stages import load_script, prepare_avatar, prepare_script, render_pair, track_avatar
from heygem_pipeline.errors import CheckpointError
from tests.helpers.avatar_factory import FAST
from tests.helpers.media_factory import make_speech

WIDTH, HEIGHT, FPS = 640, 360, 25
TEMPLATE_SECONDS = 1.2  # shorter than the voice, so the render also plays the template backwards
VOICE_TEXT = "Hello there, lip sync."
BATCH = 16


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    torch.manual_seed(2020)
    path = save_wav2lip_checkpoint(Wav2Lip(), tmp_path_factory.mktemp("wav2lip") / "wav2lip.pth")
    yield path
    path.unlink(missing_ok=True)  # 145 MB: do not leave it in pytest's temp folders


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A prepared script (espeak voice ≈1.6 s) and avatar (1.2 s demo presenter, tracked)."""
    root = tmp_path_factory.mktemp("pair")
    voice = make_speech(root / "voice.wav", VOICE_TEXT)
    template = write_template_video(root / "template.mp4", TEMPLATE_SECONDS, width=WIDTH, height=HEIGHT, fps=FPS,
                                    settings=FAST)
    prepare_script(voice, root / "script")
    prepare_avatar(template, root / "avatar", settings=FAST)
    track = track_avatar(root / "avatar")
    return {"root": root, "script": root / "script", "avatar": root / "avatar", "track": track}


@pytest.fixture(scope="module")
def engine(checkpoint: Path) -> Wav2LipEngine:
    engine = Wav2LipEngine(checkpoint=checkpoint, device="cpu", batch_size=8)
    engine.load()
    return engine


def render_items(prepared: dict, count: int) -> list[RenderItem]:
    """The first ``count`` output items of the prepared pair, as the renderer makes them (ping-pong included)."""
    track: FaceTrack = prepared["track"]
    order = pingpong_indices(count, len(track))
    frames = template_frames(prepared["avatar"] / "template.mp4", order, track.width, track.height, track.fps)
    return [RenderItem(i, frame, track.frame(int(order[i]))) for i, frame in enumerate(frames)]


def expected_boxes(track: FaceTrack, order: np.ndarray) -> np.ndarray:
    """The integer boxes the engine should use for output frames in ``order`` (computed from the public helpers)."""
    raw = np.stack([pad_box(face_box(track.landmarks[i]), (track.height, track.width)) for i in order])
    return smooth_boxes(raw, track.usable()[order]).astype(np.int64)


# ------------------------------------------------------------------------------------------------- end to end


def test_render_pair_end_to_end(prepared: dict, checkpoint: Path) -> None:
    engine = create_engine("wav2lip", checkpoint=str(checkpoint), batch_size=BATCH)
    dest = prepared["root"] / "out.mp4"
    result = render_pair(prepared["script"], prepared["avatar"], dest, engine)

    features = load_script(prepared["script"])
    n_out = frame_count(features.duration, FPS)
    track: FaceTrack = prepared["track"]
    assert n_out > len(track), "the voice must outlast the template so ping-pong is exercised"
    with FrameReader(dest) as reader:
        out = np.stack(list(reader))
    assert result.frames == n_out and len(out) == n_out  # the whole audio is covered: ceil(duration × fps)
    assert result.engine == "wav2lip"

    order = pingpong_indices(n_out, len(track))
    reference = np.stack(list(template_frames(prepared["avatar"] / "template.mp4", order, WIDTH, HEIGHT, FPS)))
    boxes = expected_boxes(track, order)
    assert track.usable().all()
    margin = 8  # codec blocks: re-encoding smears a change this far
    for i in range(n_out):
        signed = out[i].astype(np.float32) - reference[i].astype(np.float32)
        # Each encode/decode round trip shifts all colours by ≈2 levels (swscale's RGB↔YUV rounding) and adds
        # high-frequency noise in textured areas: remove the shift, blur the noise away, then compare.
        signed -= np.median(signed.reshape(-1, 3), axis=0)
        smooth = np.abs(cv2.blur(signed, (9, 9))).max(axis=2)
        x0, y0, x1, y1 = boxes[i]
        height, width = y1 - y0, x1 - x0
        lower = np.zeros((HEIGHT, WIDTH), bool)
        lower[max(0, y0 + int(0.35 * height) - margin) : y1 + margin, max(0, x0 - margin) : x1 + margin] = True
        # Far from the lower face: only codec noise.
        assert smooth[~lower].mean() < 2.0 and smooth[~lower].max() < 16, f"frame {i}: pixels outside changed"
        # The upper face (eyes, brows) is never blended.
        assert smooth[y0 : y0 + int(0.3 * height), x0:x1].mean() < 4.0, f"frame {i}: the upper face changed"
        # The mouth and jaw: replaced by the (random-weight) generator's output.
        core = np.abs(signed[y0 + int(0.55 * height) : y0 + int(0.85 * height),
                             x0 + int(0.3 * width) : x0 + int(0.7 * width)])
        assert core.mean() > 20, f"frame {i}: the mouth region was not rendered"


# ---------------------------------------------------------------------------------------------- checkpoint


def test_missing_checkpoint_fails_before_any_work(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(CheckpointError, match=ENV_VAR):
        create_engine("wav2lip")  # construction is the first step of any render: nothing has been decoded yet
    with pytest.raises(CheckpointError, match="not found"):
        create_engine("wav2lip", checkpoint=str(tmp_path / "missing.pth"))


def test_checkpoint_falls_back_to_env(monkeypatch: pytest.MonkeyPatch, checkpoint: Path) -> None:
    monkeypatch.setenv(ENV_VAR, str(checkpoint))
    engine = create_engine("wav2lip", device="cpu")
    assert isinstance(engine, Wav2LipEngine) and engine.checkpoint == checkpoint
    assert engine.name == "wav2lip" and engine.wants_gpu and engine.batch_size == 128


def test_bad_checkpoint_fails_before_frames_are_read(tmp_path: Path) -> None:
    bad = tmp_path / "lipsync_expert.pth"
    torch.save({"state_dict": {"face_encoder.0.conv_block.0.weight": torch.zeros(1)}}, bad)
    engine = Wav2LipEngine(checkpoint=bad, device="cpu")

    def untouchable() -> Iterator[RenderItem]:
        raise AssertionError("frames were read before the checkpoint was checked")
        yield  # pragma: no cover

    script = ScriptFeatures(samples=np.zeros(16000, np.float32), mel=np.zeros((80, 80), np.float32))
    with pytest.raises(CheckpointError, match="SyncNet"):
        next(engine.render(untouchable(), script, FPS))


# ------------------------------------------------------------------------------------------------ face boxes


def test_face_box_spans_brows_to_chin_and_cheek_to_cheek() -> None:
    landmarks = np.full((478, 3), 50.0, np.float32)
    landmarks[list(FACE_OVAL), 0] = np.linspace(20, 80, len(FACE_OVAL))
    landmarks[list(FACE_OVAL), 1] = 60.0
    landmarks[152, 1] = 90.0  # chin
    landmarks[10, 1] = 5.0  # top of the forehead: above the box
    landmarks[list(BROW_TOP), 1] = 30.0
    np.testing.assert_array_equal(face_box(landmarks), [20, 30, 80, 90])


def test_face_box_of_the_demo_presenter_is_square_and_holds_the_mouth(prepared: dict) -> None:
    track: FaceTrack = prepared["track"]
    landmarks = track.landmarks[0]
    x0, y0, x1, y1 = face_box(landmarks)
    assert 0.85 < (x1 - x0) / (y1 - y0) < 1.2  # S3FD boxes are about square
    assert y0 > landmarks[10, 1]  # the forehead is left out
    mouth = landmarks[13, :2]
    assert x0 < mouth[0] < x1 and y0 + 0.5 * (y1 - y0) < mouth[1] < y1


def test_pad_box_adds_10_px_below_and_clips_to_the_frame() -> None:
    shape = (360, 640, 3)
    np.testing.assert_array_equal(pad_box(np.array([100, 50, 200, 160]), shape), [100, 50, 200, 170])
    np.testing.assert_array_equal(pad_box(np.array([-5, -3, 650, 355]), shape), [0, 0, 640, 360])
    np.testing.assert_array_equal(pad_box(np.array([100, 50, 200, 160]), shape, pads=(4, 0, 2, 3)), [98, 46, 203, 160])


def test_smooth_boxes_is_a_centred_5_frame_mean_over_found_frames() -> None:
    x = np.array([0, 10, 20, 30, 40, 50], np.float64)
    boxes = np.stack([x, x, x + 100, x + 100], axis=1)
    smoothed = smooth_boxes(boxes)
    np.testing.assert_allclose(smoothed[:, 0], [10, 15, 20, 30, 35, 40])  # linear stays linear inside; ends shrink
    valid = np.ones(6, bool)
    valid[3] = False
    outlier = boxes.copy()
    outlier[3] = 1e6  # a frame without a face: its box must not leak into its neighbours
    smoothed = smooth_boxes(outlier, valid)
    assert smoothed[2, 0] == pytest.approx(np.mean([0, 10, 20, 40]))
    assert smoothed[3, 0] == 1e6  # left as it was


def test_streamed_boxes_match_the_whole_sequence_smoothing() -> None:
    rng = np.random.default_rng(5)
    n = 23
    centres = np.cumsum(rng.normal(0, 3, (n, 2)), axis=0) + np.array([300, 150])
    found = rng.random(n) > 0.2
    frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    items, raw = [], []
    for i in range(n):
        landmarks = np.zeros((478, 3), np.float32)
        landmarks[:, :2] = centres[i] + rng.uniform(-40, 40, (478, 2))
        items.append(RenderItem(i, frame, FaceFrame(bool(found[i]), np.zeros(4, np.float32), landmarks)))
        raw.append(pad_box(face_box(landmarks), frame.shape))
    expected = smooth_boxes(np.stack(raw), found).astype(np.int64)
    streamed = list(boxed_items(iter(items)))
    assert [item.index for item, _ in streamed] == list(range(n))
    for i, (_, box) in enumerate(streamed):
        assert (box is None) == (not found[i])
        if box is not None:
            assert box == tuple(expected[i])


# ------------------------------------------------------------------------------------------------ network input


def test_face_input_is_masked_plus_reference_over_255() -> None:
    crops = np.random.default_rng(1).integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)
    x = face_input(crops)
    assert x.shape == (3, 6, 96, 96) and x.dtype == np.float32 and x.flags.c_contiguous
    assert not x[:, :3, 48:].any()  # the lower half of the masked copy is zero
    np.testing.assert_array_equal(x[:, :3, :48], x[:, 3:, :48])
    np.testing.assert_allclose(x[:, 3:], crops.transpose(0, 3, 1, 2) / 255.0, rtol=1e-6)


def test_preprocessed_batch_shapes(engine: Wav2LipEngine, prepared: dict) -> None:
    items = render_items(prepared, 5)
    batch = engine._prepare(list(boxed_items(iter(items))), load_script(prepared["script"]).mel, FPS)
    assert batch.faces is not None and batch.mels is not None
    assert tuple(batch.faces.shape) == (5, 6, 96, 96) and not batch.faces[:, :3, 48:].any()
    assert tuple(batch.mels.shape) == (5, 1, 80, 16) and batch.mels.dtype == torch.float32
    mel = load_script(prepared["script"]).mel
    np.testing.assert_array_equal(mel_input(mel, [3], FPS)[0, 0], mel[:, 3 * 80 // FPS : 3 * 80 // FPS + 16])


# --------------------------------------------------------------------------------------------------- compositing


def test_mask_is_zero_on_the_border_and_covers_the_lower_face() -> None:
    mask = lower_face_mask()
    assert mask.shape == (96, 96) and mask.max() == 1.0
    assert not mask[0].any() and not mask[-1].any() and not mask[:, 0].any() and not mask[:, -1].any()
    assert not mask[:38].any()  # eyes and nose are never blended
    assert (mask[52:80, 36:60] > 0.95).all()  # mouth and jaw come from the generator


def test_composite_of_the_faces_own_pixels_changes_nothing_visible(prepared: dict) -> None:
    item = render_items(prepared, 1)[0]
    box = next(boxed_items(iter([item])))[1]
    assert box is not None
    out = composite(item.frame, box, crop_face(item.frame, box))
    x0, y0, x1, y1 = box
    outside = np.ones(item.frame.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(out[outside], item.frame[outside])  # bit-exact outside the box
    diff = np.abs(out.astype(int) - item.frame.astype(int))
    assert diff.mean() < 0.1 and diff[y0:y1, x0:x1].mean() < 4  # only the 96-px round trip's blur


def test_composite_matches_colour(prepared: dict) -> None:
    item = render_items(prepared, 1)[0]
    box = next(boxed_items(iter([item])))[1]
    assert box is not None
    x0, y0, x1, y1 = box
    cast = np.clip(crop_face(item.frame, box).astype(int) + np.array([12, -8, 10]), 0, 255).astype(np.uint8)
    lower = (slice(y0 + (y1 - y0) // 2, y1), slice(x0, x1))
    reference = item.frame[lower].astype(float).mean(axis=(0, 1))
    matched = composite(item.frame, box, cast)[lower].astype(float).mean(axis=(0, 1))
    raw = composite(item.frame, box, cast, color_match=False)[lower].astype(float).mean(axis=(0, 1))
    assert np.abs(matched - reference).max() < 1.5
    assert np.abs(raw - reference).max() > 3


# ---------------------------------------------------------------------------------------------------- streaming


def test_frames_without_a_face_pass_through_and_overlap_matches_sequential(engine: Wav2LipEngine,
                                                                           prepared: dict) -> None:
    items = render_items(prepared, 19)
    lost = {0, 7, 8, 18}
    items = [dataclasses.replace(item, face=dataclasses.replace(item.face, found=False)) if item.index in lost
             else item for item in items]
    script = load_script(prepared["script"])
    engine.overlap = False
    try:
        sequential = list(engine.render(iter(items), script, FPS))
        engine.overlap = True
        overlapped = list(engine.render(iter(items), script, FPS))
    finally:
        engine.overlap = False
    assert len(sequential) == len(overlapped) == len(items)
    boxes = [box for _, box in boxed_items(iter(items))]
    for item, a, b in zip(items, sequential, overlapped, strict=True):
        np.testing.assert_array_equal(a, b)
        if item.index in lost:
            assert a is item.frame
            continue
        box = boxes[item.index]
        assert box is not None
        x0, y0, x1, y1 = box
        changed = np.argwhere((a != item.frame).any(axis=2))
        assert len(changed) > 0.1 * (x1 - x0) * (y1 - y0)  # the lower face was rendered...
        # ...and nothing else: no pixel outside the box, none above the mask's top (0.41 of the box height).
        assert changed[:, 0].min() >= y0 + 0.38 * (y1 - y0) and changed[:, 0].max() < y1
        assert changed[:, 1].min() >= x0 and changed[:, 1].max() < x1


@pytest.mark.parametrize("overlap", [False, True])
def test_streaming_holds_about_one_batch(engine: Wav2LipEngine, prepared: dict, overlap: bool) -> None:
    items = render_items(prepared, 20)
    pulled = 0

    def counted() -> Iterator[RenderItem]:
        nonlocal pulled
        for item in items:
            pulled += 1
            yield item

    engine.overlap, engine.batch_size = overlap, 4
    ahead = []
    try:
        for done, _ in enumerate(engine.render(counted(), load_script(prepared["script"]), FPS), start=1):
            ahead.append(pulled - done)
    finally:
        engine.overlap, engine.batch_size = False, 8
    assert len(ahead) == len(items)
    # One batch plus the smoothing look-ahead; pipelined: one being prepared, one in flight, one being composited.
    assert max(ahead) <= (3 if overlap else 1) * 4 + 2


def test_render_stops_cleanly_when_the_consumer_stops(engine: Wav2LipEngine, prepared: dict) -> None:
    items = render_items(prepared, 20)
    engine.overlap = True
    try:
        frames = engine.render(iter(items), load_script(prepared["script"]), FPS)
        next(frames)
        frames.close()  # e.g. the encoder failed: the preparation thread must not outlive the render
    finally:
        engine.overlap = False
    assert not [t for t in threading.enumerate() if t.name == "wav2lip-prepare"]


# ------------------------------------------------------------------------------------------------- package


def test_top_level_loader_is_lazy() -> None:
    code = (
        "import sys, heygem_pipeline as h\n"
        "assert 'torch' not in sys.modules, 'import heygem_pipeline imported torch'\n"
        "assert 'numpy' not in sys.modules, 'import heygem_pipeline imported numpy'\n"
        "assert 'load_wav2lip_checkpoint' in h.__all__ and 'load_wav2lip_checkpoint' in dir(h)\n"
        "from heygem_pipeline import load_wav2lip_checkpoint\n"
        "from heygem_pipeline.engine.lipsync.wav2lip import load_wav2lip_checkpoint as direct\n"
        "assert load_wav2lip_checkpoint is direct and 'torch' in sys.modules\n"
        "from heygem_pipeline import wav2lip_mel\n"
        "from heygem_pipeline.engine.audio.features import wav2lip_mel as mel\n"
        "assert wav2lip_mel is mel\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
