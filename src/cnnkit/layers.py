"""Building blocks that torch does not ship, each usable on its own.

torch already has convolution, pooling, batch/layer/group norm, dropout, ReLU/ELU/LeakyReLU and
LocalResponseNorm; this module adds the pieces the papers in the notes use and nobody ships well.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ShapeError

# --------------------------------------------------------------------------------------------------
# LeNet-5 (LeCun et al. 1998, "Gradient-based learning applied to document recognition", section II.B)
# --------------------------------------------------------------------------------------------------


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


def conv_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """(N + 2P - D(F-1) - 1) / S + 1, the notes' formula; raises when the filter does not fit evenly."""
    span = size + 2 * padding - dilation * (kernel_size - 1) - 1
    if span < 0:
        raise ShapeError(
            f"a {kernel_size}x{kernel_size} filter does not fit a {size}x{size} input with padding {padding}"
        )
    if span % stride:
        raise ShapeError(
            f"a {kernel_size}x{kernel_size} filter with stride {stride} does not fit a {size}x{size} input "
            f"with padding {padding}: ({size} + 2*{padding} - {kernel_size})/{stride} + 1 = "
            f"{span / stride + 1:.2f} is not a whole number; change the stride or the padding "
            f"(or crop the input) so that the filter lands on the last pixel"
        )
    return span // stride + 1


__all__ = [
    "LENET_C3_TABLE",
    "PartialConv2d",
    "RBFOutput",
    "ScaledTanh",
    "TrainableSubsampling",
    "conv_output_size",
    "digit_prototypes",
    "lecun_uniform_",
]


def require_min_input_size(x: torch.Tensor, min_size: int, model_name: str) -> None:
    """Raise a ShapeError naming the minimum input size when ``x`` is too small for the architecture.

    Called at the top of a model's forward: a one-shape check per batch, so the error says what to do instead
    of a cryptic "output size is too small" from deep inside the network."""
    height, width = x.shape[-2], x.shape[-1]
    if height < min_size or width < min_size:
        raise ShapeError(
            f"{model_name} needs inputs of at least {min_size}x{min_size} pixels, got {height}x{width}; "
            f"resize the images (e.g. --input-size {min_size}) or pick a model for small images"
        )


# --------------------------------------------------------------------------------------------------
# General blocks
# --------------------------------------------------------------------------------------------------


