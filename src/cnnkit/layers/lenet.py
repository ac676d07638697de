"""LeNet-5's own layers (LeCun et al. 1998, "Gradient-based learning applied to document recognition",
section II.B): the scaled tanh, trainable subsampling, the C3 connection table, RBF outputs and the paper's
initialisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ScaledTanh(nn.Module):
    """f(a) = A tanh(S a) with A = 1.7159, S = 2/3 (paper, Appendix A): f(±1) = ±1 and the gain at 0 is ~1."""

    def __init__(self, amplitude: float = 1.7159, slope: float = 2.0 / 3.0):
        super().__init__()
        self.amplitude, self.slope = amplitude, slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.amplitude * torch.tanh(self.slope * x)

    def extra_repr(self) -> str:
        return f"amplitude={self.amplitude}, slope={self.slope:.4f}"


class TrainableSubsampling(nn.Module):
    """LeNet's S-layers: the four inputs of each 2x2 cell are added, multiplied by a trainable coefficient
    and shifted by a trainable bias, one pair per feature map (so S2 has 2 x 6 = 12 parameters)."""

    def __init__(self, channels: int, kernel_size: int = 2):
        super().__init__()
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        summed = F.avg_pool2d(x, k) * (k * k)
        return summed * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


# Table I of the paper: which of the 6 S2 maps each of the 16 C3 maps reads. The first six read 3 contiguous
# maps, the next six 4 contiguous, three read 4 discontinuous ones, and the last reads all six. The paper's
# reasons: fewer connections (60 instead of 96) and broken symmetry, so maps learn different features.
LENET_C3_TABLE: tuple[tuple[int, ...], ...] = (
    *(tuple((j + i) % 6 for i in range(3)) for j in range(6)),
    *(tuple((j + i) % 6 for i in range(4)) for j in range(6)),
    (0, 1, 3, 4),
    (1, 2, 4, 5),
    (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)


class PartialConv2d(nn.Module):
    """A convolution where output map ``o`` reads only the input maps listed in ``table[o]``.

    Only the connected kernels are parameters (LeNet's C3: 60 x 25 weights + 16 biases = 1,516); they are
    scattered into a dense, mostly-zero kernel for each forward pass so the work runs as one ``conv2d``.
    """

    def __init__(self, in_channels: int, table, kernel_size: int = 5):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, len(table), kernel_size
        self.table = tuple(tuple(row) for row in table)
        pairs = [(o, i) for o, row in enumerate(self.table) for i in row]
        if any(not 0 <= i < in_channels for _, i in pairs):
            raise ValueError(f"connection table refers to input maps outside 0..{in_channels - 1}")
        self.register_buffer("_out_index", torch.tensor([o for o, _ in pairs]), persistent=False)
        self.register_buffer("_in_index", torch.tensor([i for _, i in pairs]), persistent=False)
        self.weight = nn.Parameter(torch.empty(len(pairs), kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(self.out_channels))
        fan_in = torch.zeros(self.out_channels).index_add_(0, self._out_index, torch.ones(len(pairs)))
        self.register_buffer("fan_in", fan_in * kernel_size * kernel_size, persistent=False)
        # LeCun's uniform(-2.4/F, 2.4/F); F from the table in Python so the layer also builds on the meta device.
        bound = 2.4 / (min(len(row) for row in self.table) * kernel_size * kernel_size)
        nn.init.uniform_(self.weight, -bound, bound)

    def dense_weight(self) -> torch.Tensor:
        k = self.kernel_size
        dense = self.weight.new_zeros(self.out_channels, self.in_channels, k, k)
        return dense.index_put((self._out_index, self._in_index), self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.dense_weight(), self.bias)

    def multiply_adds(self, output_shape) -> int:
        """Multiply-adds per instance of the connections that exist, for the architecture calculator (torch's
        flop counter sees the dense convolution this layer runs as): each output pixel of map ``o`` reads
        ``len(table[o])`` kernels. LeNet's C3: 60 x 25 x 10 x 10 = 150,000, which with the 16 x 100 bias
        additions are the paper's 151,600 connections (the dense 6 -> 16 convolution would be 240,000)."""
        height, width = output_shape[-2:]
        return len(self.weight) * self.kernel_size * self.kernel_size * height * width

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"connections={len(self.weight)}")


