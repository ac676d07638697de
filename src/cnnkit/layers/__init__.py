"""Building blocks that torch does not ship, each usable on its own.

torch already has convolution, pooling, batch/layer/group norm, dropout, ReLU/ELU/LeakyReLU and
LocalResponseNorm; this package adds the pieces the papers in the notes use and nobody ships well. One module
per job: ``lenet`` (LeNet-5's layers), ``shapes`` (output sizes, minimum inputs), ``blocks`` (general units and
heads), ``inception``, ``residual`` (shortcuts and residual blocks), ``conv`` (separable convolution, im2col),
``upsample``, ``norm`` (batch, group, layer, instance norm by name). Every name is importable from ``cnnkit.layers``.
"""

from .blocks import (ACTIVATIONS, ClassicDropout, ConvBNAct, GlobalAvgPoolHead, InvertedDropout, LocalResponseNorm,
                     Maxout, make_activation)
from .conv import SeparableConv2d, conv2d_im2col, im2col_matrix_shape
from .inception import Inception, InceptionNaive
from .lenet import (LENET_C3_TABLE, PartialConv2d, RBFOutput, ScaledTanh, TrainableSubsampling, digit_prototypes,
                    lecun_uniform_)
from .norm import NORMS, make_norm
from .residual import BasicBlock, Bottleneck, ZeroPadShortcut, make_shortcut
from .shapes import conv_output_size, require_min_input_size
from .upsample import MaxPoolWithIndices, MaxUnpoolUpsample, TransposedConvUpsample

__all__ = [
    "ACTIVATIONS", "LENET_C3_TABLE", "NORMS", "BasicBlock", "Bottleneck", "ClassicDropout", "ConvBNAct",
    "GlobalAvgPoolHead", "Inception", "InceptionNaive", "InvertedDropout", "LocalResponseNorm", "MaxPoolWithIndices",
    "MaxUnpoolUpsample", "Maxout", "PartialConv2d", "RBFOutput", "ScaledTanh", "SeparableConv2d",
    "TrainableSubsampling", "TransposedConvUpsample", "ZeroPadShortcut", "conv2d_im2col", "conv_output_size",
    "digit_prototypes", "im2col_matrix_shape", "lecun_uniform_", "make_activation", "make_norm", "make_shortcut",
    "require_min_input_size",
]
