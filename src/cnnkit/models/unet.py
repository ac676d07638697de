"""U-Net: Ronneberger, Fischer, Brox, "U-Net: convolutional networks for biomedical image segmentation",
MICCAI 2015, §2 and Fig. 1 (the notes, seeds 004).

    level  maps  contracting path: 2 x (3x3 conv, ReLU),   expansive path: up-conv 2x2, concatenate the
                 then 2x2 max-pool                       cropped skip, 2 x (3x3 conv, ReLU)
    1      64    572 -> 570 -> 568                        64 + 64   -> 392 -> 390 -> 388, 1x1 conv -> classes
    2      128   284 -> 282 -> 280                        128 + 128 -> 200 -> 198 -> 196
    3      256   140 -> 138 -> 136                        256 + 256 -> 104 -> 102 -> 100
    4      512   68 -> 66 -> 64                           512 + 512 -> 56 -> 54 -> 52
    5      1024  32 -> 30 -> 28 (bottom)

The paper's convolutions are unpadded ("valid"), so a 572x572 tile gives a 388x388 map and the skip
connections are centre-cropped before concatenation; valid input sizes are 188 + 16k. ``padding=True`` pads
the convolutions so the output has the input's size (any size divisible by 16). ``base_channels`` scales every
width (64 in the paper); ``batch_norm=True`` adds batch norm after each convolution (later practice).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ShapeError
from ..layers import TransposedConvUpsample
from .registry import register_model
from .stages import Stage

UNET_DEPTH = 4  # number of 2x2 max-pools


class DoubleConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, padding: bool, batch_norm: bool):
        super().__init__()
        for index, (cin, cout) in enumerate([(in_channels, out_channels), (out_channels, out_channels)]):
            self.add_module(f"conv{index + 1}", nn.Conv2d(cin, cout, 3, padding=int(padding), bias=not batch_norm))
            if batch_norm:
                self.add_module(f"bn{index + 1}", nn.BatchNorm2d(cout))
            self.add_module(f"relu{index + 1}", nn.ReLU(inplace=True))


def _centre_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    top, left = (x.shape[-2] - height) // 2, (x.shape[-1] - width) // 2
    return x[..., top:top + height, left:left + width]


class UNet(nn.Module):
    def __init__(self, num_classes: int = 2, in_channels: int = 1, base_channels: int = 64, padding: bool = False,
                 batch_norm: bool = False):
        super().__init__()
        self.padding = padding
        widths = [base_channels * 2**level for level in range(UNET_DEPTH + 1)]  # 64 ... 1024
        self.down = nn.ModuleList()
        previous = in_channels
        for width in widths:
            self.down.append(DoubleConv(previous, width, padding, batch_norm))
            previous = width
        self.pool = nn.MaxPool2d(2)
        self.upsample = nn.ModuleList()
        self.up = nn.ModuleList()
        for width in reversed(widths[:-1]):
            # "up-convolution": a 2x2 transposed convolution that halves the number of maps
            self.upsample.append(TransposedConvUpsample(previous, width, scale=2, activation=False))
            self.up.append(DoubleConv(2 * width, width, padding, batch_norm))
            previous = width
        self.head = nn.Conv2d(previous, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_size(x.shape[-2], x.shape[-1])
        skips = []
        for index, block in enumerate(self.down):
            x = block(x)
            if index < UNET_DEPTH:
                skips.append(x)
                x = self.pool(x)
        for upsample, block, skip in zip(self.upsample, self.up, reversed(skips)):
            x = upsample(x)
            x = block(torch.cat([_centre_crop(skip, x.shape[-2], x.shape[-1]), x], 1))
        return self.head(x)

    def feature_stages(self) -> list[Stage]:
        # Skip connections make U-Net a graph, not a chain: its stage outputs are read with forward hooks.
        out = [Stage(f"down{i}", (f"down.{i - 1}.",), None, f"down.{i - 1}") for i in range(1, len(self.down) + 1)]
        out += [Stage(f"up{i}", (f"upsample.{i - 1}.", f"up.{i - 1}."), None, f"up.{i - 1}")
                for i in range(1, len(self.up) + 1)]
        return out + [Stage("head", ("head.",), None, "head")]

    def output_size(self, size: int) -> int:
        """Output height/width for an input height/width (equal when padded; 572 -> 388 unpadded)."""
        if self.padding:
            return size
        for _ in range(UNET_DEPTH):
            size = (size - 4) // 2
        size -= 4
        for _ in range(UNET_DEPTH):
            size = size * 2 - 4
        return size

    def _check_size(self, height: int, width: int) -> None:
        for size in (height, width):
            if self.padding:
                if size % 2**UNET_DEPTH or size < 2**UNET_DEPTH:
                    fix = max(16, round(size / 16) * 16)
                    raise ShapeError(f"a padded U-Net needs sizes divisible by 16, got {height}x{width}; "
                                     f"resize or pad to e.g. {fix}x{fix}")
            elif size < 188 or (size - 188) % 16:
                fix = 188 + max(0, round((size - 188) / 16)) * 16
                raise ShapeError(
                    f"an unpadded U-Net needs sizes 188 + 16k (188, 204, ..., 572) so every 2x2 max-pool sees an "
                    f"even size, got {height}x{width}; use e.g. {fix}x{fix} or build it with padding=True")


@register_model(input_size=(1, 572, 572), num_classes=2, family="unet", paper="Ronneberger et al. 2015",
                min_input_size=188, task="segmentation")
def unet(num_classes: int = 2, in_channels: int = 1, base_channels: int = 64, padding: bool = False,
         batch_norm: bool = False) -> UNet:
    """The 2015 U-Net (unpadded, 572 -> 388); ``padding=True`` for same-size output."""
    return UNet(num_classes, in_channels, base_channels, padding, batch_norm)
