"""The notes' worked examples, reproduced by cnnkit.analysis.summary and cnnkit.layers (seeds 002-004)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.analysis import parse_input_size, summary
from cnnkit.errors import CnnkitError, ShapeError
from cnnkit.layers import Inception, InceptionNaive, conv_output_size


def test_ten_5x5_filters_on_32x32x3():
    report = summary(nn.Conv2d(3, 10, 5, stride=1, padding=2), (3, 32, 32))
    row = report.rows[0]
    assert row.output_shape == (10, 32, 32)
    assert row.params == 760 == report.totals["params"]  # (5*5*3 + 1) * 10
    assert row.receptive_field == 5 and row.jump == 1


@pytest.mark.parametrize("stride, side", [(1, 5), (2, 3)])
def test_7x7_input_3x3_filter(stride, side):
    assert conv_output_size(7, 3, stride) == side
    report = summary(nn.Conv2d(1, 1, 3, stride=stride), (1, 7, 7), strict=True)
    assert report.rows[0].output_shape == (1, side, side)


def test_7x7_input_3x3_filter_stride_3_does_not_fit():
    with pytest.raises(ShapeError, match="does not fit"):
        conv_output_size(7, 3, 3)
    with pytest.raises(ShapeError, match=r"stride 3 does not fit a 7x7 input.*2\.33"):
        summary(nn.Conv2d(1, 1, 3, stride=3), (1, 7, 7), strict=True)
    # torch itself silently floors; the lenient default reports what torch computes
    assert summary(nn.Conv2d(1, 1, 3, stride=3), (1, 7, 7)).rows[0].output_shape == (1, 2, 2)


def test_filter_larger_than_input_is_a_shape_error():
    with pytest.raises(ShapeError, match="5x5 window does not fit a 3x3"):
        summary(nn.Conv2d(1, 1, 5), (1, 3, 3))


def test_1x1_convolution_reduces_depth():
    row = summary(nn.Conv2d(64, 32, 1), (64, 56, 56)).rows[0]
    assert row.output_shape == (32, 56, 56)
    assert row.params == 64 * 32 + 32


def test_naive_inception_costs_854m_multiplies():
    report = summary(InceptionNaive(256, 128, 192, 96), (256, 28, 28))
    # 28*28*128*1*1*256 + 28*28*192*3*3*256 + 28*28*96*5*5*256
    assert report.totals["macs"] == 28 * 28 * (128 * 256 + 192 * 9 * 256 + 96 * 25 * 256) == 854_196_224
    assert report.totals["output_shape"] == (128 + 192 + 96 + 256, 28, 28)


def test_inception_with_reductions():
    report = summary(Inception(256, 128, 64, 192, 64, 96, 64), (256, 28, 28))
    terms = {
        "1x1 64 (3x3 reduce)": 28 * 28 * 64 * 256,
        "1x1 64 (5x5 reduce)": 28 * 28 * 64 * 256,
        "1x1 128": 28 * 28 * 128 * 256,
        "3x3 192": 28 * 28 * 192 * 3 * 3 * 64,
        "5x5 96": 28 * 28 * 96 * 5 * 5 * 64,
        "1x1 64 (pool proj)": 28 * 28 * 64 * 256,
    }
    assert report.totals["macs"] == sum(terms.values()) == 271_351_808
    # The notes (after CS231n) print "358M": their sum counts the 3x3 term twice. 271.35 M + 86.70 M = 358.05 M.
    assert round((sum(terms.values()) + terms["3x3 192"]) / 1e6) == 358
    assert report.totals["output_shape"] == (128 + 192 + 96 + 64, 28, 28)


def test_5x5_same_conv_200_maps_memory():
    report = summary(nn.Conv2d(3, 200, 5, padding=2), (3, 150, 100), batch_size=100)
    row = report.rows[0]
    assert row.output_shape == (200, 150, 100)
    assert row.macs == 225_000_000  # 15,000 positions x 200 maps x 75 inputs
    assert row.activation_bytes == 200 * 150 * 100 * 4 == 12_000_000  # 96 M bits
    assert round(row.activation_bytes / 2**20, 1) == 11.4  # "11.4 MB" (MiB)
    assert round(row.batch_activation_bytes / 2**30, 1) == 1.1  # "1 GB" for a batch of 100
    assert "11.44 MiB" in str(report) and "1.12 GiB" in str(report)


def test_alexnet_and_googlenet_parameters():
    alexnet = summary("alexnet").totals["params"]
    googlenet = summary("googlenet", aux_logits=False).totals["params"]
    assert 60e6 < alexnet < 61e6  # the notes' "60M"
    assert 8 < alexnet / googlenet < 12  # "10 times fewer parameters"


def test_vgg_parameter_table():
    # Simonyan & Zisserman Table 2 (millions): A 133, A-LRN 133, B 133, C 134, D 138, E 144
    expected = {"vgg11": 133, "vgg11_lrn": 133, "vgg13": 133, "vgg16_c": 134, "vgg16": 138, "vgg19": 144}
    for name, millions in expected.items():
        assert round(summary(name).totals["params"] / 1e6) == millions, name


def test_multiply_adds_of_he_et_al_figure_3():
    # "VGG-19 (19.6 billion FLOPs) ... 34 parameter layers (3.6 billion FLOPs)": multiply-adds in our terms
    assert round(summary("vgg19", "3x224x224").totals["macs"] / 1e9, 1) == 19.6
    plain = summary("plain34", "3x224x224").totals
    assert round(plain["macs"] / 1e9, 1) == 3.6
    # Fig. 4 / Table 2 compare with option-A shortcuts: no extra parameters and the same multiply-adds.
    residual_a = summary("resnet34", "3x224x224", shortcut="A").totals
    assert residual_a["macs"] == plain["macs"] and residual_a["params"] == plain["params"]
    # Option B's projections add 19 M multiply-adds (3.66 G, still the paper's "3.6 billion")
    assert 3.6e9 < summary("resnet34", "3x224x224").totals["macs"] < 3.7e9


def test_fully_connected_versus_convolution():
    with torch.device("meta"):  # 453 M weights: shapes only
        dense = nn.Sequential(nn.Flatten(), nn.Linear(128 * 128 * 3, 16 * 16 * 36), nn.Linear(16 * 16 * 36, 10))
        conv = nn.Sequential(nn.Conv2d(3, 36, 8, stride=8), nn.Flatten(), nn.Linear(16 * 16 * 36, 10))
    dense_report = summary(dense, (3, 128, 128))
    weights = sum(m.weight.numel() for m in dense if isinstance(m, nn.Linear))
    assert weights == 49152 * 9216 + 9216 * 10 == 453_076_992  # the notes count weights only
    assert dense_report.totals["params"] == 453_076_992 + 9216 + 10  # plus biases
    conv_report = summary(conv, (3, 128, 128))
    assert conv_report.rows[0].output_shape == (36, 16, 16)  # same hidden layer: 16x16x36
    assert conv_report.rows[0].params == 8 * 8 * 3 * 36 + 36 == 6_948
    assert conv_report.totals["params"] * 4000 < dense_report.totals["params"]


def test_sharpening_kernel_by_hand():
    kernel = torch.tensor([[0.0, -1, 0], [-1, 5, -1], [0, -1, 0]])
    image = torch.tensor([[7.0, 6, 5, 5, 6, 7], [6, 4, 3, 3, 4, 6], [5, 3, 2, 2, 3, 5],
                          [5, 3, 2, 2, 3, 5], [6, 4, 3, 3, 4, 6], [7, 6, 5, 5, 6, 7]])
    out = F.conv2d(image[None, None], kernel[None, None])[0, 0]
    # e.g. top-left: 5*4 - (6 + 6 + 3 + 3) = 2; centre: 5*2 - (3 + 3 + 2 + 2) = 0
    assert out.tolist() == [[2, 1, 1, 2], [1, 0, 0, 1], [1, 0, 0, 1], [2, 1, 1, 2]]
    assert summary(nn.Conv2d(1, 1, 3), (1, 6, 6)).rows[0].output_shape == (1, 4, 4)


def _x_image() -> torch.Tensor:
    image = -torch.ones(9, 9)
    for i in range(1, 8):
        image[i, i] = image[i, 8 - i] = 1
    return image


def test_x_or_o_convolution_relu_and_max_pooling():
    # seeds 002, "A simple example of classifying X or O": mean of products with three 3x3 +-1 features.
    diagonal = torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1]])
    cross = torch.tensor([[1.0, -1, 1], [-1, 1, -1], [1, -1, 1]])
    features = torch.stack([diagonal, cross, diagonal.flip(1)])[:, None] / 9
    maps = F.conv2d(_x_image()[None, None], features)[0]
    printed_first = [[0.77, -0.11, 0.11, 0.33, 0.55, -0.11, 0.33], [-0.11, 1.00, -0.11, 0.33, -0.11, 0.11, -0.11],
                     [0.11, -0.11, 1.00, -0.33, 0.11, -0.11, 0.55], [0.33, 0.33, -0.33, 0.55, -0.33, 0.33, 0.33],
                     [0.55, -0.11, 0.11, -0.33, 1.00, -0.11, 0.11], [-0.11, 0.11, -0.11, 0.33, -0.11, 1.00, -0.11],
                     [0.33, -0.11, 0.55, 0.33, 0.11, -0.11, 0.77]]
    truncated = torch.trunc(maps * 100 + 1e-4 * maps.sign()) / 100  # the notes truncate to two decimals
    assert torch.allclose(truncated[0], torch.tensor(printed_first))
    assert torch.allclose(truncated[2], torch.tensor(printed_first).flip(1))
    pooled = F.max_pool2d(F.relu(maps), 2, 2, ceil_mode=True)  # 7x7 -> 4x4: the last window hangs over
    printed_pooled = [
        [[1.00, 0.33, 0.55, 0.33], [0.33, 1.00, 0.33, 0.55], [0.55, 0.33, 1.00, 0.11], [0.33, 0.55, 0.11, 0.77]],
        [[0.55, 0.33, 0.55, 0.33], [0.33, 1.00, 0.55, 0.11], [0.55, 0.55, 0.55, 0.11], [0.33, 0.11, 0.11, 0.33]],
        [[0.33, 0.55, 1.00, 0.77], [0.55, 0.55, 1.00, 0.33], [1.00, 1.00, 0.11, 0.55], [0.77, 0.33, 0.55, 0.33]],
    ]
    assert torch.allclose(torch.trunc(pooled * 100 + 1e-4) / 100, torch.tensor(printed_pooled))


def test_max_and_average_pooling_examples():
    # seeds 003 "Pooling layers": 3x3 windows with stride 2 over a 5x5 map; the notes print 8, 9 and 12 (the
    # cells the slide leaves blank are taken as 0 here).
    grid = torch.tensor([[5.0, 3, 8, 9, 3], [1, 3, 2, 4, 0], [5, 0, 7, 5, 6], [4, 6, 12, 0, 0], [1, 8, 5, 0, 0]])
    pooled = F.max_pool2d(grid[None, None], 3, 2)[0, 0]
    assert pooled[0].tolist() == [8, 9] and pooled[1, 0] == 12
    averaged = F.avg_pool2d(grid[None, None], 3, 2)[0, 0]
    assert averaged[0, 0] == pytest.approx((5 + 3 + 8 + 1 + 3 + 2 + 5 + 0 + 7) / 9)
    assert summary(nn.MaxPool2d(3, 2), (1, 5, 5), strict=True).rows[0].output_shape == (1, 2, 2)


def test_receptive_field_and_jump_of_a_stack():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 3, dilation=2))
    rows = summary(model, (1, 32, 32)).rows
    assert [(r.receptive_field, r.jump) for r in rows] == [(3, 1), (4, 2), (8, 2), (16, 2)]


def test_where_each_receptive_field_starts():
    """The centre of output 0's field, by the notes' arithmetic: start_out = start_in + ((k - 1) / 2 - p) * j_in,
    and explicit padding (F.pad) moves it back by the pixels added on the left."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 5, 2, 2))
    rows = summary(model, (1, 32, 32)).rows
    assert [r.receptive_start for r in rows] == [0.0, 0.5, 2.5, 2.5]

    class PadThenConv(nn.Module):  # TensorFlow "same" padding of a stride-2 layer: one pixel, on the right
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, 2)

        def forward(self, x):
            return self.conv(F.pad(x, (0, 1, 0, 1)))

    row = summary(PadThenConv(), (1, 8, 8)).rows[0]
    assert (row.receptive_field, row.jump, row.receptive_start) == (3, 2, 1.0)
    shifted = summary(nn.Sequential(nn.ZeroPad2d((2, 0, 2, 0)), nn.Conv2d(1, 1, 3)), (1, 8, 8)).rows[1]
    assert shifted.receptive_start == -1.0  # output 0 sees pixels -2..0 of the unpadded input


