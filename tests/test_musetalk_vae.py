"""MuseTalk 1.5's VAE and face data path against the reference fixture (tests/data/musetalk, made by running the
reference on deterministic stand-in weights): crops, VAE inputs, posteriors, latents, decoded faces, strict loading.

The VAE costs about 1 s per 256×256 image to encode and 2 s to decode on 2 idle CPU threads, so the tests that run it
are marked slow; the 16-face comparison is the longest (≈ 30 s; several times that on a busy machine).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from heygem_pipeline.engine.lipsync.musetalk import faces
from heygem_pipeline.engine.lipsync.musetalk.vae import AutoencoderKL, load_vae
from heygem_pipeline.errors import InputError, ModelFileError
from tests.helpers.musetalk_fixture import FIXTURE, MANIFEST, fixture, standin_models

DECODE_BATCH = 8  # the reference decodes the UNet's output in batches of 8
TINY_CONFIG = {"_class_name": "AutoencoderKL", "block_out_channels": [32, 32], "layers_per_block": 1,
               "norm_num_groups": 32, "latent_channels": 4}


@pytest.fixture(scope="module", autouse=True)
def two_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def vae() -> AutoencoderKL:
    return load_vae(standin_models())


@pytest.fixture(scope="module")
def latents_npz() -> dict[str, np.ndarray]:
    return fixture("latents")


@pytest.fixture(scope="module")
def unet_npz() -> dict[str, np.ndarray]:
    return fixture("unet")


@pytest.fixture(scope="module")
def posteriors(vae: AutoencoderKL, latents_npz: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    mean, std = faces.posterior(vae, latents_npz["crops_bgr"])
    return mean.numpy(), std.numpy()


@pytest.fixture(scope="module")
def decoded_first2(vae: AutoencoderKL, unet_npz: dict[str, np.ndarray]) -> np.ndarray:
    return faces.decode_float(vae, unet_npz["pred_latents"][:2]).numpy()


def frames() -> list[np.ndarray]:
    return [cv2.imread(str(p)) for p in sorted((FIXTURE / "inputs" / "frames").glob("*.png"))]


# --- crops and VAE inputs -------------------------------------------------------------------------------------------


def test_crops_equal_the_reference(latents_npz: dict[str, np.ndarray]) -> None:
    images = frames()
    assert len(images) == 4
    pairs = list(zip(images, latents_npz["coords_in"], strict=True))
    boxes = [faces.with_margin(tuple(box), img.shape[0]) for img, box in pairs]
    assert np.array_equal(np.array(boxes), latents_npz["boxes_used"])
    crops = np.stack([faces.crop(img, tuple(box)) for img, box in pairs])
    assert crops.dtype == np.uint8 and crops.shape == (4, 256, 256, 3)
    assert np.array_equal(crops, latents_npz["crops_bgr"])


def test_margin_stops_at_the_frame_edge() -> None:
    assert faces.with_margin((5, 6, 50, 95), 100) == (5, 6, 50, 100)
    with pytest.raises(ValueError, match="empty"):
        faces.crop(np.zeros((100, 100, 3), np.uint8), (50, 10, 50, 40))


def test_vae_inputs_equal_the_reference(latents_npz: dict[str, np.ndarray]) -> None:
    masked, full = faces.vae_inputs(latents_npz["crops_bgr"])
    assert masked.dtype == full.dtype == torch.float32 and masked.shape == (4, 3, 256, 256)
    np.testing.assert_allclose(masked[:1].numpy(), latents_npz["vae_in_masked_frame0"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(full[:1].numpy(), latents_npz["vae_in_full_frame0"], rtol=0, atol=1e-6)
    assert bool((masked[:, :, 128:] == -1).all())


def test_latents_from_the_recorded_posterior_and_noise_are_exact(latents_npz: dict[str, np.ndarray]) -> None:
    mean, std = (torch.from_numpy(latents_npz[k]) for k in ("posterior_mean", "posterior_std"))
    latents = faces.sample_latents(mean, std, latents_npz["eps"])
    assert np.array_equal(latents.numpy(), latents_npz["unet_input_latents"])
    seeded = faces.sample_latents(mean, std)  # the default generator's seed is the one the reference drew with
    assert np.array_equal(seeded.numpy(), latents_npz["unet_input_latents"])
    with pytest.raises(ValueError, match="noise must be"):
        faces.sample_latents(mean, std, latents_npz["eps"][:2])


# --- the VAE against the reference ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_posterior_matches_the_reference(
    posteriors: tuple[np.ndarray, np.ndarray], latents_npz: dict[str, np.ndarray]
) -> None:
    mean, std = posteriors
    np.testing.assert_allclose(mean, latents_npz["posterior_mean"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(std, latents_npz["posterior_std"], rtol=0, atol=1e-4)


@pytest.mark.slow
def test_latents_match_the_reference(
    posteriors: tuple[np.ndarray, np.ndarray], latents_npz: dict[str, np.ndarray]
) -> None:
    mean, std = (torch.from_numpy(a) for a in posteriors)
    latents = faces.sample_latents(mean, std, latents_npz["eps"])
    np.testing.assert_allclose(latents.numpy(), latents_npz["unet_input_latents"], rtol=0, atol=1e-4)


@pytest.mark.slow
def test_encode_end_to_end_reruns_identically(vae: AutoencoderKL, latents_npz: dict[str, np.ndarray]) -> None:
    crop = latents_npz["crops_bgr"][:1]
    first = faces.encode(vae, crop)  # seeded: eps equals the reference's first frame's draws
    assert first.shape == (1, 8, 32, 32)
    np.testing.assert_allclose(first.numpy(), latents_npz["unet_input_latents"][:1], rtol=0, atol=1e-4)
    assert torch.equal(first, faces.encode(vae, crop))
    given = faces.encode(vae, crop, latents_npz["eps"][:1])
    np.testing.assert_allclose(given.numpy(), latents_npz["unet_input_latents"][:1], rtol=0, atol=1e-4)


@pytest.mark.slow
def test_decoder_floats_match_the_reference(decoded_first2: np.ndarray, unet_npz: dict[str, np.ndarray]) -> None:
    assert decoded_first2.shape == (2, 3, 256, 256)
    np.testing.assert_allclose(decoded_first2, unet_npz["decoded_float_first2"], rtol=0, atol=1e-4)


@pytest.mark.slow
def test_decoded_faces_match_the_reference(vae: AutoencoderKL, unet_npz: dict[str, np.ndarray]) -> None:
    # The first 16 of the 50 faces (two of the reference's batches): the other 34 take a minute and test nothing new.
    pred = unet_npz["pred_latents"][:16]
    out = np.concatenate([faces.decode(vae, pred[i : i + DECODE_BATCH]) for i in range(0, len(pred), DECODE_BATCH)])
    assert out.dtype == np.uint8 and out.shape == (16, 256, 256, 3)
    diff = np.abs(out.astype(np.int16) - unet_npz["faces_bgr"][:16].astype(np.int16))
    assert int(diff.max()) <= 1
    assert float((diff > 0).mean()) <= 0.005


# --- loading ----------------------------------------------------------------------------------------------------------


def test_strict_load_of_all_248_tensors(vae: AutoencoderKL) -> None:
    manifest = json.loads(MANIFEST.read_text())["files"]["sd-vae/diffusion_pytorch_model.bin"]["keys"]
    state = vae.state_dict()
    assert len(manifest) == len(state) == 248
    assert {k: list(v.shape) for k, v in state.items()} == {k: shape for k, shape in manifest}
    weights = torch.load(standin_models() / "sd-vae" / "diffusion_pytorch_model.bin", weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in weights.items())
    assert "encoder.mid_block.attentions.0.query.weight" in state
    assert vae.scaling_factor == 0.18215 and not vae.training


def _tiny_models(root: Path, state: dict[str, torch.Tensor], config: dict[str, object] = TINY_CONFIG) -> Path:
    (root / "sd-vae").mkdir(parents=True)
    (root / "sd-vae" / "config.json").write_text(json.dumps(config))
    torch.save(state, root / "sd-vae" / "diffusion_pytorch_model.bin")
    return root


def _tiny_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return AutoencoderKL.from_config(TINY_CONFIG).state_dict()


def test_modern_attention_names_load_too(tmp_path: Path) -> None:
    state = _tiny_state()
    renamed = {k.replace(".query.", ".to_q.").replace(".proj_attn.", ".to_out.0."): v for k, v in state.items()}
    assert renamed.keys() != state.keys()
    model = load_vae(_tiny_models(tmp_path, renamed))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    with torch.no_grad():
        out = model.decode(torch.zeros(1, 4, 4, 4))
    assert out.shape == (1, 3, 8, 8)


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError) as err:
        load_vae(tmp_path)
    message = str(err.value)
    assert "\n" not in message and "sd-vae/config.json" in message and "not found" in message
    assert isinstance(err.value, InputError) and "sd-vae-ft-mse" in message

    models = _tiny_models(tmp_path / "m", _tiny_state())
    (models / "sd-vae" / "diffusion_pytorch_model.bin").unlink()
    with pytest.raises(ModelFileError, match=r"diffusion_pytorch_model\.bin: file not found"):
        load_vae(models)


def test_missing_or_misshapen_key_is_one_line(tmp_path: Path) -> None:
    state = _tiny_state()
    del state["decoder.mid_block.attentions.0.value.bias"]
    with pytest.raises(ModelFileError) as err:
        load_vae(_tiny_models(tmp_path / "a", state))
    message = str(err.value)
    assert "\n" not in message and "1 missing (e.g. decoder.mid_block.attentions.0.value.bias)" in message
    assert "diffusion_pytorch_model.bin" in message

    state = _tiny_state()
    state["quant_conv.weight"] = torch.zeros(8, 8, 3, 3)
    with pytest.raises(ModelFileError, match=r"1 wrong shape \(e\.g\. quant_conv\.weight \[8, 8, 3, 3\]"):
        load_vae(_tiny_models(tmp_path / "b", state))


def test_unreadable_files_are_one_line(tmp_path: Path) -> None:
    models = _tiny_models(tmp_path, _tiny_state())
    (models / "sd-vae" / "config.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not a readable JSON config"):
        load_vae(models)
    (models / "sd-vae" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    with pytest.raises(ModelFileError, match="not an AutoencoderKL config"):
        load_vae(models)
    (models / "sd-vae" / "config.json").write_text(json.dumps(TINY_CONFIG))
    (models / "sd-vae" / "diffusion_pytorch_model.bin").write_bytes(b"<!doctype html><html></html>")
    with pytest.raises(ModelFileError, match="not a readable torch file") as err:
        load_vae(models)
    assert "\n" not in str(err.value)
