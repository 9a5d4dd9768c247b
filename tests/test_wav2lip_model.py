"""The Wav2Lip generator matches the public checkpoints' state dict, and its loader fails with one clear line.

No real weights are available here: checkpoints are written by the tests themselves (seeded random weights), in the
official layout, with and without the DataParallel ``module.`` prefix, and in the legacy pre-1.6 torch format the
official files use. Files that only need the right names and shapes store each tensor as an expanded scalar, so
they are a few kilobytes instead of 145 MB.
"""

from __future__ import annotations

import argparse
import json
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from heygem_pipeline.engine.lipsync.wav2lip import (
    ENV_VAR,
    Wav2Lip,
    expected_shapes,
    load_wav2lip_checkpoint,
    read_state_dict,
    resolve_checkpoint,
    save_wav2lip_checkpoint,
)
from heygem_pipeline.errors import CheckpointError

SHAPES_JSON = Path(__file__).parent / "data" / "wav2lip_state_dict_shapes.json"
PARAMS = 36_298_035


@pytest.fixture(scope="module")
def reference_shapes() -> dict[str, list[int]]:
    return json.loads(SHAPES_JSON.read_text())


@pytest.fixture(scope="module")
def model() -> Wav2Lip:
    """Seeded random weights, with non-trivial BatchNorm statistics so that loading them is visible in eval mode."""
    torch.manual_seed(1234)
    net = Wav2Lip()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.8, 1.2)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.num_batches_tracked.fill_(1000)
    return net.eval()


@pytest.fixture(scope="module")
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    mel = torch.rand(2, 1, 80, 16, generator=gen) * 8 - 4  # the reference's normalised mel range
    faces = torch.rand(2, 6, 96, 96, generator=gen)
    faces[:, :3, 48:] = 0  # masked lower half, as the engine feeds it
    return mel, faces


@pytest.fixture(scope="module")
def expected_output(model: Wav2Lip, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    with torch.inference_mode():
        return model(*inputs)


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wav2lip_ckpt")


def _tiny_state(prefix: str = "", shapes: dict[str, tuple[int, ...]] | None = None) -> OrderedDict[str, torch.Tensor]:
    """Right names and shapes, each tensor an expanded scalar (value = its index), so the file stays tiny."""
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for i, (key, shape) in enumerate((shapes or expected_shapes()).items()):
        dtype = torch.long if key.endswith("num_batches_tracked") else torch.float32
        state[prefix + key] = torch.full((), i, dtype=dtype).expand(shape)
    return state


def _save(obj: object, path: Path, legacy: bool = False) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


# --- the network -------------------------------------------------------------------------------------------------


def test_state_dict_names_shapes_and_order_match_public_checkpoints(reference_shapes: dict[str, list[int]]) -> None:
    with torch.device("meta"):
        net = Wav2Lip()
    ours = [(k, list(v.shape)) for k, v in net.state_dict().items()]
    assert len(ours) == 352
    assert ours == [(k, v) for k, v in reference_shapes.items()]
    assert {k: list(v) for k, v in expected_shapes().items()} == reference_shapes


def test_parameter_count(model: Wav2Lip) -> None:
    count = sum(p.numel() for p in model.parameters())
    assert count == PARAMS  # "~36.3 M" in the paper's release notes
    assert 36.2e6 < count < 36.4e6


def test_output_shape_range_and_determinism(
    model: Wav2Lip, inputs: tuple[torch.Tensor, torch.Tensor], expected_output: torch.Tensor
) -> None:
    assert expected_output.shape == (2, 3, 96, 96)
    assert expected_output.dtype == torch.float32
    assert float(expected_output.min()) >= 0.0 and float(expected_output.max()) <= 1.0
    with torch.inference_mode():
        again = model(*inputs)
    assert torch.equal(again, expected_output)
    assert not torch.equal(expected_output[0], expected_output[1])  # depends on its input


def test_time_sequences_match_frame_by_frame(model: Wav2Lip, inputs: tuple[torch.Tensor, torch.Tensor]) -> None:
    mel, faces = inputs  # two frames, used as one item with T = 2
    with torch.inference_mode():
        out = model(mel.unsqueeze(0), faces.permute(1, 0, 2, 3).unsqueeze(0))
        single = model(mel, faces)
    assert out.shape == (1, 3, 2, 96, 96)
    torch.testing.assert_close(out[0].permute(1, 0, 2, 3), single, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("audio_shape", "face_shape"),
    [((1, 1, 80, 17), (1, 6, 96, 96)), ((1, 1, 80, 16), (1, 3, 96, 96)), ((2, 1, 80, 16), (1, 6, 96, 96))],
)
def test_wrong_input_shapes_say_what_is_expected(
    model: Wav2Lip, audio_shape: tuple[int, ...], face_shape: tuple[int, ...]
) -> None:
    with pytest.raises(ValueError, match="Wav2Lip"):
        model(torch.zeros(audio_shape), torch.zeros(face_shape))


# --- loading good checkpoints ------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix_module", [False, True])
def test_saved_checkpoint_loads_strict_and_gives_identical_output(
    model: Wav2Lip,
    inputs: tuple[torch.Tensor, torch.Tensor],
    expected_output: torch.Tensor,
    ckpt_dir: Path,
    prefix_module: bool,
) -> None:
    path = save_wav2lip_checkpoint(model, ckpt_dir / f"wav2lip_{prefix_module}.pth", prefix_module=prefix_module)

    raw = torch.load(path, map_location="cpu", weights_only=True)  # the official layout, safe to load
    assert set(raw) == {"state_dict", "optimizer", "global_step", "global_epoch"}
    assert all(k.startswith("module.") == prefix_module for k in raw["state_dict"])

    loaded = load_wav2lip_checkpoint(path, device="cpu")
    assert isinstance(loaded, Wav2Lip)
    assert not loaded.training
    assert next(loaded.parameters()).device.type == "cpu"
    theirs = loaded.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in model.state_dict().items())
    with torch.inference_mode():
        assert torch.equal(loaded(*inputs), expected_output)
    path.unlink()  # 145 MB each; do not keep them in pytest's retained temp dirs


