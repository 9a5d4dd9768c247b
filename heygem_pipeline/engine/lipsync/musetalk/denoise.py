"""MuseTalk's one-step "denoise": the audio prompts get a sinusoidal positional encoding, then the UNet maps the
masked/reference latent pair at timestep 0 to the lip-synced face's latent."""

from __future__ import annotations

import math

import torch

from .unet import UNet

PROMPT_WIDTH = 384  # whisper-tiny's hidden size: the width of each audio-prompt token
TIMESTEP = 0  # MuseTalk runs the UNet once, at timestep 0


def positional_encoding(prompts: torch.Tensor) -> torch.Tensor:
    """``prompts`` [B, T, 384] plus the Transformer sinusoid table's first T rows (sin on even, cos on odd
    dimensions, wavelengths up to 10000·2π), computed in float32 as the reference does."""
    _, length, width = prompts.shape
    position = torch.arange(0, length, dtype=torch.float, device=prompts.device).unsqueeze(1)
    div_term = torch.exp(
        torch.arange(0, width, 2, device=prompts.device).float() * (-math.log(10000.0) / width))
    table = torch.zeros(length, width, device=prompts.device)
    table[:, 0::2] = torch.sin(position * div_term)
    table[:, 1::2] = torch.cos(position * div_term)
    return prompts + table.unsqueeze(0).to(prompts.dtype)


@torch.no_grad()
def denoise(unet: UNet, latents: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    """The predicted face latents [B, 4, 32, 32] for ``latents`` [B, 8, 32, 32] (masked face, reference face, both
    already scaled by 0.18215) and the audio ``prompts`` [B, 50, 384] before positional encoding."""
    if latents.shape[0] != prompts.shape[0]:
        raise ValueError(f"{latents.shape[0]} latents but {prompts.shape[0]} audio prompts")
    return unet(latents, TIMESTEP, positional_encoding(prompts))
