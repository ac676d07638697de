"""``create_model(name, features_only=True, out_indices=...)``: timm's multi-stage backbones, on every zoo classifier.

``feature_info`` is measured on the meta device; here it is checked against real tensors of the real forward pass
(channels) and against how the real maps grow with the input (reduction = pixels per output pixel), and against
timm's published figures for ResNet-50 and EfficientNet-Lite0.
"""


import pytest
import torch
from helpers import has_lite0_package

from cnnkit.errors import CnnkitError, ConfigError
from cnnkit.models import create_model, get_model_entry, list_models
from cnnkit.models.features import FeatureExtractor
from cnnkit.transfer import stage_outputs

torch.set_num_threads(1)
# resnet1202 is resnet20..110's class at n=200 (test_models.py leaves it out for the same reason): 5 s a pass.
CLASSIFIERS = [n for n in list_models() if get_model_entry(n).task == "classification" and n != "resnet1202"]
STEP = 32  # two input sizes this far apart: a map of stride r (at most 32 in the zoo) grows by exactly 32 / r pixels


def _backbone_on_cpu(name: str) -> FeatureExtractor:
    # Built on meta (VGG's 100 M-parameter head takes seconds to initialise), then given real storage filled with
    # zeros (uninitialised memory can hold denormals, which make CPU arithmetic crawl): the shapes of the real
    # forward pass are what is checked, not the values. A model with index buffers (LeNet's partial C3
    # connections) needs their values, so it is built for real.
    with torch.device("meta"):
        backbone = create_model(name, features_only=True)
    if any(not b.is_floating_point() for n, b in backbone.named_buffers() if not n.endswith("num_batches_tracked")):
        return create_model(name, features_only=True).eval()
    backbone.to_empty(device="cpu")
    with torch.no_grad():
        for tensor in [*backbone.parameters(), *backbone.buffers()]:
            tensor.zero_()
    return backbone.eval()


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_feature_info_matches_the_real_maps(name):
    entry = get_model_entry(name)
    backbone = _backbone_on_cpu(name)
    size = max(entry.min_input_size, 32)
    with torch.no_grad():
        small = backbone(torch.zeros(1, entry.input_size[0], size, size))
        try:
            large = backbone(torch.zeros(1, entry.input_size[0], size + STEP, size + STEP))
        except CnnkitError:  # retina_net's dense layer is sized for 32x32 images
            large = None
    info = backbone.feature_info
    assert len(small) == len(info) >= 1
    assert [m.shape[1] for m in small] == info.channels()
    assert all(m.ndim == 4 and m.shape[0] == 1 for m in small)
    for index, reduction in enumerate(info.reduction()):
        if large is not None:
            assert (large[index].shape[2] - small[index].shape[2]) * reduction == STEP, (name, info[index])
        else:
            assert small[index].shape[2] * reduction == size, (name, info[index])


def test_reductions_and_channels_agree_with_timm():
    resnet = create_model("resnet50", features_only=True, out_indices=(1, 2, 3, 4))  # timm's stages 1..4
    assert resnet.feature_info.channels() == [256, 512, 1024, 2048]
    assert resnet.feature_info.reduction() == [4, 8, 16, 32]
    # timm's tf_efficientnet_lite0: the ends of the paper's stages 2, 3, 4, 6 and 8 (Table 1)
    lite0 = create_model("efficientnet_lite0", features_only=True, out_indices=(1, 2, 3, 5, 7))
    assert lite0.feature_info.channels() == [16, 24, 40, 112, 320]
    assert lite0.feature_info.reduction() == [2, 4, 8, 16, 32]
    assert [d["stage"] for d in lite0.feature_info] == ["stage2", "stage3", "stage4", "stage6", "stage8"]
    assert lite0.feature_info.module_name(0) == "_blocks.0"  # stage 2 is one block


def test_out_indices_pick_stages_lowest_first_and_count_negative_from_the_top():
    torch.manual_seed(0)
    model = create_model("resnet18").eval()
    backbone = FeatureExtractor(model, (3, 64, 64), out_indices=(-1, 2))
    assert backbone.out_indices == (2, 4)
    assert backbone.feature_info.module_name() == ["layer2", "layer4"]
    assert [d["stage"] for d in backbone.feature_info] == ["layer2", "layer4"]
    assert backbone.feature_info.channels(1) == 512 and backbone.feature_info.reduction([0]) == [8]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        maps = backbone(x)
        stem = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        layer2 = model.layer2(model.layer1(stem))
        layer4 = model.layer4(model.layer3(layer2))
    assert torch.equal(maps[0], layer2) and torch.equal(maps[1], layer4)
    assert torch.equal(stage_outputs(model, x, ["layer4"])["layer4"], layer4)  # the same path as transfer's


def test_a_backbone_keeps_the_models_parameter_names_and_trains():
    backbone = create_model("lenet5_relu", features_only=True, out_indices=(0,))
    assert "model.features.0.weight" in backbone.state_dict()
    maps = backbone(torch.randn(2, 1, 32, 32))
    maps[0].sum().backward()
    assert backbone.model.features[0].weight.grad is not None


def test_hook_stages_of_a_graph_model_serve_as_features():
    backbone = create_model("cifar_fast_cnn", features_only=True, out_indices=(-1,))
    assert backbone.feature_info.module_name() == ["blocks"]
    assert backbone.eval()(torch.randn(2, 3, 32, 32))[0].shape == (2, 256, 3, 3)  # 2x2 whitening, unpadded


@pytest.mark.parametrize("out_indices, message", [
    ((5,), r"5 is not a feature stage of resnet18, which has 5 \(0=stem, 1=layer1.*give integers 0..4"),
    ((-6,), "-6 is not a feature stage"),
    ((1, -4), "names a stage of resnet18 twice"),
    (("layer1",), "'layer1' is not a feature stage"),
])
def test_bad_out_indices_are_explained(out_indices, message):
    with pytest.raises(ConfigError, match=message):
        create_model("resnet18", features_only=True, out_indices=out_indices)


def test_models_without_a_backbone_say_what_to_do_instead():
    with pytest.raises(ConfigError, match="unet is a segmentation model, not a classifier.*stage_outputs"):
        create_model("unet", features_only=True)
    with pytest.raises(ConfigError, match="add features_only=True"):
        create_model("resnet18", out_indices=(1,))


def test_unknown_builder_arguments_are_named_with_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown argument 'dropp'\. Did you mean drop_rate\?.*takes drop_rate"):
        create_model("vgg11", dropp=0.1)
    # ResNet's builders pass their keywords on to the class: the class's complaint becomes the same kind of error
    with pytest.raises(ConfigError, match=r"create_model\('resnet18'\).*unexpected keyword argument 'widht'"):
        create_model("resnet18", widht=2)


@pytest.mark.skipif(not has_lite0_package(), reason="needs pip install 'cnnkit[pretrained]'")
def test_pretrained_efficientnet_lite0_backbone_feeds_its_own_classifier():
    backbone = create_model("efficientnet_lite0", pretrained="imagenet", features_only=True, out_indices=(-1,)).eval()
    model = backbone.model  # the whole pretrained classifier stays inside, its weights loaded
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        (top,) = backbone(x)
        logits = model._fc(top.mean(dim=(2, 3)))
        expected = model(x)
    assert top.shape == (1, 1280, 7, 7)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
