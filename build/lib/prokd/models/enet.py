"""ENet (Paszke et al., 2016, "ENet: A Deep Neural Network Architecture for Real-Time Semantic
Segmentation", arXiv 1606.02147), written to export cleanly.

Differences from the paper, all for TorchScript/ONNX export: max-unpooling is replaced by
bilinear up-sampling on the main branch and a 2x2 transposed convolution on the extension
branch; down-sampling pads channels with ``F.pad``. Inputs must be multiples of 8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _bn_prelu(channels: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels), nn.PReLU(channels)]


class InitialBlock(nn.Module):
    """3x3 stride-2 convolution concatenated with a 2x2 max-pool of the input."""

    def __init__(self, in_channels: int, out_channels: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels - in_channels, 3, 2, 1, bias=False)
        self.pool = nn.MaxPool2d(2, 2)
        self.post = nn.Sequential(*_bn_prelu(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(torch.cat([self.conv(x), self.pool(x)], dim=1))


class Bottleneck(nn.Module):
    """Regular, dilated or asymmetric residual bottleneck (channels kept)."""

    def __init__(
        self, channels: int, dilation: int = 1, asymmetric: int = 0, dropout: float = 0.1
    ) -> None:
        super().__init__()
        inner = channels // 4
        if asymmetric:
            pad = asymmetric // 2
            middle: list[nn.Module] = [
                nn.Conv2d(inner, inner, (asymmetric, 1), padding=(pad, 0), bias=False),
                nn.Conv2d(inner, inner, (1, asymmetric), padding=(0, pad), bias=False),
            ]
        else:
            middle = [nn.Conv2d(inner, inner, 3, padding=dilation, dilation=dilation, bias=False)]
        self.ext = nn.Sequential(
            nn.Conv2d(channels, inner, 1, bias=False),
            *_bn_prelu(inner),
            *middle,
            *_bn_prelu(inner),
            nn.Conv2d(inner, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.Dropout2d(dropout),
        )
        self.out = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(x + self.ext(x))


class DownBottleneck(nn.Module):
    """Halve the resolution: max-pool + zero channels on the main branch."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        inner = in_channels // 4
        self.extra = out_channels - in_channels
        self.pool = nn.MaxPool2d(2, 2)
        self.ext = nn.Sequential(
            nn.Conv2d(in_channels, inner, 2, 2, bias=False),
            *_bn_prelu(inner),
            nn.Conv2d(inner, inner, 3, padding=1, bias=False),
            *_bn_prelu(inner),
            nn.Conv2d(inner, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.Dropout2d(dropout),
        )
        self.out = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = F.pad(self.pool(x), [0, 0, 0, 0, 0, self.extra])
        return self.out(main + self.ext(x))


class UpBottleneck(nn.Module):
    """Double the resolution: 1x1 conv + bilinear (main), transposed conv (extension)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.1) -> None:
        super().__init__()
        inner = in_channels // 4
        self.main = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
        )
        self.ext = nn.Sequential(
            nn.Conv2d(in_channels, inner, 1, bias=False),
            *_bn_prelu(inner),
            nn.ConvTranspose2d(inner, inner, 2, 2, bias=False),
            *_bn_prelu(inner),
            nn.Conv2d(inner, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.Dropout2d(dropout),
        )
        self.out = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = F.interpolate(self.main(x), scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.out(main + self.ext(x))


def _stage2_body(channels: int) -> list[nn.Module]:
    """The eight bottlenecks shared by stages 2 and 3 (dilations 2-16, asymmetric 5)."""
    return [
        Bottleneck(channels),
        Bottleneck(channels, dilation=2),
        Bottleneck(channels, asymmetric=5),
        Bottleneck(channels, dilation=4),
        Bottleneck(channels),
        Bottleneck(channels, dilation=8),
        Bottleneck(channels, asymmetric=5),
        Bottleneck(channels, dilation=16),
    ]


class ENet(nn.Module):
    """ENet for 2D segmentation; stages are named for feature taps."""

    def __init__(self, in_channels: int = 1, out_channels: int = 2) -> None:
        super().__init__()
        self.initial = InitialBlock(in_channels, 16)
        self.stage1 = nn.Sequential(
            DownBottleneck(16, 64, 0.01), *[Bottleneck(64, dropout=0.01) for _ in range(4)]
        )
        self.stage2 = nn.Sequential(DownBottleneck(64, 128, 0.1), *_stage2_body(128))
        self.stage3 = nn.Sequential(*_stage2_body(128))
        self.stage4 = nn.Sequential(UpBottleneck(128, 64), Bottleneck(64), Bottleneck(64))
        self.stage5 = nn.Sequential(UpBottleneck(64, 16), Bottleneck(16))
        self.head = nn.ConvTranspose2d(16, out_channels, 2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.initial(x)
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.head(self.stage5(self.stage4(x)))
