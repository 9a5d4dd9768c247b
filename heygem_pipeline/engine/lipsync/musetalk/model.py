"""MuseTalk 1.5 at the reference's steps: ``load_musetalk(models_dir)`` and the loaded model's ``crop``,
``audio_prompts``, ``encode``, ``denoise``, ``decode`` and ``paste`` (README, "MuseTalk"), plus what the engine
needs to stream long voices (``whisper_features``, ``prompts_at``, ``noise``) and ``check_models`` for
``heygem models check``."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from heygem_pipeline.engine.lipsync.musetalk import audio, faces
from heygem_pipeline.engine.lipsync.musetalk.bisenet import BiSeNet, load_bisenet
from heygem_pipeline.engine.lipsync.musetalk.blend import crop_labels
from heygem_pipeline.engine.lipsync.musetalk.blend import paste as blend_paste
from heygem_pipeline.engine.lipsync.musetalk.denoise import denoise
from heygem_pipeline.engine.lipsync.musetalk.unet import UNet, load_unet
from heygem_pipeline.engine.lipsync.musetalk.vae import AutoencoderKL, load_vae
from heygem_pipeline.engine.lipsync.musetalk.whisper import WhisperEncoder, load_whisper
from heygem_pipeline.errors import ModelFileError

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 before the reference's 10 px margin below the chin
GET_THEM = "download MuseTalk 1.5's weights as its README lays them out (huggingface TMElyralab/MuseTalk)"
# The files of the README layout the engine reads, by the network they hold.
MODEL_FILES = {
    "unet": ("musetalkV15/unet.pth", "musetalkV15/musetalk.json"),
    "vae": ("sd-vae/diffusion_pytorch_model.bin", "sd-vae/config.json"),
    "whisper": ("whisper/pytorch_model.bin", "whisper/config.json"),
    "face parser": ("face-parse-bisent/79999_iter.pth",),
}


def missing_files(models_dir: str | os.PathLike[str]) -> list[ModelFileError]:
    """A ``ModelFileError`` for each file of ``MODEL_FILES`` that is not in ``models_dir`` (a quick check that
    reads nothing; ``check_models`` loads them)."""
    folder = Path(models_dir)
    return [ModelFileError(folder / rel, "is missing", GET_THEM) for files in MODEL_FILES.values() for rel in files
            if not (folder / rel).is_file()]


@dataclass
class MuseTalk:
    """The four loaded networks and the reference's steps between them (CPU float32, or a GPU; ``fp16`` runs the
    networks in half precision on a GPU)."""

    unet: UNet
    vae: AutoencoderKL
    whisper: WhisperEncoder
    parser: BiSeNet
    device: torch.device
    fp16: bool = False

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.float16, enabled=self.fp16 and self.device.type == "cuda")

    # -- the reference's steps

    def crop(self, frame_bgr: np.ndarray, box: Box) -> np.ndarray:
        """uint8 [256, 256, 3] BGR: the box with the 10 px margin below, Lanczos-4 resized."""
        return faces.crop(frame_bgr, box)

    def audio_prompts(self, wave_16k: np.ndarray, fps: float = 25) -> np.ndarray:
        """float32 [T, 50, 384] at ``fps`` (before the positional encoding) for a 16 kHz mono voice."""
        return audio.audio_prompts(self.whisper_features(wave_16k), len(wave_16k), fps).numpy()

    def encode(self, crops_bgr: np.ndarray, noise: torch.Tensor | np.ndarray | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """[B, 8, 32, 32] latents of uint8 BGR crops [B, 256, 256, 3]; ``noise`` [B, 2, 4, 32, 32] (masked, full)
        or None: drawn from ``generator`` or a seeded one, so reruns are identical."""
        with self._autocast():
            return faces.encode(self.vae, crops_bgr, noise, generator).float()

    def denoise(self, latents: torch.Tensor, prompts: torch.Tensor | np.ndarray) -> torch.Tensor:
        """[B, 4, 32, 32]: the positional encoding, then the UNet at timestep 0."""
        prompts = torch.as_tensor(prompts, dtype=torch.float32).to(self.device)
        with self._autocast():
            return denoise(self.unet, latents.to(self.device), prompts).float()

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """uint8 [B, 256, 256, 3] BGR faces."""
        with self._autocast():
            return faces.decode(self.vae, latents.float())

    def paste(self, frame_bgr: np.ndarray, face_bgr: np.ndarray, box: Box, labels: np.ndarray | None = None
              ) -> np.ndarray:
        """A new frame with ``face_bgr`` blended into the same box (the margin added as for the crop): the jaw-mode
        blend with the face parser, or with ``labels``, a given 512×512 parsing label map."""
        boxed = faces.with_margin(box, frame_bgr.shape[0])
        if labels is not None:
            return blend_paste(frame_bgr, face_bgr, boxed, labels=labels)
        return blend_paste(frame_bgr, face_bgr, boxed, parser=self.parser)

    # -- streaming helpers for the engine

    def posterior(self, crops_bgr: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The VAE's (mean, std) of the masked and full crops, each [B, 2, 4, 32, 32]: ``encode`` before its noise,
        so a caller can keep it per template frame."""
        with self._autocast():
            mean, std = faces.posterior(self.vae, crops_bgr)
        return mean.float(), std.float()

    def latents(self, mean: torch.Tensor, std: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``encode``'s result from a ``posterior`` and its noise."""
        return faces.sample_latents(mean, std, noise, scaling_factor=self.vae.scaling_factor)

    def labels(self, frame_bgr: np.ndarray, box: Box) -> np.ndarray:
        """The face parser's 512×512 label map of the paste's crop around ``box``: ``paste(labels=…)`` gives the
        same frame as ``paste`` without it, so a caller can keep it per template frame."""
        return crop_labels(self.parser, frame_bgr, faces.with_margin(box, frame_bgr.shape[0]))

    def whisper_features(self, wave_16k: np.ndarray) -> torch.Tensor:
        """[1, frames, 5, 384] hidden states of the whole voice (Whisper runs per 30 s segment)."""
        return audio.whisper_features(self.whisper, np.asarray(wave_16k, np.float32))

    def prompts_at(self, features: torch.Tensor, wave_len: int, indices: Sequence[int], fps: float) -> torch.Tensor:
        """The audio prompts of output frames ``indices`` ([len(indices), 50, 384]); frames past the voice's last
        prompt take the last one (the video is ``ceil`` of the voice's frames, the prompts ``floor``)."""
        last = audio.prompt_count(wave_len, fps) - 1
        wanted = np.minimum(np.asarray(indices, np.int64), last)
        start, stop = int(wanted.min()), int(wanted.max()) + 1
        block = audio.audio_prompts(features, wave_len, fps, start=start, stop=stop)
        return block[torch.as_tensor(wanted - start)]

    @staticmethod
    def noise(indices: Sequence[int], seed: int) -> torch.Tensor:
        """[B, 2, 4, 32, 32] standard normal noise, each frame's from its own generator (``seed`` + its index): the
        same frame gets the same latents whatever the batch it falls in."""
        shape = (2, 4, faces.LATENT_SIZE, faces.LATENT_SIZE)
        return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(seed + int(i)))
                            for i in indices])


