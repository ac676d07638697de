"""The building blocks of cnnkit.layers, each on its own."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from cnnkit.errors import ShapeError
from cnnkit.layers import (
    BasicBlock,
    Bottleneck,
    ClassicDropout,
    ConvBNAct,
    GlobalAvgPoolHead,
    Inception,
    InceptionNaive,
    InvertedDropout,
    LocalResponseNorm,
    Maxout,
    MaxPoolWithIndices,
    MaxUnpoolUpsample,
    SeparableConv2d,
    TransposedConvUpsample,
    conv2d_im2col,
    im2col_matrix_shape,
    make_shortcut,
)

torch.set_num_threads(1)


@settings(max_examples=25, deadline=None)
@given(
    groups=st.sampled_from([1, 2, 3]),
    channels_per_group=st.integers(1, 3),
    out_per_group=st.integers(1, 3),
    kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    size=st.tuples(st.integers(8, 12), st.integers(8, 12)),
    bias=st.booleans(),
)
def test_im2col_convolution_matches_torch(groups, channels_per_group, out_per_group, kernel, stride, padding,
                                          dilation, size, bias):
    torch.manual_seed(0)
    x = torch.randn(2, groups * channels_per_group, *size, dtype=torch.float64)
    weight = torch.randn(groups * out_per_group, channels_per_group, *kernel, dtype=torch.float64)
    b = torch.randn(groups * out_per_group, dtype=torch.float64) if bias else None
    expected = F.conv2d(x, weight, b, stride, padding, dilation, groups)
    assert torch.allclose(conv2d_im2col(x, weight, b, stride, padding, dilation, groups), expected)


def test_im2col_matrix_shape_and_errors():
    assert im2col_matrix_shape(64, 3, 56, 56) == (576, 3136)
    with pytest.raises(ShapeError, match="does not fit"):
        conv2d_im2col(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 5, 5))


def test_classic_dropout_scales_at_test_time_and_inverted_while_training():
    torch.manual_seed(0)
    x = torch.ones(200_000)
    classic, inverted = ClassicDropout(0.5), InvertedDropout(0.5)
    train_out = classic.train()(x)
    assert set(train_out.unique().tolist()) <= {0.0, 1.0}  # survivors are not rescaled
    assert torch.equal(classic.eval()(x), x * 0.5)  # test time: times the keep probability
    inverted_out = inverted.train()(x)
    assert set(inverted_out.unique().tolist()) <= {0.0, 2.0}
    assert torch.equal(inverted.eval()(x), x)
    # both keep the expected activation equal between training and test
    assert train_out.mean().item() == pytest.approx(classic.eval()(x).mean().item(), abs=0.01)
    assert inverted_out.mean().item() == pytest.approx(1.0, abs=0.01)


def test_maxout_is_the_max_of_affine_pieces():
    torch.manual_seed(0)
    layer = Maxout(4, 3, pieces=5)
    x = torch.randn(6, 4)
    pieces = layer.linear(x).view(6, 3, 5)
    assert torch.equal(layer(x), pieces.max(-1).values)
    assert sum(p.numel() for p in layer.parameters()) == (4 + 1) * 3 * 5


def test_local_response_norm_uses_the_papers_constants():
    torch.manual_seed(0)
    x = torch.rand(1, 8, 3, 3)
    out = LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)(x)
    i = 4  # b_i = a_i / (k + alpha * sum_{j=i-2..i+2} a_j^2)^beta
    expected = x[0, i] / (2.0 + 1e-4 * (x[0, i - 2:i + 3] ** 2).sum(0)) ** 0.75
    assert torch.allclose(out[0, i], expected)


def test_conv_bn_act_and_separable_convolution():
    block = ConvBNAct(8, 16, 3, stride=2)
    assert block(torch.randn(2, 8, 9, 9)).shape == (2, 16, 5, 5) and block.conv.bias is None
    separable = SeparableConv2d(32, 64, 3)
    assert sum(p.numel() for p in separable.parameters()) == 3 * 3 * 32 + 32 * 64  # vs 3*3*32*64 = 18,432
    assert separable(torch.randn(1, 32, 7, 7)).shape == (1, 64, 7, 7)


def test_inception_modules_concatenate_branches():
    naive = InceptionNaive(16, 4, 6, 2)
    assert naive(torch.randn(1, 16, 8, 8)).shape == (1, 4 + 6 + 2 + 16, 8, 8) and naive.out_channels == 28
    reduced = Inception(16, 4, 3, 6, 2, 5, 7)
    assert reduced(torch.randn(1, 16, 8, 8)).shape == (1, 4 + 6 + 5 + 7, 8, 8)
    assert reduced.branch5x5[1][0].kernel_size == (5, 5)


def test_residual_blocks_and_shortcut_options():
    x = torch.randn(2, 16, 8, 8)
    assert BasicBlock(16, 32, stride=2, shortcut="A")(x).shape == (2, 32, 4, 4)
    assert BasicBlock(16, 32, stride=2, shortcut="B")(x).shape == (2, 32, 4, 4)
    assert isinstance(make_shortcut(16, 16, 1, "B"), nn.Identity)
    assert isinstance(make_shortcut(16, 16, 1, "C")[0], nn.Conv2d)
    with pytest.raises(ValueError, match="'A', 'B' or 'C'"):
        make_shortcut(16, 32, 2, "D")
    assert Bottleneck(16, 8, stride=2)(x).shape == (2, 32, 4, 4)
    # a block whose residual branch outputs zero is the identity followed by ReLU
    block = BasicBlock(16, 16).eval()
    nn.init.zeros_(block.bn2.weight)
    assert torch.equal(block(x), F.relu(x))


def test_upsampling_blocks():
    x = torch.randn(1, 8, 6, 6)
    assert TransposedConvUpsample(8, 4, scale=2)(x).shape == (1, 4, 12, 12)
    pooled, indices = MaxPoolWithIndices(2)(x)
    up = MaxUnpoolUpsample(8, 8, 2)
    unpooled = up.unpool(pooled, indices)
    # every maximum goes back where it came from, the rest is zero
    assert torch.equal(unpooled.flatten(2).gather(2, indices.flatten(2)), pooled.flatten(2))
    assert (unpooled != 0).sum() == pooled.numel()
    assert up(pooled, indices).shape == (1, 8, 6, 6)


def test_global_average_pool_head_is_size_independent():
    head = GlobalAvgPoolHead(16, 10, drop_rate=0.2).eval()
    assert head(torch.randn(2, 16, 7, 7)).shape == head(torch.randn(2, 16, 3, 5)).shape == (2, 10)
