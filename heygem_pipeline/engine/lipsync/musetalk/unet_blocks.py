"""The building blocks of MuseTalk's UNet (the Stable Diffusion 1.x UNet2DConditionModel layout), one small class
per diffusers block, with attribute names equal to the checkpoint's keys (``resnets.0.norm1.weight``,
``attentions.1.transformer_blocks.0.attn2.to_k.weight``, ``downsamplers.0.conv.weight``...).

Numerics follow the reference's diffusers 0.30 code paths: GroupNorm eps 1e-5 in the residual blocks and 1e-6 in
front of a transformer, LayerNorm eps 1e-5, exact-erf GELU in GEGLU, ``F.scaled_dot_product_attention`` without a
mask, nearest ×2 upsampling then a 3×3 conv, 3×3 stride-2 conv (padding 1) downsampling. The blocks never see a
dropout (the reference's rate is 0) and have no buffers, so a model built on the meta device holds only weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TRANSFORMER_NORM_EPS = 1e-6  # GroupNorm in front of each Transformer2D
LAYER_NORM_EPS = 1e-5  # LayerNorms inside each transformer block
FF_MULT = 4  # GEGLU inner width = 4 × channels (its projection is twice that: value and gate)


class ResnetBlock2D(nn.Module):
    """norm → SiLU → 3×3 conv, + projected time embedding, norm → SiLU → 3×3 conv, + (1×1-projected) input."""

    def __init__(self, cin: int, cout: int, temb_channels: int, groups: int, eps: float,
                 output_scale: float = 1.0) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None
        self.output_scale = output_scale

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        skip = self.conv_shortcut(x) if self.conv_shortcut is not None else x
        out = skip + h
        return out if self.output_scale == 1.0 else out / self.output_scale


class Attention(nn.Module):
    """Multi-head attention: bias-free q/k/v projections, SDPA, output projection (``to_out.0``; ``to_out.1`` is
    diffusers' dropout, which has no weights)."""

    def __init__(self, dim: int, context_dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        head_dim = q.shape[-1] // self.heads
        q, k, v = (t.view(batch, -1, self.heads, head_dim).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(batch, -1, self.heads * head_dim)
        return self.to_out[0](out)


class GEGLU(nn.Module):
    """One projection to value and gate; value × GELU(gate) (exact erf)."""

    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """``net.0`` GEGLU, ``net.1`` dropout (identity, no weights), ``net.2`` linear back to the width."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        inner = dim * FF_MULT
        self.net = nn.Sequential(GEGLU(dim, inner), nn.Identity(), nn.Linear(inner, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Pre-norm self-attention, cross-attention on the audio prompt, GEGLU feed-forward; each with a residual."""

    def __init__(self, dim: int, context_dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn1 = Attention(dim, dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn2 = Attention(dim, context_dim, heads)
        self.norm3 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = self.attn1(h, h) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


def _projection(channels: int, linear: bool) -> nn.Module:
    return nn.Linear(channels, channels) if linear else nn.Conv2d(channels, channels, 1)


class Transformer2DModel(nn.Module):
    """GroupNorm → proj_in → tokens (one per pixel) → transformer blocks → proj_out, + input. ``proj_in``/``proj_out``
    are 1×1 convs (SD 1.x) or linears on the tokens (``use_linear_projection``, SD 2.x)."""

    def __init__(self, channels: int, context_dim: int, heads: int, groups: int, linear_projection: bool,
                 depth: int = 1) -> None:
        super().__init__()
        self.linear_projection = linear_projection
        self.norm = nn.GroupNorm(groups, channels, eps=TRANSFORMER_NORM_EPS)
        self.proj_in = _projection(channels, linear_projection)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(channels, context_dim, heads) for _ in range(depth)])
        self.proj_out = _projection(channels, linear_projection)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        h = self.norm(x)
        if not self.linear_projection:
            h = self.proj_in(h)
        h = h.permute(0, 2, 3, 1).reshape(batch, height * width, channels)
        if self.linear_projection:
            h = self.proj_in(h)
        for block in self.transformer_blocks:
            h = block(h, context)
        if self.linear_projection:
            h = self.proj_out(h)
        h = h.reshape(batch, height, width, channels).permute(0, 3, 1, 2).contiguous()
        if not self.linear_projection:
            h = self.proj_out(h)
        return h + x


class Downsample2D(nn.Module):
    """3×3 conv, stride 2."""

    def __init__(self, channels: int, padding: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample2D(nn.Module):
    """Nearest-neighbour ×2, then a 3×3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class BlockSpec:
    """What every block shares: time-embedding width, norm groups and eps, the cross-attention setup."""

    def __init__(self, temb: int, groups: int, eps: float, context_dim: int, linear_projection: bool) -> None:
        self.temb, self.groups, self.eps = temb, groups, eps
        self.context_dim, self.linear_projection = context_dim, linear_projection

    def resnet(self, cin: int, cout: int, output_scale: float = 1.0) -> ResnetBlock2D:
        return ResnetBlock2D(cin, cout, self.temb, self.groups, self.eps, output_scale)

    def transformer(self, channels: int, heads: int) -> Transformer2DModel:
        return Transformer2DModel(channels, self.context_dim, heads, self.groups, self.linear_projection)


def _attend(attentions: nn.ModuleList | None, i: int, h: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    return attentions[i](h, context) if attentions is not None else h


class DownBlock(nn.Module):
    """CrossAttnDownBlock2D (``heads`` given) or DownBlock2D (``heads`` None): resnet [+ transformer] per layer,
    then an optional stride-2 downsampler. Returns the output and every intermediate for the up path's skips."""

    def __init__(self, spec: BlockSpec, cin: int, cout: int, layers: int, heads: int | None, downsample: bool,
                 padding: int) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([spec.resnet(cin if i == 0 else cout, cout) for i in range(layers)])
        self.attentions = (nn.ModuleList([spec.transformer(cout, heads) for _ in range(layers)])
                           if heads is not None else None)
        self.downsamplers = nn.ModuleList([Downsample2D(cout, padding)]) if downsample else None

    def forward(self, h: torch.Tensor, temb: torch.Tensor,
                context: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for i, resnet in enumerate(self.resnets):
            h = _attend(self.attentions, i, resnet(h, temb), context)
            skips.append(h)
        if self.downsamplers is not None:
            h = self.downsamplers[0](h)
            skips.append(h)
        return h, skips


class MidBlock(nn.Module):
    """UNetMidBlock2DCrossAttn: resnet, then (transformer, resnet) per layer (one layer in SD 1.x)."""

    def __init__(self, spec: BlockSpec, channels: int, heads: int, output_scale: float, layers: int = 1) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([spec.resnet(channels, channels, output_scale) for _ in range(layers + 1)])
        self.attentions = nn.ModuleList([spec.transformer(channels, heads) for _ in range(layers)])

    def forward(self, h: torch.Tensor, temb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        h = self.resnets[0](h, temb)
        for attention, resnet in zip(self.attentions, self.resnets[1:], strict=True):
            h = resnet(attention(h, context), temb)
        return h


class UpBlock(nn.Module):
    """CrossAttnUpBlock2D (``heads`` given) or UpBlock2D: per layer, concatenate the latest down-path skip, resnet
    [+ transformer]; then an optional nearest ×2 upsampler. ``skip_channels`` lists each layer's skip width."""

    def __init__(self, spec: BlockSpec, prev: int, cout: int, skip_channels: list[int], heads: int | None,
                 upsample: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            [spec.resnet((prev if i == 0 else cout) + skip, cout) for i, skip in enumerate(skip_channels)])
        self.attentions = (nn.ModuleList([spec.transformer(cout, heads) for _ in skip_channels])
                           if heads is not None else None)
        self.upsamplers = nn.ModuleList([Upsample2D(cout)]) if upsample else None

    def forward(self, h: torch.Tensor, skips: list[torch.Tensor], temb: torch.Tensor,
                context: torch.Tensor) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            h = _attend(self.attentions, i, resnet(torch.cat([h, skips.pop()], dim=1), temb), context)
        if self.upsamplers is not None:
            h = self.upsamplers[0](h)
        return h
