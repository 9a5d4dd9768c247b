"""MuseTalk 1.5's UNet: diffusers' UNet2DConditionModel in the Stable Diffusion 1.x layout, built from the user's
``musetalkV15/musetalk.json`` and loaded strictly from ``musetalkV15/unet.pth`` (a plain state dict, diffusers key
names, 686 tensors, 3.4 GB).

The UNet maps the 8-channel latent pair (masked face, reference face) at timestep 0, attending to the 50×384 audio
prompt, to the 4-channel latent of the lip-synced face in one pass. The file is memory-mapped and the model built
on the meta device, so loading allocates nothing beyond the mapped file (no random initialisation, no second copy).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from heygem_pipeline.engine.lipsync.state_dicts import SHOW_KEYS, counted, key_problems
from heygem_pipeline.errors import ModelFileError

from .unet_blocks import BlockSpec, DownBlock, MidBlock, UpBlock

UNET_DIR = "musetalkV15"
CONFIG_NAME = "musetalk.json"
WEIGHTS_NAME = "unet.pth"
WHERE_TO_GET = (f"download {UNET_DIR}/{WEIGHTS_NAME} and {UNET_DIR}/{CONFIG_NAME} from huggingface "
                "TMElyralab/MuseTalk into the models folder (MuseTalk README's layout)")
_CROSS_ATTN_DOWN, _PLAIN_DOWN = "CrossAttnDownBlock2D", "DownBlock2D"
_CROSS_ATTN_UP, _PLAIN_UP = "CrossAttnUpBlock2D", "UpBlock2D"
# Config keys that do not change the network (bookkeeping, the training resolution, dropout: inference only).
_IGNORED_KEYS = {"_class_name", "_diffusers_version", "_name_or_path", "sample_size", "dropout"}
# Config keys whose diffusers default is the only value this implementation has (any other value is refused).
_DEFAULT_ONLY = {
    "act_fn": "silu", "center_input_sample": False, "only_cross_attention": False, "dual_cross_attention": False,
    "upcast_attention": False, "resnet_time_scale_shift": "default", "class_embed_type": None,
    "num_class_embeds": None, "time_embedding_type": "positional", "mid_block_type": "UNetMidBlock2DCrossAttn",
    "transformer_layers_per_block": 1, "reverse_transformer_layers_per_block": None, "num_attention_heads": None,
    "encoder_hid_dim": None, "encoder_hid_dim_type": None, "addition_embed_type": None,
    "addition_time_embed_dim": None, "conv_in_kernel": 3, "conv_out_kernel": 3, "resnet_out_scale_factor": 1.0,
    "resnet_skip_time_act": False, "time_cond_proj_dim": None, "timestep_post_act": None,
    "time_embedding_dim": None, "time_embedding_act_fn": None, "projection_class_embeddings_input_dim": None,
    "class_embeddings_concat": False, "mid_block_only_cross_attention": None, "cross_attention_norm": None,
    "attention_type": "default", "addition_embed_type_num_heads": 64,
}


@dataclass(frozen=True)
class UNetConfig:
    """The architecture settings of a diffusers UNet2DConditionModel config (defaults: MuseTalk 1.5's)."""

    in_channels: int = 8
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    down_block_types: tuple[str, ...] = (_CROSS_ATTN_DOWN,) * 3 + (_PLAIN_DOWN,)
    up_block_types: tuple[str, ...] = (_PLAIN_UP,) + (_CROSS_ATTN_UP,) * 3
    layers_per_block: int = 2
    attention_head_dim: tuple[int, ...] = (8, 8, 8, 8)  # diffusers' misnomer: the number of heads (SD 1.x)
    cross_attention_dim: int = 384
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: float = 0.0
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0
    use_linear_projection: bool = False

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> UNetConfig:
        """The config a diffusers ``config.json`` describes; ``ValueError`` (one line) for anything this
        implementation does not build."""
        known = set(cls.__dataclass_fields__)
        for key, value in raw.items():
            if key in known or key in _IGNORED_KEYS:
                continue
            if key not in _DEFAULT_ONLY:
                raise ValueError(f"unknown setting {key!r}")
            if value != _DEFAULT_ONLY[key] and not (key == "transformer_layers_per_block" and value == [1] * 4):
                raise ValueError(f"{key}={value!r} is not supported (only {_DEFAULT_ONLY[key]!r})")
        values: dict[str, Any] = {key: raw[key] for key in known if key in raw}
        for key in ("block_out_channels", "down_block_types", "up_block_types"):
            if key in values:
                values[key] = tuple(values[key])
        blocks = len(values.get("block_out_channels", cls.block_out_channels))
        heads = values.get("attention_head_dim", cls.attention_head_dim)
        values["attention_head_dim"] = (heads,) * blocks if isinstance(heads, int) else tuple(heads)
        config = cls(**values)
        config.check()
        return config

    def check(self) -> None:
        blocks = len(self.block_out_channels)
        if not (len(self.down_block_types) == len(self.up_block_types) == len(self.attention_head_dim) == blocks):
            raise ValueError("block_out_channels, down/up_block_types and attention_head_dim differ in length")
        sizes = self.block_out_channels + self.attention_head_dim + (self.norm_num_groups, self.layers_per_block)
        if not all(isinstance(size, int) and size > 0 for size in sizes):
            raise ValueError("block_out_channels, attention_head_dim, norm_num_groups and layers_per_block must be "
                             "positive integers")
        if any(c % self.norm_num_groups or c % h for c, h in zip(self.block_out_channels, self.attention_head_dim,
                                                                  strict=True)):
            raise ValueError("block_out_channels must divide by norm_num_groups and by the heads")
        unknown = (set(self.down_block_types) - {_CROSS_ATTN_DOWN, _PLAIN_DOWN}) | (
            set(self.up_block_types) - {_CROSS_ATTN_UP, _PLAIN_UP})
        if unknown:
            raise ValueError(f"block types {sorted(unknown)} are not supported")


def timestep_embedding(timesteps: torch.Tensor, dim: int, flip_sin_to_cos: bool, freq_shift: float) -> torch.Tensor:
    """Sinusoidal embedding of each timestep, [B] → [B, dim], as diffusers' ``Timesteps`` (max period 10000)."""
    half = dim // 2
    exponent = -math.log(10000) * torch.arange(0, half, dtype=torch.float32, device=timesteps.device)
    freqs = torch.exp(exponent / (half - freq_shift))
    angles = timesteps[:, None].float() * freqs[None, :]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class TimestepEmbedding(nn.Module):
    """linear → SiLU → linear."""

    def __init__(self, cin: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(cin, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class UNet(nn.Module):
    """UNet2DConditionModel: ``forward(latents [B,in,H,W], timestep, prompts [B,T,cross_dim]) → [B,out,H,W]``."""

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or UNetConfig()
        channels, heads, layers = config.block_out_channels, config.attention_head_dim, config.layers_per_block
        temb = channels[0] * 4
        spec = BlockSpec(temb, config.norm_num_groups, config.norm_eps, config.cross_attention_dim,
                         config.use_linear_projection)
        last = len(channels) - 1
        self.conv_in = nn.Conv2d(config.in_channels, channels[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(channels[0], temb)
        self.down_blocks = nn.ModuleList([
            DownBlock(spec, channels[max(i - 1, 0)], channels[i], layers,
                      heads[i] if kind == _CROSS_ATTN_DOWN else None, i < last, config.downsample_padding)
            for i, kind in enumerate(config.down_block_types)])
        self.mid_block = MidBlock(spec, channels[-1], heads[-1], config.mid_block_scale_factor)
        up_channels, up_heads = channels[::-1], heads[::-1]
        self.up_blocks = nn.ModuleList([
            UpBlock(spec, up_channels[max(i - 1, 0)], up_channels[i],
                    [up_channels[i]] * layers + [up_channels[min(i + 1, last)]],
                    up_heads[i] if kind == _CROSS_ATTN_UP else None, i < last)
            for i, kind in enumerate(config.up_block_types)])
        self.conv_norm_out = nn.GroupNorm(config.norm_num_groups, channels[0], eps=config.norm_eps)
        self.conv_out = nn.Conv2d(channels[0], config.out_channels, 3, padding=1)

    def forward(self, latents: torch.Tensor, timestep: int | torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        steps = torch.as_tensor(timestep, device=latents.device).reshape(-1).expand(latents.shape[0])
        t_emb = timestep_embedding(steps, self.config.block_out_channels[0], self.config.flip_sin_to_cos,
                                   self.config.freq_shift)
        temb = self.time_embedding(t_emb.to(latents.dtype))
        h = self.conv_in(latents)
        skips = [h]
        for down in self.down_blocks:
            h, block_skips = down(h, temb, prompts)
            skips.extend(block_skips)
        h = self.mid_block(h, temb, prompts)
        for up in self.up_blocks:
            h = up(h, skips, temb, prompts)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


def read_unet_config(path: str | os.PathLike[str]) -> UNetConfig:
    """The UNet config in a diffusers ``musetalk.json``; ``ModelFileError`` (one line) if it is missing or unusable."""
    path = Path(path)
    _check_file(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(path, f"not a readable JSON config ({type(exc).__name__}: {exc})", WHERE_TO_GET) from exc
    if not isinstance(raw, dict):
        raise ModelFileError(path, f"not a UNet config (holds a JSON {type(raw).__name__})", WHERE_TO_GET)
    try:
        return UNetConfig.from_dict(raw)
    except (TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(path, f"not a MuseTalk UNet config: {first}", WHERE_TO_GET) from exc


def load_unet(models_dir: str | os.PathLike[str], device: str | torch.device = "cpu") -> UNet:
    """MuseTalk 1.5's UNet from ``models_dir/musetalkV15/`` (``musetalk.json`` + ``unet.pth``), weights loaded
    strictly, on ``device``, in eval mode, without gradients. Every problem with the files is one ``ModelFileError``
    line naming the file, what is wrong and where to get it."""
    folder = Path(models_dir).expanduser() / UNET_DIR
    config = read_unet_config(folder / CONFIG_NAME)
    weights = folder / WEIGHTS_NAME
    state = _check_state_dict(_read_state_dict(weights), expected_shapes(config), weights)
    with torch.device("meta"):
        model = UNet(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:  # _check_state_dict should have caught it; keep the one-line contract anyway
        first = str(exc).strip().splitlines()[-1].strip()
        raise ModelFileError(weights, f"weights do not fit the UNet ({first})", WHERE_TO_GET) from exc
    return model.requires_grad_(False).to(device).eval()


def expected_shapes(config: UNetConfig | None = None) -> dict[str, tuple[int, ...]]:
    """Name → shape of every state-dict entry of the UNet that ``config`` describes, in order."""
    return dict(_expected_items(config or UNetConfig()))


@cache
def _expected_items(config: UNetConfig) -> tuple[tuple[str, tuple[int, ...]], ...]:
    with torch.device("meta"):  # names and shapes without allocating 860 M weights
        model = UNet(config)
    return tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ModelFileError(path, "file not found", WHERE_TO_GET)
    if path.is_dir():
        raise ModelFileError(path, "is a directory, not a file", WHERE_TO_GET)
    if path.stat().st_size == 0:
        raise ModelFileError(path, "file is empty (0 bytes)", f"download it again; {WHERE_TO_GET}")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The file's tensors, memory-mapped where the file format allows (torch ≥ 1.6 zip files)."""
    _check_file(path)
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy format: no mmap
    except PermissionError as exc:
        raise ModelFileError(path, "cannot be read (permission denied)", "fix its permissions") from exc
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise ModelFileError(path, _load_problem(path, exc), WHERE_TO_GET) from exc
    if not isinstance(obj, dict) or not obj:
        raise ModelFileError(path, f"not a UNet state dict (holds {type(obj).__name__})", WHERE_TO_GET)
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelFileError(path, f"not a plain UNet state dict: {len(bad)} entries are not named tensors "
                                   f"(e.g. {', '.join(bad[:SHOW_KEYS])})", WHERE_TO_GET)
    return obj


def _load_problem(path: Path, exc: Exception) -> str:
    """torch.load's multi-paragraph exception as one line about the file."""
    with open(path, "rb") as handle:
        head = handle.read(64).lstrip().lower()
    if head.startswith(b"version https://git-lfs"):
        return "is a Git LFS pointer, not the weights (cloned without `git lfs pull`)"
    if head.startswith((b"<!doctype", b"<html")):
        return "is a web page, not a torch file (a download link that returned HTML, e.g. /blob/ not /resolve/)"
    if "Unsupported global" in str(exc) or "is blocked" in str(exc):
        return "holds Python objects besides tensors, which are not loaded for safety (not MuseTalk's unet.pth)"
    text = str(exc).split("WeightsUnpickler error:")[-1]  # torch's advice about weights_only does not apply here
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    detail = f"{type(exc).__name__}: {lines[0].split('. ')[0]}" if lines else type(exc).__name__
    return f"torch cannot read it ({detail}): corrupt or cut-off download?"


def _check_state_dict(state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]],
                      path: Path) -> dict[str, torch.Tensor]:
    """``state`` checked against the UNet's names, shapes and dtypes, float32 throughout."""
    not_float = [f"{k} ({v.dtype})" for k, v in state.items() if not v.is_floating_point()]
    parts = key_problems(state, expected) + counted(("not floating point", not_float))
    if parts:
        raise ModelFileError(path, f"not MuseTalk's UNet (for this {CONFIG_NAME}): {'; '.join(parts)}", WHERE_TO_GET)
    # A half-precision export works too: cast to the float32 the reference computes in.
    return {k: v if v.dtype == torch.float32 else v.float() for k, v in state.items()}