def test_im2col_matrix_size_is_reported():
    row = summary(nn.Conv2d(3, 8, 3, padding=1), (3, 32, 32)).rows[0]
    assert row.im2col_shape == (27, 1024)  # 3*3*3 rows, one column per output position
    assert row.im2col_bytes == 27 * 1024 * 4


def test_summary_rows_totals_and_text():
    report = summary("resnet20", "3x32x32", batch_size=128)
    assert report.totals["params"] == sum(r.params for r in report.rows)
    assert report.totals["macs"] == sum(r.macs for r in report.rows)
    assert report.rows[0].name == "conv1" and report.totals["output_shape"] == (10,)
    assert 40e6 < report.totals["macs"] < 42e6  # ResNet-20 on CIFAR: ~41 M multiply-adds
    text = str(report)
    assert "layer1.0.conv1" in text and "multiply-accumulates" in text and "batch of 128" in text


def test_frozen_parameters_are_counted_apart():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    model[0].requires_grad_(False)
    totals = summary(model, (1, 8, 8)).totals
    assert totals["frozen_params"] == 20 and totals["trainable_params"] == 72 * 3 + 3


def test_input_size_parsing_and_errors():
    assert parse_input_size("3x224x224") == (3, 224, 224)
    assert parse_input_size(32) == (32, 32)
    with pytest.raises(CnnkitError, match="CxHxW"):
        parse_input_size("three")
    with pytest.raises(ShapeError, match="at least 67x67"):
        summary("alexnet", "3x32x32")
    assert summary("lenet5", "32x32").totals["output_shape"] == (10,)  # channels from the registry


