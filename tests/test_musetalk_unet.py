"""MuseTalk 1.5's UNet and its one-step denoise reproduce the reference (diffusers 0.30.2's UNet2DConditionModel) on
the stand-in weights, and the loader fails with one clear line.

The fixture (``tests/data/musetalk/unet.npz``) holds the reference's UNet inputs and outputs at 2 threads, float32,
batches of 8 over the ping-pong frame cycle. The slow tests share one UNet (3.4 GB, memory-mapped) per module.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from heygem_pipeline.engine.lipsync.musetalk.denoise import TIMESTEP, denoise, positional_encoding
from heygem_pipeline.engine.lipsync.musetalk.unet import (
    UNet,
    UNetConfig,
    expected_shapes,
    load_unet,
    read_unet_config,
)
from heygem_pipeline.errors import InputError, ModelFileError
from tests.helpers.musetalk_fixture import MANIFEST, fixture, standin_models

UNET_TOLERANCE = 1e-4  # measured: 0.0 (bit-identical) at 2 threads, batches as the reference grouped them
BATCH = 8
CYCLE = [0, 1, 2, 3, 3, 2, 1, 0]  # the 4 fixture frames, forth and back


@pytest.fixture(scope="module")
def manifest_shapes() -> dict[str, tuple[int, ...]]:
    keys = json.loads(MANIFEST.read_text())["files"]["musetalkV15/unet.pth"]["keys"]
    return {key: tuple(shape) for key, shape in keys}


@pytest.fixture(scope="module")
def unet_data() -> dict[str, np.ndarray]:
    return fixture("unet")


@pytest.fixture(scope="module")
def unet() -> Iterator[UNet]:
    """The stand-in UNet, loaded once; 2 threads as the fixture was made (CPU sums move by 1e-6 with threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        yield load_unet(standin_models())
    finally:
        torch.set_num_threads(threads)


def _config_file() -> Path:
    return standin_models() / "musetalkV15" / "musetalk.json"


def test_positional_encoding_matches_reference(unet_data: dict[str, np.ndarray]) -> None:
    prompts = torch.from_numpy(fixture("audio")["audio_prompts"][:BATCH])
    encoded = positional_encoding(prompts).numpy()
    assert encoded.dtype == np.float32
    np.testing.assert_allclose(encoded, unet_data["batch0_pe_output"], rtol=0, atol=1e-6)


def test_denoise_encodes_the_prompts_and_runs_timestep_0() -> None:
    seen: list[tuple[torch.Tensor, int, torch.Tensor]] = []

    def stub(latents: torch.Tensor, timestep: int, prompts: torch.Tensor) -> torch.Tensor:
        seen.append((latents, timestep, prompts))
        return latents[:, :4]

    latents, prompts = torch.randn(2, 8, 32, 32), torch.randn(2, 50, 384)
    out = denoise(stub, latents, prompts)  # type: ignore[arg-type]
    assert out.shape == (2, 4, 32, 32)
    assert seen[0][1] == TIMESTEP == 0
    assert torch.equal(seen[0][2], positional_encoding(prompts))
    with pytest.raises(ValueError, match="2 latents but 3 audio prompts"):
        denoise(stub, latents, torch.randn(3, 50, 384))  # type: ignore[arg-type]


def test_config_builds_every_checkpoint_key(manifest_shapes: dict[str, tuple[int, ...]]) -> None:
    config = read_unet_config(_config_file())
    assert config == UNetConfig()  # MuseTalk 1.5's json is this implementation's default
    assert expected_shapes(config) == manifest_shapes
    assert len(manifest_shapes) == 686


def test_small_config_with_linear_projection_runs() -> None:
    """The same code builds other diffusers layouts: SD 2.x's linear proj_in/proj_out, per-block heads."""
    config = UNetConfig(block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                        attention_head_dim=(2, 4), norm_num_groups=8, cross_attention_dim=16,
                        use_linear_projection=True)
    torch.manual_seed(0)
    model = UNet(config).eval()
    assert model.state_dict()["down_blocks.0.attentions.0.proj_in.weight"].shape == (32, 32)
    with torch.no_grad():
        out = model(torch.randn(2, 8, 16, 16), 0, torch.randn(2, 5, 16))
    assert out.shape == (2, 4, 16, 16) and torch.isfinite(out).all()


def test_fixture_batch0_is_the_ping_pong_cycle(unet_data: dict[str, np.ndarray]) -> None:
    frames = fixture("latents")["unet_input_latents"]
    assert np.array_equal(unet_data["batch0_latent_input"], frames[CYCLE])
    assert unet_data["timesteps"].tolist() == [TIMESTEP]


@pytest.mark.slow
def test_standin_loads_strictly(unet: UNet, manifest_shapes: dict[str, tuple[int, ...]]) -> None:
    state = unet.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == manifest_shapes
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" for v in state.values())
    assert not unet.training
    assert not any(p.requires_grad for p in unet.parameters())
    on_file = torch.load(standin_models() / "musetalkV15" / "unet.pth", weights_only=True, mmap=True)
    for key in ("conv_in.weight", "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight", "conv_out.bias"):
        assert torch.equal(state[key], on_file[key])


@pytest.mark.slow
def test_unet_matches_reference_batch0(unet: UNet, unet_data: dict[str, np.ndarray]) -> None:
    latents = torch.from_numpy(unet_data["batch0_latent_input"])
    prompts = torch.from_numpy(unet_data["batch0_pe_output"])
    with torch.no_grad():
        out = unet(latents, TIMESTEP, prompts).numpy()
    expected = unet_data["pred_latents"][:BATCH]
    error = float(np.abs(out - expected).max())
    print(f"UNet batch 0: max abs error {error:.3g} (outputs up to {np.abs(expected).max():.3g})")
    assert error <= UNET_TOLERANCE


@pytest.mark.slow
def test_denoise_matches_reference_last_batch(unet: UNet, unet_data: dict[str, np.ndarray]) -> None:
    """The cycle's last, partial batch (frames 48-49 of 50), from the prompts before positional encoding."""
    count = unet_data["pred_latents"].shape[0]
    first = count - count % BATCH
    frames = fixture("latents")["unet_input_latents"]
    latents = torch.from_numpy(frames[[CYCLE[i % len(CYCLE)] for i in range(first, count)]])
    prompts = torch.from_numpy(fixture("audio")["audio_prompts"][first:count])
    out = denoise(unet, latents, prompts).numpy()
    error = float(np.abs(out - unet_data["pred_latents"][first:count]).max())
    print(f"denoise frames {first}-{count - 1}: max abs error {error:.3g}")
    assert error <= UNET_TOLERANCE


# --- errors: one line naming the file, the problem and where to get it -------------------------------------------


def _models_with(tmp_path: Path, state: dict[str, torch.Tensor] | None) -> Path:
    folder = tmp_path / "models" / "musetalkV15"
    folder.mkdir(parents=True)
    shutil.copy(_config_file(), folder / "musetalk.json")
    if state is not None:
        torch.save(state, folder / "unet.pth")
    return tmp_path / "models"


def _tiny_state(manifest_shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """The right names and shapes, each an expanded scalar: a few kilobytes on disk instead of 3.4 GB."""
    return {key: torch.zeros(()).expand(shape) for key, shape in manifest_shapes.items()}


def _one_line(exc: ModelFileError) -> str:
    message = str(exc)
    assert "\n" not in message
    assert "huggingface TMElyralab/MuseTalk" in message
    assert isinstance(exc, InputError) and not exc.about_the_upload
    return message


def test_weights_with_python_objects(tmp_path: Path) -> None:
    models = _models_with(tmp_path, {"conv_in.weight": torch.zeros(1), "args": argparse.Namespace(lr=1)})  # type: ignore[dict-item]
    with pytest.raises(ModelFileError, match="holds Python objects besides tensors") as caught:
        load_unet(models)
    _one_line(caught.value)


def test_missing_weights_file(tmp_path: Path) -> None:
    models = _models_with(tmp_path, None)
    with pytest.raises(ModelFileError) as caught:
        load_unet(models)
    assert _one_line(caught.value).startswith(f"{models / 'musetalkV15' / 'unet.pth'}: file not found")


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError) as caught:
        load_unet(tmp_path)
    assert _one_line(caught.value).startswith(f"{tmp_path / 'musetalkV15' / 'musetalk.json'}: file not found")


def test_weights_with_a_missing_key(tmp_path: Path, manifest_shapes: dict[str, tuple[int, ...]]) -> None:
    state = _tiny_state(manifest_shapes)
    del state["up_blocks.1.attentions.2.proj_out.bias"]
    with pytest.raises(ModelFileError) as caught:
        load_unet(_models_with(tmp_path, state))
    message = _one_line(caught.value)
    assert "unet.pth: not MuseTalk's UNet" in message
    assert "1 missing (e.g. up_blocks.1.attentions.2.proj_out.bias)" in message


def test_weights_with_a_wrong_shape_and_an_extra_key(tmp_path: Path,
                                                     manifest_shapes: dict[str, tuple[int, ...]]) -> None:
    state = _tiny_state(manifest_shapes)
    state["conv_in.weight"] = torch.zeros(()).expand(320, 4, 3, 3)  # a 4-channel SD UNet, not MuseTalk's 8
    state["num_batches_tracked"] = torch.zeros(())
    with pytest.raises(ModelFileError) as caught:
        load_unet(_models_with(tmp_path, state))
    message = _one_line(caught.value)
    assert "1 unexpected (e.g. num_batches_tracked)" in message
    assert "1 wrong shape (e.g. conv_in.weight [320, 4, 3, 3] instead of [320, 8, 3, 3])" in message


@pytest.mark.parametrize(("content", "problem"), [
    (b"", "file is empty"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\n", "Git LFS pointer"),
    (b"<!DOCTYPE html><html></html>", "web page"),
    (b"\x80\x02garbage", "torch cannot read it"),
    (b"not a torch file at all", "torch cannot read it"),
])
def test_unreadable_weights(tmp_path: Path, content: bytes, problem: str) -> None:
    models = _models_with(tmp_path, None)
    (models / "musetalkV15" / "unet.pth").write_bytes(content)
    with pytest.raises(ModelFileError, match=problem) as caught:
        load_unet(models)
    _one_line(caught.value)


@pytest.mark.parametrize(("change", "problem"), [
    ({"center_input_sample": True}, "center_input_sample=True is not supported"),
    ({"made_up": 1}, "unknown setting 'made_up'"),
    ({"down_block_types": ["SimpleDownBlock2D"] * 4}, "block types"),
    ({"block_out_channels": [320, 640, 1280, "1280"]}, "must be positive integers"),
    ({"block_out_channels": [320, 640, 1280]}, "differ in length"),
])
def test_unusable_config(tmp_path: Path, change: dict[str, object], problem: str) -> None:
    models = _models_with(tmp_path, None)
    config = models / "musetalkV15" / "musetalk.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **change}))
    with pytest.raises(ModelFileError, match=problem) as caught:
        load_unet(models)
    assert _one_line(caught.value).startswith(f"{config}: not a MuseTalk UNet config")
