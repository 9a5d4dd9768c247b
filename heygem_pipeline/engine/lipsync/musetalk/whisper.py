"""The whisper-tiny encoder MuseTalk 1.5 reads its audio with, layer for layer as the user's ``whisper/`` folder
(openai/whisper-tiny in Hugging Face format) names its weights.

Only the encoder is used: its ``model.encoder.*`` tensors load strictly (every one present, every one used, shapes
equal); the decoder's tensors and the tied ``proj_out.weight`` are ignored. The sizes come from
``whisper/config.json``. MuseTalk keeps every hidden state: the embedding output, the outputs of the first
``layers − 1`` layers, and the last layer's output after the final LayerNorm, stacked on a new axis
(``[batch, 1500, layers + 1, d_model]``, i.e. ``[1, 1500, 5, 384]`` per 30 s segment for whisper-tiny).

Numerics as the reference ran it: exact-erf GELU, pre-LN blocks with LayerNorm eps 1e-5, and attention through
``F.scaled_dot_product_attention`` with the query left unscaled (SDPA applies ``1/sqrt(head_dim)`` itself; scaling
the query first, or an eager softmax, moves results by about 1e-6).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from heygem_pipeline.engine.lipsync.state_dicts import key_problems
from heygem_pipeline.errors import ModelFileError

SUBDIR = "whisper"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "pytorch_model.bin"
KEY_PREFIX = "model.encoder."
LAYER_NORM_EPS = 1e-5
WHERE_TO_GET = "put openai/whisper-tiny (Hugging Face format) in models/whisper/ as MuseTalk's README lays it out"


@dataclass(frozen=True)
class WhisperConfig:
    """The encoder's sizes (``config.json``); the defaults are whisper-tiny's."""

    num_mel_bins: int = 80
    d_model: int = 384
    encoder_layers: int = 4
    encoder_attention_heads: int = 6
    encoder_ffn_dim: int = 1536
    max_source_positions: int = 1500

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> WhisperConfig:
        names = ("num_mel_bins", "d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim",
                 "max_source_positions")
        return cls(**{name: int(raw[name]) for name in names if name in raw})


class WhisperAttention(nn.Module):
    """Multi-head self-attention; ``k_proj`` has no bias (as in Whisper)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:  # [B, L, D] -> [B, heads, L, D/heads]
            return t.view(batch, length, self.heads, dim // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)))
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, dim))


class WhisperEncoderLayer(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + fc2(gelu(fc1(LN(x))))."""

    def __init__(self, dim: int, heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.self_attn = WhisperAttention(dim, heads)
        self.self_attn_layer_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x))
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


class WhisperEncoder(nn.Module):
    """Log-mel ``[B, 80, 3000]`` → all hidden states stacked, ``[B, 1500, layers + 1, d_model]``.

    Attribute names equal the checkpoint keys without ``model.encoder.``.
    """

    def __init__(self, config: WhisperConfig | None = None) -> None:
        super().__init__()
        cfg = config or WhisperConfig()
        self.config = cfg
        self.conv1 = nn.Conv1d(cfg.num_mel_bins, cfg.d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(cfg.d_model, cfg.d_model, kernel_size=3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(cfg.max_source_positions, cfg.d_model)
        self.layers = nn.ModuleList(
            WhisperEncoderLayer(cfg.d_model, cfg.encoder_attention_heads, cfg.encoder_ffn_dim)
            for _ in range(cfg.encoder_layers)
        )
        self.layer_norm = nn.LayerNorm(cfg.d_model, eps=LAYER_NORM_EPS)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).permute(0, 2, 1)
        x = x + self.embed_positions.weight
        states = []
        for layer in self.layers:
            states.append(x)
            x = layer(x)
        states.append(self.layer_norm(x))
        return torch.stack(states, dim=2)


def whisper_dir(models_dir: str | os.PathLike[str]) -> Path:
    """The whisper folder: ``models_dir/whisper``, or ``models_dir`` itself when it holds the files directly."""
    root = Path(models_dir).expanduser()
    return root if (root / WEIGHTS_FILE).exists() and not (root / SUBDIR).is_dir() else root / SUBDIR


def read_config(folder: Path) -> WhisperConfig:
    """The encoder sizes from ``folder/config.json``; one-line ``ModelFileError`` when missing or not whisper's."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise ModelFileError(path, "whisper config.json not found", WHERE_TO_GET)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(path, f"cannot read the whisper config ({type(exc).__name__}: {exc})",
                             WHERE_TO_GET) from exc
    if not isinstance(raw, dict) or raw.get("model_type", "whisper") != "whisper":
        kind = raw.get("model_type") if isinstance(raw, dict) else type(raw).__name__
        raise ModelFileError(path, f"not a whisper config (model_type {kind!r})", WHERE_TO_GET)
    try:
        return WhisperConfig.from_dict(raw)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(path, f"whisper config has a non-integer size ({exc})", WHERE_TO_GET) from exc


def encoder_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The file's ``model.encoder.*`` tensors, prefix removed (decoder and ``proj_out`` dropped)."""
    if not path.is_file():
        raise ModelFileError(path, "whisper weights not found", WHERE_TO_GET)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for a bad file
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ModelFileError(path, f"not a readable torch file ({type(exc).__name__}: {reason})",
                             WHERE_TO_GET) from exc
    if not isinstance(obj, dict):
        raise ModelFileError(path, f"not a state dict (holds {type(obj).__name__})", WHERE_TO_GET)
    return {k[len(KEY_PREFIX):]: v for k, v in obj.items()
            if isinstance(k, str) and k.startswith(KEY_PREFIX) and isinstance(v, torch.Tensor)}


def check_encoder_state(state: dict[str, torch.Tensor], model: WhisperEncoder, path: object) -> None:
    """Raise one ``ModelFileError`` line unless ``state`` has exactly the encoder's keys and shapes."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    parts = key_problems(state, expected, name=lambda key: KEY_PREFIX + key)
    if parts:
        raise ModelFileError(path, f"not the whisper encoder of config.json: {'; '.join(parts)}", WHERE_TO_GET)


def load_whisper(models_dir: str | os.PathLike[str], device: str | torch.device = "cpu") -> WhisperEncoder:
    """The whisper encoder from ``models_dir/whisper`` (config.json + pytorch_model.bin), strict on every
    ``model.encoder.*`` key, float32, in eval mode, on ``device``.

    Raises ``ModelFileError`` (one line: the file and the fix) for a missing folder or file, an unreadable file,
    or encoder keys that are missing, extra or of another shape.
    """
    folder = whisper_dir(models_dir)
    if not folder.is_dir():
        raise ModelFileError(folder, "whisper folder not found", WHERE_TO_GET)
    config = read_config(folder)
    weights = folder / WEIGHTS_FILE
    state = encoder_state_dict(weights)
    with torch.device("meta"):
        model = WhisperEncoder(config)
    check_encoder_state(state, model, weights)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    return model.to(device).eval()
