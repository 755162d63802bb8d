"""Student networks: ENet and a width family of small MONAI UNets.

On a CPU, many small memory-bound layers make ENet slower than its FLOPs suggest, so the
UNet width family (4, 8, 16 base channels) gives a measured accuracy/speed choice.
"""

from __future__ import annotations

from torch import nn

from prokd.models.enet import ENet
from prokd.models.registry import register_model
from prokd.models.teachers import monai_unet, unet_taps


@register_model(
    "enet",
    "student",
    "ENet (Paszke 2016), export-friendly up-sampling",
    {"bottleneck": "stage3", "decoder": "stage4"},
    size_multiple=8,
)
def enet(in_channels: int, out_channels: int) -> nn.Module:
    return ENet(in_channels, out_channels)


def _register_unet_width(width: int) -> None:
    @register_model(
        f"unet-w{width}",
        "student",
        f"MONAI UNet {width}-{16 * width}, 1 residual unit per block",
        unet_taps(5),
    )
    def build(in_channels: int, out_channels: int) -> nn.Module:
        channels = tuple(width * 2**level for level in range(5))
        return monai_unet(channels, 1, in_channels, out_channels)


for _width in (4, 8, 16):
    _register_unet_width(_width)
