"""The convolution blocks of the Wav2Lip generator, named so the public checkpoints load with ``strict=True``.

Every block keeps its layers in an ``nn.Sequential`` called ``conv_block`` (index 0 the convolution, index 1 the
BatchNorm), which is what produces the checkpoint keys ``<block>.conv_block.0.weight`` etc. The ReLU holds no
weights, so it lives outside ``conv_block`` and is applied in ``forward`` (as in the reference).
"""

from __future__ import annotations

import torch
from torch import nn


class Conv2d(nn.Module):
    """Conv2d → BatchNorm2d (→ + input when ``residual``) → ReLU.

    The residual sum comes after BatchNorm and before the ReLU, exactly like the reference; moving it would still
    load the weights but change every output.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int],
        padding: int | tuple[int, int],
        residual: bool = False,
    ) -> None:
        super().__init__()
        if residual and cin != cout:
            raise ValueError(f"a residual block needs cin == cout, got {cin} -> {cout}")
        self.conv_block = nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size, stride, padding),
            nn.BatchNorm2d(cout),
        )
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x  # not in place: the reference's ``out += x`` gives the same values
        return self.act(out)


class ConvTranspose2d(nn.Module):
    """ConvTranspose2d → BatchNorm2d → ReLU: the decoder's upsampling step (never residual in Wav2Lip)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int],
        padding: int | tuple[int, int],
        output_padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding),
            nn.BatchNorm2d(cout),
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


def plain_conv2d(cin: int, cout: int, kernel_size: int = 1) -> nn.Conv2d:
    """The generator's last layer: a bare ``nn.Conv2d`` (no BatchNorm, no ReLU), keys ``output_block.1.weight/bias``.

    The sigmoid that follows it in ``output_block`` maps the result to [0, 1].
    """
    return nn.Conv2d(cin, cout, kernel_size=kernel_size, stride=1, padding=kernel_size // 2)