def test_official_like_legacy_file_with_optimizer_and_prefix_loads(ckpt_dir: Path) -> None:
    """What wav2lip.pth looks like: torch 1.x legacy format, ``module.`` keys, an Adam state, step and epoch."""
    optimizer = {
        "state": {0: {"step": 10, "exp_avg": torch.zeros(3), "exp_avg_sq": torch.zeros(3)}},
        "param_groups": [
            {"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "amsgrad": False, "params": [0]}
        ],
    }
    ckpt = {"state_dict": _tiny_state("module."), "optimizer": optimizer, "global_step": 250000, "global_epoch": 420}
    path = _save(ckpt, ckpt_dir / "official_like.pth", legacy=True)

    loaded = load_wav2lip_checkpoint(path)
    for i, (key, value) in enumerate(loaded.state_dict().items()):
        assert float(value.flatten()[0]) == i, key


def test_bare_state_dict_and_env_var_are_accepted(ckpt_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(_tiny_state(), ckpt_dir / "bare.pth")
    monkeypatch.setenv(ENV_VAR, f" {path} ")
    assert resolve_checkpoint(None) == path
    assert list(read_state_dict()) == list(expected_shapes())
    assert isinstance(load_wav2lip_checkpoint(), Wav2Lip)


def test_missing_batchnorm_counters_are_filled_in(ckpt_dir: Path) -> None:
    state = {k: v for k, v in _tiny_state().items() if not k.endswith("num_batches_tracked")}
    path = _save({"state_dict": state}, ckpt_dir / "no_counters.pth")
    loaded = load_wav2lip_checkpoint(path)
    assert int(loaded.output_block[0].conv_block[1].num_batches_tracked) == 0


def test_pickled_objects_need_trust(ckpt_dir: Path) -> None:
    ckpt = {"state_dict": _tiny_state(), "args": argparse.Namespace(lr=1e-4)}
    path = _save(ckpt, ckpt_dir / "with_namespace.pth")
    with pytest.raises(CheckpointError, match="trust_pickle") as err:
        load_wav2lip_checkpoint(path)
    _assert_one_line_naming(err.value, path)
    assert isinstance(load_wav2lip_checkpoint(path, trust_pickle=True), Wav2Lip)


# --- bad checkpoints: one line naming the file and the fix -------------------------------------------------------


def _assert_one_line_naming(error: CheckpointError, path: Path | str) -> None:
    message = str(error)
    assert str(path) in message
    assert error.path == str(path)
    assert "\n" not in message


def test_missing_path(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "wav2lip.pth"
    with pytest.raises(CheckpointError, match="not found") as err:
        load_wav2lip_checkpoint(path)
    _assert_one_line_naming(err.value, path)
    assert ENV_VAR in str(err.value) and "checkpoint:" in str(err.value)


def test_nothing_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(CheckpointError) as err:
        resolve_checkpoint(None)
    assert ENV_VAR in str(err.value) and "checkpoint:" in str(err.value)
    assert "\n" not in str(err.value)


def test_directory_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="directory") as err:
        resolve_checkpoint(tmp_path)
    _assert_one_line_naming(err.value, tmp_path)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty") as err:
        load_wav2lip_checkpoint(empty)
    _assert_one_line_naming(err.value, empty)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"this is not a checkpoint\n" * 4, "not a torch checkpoint"),
        (b"\x00" * 64, "not a torch checkpoint"),
        (b"<!DOCTYPE html>\n<html><head><title>wav2lip.pth</title></head></html>\n", "web page"),
    ],
)
def test_not_a_torch_file(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "wav2lip.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as err:
        load_wav2lip_checkpoint(path)
    _assert_one_line_naming(err.value, path)


@pytest.mark.parametrize("legacy", [False, True])
def test_truncated_file(ckpt_dir: Path, tmp_path: Path, legacy: bool) -> None:
    whole = _save({"state_dict": _tiny_state()}, ckpt_dir / f"whole_{legacy}.pth", legacy=legacy).read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as err:
        load_wav2lip_checkpoint(path)
    _assert_one_line_naming(err.value, path)


def test_missing_keys(ckpt_dir: Path) -> None:
    state = {k: v for k, v in _tiny_state().items() if not k.startswith("output_block.")}
    path = _save({"state_dict": state}, ckpt_dir / "missing.pth")
    with pytest.raises(CheckpointError, match="not a Wav2Lip generator checkpoint") as err:
        load_wav2lip_checkpoint(path)
    _assert_one_line_naming(err.value, path)
    assert "missing" in str(err.value) and "output_block.0.conv_block.0.weight" in str(err.value)


def test_unexpected_keys(ckpt_dir: Path) -> None:
    state = _tiny_state()
    state["extra_head.weight"] = torch.zeros(2)
    path = _save({"state_dict": state}, ckpt_dir / "unexpected.pth")
    with pytest.raises(CheckpointError, match="1 unexpected") as err:
        load_wav2lip_checkpoint(path)
    _assert_one_line_naming(err.value, path)
    assert "extra_head.weight" in str(err.value)


def test_wrong_shape(ckpt_dir: Path) -> None:
    shapes = expected_shapes()
    shapes["face_encoder_blocks.0.0.conv_block.0.weight"] = (16, 3, 7, 7)  # a 3-channel variant
    path = _save({"state_dict": _tiny_state(shapes=shapes)}, ckpt_dir / "wrong_shape.pth")
    with pytest.raises(CheckpointError, match="1 wrong shape") as err:
        load_wav2lip_checkpoint(path)
    _assert_one_line_naming(err.value, path)
    assert "face_encoder_blocks.0.0.conv_block.0.weight" in str(err.value)


def test_syncnet_expert_is_named(ckpt_dir: Path) -> None:
    state = {
        "module.face_encoder.0.conv_block.0.weight": torch.zeros(32, 15, 7, 7),
        "module.audio_encoder.0.conv_block.0.weight": torch.zeros(32, 1, 3, 3),
    }
    path = _save({"state_dict": state, "optimizer": None, "global_step": 1, "global_epoch": 1}, ckpt_dir / "sync.pth")
    with pytest.raises(CheckpointError, match="SyncNet") as err:
        load_wav2lip_checkpoint(path)
    _assert_one_line_naming(err.value, path)


def test_not_a_state_dict(ckpt_dir: Path) -> None:
    path = _save([1, 2, 3], ckpt_dir / "list.pth")
    with pytest.raises(CheckpointError, match="not a Wav2Lip checkpoint") as err:
        load_wav2lip_checkpoint(path)
    _assert_one_line_naming(err.value, path)