def test_lenet5_c3_counts_the_connections_of_table_i():
    # LeCun et al. 1998, section II.B: C3 has 1,516 trainable parameters and 151,600 connections; the whole
    # network 340,908 connections. A connection is a multiply-add or a bias (or, in S2/S4, one of the 2x2 inputs
    # of the trainable subsampling unit plus its bias).
    report = summary("lenet5")
    c3 = report.row("features.c3")
    assert c3.params == 1_516
    assert c3.macs == 60 * 25 * 10 * 10 == 150_000  # the 60 kernels of Table I, not the dense 96 (240,000)
    assert c3.macs + 16 * 10 * 10 == 151_600

    def outputs(name):
        return math.prod(report.row(name).output_shape)

    weighted = {"features.c1": 122_304, "features.c3": 151_600, "features.c5": 48_120, "classifier.f6": 10_164}
    for name, connections in weighted.items():
        assert report.row(name).macs + outputs(name) == connections, name  # multiply-adds + one bias each
    subsampling = {name: (2 * 2 + 1) * outputs(name) for name in ("features.s2", "features.s4")}
    assert subsampling == {"features.s2": 5_880, "features.s4": 2_000}
    rbf = report.row("classifier.output").macs  # 84 x 10 squared differences
    assert sum(weighted.values()) + sum(subsampling.values()) + rbf == 340_908
    assert report.totals["macs"] == sum(row.macs for row in report.rows) == 326_520
    # The modernised LeNet has a dense C3 and keeps the dense count.
    assert summary("lenet5_relu").row("features.3").macs == 240_000


