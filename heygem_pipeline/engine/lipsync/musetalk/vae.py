"""The Stable Diffusion VAE (``AutoencoderKL``, the ``sd-vae`` folder MuseTalk's README has the user download), in
plain torch, layer for layer as ``diffusion_pytorch_model.bin`` names its 248 tensors.

The layout comes from ``sd-vae/config.json`` (channels 128/256/512/512, two resnets per encoder block, three per
decoder block, GroupNorm of 32 groups with eps 1e-6, 4 latent channels). The mid-block attention keeps the file's
legacy names (``query``/``key``/``value``/``proj_attn``); files converted to today's names (``to_q``/``to_k``/
``to_v``/``to_out.0``) are renamed on load. Loading is strict: every problem is one ``ModelFileError`` line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from heygem_pipeline.engine.lipsync.state_dicts import key_problems
from heygem_pipeline.errors import ModelFileError

VAE_DIR = "sd-vae"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "diffusion_pytorch_model.bin"
SCALING_FACTOR = 0.18215  # sd-vae-ft-mse's latent scale (diffusers' default when config.json has none)
NORM_EPS = 1e-6
WHERE_TO_GET = "download stabilityai/sd-vae-ft-mse's config.json and diffusion_pytorch_model.bin into models/sd-vae/"
_MODERN_NAMES = {"to_q.": "query.", "to_k.": "key.", "to_v.": "value.", "to_out.0.": "proj_attn."}


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=NORM_EPS, affine=True)


class ResnetBlock(nn.Module):
    """norm → SiLU → 3×3 conv, twice, plus the input (through a 1×1 conv when the channel count changes)."""

    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__()
        self.norm1 = _norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = _norm(cout, groups)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Attention(nn.Module):
    """Single-head self-attention over the H·W positions, with a residual (the legacy ``AttentionBlock`` names)."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.group_norm = _norm(channels, groups)
        self.query = nn.Linear(channels, channels)
        self.key = nn.Linear(channels, channels)
        self.value = nn.Linear(channels, channels)
        self.proj_attn = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        seq = self.group_norm(x.view(b, c, h * w)).transpose(1, 2)  # B×HW×C
        q, k, v = (layer(seq).unsqueeze(1) for layer in (self.query, self.key, self.value))  # B×1×HW×C
        out = F.scaled_dot_product_attention(q, k, v).squeeze(1)
        out = self.proj_attn(out).transpose(1, 2).reshape(b, c, h, w)
        return out + x


