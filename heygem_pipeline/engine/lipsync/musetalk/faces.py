"""MuseTalk 1.5's face data path around the VAE: crop a face, turn it into the VAE's two inputs, encode them to the
UNet's 8-channel latents, and decode the UNet's latents back to 256×256 faces, with the reference's arithmetic.

Arrays are uint8 BGR (OpenCV's order) on the way in and out; tensors are float32 NCHW in between.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from .vae import SCALING_FACTOR, AutoencoderKL

FACE_SIZE = 256  # the VAE's input side, pixels
LATENT_SIZE = FACE_SIZE // 8
EXTRA_MARGIN = 10  # pixels added below the chin box (the reference's default `extra_margin`)
NOISE_SEED = 1234  # the default generator's seed (the reference fixture's noise comes from this seed)

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels, right and bottom exclusive


def with_margin(box: Box, frame_height: int, margin: int = EXTRA_MARGIN) -> Box:
    """The box the reference crops and pastes: the bottom moved down by ``margin``, at most to the frame's edge."""
    x1, y1, x2, y2 = (int(v) for v in box)
    return x1, y1, x2, min(y2 + margin, int(frame_height))


def crop(frame_bgr: np.ndarray, box: Box, margin: int = EXTRA_MARGIN) -> np.ndarray:
    """The face in ``box`` (before the margin) as uint8 BGR 256×256: margin, slice, Lanczos-4 resize."""
    x1, y1, x2, y2 = with_margin(box, frame_bgr.shape[0], margin)
    face = frame_bgr[y1:y2, x1:x2]
    if face.size == 0:
        h, w = frame_bgr.shape[:2]
        raise ValueError(f"MuseTalk crop: box {tuple(box)} is empty in a {w}×{h} frame")
    return cv2.resize(face, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LANCZOS4)


def vae_inputs(crops_bgr: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked, full) VAE inputs, each float32 B×3×256×256 in [-1, 1], from uint8 BGR crops B×256×256×3.

    RGB / 255 (in float64, then float32, as the reference), the masked copy with rows 128..255 set to 0, then
    ``(x - 0.5) / 0.5`` (so the masked half becomes -1).
    """
    crops = _check_crops(crops_bgr)
    rgb = np.ascontiguousarray(crops[..., ::-1].transpose(0, 3, 1, 2))
    full = torch.from_numpy(rgb / 255.0).float()
    masked = full.clone()
    masked[:, :, FACE_SIZE // 2 :, :] = 0.0
    return _normalize(masked), _normalize(full)


@torch.no_grad()
def posterior(vae: AutoencoderKL, crops_bgr: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of the VAE's latent for the masked and the full crop: each float32 B×2×4×32×32 (index 1: masked,
    full), on the VAE's device."""
    masked, full = vae_inputs(crops_bgr)
    device = next(vae.parameters()).device
    (mean_m, std_m), (mean_f, std_f) = (vae.posterior(images.to(device)) for images in (masked, full))
    return torch.stack([mean_m, mean_f], dim=1), torch.stack([std_m, std_f], dim=1)


def sample_latents(
    mean: torch.Tensor,
    std: torch.Tensor,
    noise: torch.Tensor | np.ndarray | None = None,
    generator: torch.Generator | None = None,
    scaling_factor: float = SCALING_FACTOR,
) -> torch.Tensor:
    """``scaling_factor · (mean + std · eps)`` for B×2×L×h×w posteriors, as the UNet's input B×2L×h×w (masked
    channels first). ``noise`` is eps; when None it is drawn from ``generator``, or from a fresh generator seeded
    with ``NOISE_SEED``, so reruns give the same latents."""
    if noise is None:
        generator = generator if generator is not None else torch.Generator().manual_seed(NOISE_SEED)
        eps = torch.randn(tuple(mean.shape), generator=generator, dtype=torch.float32)
    else:
        eps = torch.as_tensor(noise, dtype=torch.float32)
        if tuple(eps.shape) != tuple(mean.shape):
            raise ValueError(f"MuseTalk encode: noise must be {tuple(mean.shape)}, got {tuple(eps.shape)}")
    latents = scaling_factor * (mean + std * eps.to(mean.device))
    return latents.reshape(mean.shape[0], -1, *mean.shape[-2:])


@torch.no_grad()
def encode(
    vae: AutoencoderKL,
    crops_bgr: np.ndarray,
    noise: torch.Tensor | np.ndarray | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The UNet's latent input, float32 B×8×32×32, for uint8 BGR crops B×256×256×3: the scaled sample of the masked
    crop's latent (channels 0-3) and of the full crop's (4-7).

    ``noise`` B×2×4×32×32 is eps (masked, then full), as the reference's ``latent_dist.sample()`` draws it; when
    None it comes from ``generator`` or from a generator seeded with ``NOISE_SEED`` (see ``sample_latents``).
    """
    mean, std = posterior(vae, crops_bgr)
    return sample_latents(mean, std, noise, generator, vae.scaling_factor)


@torch.no_grad()
def decode_float(vae: AutoencoderKL, latents: torch.Tensor | np.ndarray) -> torch.Tensor:
    """The decoder's output for UNet latents B×4×32×32: float32 B×3×256×256 RGB, about [-1, 1], not clamped."""
    device = next(vae.parameters()).device
    z = torch.as_tensor(latents, dtype=torch.float32).to(device)
    return vae.decode((1.0 / vae.scaling_factor) * z)


@torch.no_grad()
def decode(vae: AutoencoderKL, latents: torch.Tensor | np.ndarray) -> np.ndarray:
    """UNet latents B×4×32×32 → uint8 BGR faces B×256×256×3: ``(x/2 + 0.5)`` clamped to [0, 1], × 255, rounded
    half to even."""
    x = (decode_float(vae, latents) / 2 + 0.5).clamp(0, 1)
    rgb = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return np.ascontiguousarray(rgb[..., ::-1])


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - 0.5) / 0.5


def _check_crops(crops_bgr: np.ndarray) -> np.ndarray:
    crops = np.asarray(crops_bgr)
    if crops.ndim == 3:
        crops = crops[None]
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (FACE_SIZE, FACE_SIZE, 3):
        raise ValueError(
            f"MuseTalk: crops must be uint8 (B, {FACE_SIZE}, {FACE_SIZE}, 3) BGR, got {crops.dtype} {crops.shape}"
        )
    return crops