class ConvBNAct(nn.Sequential):
    """Convolution -> batch norm -> activation, the unit of every post-2015 CNN.

    The convolution has no bias: batch norm's shift would cancel it. ``padding=None`` means "same" for odd
    kernels at stride 1 (k // 2). ``activation=None`` leaves the activation out (e.g. before a residual sum).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int | None = None, groups: int = 1, activation: type[nn.Module] | None = nn.ReLU,
                 batch_norm: bool = True):
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        self.add_module("conv", nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                                          groups=groups, bias=not batch_norm))
        if batch_norm:
            self.add_module("bn", nn.BatchNorm2d(out_channels))
        if activation is not None:
            self.add_module("act", activation(inplace=True) if _takes_inplace(activation) else activation())


def _takes_inplace(activation) -> bool:
    return activation in (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.Hardswish)


class Maxout(nn.Module):
    """Maxout units (Goodfellow et al. 2013): max(w_1 x + b_1, ..., w_k x + b_k), k = ``pieces``.

    One linear layer computes all k affine maps at once; the max runs over a reshaped axis, so the unit
    learns a piecewise-linear convex activation (ReLU and leaky ReLU are special cases with k = 2)."""

    def __init__(self, in_features: int, out_features: int, pieces: int = 2):
        super().__init__()
        self.out_features, self.pieces = out_features, pieces
        self.linear = nn.Linear(in_features, out_features * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).view(*x.shape[:-1], self.out_features, self.pieces).amax(-1)


class ClassicDropout(nn.Module):
    """Dropout as in Srivastava/Hinton et al. 2014 and the notes: during training each unit is dropped with
    probability ``p`` and the survivors are *not* rescaled; at test time every unit is kept and the output is
    multiplied by the keep probability 1 - p, so its expected value matches training.

    Compare :class:`InvertedDropout` (what ``nn.Dropout`` does): it scales by 1/(1 - p) while training so
    inference is a no-op. Both give the same expected activations."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            keep = torch.rand_like(x) >= self.p
            return x * keep
        return x * (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class InvertedDropout(nn.Module):
    """Dropout that rescales survivors by 1/(1 - p) during training and does nothing at test time."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand_like(x) >= self.p
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LocalResponseNorm(nn.LocalResponseNorm):
    """Local response normalisation in the AlexNet paper's own convention (Krizhevsky et al. 2012, §3.3):

        b_i = a_i / (k + alpha * sum_{j in the n maps around i} a_j^2) ^ beta,   k=2, n=5, alpha=1e-4, beta=0.75

    torch's ``nn.LocalResponseNorm`` divides alpha by n; this subclass multiplies it back so the constants
    read as in the paper."""

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0):
        super().__init__(size, alpha * size, beta, k)
        self.paper_alpha = alpha


class GlobalAvgPoolHead(nn.Module):
    """Global average pooling -> (dropout) -> linear: the classifier of NIN, GoogLeNet, ResNet and Xception.

    Averaging each map to one number makes the head independent of the input size and has no parameters,
    where a flatten + fully connected layer would need one weight per pixel."""

    def __init__(self, in_channels: int, num_classes: int, drop_rate: float = 0.0):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.flatten(self.pool(x))))


# --------------------------------------------------------------------------------------------------
# Inception (Szegedy et al. 2014, "Going deeper with convolutions", §4 and Fig. 2)
# --------------------------------------------------------------------------------------------------


def _conv_relu(in_channels: int, out_channels: int, kernel_size: int, batch_norm: bool = False) -> nn.Sequential:
    """A 'same'-padded convolution followed by ReLU (and batch norm before it when asked)."""
    if batch_norm:
        return ConvBNAct(in_channels, out_channels, kernel_size)
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
                         nn.ReLU(inplace=True))


class InceptionNaive(nn.Module):
    """The naive inception module (paper Fig. 2a): 1x1, 3x3 and 5x5 convolutions and a 3x3 max-pool side by
    side, concatenated along channels. The pooling branch keeps every input channel, so the output is always
    deeper than the input; on 28x28x256 with 128/192/96 filters it costs 854 M multiply-adds (the notes)."""

    def __init__(self, in_channels: int, ch1x1: int, ch3x3: int, ch5x5: int, batch_norm: bool = False):
        super().__init__()
        self.branch1x1 = _conv_relu(in_channels, ch1x1, 1, batch_norm)
        self.branch3x3 = _conv_relu(in_channels, ch3x3, 3, batch_norm)
        self.branch5x5 = _conv_relu(in_channels, ch5x5, 5, batch_norm)
        self.branch_pool = nn.MaxPool2d(3, stride=1, padding=1)
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1x1(x), self.branch3x3(x), self.branch5x5(x), self.branch_pool(x)], 1)


class Inception(nn.Module):
    """The inception module with dimension reductions (paper Fig. 2b and Table 1's column names):
    1x1 convolutions shrink the depth before the 3x3 and 5x5 convolutions and after the pooling, which brings
    the notes' 28x28x256 example from 854 M down to 271 M multiply-adds (the notes print 358 M: their sum counts
    the 3x3 branch twice; tests/test_calculator.py shows the terms). The 5x5 branch uses a real 5x5
    convolution as in the paper (torchvision uses 3x3 there)."""

    def __init__(self, in_channels: int, ch1x1: int, ch3x3_reduce: int, ch3x3: int, ch5x5_reduce: int,
                 ch5x5: int, pool_proj: int, batch_norm: bool = False):
        super().__init__()
        self.branch1x1 = _conv_relu(in_channels, ch1x1, 1, batch_norm)
        self.branch3x3 = nn.Sequential(_conv_relu(in_channels, ch3x3_reduce, 1, batch_norm),
                                       _conv_relu(ch3x3_reduce, ch3x3, 3, batch_norm))
        self.branch5x5 = nn.Sequential(_conv_relu(in_channels, ch5x5_reduce, 1, batch_norm),
                                       _conv_relu(ch5x5_reduce, ch5x5, 5, batch_norm))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1),
                                         _conv_relu(in_channels, pool_proj, 1, batch_norm))
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1x1(x), self.branch3x3(x), self.branch5x5(x), self.branch_pool(x)], 1)


# --------------------------------------------------------------------------------------------------
# Residual blocks (He et al. 2015, "Deep residual learning for image recognition", §3.3 and Fig. 5)
# --------------------------------------------------------------------------------------------------


class ZeroPadShortcut(nn.Module):
    """Shortcut option A (paper §3.3 and §4.2): identity, subsampled by taking every ``stride``-th pixel, with
    the extra channels filled by zeros. It adds no parameters, which is why the CIFAR ResNets use it.

    The paper does not say where the zero channels go, and weights only work with the side they were trained
    with: ``padding="after"`` appends them all after the existing channels (cnnkit's layout, and the default,
    so every run folder trained so far rebuilds the network it was trained as); ``padding="both"`` puts half
    before and half after, so the existing channels sit in the middle, as the widespread CIFAR checkpoints
    (akamaster/pytorch_resnet_cifar10, ``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes//4, planes//4))``) do."""

    PADDINGS = ("after", "both")

    def __init__(self, in_channels: int, out_channels: int, stride: int, padding: str = "after"):
        super().__init__()
        if padding not in self.PADDINGS:
            raise ValueError(f"option-A shortcut padding must be 'after' (zeros after the existing channels) or "
                             f"'both' (half on each side, the akamaster CIFAR checkpoints), not {padding!r}")
        self.extra_channels, self.stride, self.padding = out_channels - in_channels, stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if not self.extra_channels:
            return x
        before = self.extra_channels // 2 if self.padding == "both" else 0
        return F.pad(x, (0, 0, 0, 0, before, self.extra_channels - before))

    def extra_repr(self) -> str:
        return f"extra_channels={self.extra_channels}, stride={self.stride}, padding={self.padding!r}"


def make_shortcut(in_channels: int, out_channels: int, stride: int, option: str, padding: str = "after") -> nn.Module:
    """The residual branch's partner: identity when shapes agree, else option A (zero padding, on the side
    ``padding`` names: see ZeroPadShortcut) or B (1x1 projection with batch norm). Option C of the paper
    (projection everywhere) is ``option='C'``."""
    if option not in ("A", "B", "C"):
        raise ValueError(f"shortcut option must be 'A', 'B' or 'C' (He et al. §3.3), not {option!r}")
    if option == "C" or (option == "B" and (stride != 1 or in_channels != out_channels)):
        return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                             nn.BatchNorm2d(out_channels))
    if stride != 1 or in_channels != out_channels:
        return ZeroPadShortcut(in_channels, out_channels, stride, padding)
    return nn.Identity()


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a skip connection: relu(F(x) + shortcut(x)) (paper Fig. 5 left).

    ``residual=False`` drops the skip connection, giving the "plain" network of the degradation experiment
    (paper Fig. 4 and 6), with exactly the same layers otherwise."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1, shortcut: str = "B",
                 residual: bool = True, shortcut_padding: str = "after"):
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.residual = residual
        self.shortcut = (make_shortcut(in_channels, out_channels, stride, shortcut, shortcut_padding)
                         if residual else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + self.shortcut(x)
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> 1x1 expand (x4), with a skip connection (paper Fig. 5 right, ResNet-50/101/152).

    ``stride_on='3x3'`` puts the downsampling stride on the 3x3 convolution (torchvision's "ResNet v1.5",
    slightly more accurate); ``stride_on='1x1'`` puts it on the first 1x1 convolution as the paper does."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1, shortcut: str = "B",
                 residual: bool = True, stride_on: str = "3x3"):
        super().__init__()
        if stride_on not in ("3x3", "1x1"):
            raise ValueError(f"stride_on must be '3x3' or '1x1', not {stride_on!r}")
        out_channels = channels * self.expansion
        stride_1x1, stride_3x3 = (stride, 1) if stride_on == "1x1" else (1, stride)
        self.conv1 = nn.Conv2d(in_channels, channels, 1, stride_1x1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride_3x3, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.residual = residual
        self.shortcut = make_shortcut(in_channels, out_channels, stride, shortcut) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            out = out + self.shortcut(x)
        return self.relu(out)


# --------------------------------------------------------------------------------------------------
# Depthwise-separable convolution (Chollet 2017, "Xception", §2; Sifre 2014)
# --------------------------------------------------------------------------------------------------


class SeparableConv2d(nn.Module):
    """A depthwise convolution (one k x k filter per input channel, groups = in_channels) followed by a
    pointwise 1x1 convolution that mixes channels. Spatial and cross-channel correlations are learnt
    separately: k*k*C + C*C' weights instead of k*k*C*C'."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int | None = None, dilation: int = 1, bias: bool = False):
        super().__init__()
        padding = dilation * (kernel_size // 2) if padding is None else padding
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding, dilation,
                                   groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


# --------------------------------------------------------------------------------------------------
# Upsampling (Ronneberger et al. 2015 "up-convolution"; Zeiler & Fergus 2014 unpooling)
# --------------------------------------------------------------------------------------------------


class TransposedConvUpsample(nn.Module):
    """Learnt upsampling: a transposed convolution that scales height and width by ``scale`` (each input
    pixel stamps a weighted k x k patch into the output, the adjoint of a strided convolution), then ReLU.
    U-Net's "up-conv 2x2" is ``TransposedConvUpsample(c, c // 2, scale=2, activation=False)``."""

    def __init__(self, in_channels: int, out_channels: int, scale: int = 2, activation: bool = True):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=scale, stride=scale)
        self.act = nn.ReLU(inplace=True) if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.up(x))


