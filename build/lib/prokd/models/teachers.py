"""Teacher networks: MONAI architectures, registered without re-implementation."""

from __future__ import annotations

from monai.networks.nets import SegResNet, UNet
from torch import nn

from prokd.models.registry import register_model


def unet_taps(depth: int) -> dict[str, str]:
    """Tap paths in a MONAI ``UNet`` of ``depth`` levels.

    The bottleneck is the innermost ``submodule``; the decoder tap is the up-sampling block
    of the level whose output has 1/4 of the input resolution.
    """
    return {
        "bottleneck": "model" + ".1.submodule" * (depth - 1),
        "decoder": "model" + ".1.submodule" * 2 + ".2",
    }


def monai_unet(
    channels: tuple[int, ...], res_units: int, in_channels: int, out_channels: int
) -> nn.Module:
    """A 2D MONAI UNet with stride-2 levels and instance norm."""
    return UNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=channels,
        strides=(2,) * (len(channels) - 1),
        num_res_units=res_units,
        norm="instance",
    )


@register_model(
    "unet-large", "teacher", "MONAI UNet 32-512, 2 residual units per block", unet_taps(5)
)
def unet_large(in_channels: int, out_channels: int) -> nn.Module:
    return monai_unet((32, 64, 128, 256, 512), 2, in_channels, out_channels)


@register_model(
    "unet-medium", "teacher", "MONAI UNet 16-256, 2 residual units per block", unet_taps(5)
)
def unet_medium(in_channels: int, out_channels: int) -> nn.Module:
    return monai_unet((16, 32, 64, 128, 256), 2, in_channels, out_channels)


@register_model(
    "segresnet",
    "teacher",
    "MONAI SegResNet, 16 initial filters",
    {"bottleneck": "down_layers.3", "decoder": "up_layers.0"},
    size_multiple=8,
)
def segresnet(in_channels: int, out_channels: int) -> nn.Module:
    return SegResNet(
        spatial_dims=2, init_filters=16, in_channels=in_channels, out_channels=out_channels
    )
