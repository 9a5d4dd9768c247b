"""MuseTalk 1.5's face parsing (BiSeNet) and jaw-mode paste against the reference's outputs (tests/data/musetalk).

The fixture ran the reference code on stand-in weights (tests/helpers/musetalk_fixture.py). Output frame i of the
fixture blends cycle frame i of the ping-pong cycle (frames + frames[::-1]) with ``faces_bgr[i]`` over that frame's
``boxes_used``. Every crop of the fixture is 128×128; BiSeNet parses it at 512×512.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from heygem_pipeline.engine.lipsync.musetalk.bisenet import (
    CHECKPOINT,
    BiSeNet,
    expected_shapes,
    load_bisenet,
    parse_face,
    preprocess,
)
from heygem_pipeline.engine.lipsync.musetalk.blend import (
    REALTIME_BLUR_RATIO,
    blend_mask,
    crop_box,
    crop_labels,
    crop_mask,
    jaw_mask,
    paste,
    paste_with_mask,
)
from heygem_pipeline.errors import InputError, ModelFileError
from tests.helpers.musetalk_fixture import FIXTURE, fixture, standin_models

CYCLE = [0, 1, 2, 3, 3, 2, 1, 0]  # ping-pong of the 4 fixture frames: output frame i uses CYCLE[i]
MAX_OFF_BY_ONE = 0.005  # at most this fraction of pixels may differ, and by at most 1


@pytest.fixture(autouse=True)
def _two_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    with torch.no_grad():
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def blend() -> dict[str, np.ndarray]:
    return fixture("blend")


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    paths = sorted((FIXTURE / "inputs" / "frames").glob("*.png"))
    assert len(paths) == 4
    return [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths]


@pytest.fixture(scope="module")
def boxes() -> np.ndarray:
    return fixture("latents")["boxes_used"]


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    return fixture("unet")["faces_bgr"]


@pytest.fixture(scope="module")
def net() -> BiSeNet:
    return load_bisenet(standin_models())


def assert_close_frames(ours: np.ndarray, reference: np.ndarray) -> None:
    """Equal within ±1 on at most 0.5 % of the pixels (the reference's own cv2/PIL calls: in fact identical)."""
    assert ours.shape == reference.shape and ours.dtype == np.uint8
    diff = np.abs(ours.astype(np.int16) - reference.astype(np.int16))
    off = float((diff.max(axis=-1) > 0).mean())
    assert diff.max() <= 1 and off <= MAX_OFF_BY_ONE, f"max {diff.max()}, {off:.3%} of pixels differ"


def test_bisenet_loads_strictly(net: BiSeNet) -> None:
    path = standin_models() / CHECKPOINT
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert len(state) == len(expected_shapes()) == 191
    assert {k: tuple(v.shape) for k, v in state.items()} == expected_shapes()
    ours = net.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in state.items())
    assert not net.training


def test_bisenet_low_resolution_logits_match(
    net: BiSeNet, blend: dict[str, np.ndarray], frames: list[np.ndarray], boxes: np.ndarray
) -> None:
    # seg_input_frame0 is frame 0's crop around its box, RGB, at crop size (what the reference hands the parser);
    # bisenet_conv_out_frame0 is the main head's output at 1/8 of 512, before the bilinear upsampling.
    xs, ys, xe, ye = crop_box(boxes[0])
    assert np.array_equal(blend["seg_input_frame0"], frames[0][ys:ye, xs:xe, ::-1])
    logits = net.logits_low(preprocess(blend["seg_input_frame0"]))
    reference = blend["bisenet_conv_out_frame0"]
    assert logits.shape == reference.shape == (1, 19, 64, 64)
    assert float((logits - torch.from_numpy(reference)).abs().max()) < 1e-4
    # The label map: the argmax of those logits upsampled (bilinear, align_corners) to 512.
    full = torch.nn.functional.interpolate(logits, (512, 512), mode="bilinear", align_corners=True)
    labels = parse_face(net, blend["seg_input_frame0"])
    assert labels.shape == (512, 512) and labels.dtype == np.uint8
    assert np.array_equal(labels, full[0].numpy().argmax(0))


def test_masks_from_the_given_label_map_equal_the_reference(blend: dict[str, np.ndarray], boxes: np.ndarray) -> None:
    labels = blend["synthetic_label_map"]
    jaw = jaw_mask(labels)
    assert jaw.shape == (512, 512) and set(np.unique(jaw)) <= {0, 255}
    for i, j in enumerate(CYCLE):
        xs, ys, xe, ye = crop_box(boxes[j])
        assert np.array_equal(crop_mask(labels, (xe - xs, ye - ys)), blend["seg_masks_synth"][i]), i


def test_blend_with_the_given_label_map_equals_the_reference(
    blend: dict[str, np.ndarray], frames: list[np.ndarray], boxes: np.ndarray, faces: np.ndarray
) -> None:
    labels = blend["synthetic_label_map"]
    for i, j in enumerate(CYCLE):
        before = frames[j].copy()
        assert_close_frames(paste(frames[j], faces[i], boxes[j], labels=labels), blend["blended_synth_logits"][i])
        assert np.array_equal(frames[j], before)  # the input frame is left alone