def load_musetalk(models_dir: str | os.PathLike[str], device: str = "cpu", *, fp16: bool = False) -> MuseTalk:
    """Load the four networks of MuseTalk 1.5 strictly from the README layout under ``models_dir``;
    ``ModelFileError`` (one line: the file, what is wrong, where to get it) for the first file that is missing or
    not the expected network. Nothing is downloaded."""
    folder = Path(models_dir).expanduser()
    if problems := missing_files(folder):
        raise problems[0]
    target = torch.device(device)
    return MuseTalk(unet=load_unet(folder, target), vae=load_vae(folder, target),
                    whisper=load_whisper(folder, target), parser=load_bisenet(folder, target), device=target,
                    fp16=fp16)


@dataclass(frozen=True)
class ModelCheck:
    """One network's files: ``problem`` is "" when they load strictly (every key and shape as expected)."""

    network: str
    files: tuple[str, ...]
    tensors: int
    problem: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem


_LOADERS: dict[str, Callable[[Path, torch.device], torch.nn.Module]] = {
    "unet": load_unet, "vae": load_vae, "whisper": load_whisper, "face parser": load_bisenet}


def check_models(models_dir: str | os.PathLike[str]) -> list[ModelCheck]:
    """Load each network of ``models_dir`` on the CPU, strictly, one at a time, and report it."""
    folder = Path(models_dir).expanduser()
    checks = []
    for network, files in MODEL_FILES.items():
        try:
            module = _LOADERS[network](folder, torch.device("cpu"))
        except ModelFileError as error:
            checks.append(ModelCheck(network, files, 0, str(error)))
            continue
        checks.append(ModelCheck(network, files, len(module.state_dict())))
        del module
    return checks
