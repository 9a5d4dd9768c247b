"""MuseTalk 1.5's public API (``heygem_pipeline.load_musetalk``) step by step against the reference fixture, on the
stand-in weights: crop, audio prompts, encode with the recorded noise, denoise, decode, paste; and the weights
check. The networks' own tests hold the finer comparisons; this one pins the API's shapes and meanings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from heygem_pipeline import load_musetalk
from heygem_pipeline.engine.lipsync.musetalk.audio import read_wave_16k
from heygem_pipeline.engine.lipsync.musetalk.model import MuseTalk, check_models, missing_files
from heygem_pipeline.errors import ModelFileError
from tests.helpers.musetalk_fixture import FIXTURE, fixture, standin_models

pytestmark = pytest.mark.slow
CYCLE = [0, 1, 2, 3, 3, 2, 1, 0]  # the reference's frames + frames[::-1] over the 4 fixture frames


@pytest.fixture(scope="module")
def model() -> Iterator[MuseTalk]:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the reference's figures were made at 2 threads
    yield load_musetalk(standin_models())
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return [cv2.imread(str(p)) for p in sorted((FIXTURE / "inputs" / "frames").glob("*.png"))]


def test_every_step_matches_the_reference(model: MuseTalk, frames: list[np.ndarray]) -> None:
    latents, unet, audio = fixture("latents"), fixture("unet"), fixture("audio")
    boxes = [tuple(int(v) for v in box) for box in latents["coords_in"]]
    crops = np.stack([model.crop(frame, box) for frame, box in zip(frames, boxes, strict=True)])
    assert crops.dtype == np.uint8 and crops.shape == (4, 256, 256, 3)
    assert np.array_equal(crops, latents["crops_bgr"])

    prompts = model.audio_prompts(read_wave_16k(FIXTURE / "inputs" / "voice_16k.wav"))
    assert prompts.dtype == np.float32 and prompts.shape == (50, 50, 384)
    assert np.abs(prompts - audio["audio_prompts"]).max() <= 1e-4

    encoded = model.encode(crops, noise=latents["eps"])
    assert tuple(encoded.shape) == (4, 8, 32, 32)
    assert float((encoded - torch.from_numpy(latents["unet_input_latents"])).abs().max()) <= 1e-4

    batch = encoded[CYCLE]  # the reference's first batch of 8
    predicted = model.denoise(batch, prompts[:8])
    assert tuple(predicted.shape) == (8, 4, 32, 32)
    assert float((predicted - torch.from_numpy(unet["pred_latents"][:8])).abs().max()) <= 1e-4

    decoded = model.decode(torch.from_numpy(unet["pred_latents"][:8]))
    assert decoded.dtype == np.uint8 and decoded.shape == (8, 256, 256, 3)
    off = np.abs(decoded.astype(np.int16) - unet["faces_bgr"][:8]) > 0
    assert np.abs(decoded.astype(np.int16) - unet["faces_bgr"][:8]).max() <= 1 and off.mean() <= 0.005


def test_paste_with_a_given_label_map_and_with_the_parser(model: MuseTalk, frames: list[np.ndarray]) -> None:
    blend, latents, unet = fixture("blend"), fixture("latents"), fixture("unet")
    for i in (0, 5):
        frame, box = frames[CYCLE[i]], tuple(int(v) for v in latents["coords_in"][CYCLE[i]])
        given = model.paste(frame, unet["faces_bgr"][i], box, labels=blend["synthetic_label_map"])
        assert given.shape == frame.shape and np.array_equal(given, blend["blended_synth_logits"][i])
        parsed = model.paste(frame, unet["faces_bgr"][i], box)
        assert np.array_equal(parsed, blend["blended_random_bisenet"][i])


def test_noise_is_per_frame_whatever_the_batch() -> None:
    together = MuseTalk.noise([3, 4, 5], seed=7)
    assert torch.equal(together[1], MuseTalk.noise([4], seed=7)[0]) and not torch.equal(together[0], together[1])


def test_weights_check_reports_each_network(tmp_path: Path) -> None:
    checks = check_models(standin_models())
    assert [(c.network, c.ok) for c in checks] == [("unet", True), ("vae", True), ("whisper", True),
                                                   ("face parser", True)]
    assert [c.tensors for c in checks] == [686, 248, 67, 191]
    (tmp_path / "musetalkV15").mkdir()
    (tmp_path / "musetalkV15" / "unet.pth").write_bytes(b"<html>Not found</html>")
    problems = [str(p) for p in missing_files(tmp_path)]
    assert problems[0].startswith(f"{tmp_path}/musetalkV15/musetalk.json: is missing; download MuseTalk 1.5")
    with pytest.raises(ModelFileError) as caught:
        load_musetalk(tmp_path)
    assert "\n" not in str(caught.value) and "musetalk.json" in str(caught.value)
    broken = check_models(tmp_path)
    assert (not any(c.ok for c in broken) and "unet.pth" in broken[0].problem) or "musetalk.json" in broken[0].problem


def test_every_tensor_of_the_loaded_networks_is_on_the_model_device(model: MuseTalk) -> None:
    # Loaded on the meta device then assigned: a buffer the state dict does not hold would stay on meta (or the
    # CPU) and only fail on a GPU. Every parameter and buffer must be on the model's device, in float32.
    for name in ("unet", "vae", "whisper", "parser"):
        network = getattr(model, name)
        tensors = [*network.parameters(), *network.buffers()]
        assert tensors and all(t.device == model.device for t in tensors), name
        assert all(t.dtype == torch.float32 for t in network.parameters()), name
        assert not network.training, name


def test_engine_device_defaults_like_wav2lip_and_refuses_a_missing_gpu() -> None:
    from heygem_pipeline.engine.lipsync.registry import create_engine
    from heygem_pipeline.errors import HeygemError

    engine = create_engine("musetalk", models=str(standin_models()), fp16=True)
    assert engine.device == torch.device("cuda" if torch.cuda.is_available() else "cpu")  # type: ignore[attr-defined]
    assert engine.fp16 and engine.batch_size == 8  # type: ignore[attr-defined]
    if not torch.cuda.is_available():
        with pytest.raises(HeygemError, match="no CUDA GPU"):
            create_engine("musetalk", models=str(standin_models()), device="cuda")