# The RBF output's fixed 7x12 bitmaps, "stylized images of the characters" (paper, Fig. 3 and section II.B):
# '#' is +1, '.' is -1. Drawn to resemble the paper's figure; each row is 7 pixels, 12 rows per digit.
_DIGIT_BITMAPS = {
    0: ["..###..", ".#...#.", "#.....#", "#.....#", "#.....#", "#.....#",
        "#.....#", "#.....#", "#.....#", "#.....#", ".#...#.", "..###.."],
    1: ["...#...", "..##...", ".#.#...", "...#...", "...#...", "...#...",
        "...#...", "...#...", "...#...", "...#...", "...#...", ".#####."],
    2: ["..###..", ".#...#.", "#.....#", "......#", ".....#.", "....#..",
        "...#...", "..#....", ".#.....", "#......", "#......", "#######"],
    3: [".####..", "#....#.", "......#", "......#", ".....#.", "..###..",
        ".....#.", "......#", "......#", "......#", "#....#.", ".####.."],
    4: ["....#..", "...##..", "..#.#..", ".#..#..", "#...#..", "#...#..",
        "#######", "....#..", "....#..", "....#..", "....#..", "....#.."],
    5: ["#######", "#......", "#......", "#......", "#####..", ".....#.",
        "......#", "......#", "......#", "......#", "#....#.", ".####.."],
    6: ["..####.", ".#.....", "#......", "#......", "#.###..", "##...#.",
        "#.....#", "#.....#", "#.....#", "#.....#", ".#...#.", "..###.."],
    7: ["#######", "......#", ".....#.", ".....#.", "....#..", "....#..",
        "...#...", "...#...", "..#....", "..#....", "..#....", "..#...."],
    8: ["..###..", ".#...#.", "#.....#", "#.....#", ".#...#.", "..###..",
        ".#...#.", "#.....#", "#.....#", "#.....#", ".#...#.", "..###.."],
    9: ["..###..", ".#...#.", "#.....#", "#.....#", "#.....#", ".#...##",
        "..###.#", "......#", "......#", ".....#.", "....#..", ".###..."],
}


def digit_prototypes(num_classes: int = 10, seed: int = 0) -> torch.Tensor:
    """The (num_classes, 84) matrix of +-1 RBF centres: the digit bitmaps, then random +-1 codes
    (seeded) for any class beyond ten, since the paper only drew the ten digits."""
    rows = [[1.0 if c == "#" else -1.0 for line in _DIGIT_BITMAPS[d] for c in line]
            for d in range(min(10, num_classes))]
    protos = torch.tensor(rows) if rows else torch.empty(0, 84)
    if num_classes > 10:
        g = torch.Generator().manual_seed(seed)
        extra = torch.randint(0, 2, (num_classes - 10, 84), generator=g).float() * 2 - 1
        protos = torch.cat([protos, extra])
    return protos


class RBFOutput(nn.Module):
    """Euclidean radial basis function units: y_i = sum_j (x_j - w_ij)^2 with fixed +-1 centres w_i.

    Returns ``-y`` as logits, so cross-entropy on them is the paper's MAP criterion (its eq. 9) in the limit
    of a vanishing "rubbish class" term: the correct class's distance is pulled down and the others pushed up.
    The centres are a buffer, not parameters: they are fixed in the paper (84 x 10 = 840 values).
    """

    def __init__(self, in_features: int = 84, num_classes: int = 10):
        super().__init__()
        if in_features != 84:
            raise ValueError("the RBF output reads the 84 units of F6 (7x12 bitmaps)")
        self.register_buffer("centres", digit_prototypes(num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ||x - w||^2 expanded so it runs as one matrix product.
        distances = (x * x).sum(1, keepdim=True) - 2 * x @ self.centres.t() + (self.centres**2).sum(1)
        return -distances


def lecun_uniform_(module: nn.Module) -> None:
    """The paper's initialisation (Appendix C): weights uniform in (-2.4/F_i, 2.4/F_i), F_i the fan-in."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            nn.init.uniform_(m.weight, -2.4 / fan_in, 2.4 / fan_in)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