class MaxPoolWithIndices(nn.Module):
    """Max-pooling that also returns where each maximum came from, for :class:`MaxUnpoolUpsample`."""

    def __init__(self, kernel_size: int = 2, stride: int | None = None):
        super().__init__()
        self.pool = nn.MaxPool2d(kernel_size, stride, return_indices=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pool(x)


class MaxUnpoolUpsample(nn.Module):
    """Unpooling: puts each value back where the matching max-pool found its maximum and zeros elsewhere
    (SegNet, deconvnet), then a 3x3 convolution fills the holes. Takes ``(x, indices, output_size)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 2, stride: int | None = None):
        super().__init__()
        self.unpool = nn.MaxUnpool2d(kernel_size, stride)
        self.conv = ConvBNAct(in_channels, out_channels, 3)

    def forward(self, x: torch.Tensor, indices: torch.Tensor, output_size=None) -> torch.Tensor:
        return self.conv(self.unpool(x, indices, output_size=output_size))


# --------------------------------------------------------------------------------------------------
# Convolution as one matrix product (im2col), as the notes explain it
# --------------------------------------------------------------------------------------------------


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def conv2d_im2col(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1,
                  padding=0, dilation=1, groups: int = 1) -> torch.Tensor:
    """2-D convolution computed as im2col + one batched matrix product, equal to ``F.conv2d``.

    ``F.unfold`` copies every receptive field into a column: a (C/groups * kh * kw) x (H_out * W_out) matrix
    per image and group (see :func:`im2col_matrix_shape`); the filters, flattened to rows, multiply it. The
    pixels are duplicated kh*kw times, which is the memory price of turning convolution into a GEMM."""
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    batch, in_channels, height, width = x.shape
    out_channels, channels_per_group, kh, kw = weight.shape
    if in_channels != channels_per_group * groups:
        raise ShapeError(f"input has {in_channels} channels, the weight expects {channels_per_group} x {groups} groups")
    out_h = (height + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (width + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if out_h < 1 or out_w < 1:
        raise ShapeError(f"a {kh}x{kw} filter does not fit a {height}x{width} input with padding {padding}")
    columns = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)  # (N, C*kh*kw, L)
    columns = columns.view(batch, groups, channels_per_group * kh * kw, out_h * out_w)
    filters = weight.view(groups, out_channels // groups, channels_per_group * kh * kw)
    out = torch.einsum("gok,ngkl->ngol", filters, columns).reshape(batch, out_channels, out_h, out_w)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


def im2col_matrix_shape(in_channels: int, kernel_size, out_height: int, out_width: int) -> tuple[int, int]:
    """Rows x columns of the unfolded matrix for one image (all groups stacked): C*kh*kw x H_out*W_out."""
    kh, kw = _pair(kernel_size)
    return in_channels * kh * kw, out_height * out_width


__all__ += [
    "BasicBlock",
    "Bottleneck",
    "ClassicDropout",
    "ConvBNAct",
    "GlobalAvgPoolHead",
    "Inception",
    "InceptionNaive",
    "InvertedDropout",
    "LocalResponseNorm",
    "MaxPoolWithIndices",
    "MaxUnpoolUpsample",
    "Maxout",
    "SeparableConv2d",
    "TransposedConvUpsample",
    "ZeroPadShortcut",
    "conv2d_im2col",
    "im2col_matrix_shape",
    "make_shortcut",
    "require_min_input_size",
]