class Downsample(nn.Module):
    """Zero-pad right and bottom by one pixel, then a stride-2 3×3 conv without padding."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    """Nearest-neighbour ×2, then a 3×3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Block(nn.Module):
    """A down (encoder) or up (decoder) block: ``resnets`` then an optional ``downsamplers``/``upsamplers`` [0]."""

    def __init__(self, cin: int, cout: int, layers: int, groups: int, resample: str | None) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(cin if i == 0 else cout, cout, groups) for i in range(layers)])
        if resample == "down":
            self.downsamplers = nn.ModuleList([Downsample(cout)])
        elif resample == "up":
            self.upsamplers = nn.ModuleList([Upsample(cout)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        for resample in getattr(self, "downsamplers", getattr(self, "upsamplers", ())):
            x = resample(x)
        return x


class MidBlock(nn.Module):
    """resnet → attention → resnet at the lowest resolution."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, groups) for _ in range(2)])
        self.attentions = nn.ModuleList([Attention(channels, groups)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class Encoder(nn.Module):
    """Image B×3×H×W in [-1, 1] → B×2L×H/8×W/8 (mean and log-variance of the latent, before ``quant_conv``)."""

    def __init__(self, cin: int, latent: int, channels: list[int], layers: int, groups: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(cin, channels[0], 3, padding=1)
        last = len(channels) - 1
        self.down_blocks = nn.ModuleList(
            Block(channels[max(i - 1, 0)], c, layers, groups, None if i == last else "down")
            for i, c in enumerate(channels)
        )
        self.mid_block = MidBlock(channels[-1], groups)
        self.conv_norm_out = _norm(channels[-1], groups)
        self.conv_out = nn.Conv2d(channels[-1], 2 * latent, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class Decoder(nn.Module):
    """Latent B×L×h×w (after ``post_quant_conv``) → image B×3×8h×8w, roughly in [-1, 1] (not clamped)."""

    def __init__(self, latent: int, cout: int, channels: list[int], layers: int, groups: int) -> None:
        super().__init__()
        rev = list(reversed(channels))
        self.conv_in = nn.Conv2d(latent, rev[0], 3, padding=1)
        self.mid_block = MidBlock(rev[0], groups)
        last = len(rev) - 1
        self.up_blocks = nn.ModuleList(
            Block(rev[max(i - 1, 0)], c, layers + 1, groups, None if i == last else "up") for i, c in enumerate(rev)
        )
        self.conv_norm_out = _norm(rev[-1], groups)
        self.conv_out = nn.Conv2d(rev[-1], cout, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class AutoencoderKL(nn.Module):
    """``encoder`` + ``quant_conv`` (→ mean, log-variance) and ``post_quant_conv`` + ``decoder``, as in the file."""

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        latent_channels: int = 4,
        block_out_channels: tuple[int, ...] = (128, 256, 512, 512),
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        scaling_factor: float = SCALING_FACTOR,
    ) -> None:
        super().__init__()
        channels = list(block_out_channels)
        self.scaling_factor = float(scaling_factor)
        self.encoder = Encoder(in_channels, latent_channels, channels, layers_per_block, norm_num_groups)
        self.decoder = Decoder(latent_channels, out_channels, channels, layers_per_block, norm_num_groups)
        self.quant_conv = nn.Conv2d(2 * latent_channels, 2 * latent_channels, 1)
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1)

    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images B×3×H×W in [-1, 1] → (mean, std) of the diagonal Gaussian, each B×L×H/8×W/8."""
        mean, logvar = self.quant_conv(self.encoder(images)).chunk(2, dim=1)
        return mean, torch.exp(0.5 * logvar.clamp(-30.0, 20.0))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Unscaled latents B×L×h×w → the decoder's image B×3×8h×8w (not clamped)."""
        return self.decoder(self.post_quant_conv(latents))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> AutoencoderKL:
        return cls(
            in_channels=int(config.get("in_channels", 3)),
            out_channels=int(config.get("out_channels", 3)),
            latent_channels=int(config.get("latent_channels", 4)),
            block_out_channels=tuple(int(c) for c in config.get("block_out_channels", (128, 256, 512, 512))),
            layers_per_block=int(config.get("layers_per_block", 2)),
            norm_num_groups=int(config.get("norm_num_groups", 32)),
            scaling_factor=float(config.get("scaling_factor", SCALING_FACTOR)),
        )


def load_vae(models_dir: str | os.PathLike[str], device: str | torch.device = "cpu") -> AutoencoderKL:
    """The VAE in ``models_dir/sd-vae`` (``config.json`` + ``diffusion_pytorch_model.bin``), loaded strictly, on
    ``device``, in eval mode. Raises ``ModelFileError`` (one line: the file, what is wrong, the fix)."""
    folder = Path(models_dir).expanduser() / VAE_DIR
    config = read_config(folder / CONFIG_FILE)
    try:
        with torch.device("meta"):
            model = AutoencoderKL.from_config(config)
    except (TypeError, ValueError, IndexError, ZeroDivisionError) as exc:
        raise ModelFileError(folder / CONFIG_FILE, f"not an AutoencoderKL config ({exc})", WHERE_TO_GET) from exc
    weights = folder / WEIGHTS_FILE
    state = check_state_dict(read_state_dict(weights), model, weights)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device=device, dtype=torch.float32).eval()


def read_config(path: Path) -> dict[str, Any]:
    """``config.json`` as a dict; it must describe a diffusers ``AutoencoderKL``."""
    _check_file(path)
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(path, f"not a readable JSON config ({type(exc).__name__}: {exc})", WHERE_TO_GET) from exc
    if not isinstance(config, dict) or config.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
        kind = config.get("_class_name") if isinstance(config, dict) else type(config).__name__
        raise ModelFileError(path, f"not an AutoencoderKL config (describes {kind})", WHERE_TO_GET)
    return config


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors in ``diffusion_pytorch_model.bin`` (restricted unpickler), with today's attention names mapped
    back to the legacy ones the modules use."""
    _check_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ModelFileError(path, f"not a readable torch file ({type(exc).__name__}: {reason})", WHERE_TO_GET) from exc
    if not isinstance(obj, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        raise ModelFileError(path, "not a state dict of named tensors", WHERE_TO_GET)
    return {_legacy_name(k): v for k, v in obj.items()}


def check_state_dict(
    state: dict[str, torch.Tensor], model: nn.Module, path: object = "<state dict>"
) -> dict[str, torch.Tensor]:
    """``state`` when its names and shapes are exactly ``model``'s; else one ``ModelFileError`` line."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    parts = key_problems(state, expected)
    if not parts:
        return state
    raise ModelFileError(path, f"not the sd-vae weights for its config.json: {'; '.join(parts)}", WHERE_TO_GET)


def _legacy_name(key: str) -> str:
    if ".attentions." not in key:
        return key
    head, _, tail = key.rpartition(".attentions.0.")
    for modern, legacy in _MODERN_NAMES.items():
        if tail.startswith(modern):
            return f"{head}.attentions.0.{legacy}{tail[len(modern):]}"
    return key


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ModelFileError(path, "file not found", WHERE_TO_GET)
    if not path.is_file():
        raise ModelFileError(path, "is not a file", WHERE_TO_GET)
    if path.stat().st_size == 0:
        raise ModelFileError(path, "file is empty (0 bytes)", f"download it again; {WHERE_TO_GET}")