def test_realtime_blend_equals_the_reference(
    blend: dict[str, np.ndarray], frames: list[np.ndarray], boxes: np.ndarray, faces: np.ndarray
) -> None:
    labels = blend["synthetic_label_map"]
    for i, j in enumerate(CYCLE):
        assert list(crop_box(boxes[j])) == list(blend["realtime_crop_boxes"][i])
        alpha = blend_mask(labels, boxes[j], blur_ratio=REALTIME_BLUR_RATIO)
        assert np.array_equal(alpha, blend["realtime_masks_synth"][i]), i
        assert_close_frames(paste_with_mask(frames[j], faces[i], boxes[j], alpha), blend["realtime_blended_synth"][i])


@pytest.mark.slow
def test_blend_with_the_standin_bisenet_equals_the_reference(
    net: BiSeNet, blend: dict[str, np.ndarray], frames: list[np.ndarray], boxes: np.ndarray, faces: np.ndarray
) -> None:
    # The labels depend only on the avatar frame and its box: each of the 4 frames is parsed once.
    labels = [crop_labels(net, frames[j], boxes[j]) for j in range(4)]
    xs, ys, xe, ye = crop_box(boxes[0])
    assert np.array_equal(crop_mask(labels[0], (xe - xs, ye - ys)), blend["seg_mask_random_frame0"])
    reference = blend["blended_random_bisenet"]
    assert np.array_equal(paste(frames[0], faces[0], boxes[0], parser=net), reference[0])  # the parser= path
    for i, j in enumerate(CYCLE):
        assert_close_frames(paste(frames[j], faces[i], boxes[j], labels=labels[j]), reference[i])


def test_paste_needs_exactly_one_mask_source(
    frames: list[np.ndarray], faces: np.ndarray, boxes: np.ndarray, blend: dict[str, np.ndarray]
) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        paste(frames[0], faces[0], boxes[0])
    with pytest.raises(ValueError, match="exactly one"):
        paste(frames[0], faces[0], boxes[0], parser=BiSeNet().eval(), labels=blend["synthetic_label_map"])
    with pytest.raises(ValueError, match="512"):
        jaw_mask(np.zeros((256, 256), dtype=np.uint8))
    with pytest.raises(ValueError, match="mask"):
        paste_with_mask(frames[0], faces[0], boxes[0], np.zeros((10, 10), dtype=np.uint8))


# --- a model file that is missing or is not BiSeNet's: one line naming the file and the fix -----------------------


def _place(models: Path, state: dict[str, torch.Tensor] | None = None, raw: bytes | None = None) -> Path:
    path = models / CHECKPOINT
    path.parent.mkdir(parents=True, exist_ok=True)
    if raw is not None:
        path.write_bytes(raw)
    else:
        torch.save(state, path)
    return path


def _one_line(err: pytest.ExceptionInfo[ModelFileError], path: Path) -> str:
    message = str(err.value)
    assert isinstance(err.value, InputError)
    assert "\n" not in message and message.startswith(str(path)) and "face-parse-bisent/79999_iter.pth" in message
    return message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not found") as err:
        load_bisenet(tmp_path)
    _one_line(err, tmp_path / CHECKPOINT)


def test_missing_key_and_wrong_shape(tmp_path: Path) -> None:
    state = BiSeNet().state_dict()
    del state["ffm.conv1.weight"]
    path = _place(tmp_path, state)
    with pytest.raises(ModelFileError, match=r"1 missing .*ffm.conv1.weight") as err:
        load_bisenet(tmp_path)
    _one_line(err, path)

    state = BiSeNet().state_dict()
    state["conv_out.conv_out.weight"] = torch.zeros(18, 256, 1, 1)
    _place(tmp_path, state)
    with pytest.raises(ModelFileError, match=r"1 wrong shape .*conv_out.conv_out.weight \[18, 256, 1, 1\]") as err:
        load_bisenet(tmp_path)
    _one_line(err, path)


def test_dropped_batchnorm_counters_are_filled_in(tmp_path: Path) -> None:
    state = {k: v for k, v in BiSeNet().state_dict().items() if not k.endswith("num_batches_tracked")}
    _place(tmp_path, state)
    assert not load_bisenet(tmp_path).training


def test_the_backbone_file_in_its_place(tmp_path: Path) -> None:
    backbone = standin_models() / "face-parse-bisent" / "resnet18-5c106cde.pth"
    path = _place(tmp_path, torch.load(backbone, map_location="cpu", weights_only=True))
    with pytest.raises(ModelFileError, match="resnet18-5c106cde") as err:
        load_bisenet(tmp_path)
    _one_line(err, path)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"", "empty file"),
        (b"<!doctype html><html>not found</html>", "web page"),
        (b"PK\x03\x04cut", "not a readable torch file"),
    ],
)
def test_unreadable_file(tmp_path: Path, raw: bytes, match: str) -> None:
    path = _place(tmp_path, raw=raw)
    with pytest.raises(ModelFileError, match=match) as err:
        load_bisenet(tmp_path)
    _one_line(err, path)