def test_calculator_total_is_flop_counter_total_but_for_sparse_layers():
    # Cross-check: torch's FlopCounterMode around a plain forward call (no hooks, no functional_call), on the
    # meta device for the ResNets (shapes only) and on real tensors for LeNet-5.
    from torch.utils.flop_counter import FlopCounterMode

    from cnnkit.models import create_model

    cases = (("resnet50", {}, (3, 224, 224), "meta", 0), ("resnet50", {"stride_on": "1x1"}, (3, 224, 224), "meta", 0),
             ("lenet5", {}, (1, 32, 32), "cpu", 240_000 - 150_000))  # C3 runs as a dense 6 -> 16 convolution
    for name, kwargs, size, device, dense_extra in cases:
        with torch.device(device):
            model = create_model(name, **kwargs).eval()
            x = torch.randn(1, *size)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(x)
        assert counter.get_total_flops() // 2 == summary(name, size, **kwargs).totals["macs"] + dense_extra, name


def _bottleneck_resnet_macs(blocks, stride_on_1x1: bool, side: int = 224) -> int:
    """He et al. 2015, Table 1 counted by hand: every convolution's k*k*C_in*C_out*H_out*W_out, plus the fc."""
    macs = 7 * 7 * 3 * 64 * (side // 2) ** 2
    size, channels = side // 4, 64  # after conv1 (stride 2) and the max pool (stride 2)
    for stage, (width, count) in enumerate(zip((64, 128, 256, 512), blocks)):
        stride = 1 if stage == 0 else 2
        out_size = size // stride
        for block in range(count):
            first = block == 0
            reduce_size = size if first and not stride_on_1x1 else out_size  # where the first 1x1 runs
            macs += channels * width * reduce_size ** 2  # 1x1 reduce
            macs += 9 * width * width * out_size ** 2  # 3x3
            macs += width * 4 * width * out_size ** 2  # 1x1 expand
            if first:
                macs += channels * 4 * width * out_size ** 2  # projection shortcut (option B)
            channels, size = 4 * width, out_size
    return macs + 2048 * 1000


@pytest.mark.parametrize("depth, blocks, paper, v1, v1_5", [
    (50, (3, 4, 6, 3), 3.8, 3.86, 4.09),
    (101, (3, 4, 23, 3), 7.6, 7.57, 7.80),
    (152, (3, 8, 36, 3), 11.3, 11.28, 11.51),
])
def test_resnet_stride_placements_v1_and_v1_5(depth, blocks, paper, v1, v1_5):
    paper_placement = summary(f"resnet{depth}_v1").totals
    torchvision_placement = summary(f"resnet{depth}").totals
    assert paper_placement["macs"] == _bottleneck_resnet_macs(blocks, stride_on_1x1=True)
    assert torchvision_placement["macs"] == _bottleneck_resnet_macs(blocks, stride_on_1x1=False)
    assert round(paper_placement["macs"] / 1e9, 2) == v1 and abs(paper_placement["macs"] / 1e9 - paper) < 0.07
    assert round(torchvision_placement["macs"] / 1e9, 2) == v1_5
    assert paper_placement["params"] == torchvision_placement["params"]


def test_googlenet_inception_costs_match_table_1():
    # Szegedy et al. 2014, Table 1, "ops" column (millions of multiply-adds at 224x224), per inception module.
    # The table rounds to the nearest million except 4a (73.6 M printed as 73 M) and 5a, printed 54 M although
    # its own filter counts (7x7x832 in; 256, 160->320, 32->128, pool 128) give 51.08 M.
    table = {"inception3a": 128, "inception3b": 304, "inception4a": 73, "inception4b": 88, "inception4c": 100,
             "inception4d": 119, "inception4e": 170, "inception5a": 54, "inception5b": 71}
    report = summary("googlenet", aux_logits=False)
    measured = {name: sum(r.macs for r in report.rows if r.name.startswith(name + ".")) for name in table}
    for name, millions in table.items():
        if name != "inception5a":
            assert abs(measured[name] / 1e6 - millions) < 1, name
    assert measured["inception5a"] == 49 * (832 * 256 + 832 * 160 + 9 * 160 * 320 + 832 * 32 + 25 * 32 * 128
                                           + 832 * 128)


def test_a_layer_called_through_a_container_made_per_call_keeps_its_macs():
    """torch's flop counter files a layer's FLOPs under the path it was called through; a container built in
    forward (as features_only backbones and stage wrappers do) gives a path no row has. The rows must still
    carry each convolution's multiply-adds, and add up to the total."""

    class WrapsPerCall(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.body = nn.Conv2d(8, 16, 3, padding=1)

        def forward(self, x):
            return self.body(nn.Sequential(self.stem, nn.ReLU())(x))

    report = summary(WrapsPerCall(), (3, 10, 10))
    macs = {row.name: row.macs for row in report.rows}
    assert macs["stem"] == 8 * 3 * 9 * 100
    assert macs["body"] == 16 * 8 * 9 * 100
    assert report.totals["macs"] == macs["stem"] + macs["body"]
