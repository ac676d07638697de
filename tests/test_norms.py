"""Normalisation beyond batch norm (cnnkit.layers.norm): what each kind normalises over, which depend on the
rest of the batch, the networks that take ``norm=``, the texture generator's instance norm, and that the
defaults still build the batch-norm networks existing weights were saved from."""

import json

import pytest
import torch
import torch.nn.functional as F
from references import akamaster_resnet
from torch import nn

from cnnkit.cli.common import parse_model_args
from cnnkit.layers import NORMS, BasicBlock, Bottleneck, ConvBNAct, make_norm
from cnnkit.layers.norm import resolve_norm
from cnnkit.models import create_model
from cnnkit.texture import TextureGenerator, load_texture_generator, save_texture_generator

BATCH_INDEPENDENT = ("group", "layer", "instance", "none")


def maps(batch=4, channels=8, size=5, seed=0):
    # Offset and scaled per channel, so that an unnormalised output would fail every check below.
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, size, size, generator=g) * 3 + torch.arange(channels).view(1, -1, 1, 1)


def test_group_norm_normalises_each_sample_and_group_of_channels():
    x = maps()
    y = make_norm("group", 8, groups=2).train()(x)
    grouped = y.view(4, 2, 4 * 5 * 5)  # (sample, group, the group's 4 channels x 5 x 5 values)
    assert torch.allclose(grouped.mean(-1), torch.zeros(4, 2), atol=1e-5)
    assert torch.allclose(grouped.var(-1, unbiased=False), torch.ones(4, 2), atol=1e-3)
    # ... and not each channel on its own: a channel's mean stays off zero where its group's is zero
    assert y.mean(dim=(2, 3)).abs().max() > 0.1


def test_layer_and_instance_norm_match_torch_functional_references():
    x = maps()
    assert torch.allclose(make_norm("layer", 8)(x), F.layer_norm(x, x.shape[1:]), atol=1e-5)
    assert torch.allclose(make_norm("instance", 8)(x), F.instance_norm(x), atol=1e-5)
    # same numbers as nn.InstanceNorm2d(affine=True) in both modes (it keeps no running statistics)
    reference = nn.InstanceNorm2d(8, affine=True)
    for mode in (True, False):
        assert torch.allclose(make_norm("instance", 8).train(mode)(x), reference.train(mode)(x), atol=1e-5)


def test_batch_norm_normalises_each_channel_over_the_batch():
    y = make_norm("batch", 8).train()(maps())
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(8), atol=1e-5)
    assert isinstance(make_norm("none", 8), nn.Identity)


@pytest.mark.parametrize("kind", NORMS)
def test_only_batch_norm_makes_a_sample_depend_on_the_rest_of_its_batch(kind):
    norm = make_norm(kind, 8, groups=4).train()
    x = maps()
    alone = norm(x[:1])
    with_others = norm(torch.cat([x[:1], maps(seed=1)[1:]]))[:1]
    same = torch.allclose(alone, with_others, atol=1e-5)
    assert same == (kind in BATCH_INDEPENDENT)


def test_bad_kinds_and_group_counts_say_what_would_work():
    with pytest.raises(ValueError, match="norm must be one of batch, group, layer, instance, none, not 'grop'"):
        make_norm("grop", 8)
    with pytest.raises(ValueError, match=r"divides the 16 channels, got groups=32; use e.g. groups=8") as error:
        make_norm("group", 16)
    suggested = int(str(error.value).split("groups=")[2].split(" ")[0])
    assert isinstance(make_norm("group", 16, groups=suggested), nn.GroupNorm)
    with pytest.raises(ValueError, match="groups=3; use e.g. groups=2"):
        make_norm("group", 8, groups=3)
    with pytest.raises(ValueError, match="group norm needs"):
        make_norm("group", 8, groups=0)


def test_batch_norm_false_is_norm_none_and_contradictions_are_refused():
    assert resolve_norm("batch", batch_norm=False) == "none"
    assert resolve_norm("group", batch_norm=True) == "group"
    with pytest.raises(ValueError, match="batch_norm=False asks for no normalisation but norm='group'"):
        BasicBlock(8, 8, batch_norm=False, norm="group")
    plain = create_model("plain20", batch_norm=False).state_dict()
    assert plain.keys() == create_model("plain20", norm="none").state_dict().keys()
    assert not any("running_mean" in key for key in plain)


@pytest.mark.parametrize("kind", NORMS)
def test_blocks_take_every_norm_and_keep_a_conv_bias_only_without_one(kind):
    x = maps(2, 16, 6)
    for block in (BasicBlock(16, 32, stride=2, shortcut="B", norm=kind, norm_groups=8),
                  Bottleneck(16, 8, stride=2, norm=kind, norm_groups=8),
                  ConvBNAct(16, 32, stride=2, norm=kind, norm_groups=8)):
        assert block.train()(x).shape == (2, 32, 3, 3)
        convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
        assert all((conv.bias is not None) == (kind == "none") for conv in convs)
        norms = [m for m in block.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
        assert len(norms) == (0 if kind == "none" else len(convs))
        assert all(isinstance(m, nn.BatchNorm2d) == (kind == "batch") for m in norms)


@pytest.mark.parametrize("kind", NORMS)
@pytest.mark.parametrize("model_name", ["resnet20", "mnist_fast_cnn"])
def test_zoo_networks_build_and_learn_with_every_norm(model_name, kind):
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=3, in_channels=1, norm=kind)
    size = 12 if model_name == "resnet20" else 28  # the CIFAR ResNet takes any size; small keeps it fast
    x, y = torch.randn(4, 1, size, size), torch.tensor([0, 1, 2, 0])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(10):  # the same four images: any working network drives the loss down
        loss = F.cross_entropy(model.train()(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    group_norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    expected_groups = {"group": {8}, "layer": {1}}.get(kind)
    if expected_groups:
        assert {m.num_groups for m in group_norms} == expected_groups
    if kind == "instance":
        assert all(m.num_groups == m.num_channels for m in group_norms) and group_norms


def test_imagenet_resnet_takes_group_norm_with_wu_and_hes_32_groups():
    model = create_model("resnet18", num_classes=5, norm="group")
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
    assert norms and all(isinstance(m, nn.GroupNorm) and m.num_groups == 32 for m in norms)
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 5)


@pytest.mark.parametrize("kind", ["batch", "group"])
def test_cifar_resnet_zero_init_residual_starts_every_block_as_its_shortcut(kind):
    # Wu & He's setting (after Goyal et al.): each block's last norm at scale 0, so a block's output is
    # relu(shortcut(x)) at the start, whichever norm; the default keeps the paper's scale of 1.
    model = create_model("resnet20", norm=kind, zero_init_residual=True).eval()
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 9 and all(torch.all(block.bn2.weight == 0) for block in blocks)
    x = torch.rand(2, 16, 8, 8)
    with torch.no_grad():
        torch.nn.init.normal_(blocks[0].bn2.bias, std=0)  # the shift starts at 0 too
        assert torch.equal(blocks[0](x), torch.relu(blocks[0].shortcut(x)))
    default = create_model("resnet20", norm=kind)
    assert all(torch.all(m.bn2.weight == 1) for m in default.modules() if isinstance(m, BasicBlock))


def test_model_arg_from_the_command_line_selects_the_norm():
    kwargs = parse_model_args(["norm=group", "norm_groups=4"])
    model = create_model("resnet20", **kwargs)
    assert {m.num_groups for m in model.modules() if isinstance(m, nn.GroupNorm)} == {4}
    assert model.cnnkit_config["kwargs"] == {"norm": "group", "norm_groups": 4}  # what checkpoint.json records
    with pytest.raises(ValueError, match="norm must be one of"):
        create_model("resnet20", norm="groups")


def test_default_networks_keep_the_batch_norm_state_dicts_of_saved_weights():
    # The defaults must stay the networks existing run folders and imported checkpoints hold: compare with an
    # independent reference (the akamaster CIFAR ResNet, whose checkpoints cnnkit imports).
    reference = {key.replace("linear.", "head.fc."): value.shape
                 for key, value in akamaster_resnet.resnet(20, num_classes=10).state_dict().items()}
    default = {key: value.shape for key, value in create_model("resnet20").state_dict().items()}
    assert default == reference
    explicit = create_model("resnet20", norm="batch", batch_norm=True).state_dict()
    assert {key: value.shape for key, value in explicit.items()} == default
    fast = create_model("mnist_fast_cnn").state_dict()
    assert "features.0.2.running_mean" in fast and "features.0.0.bias" not in fast


def test_texture_generator_uses_instance_norm_so_samples_do_not_depend_on_each_other():
    torch.manual_seed(0)
    generator = TextureGenerator(scales=3, width=4)
    norms = [m for m in generator.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
    assert norms and all(isinstance(m, nn.GroupNorm) and m.num_groups == m.num_channels for m in norms)
    noise = generator.noise(3, 16, 16, torch.Generator().manual_seed(1))
    # In training mode too (where the 2016 batch-norm generator mixes the batch): the first sample is the same
    # whether it is generated alone or with others.
    together = generator.train()([z for z in noise])[:1]
    alone = generator([z[:1] for z in noise])
    assert torch.allclose(together, alone, atol=1e-5)
    torch.manual_seed(0)
    batch_generator = TextureGenerator(scales=3, width=4, norm="batch").train()
    assert not torch.allclose(batch_generator(noise)[:1], batch_generator([z[:1] for z in noise]), atol=1e-5)
    with pytest.raises(ValueError, match="'instance' .* or 'batch'"):
        TextureGenerator(norm="group")
    # a texture smaller than the coarsest scale: instance norm still sees 2x2 maps there, in training too
    assert generator.train()(generator.noise(1, 3, 3)).shape == (1, 3, 8, 8)
    assert generator.sample(3, 5).shape == (1, 3, 3, 5)


def test_generator_files_from_before_the_norm_choice_load_as_batch_norm(tmp_path):
    from safetensors.torch import load_file, save_file

    generator = TextureGenerator(scales=3, width=4, norm="batch").eval()
    path = save_texture_generator(generator, tmp_path / "new.safetensors")
    assert type(load_texture_generator(path).norms[0]) is nn.BatchNorm2d
    # An older file: the same tensors, a config without "norm".
    old_config = {k: v for k, v in generator.config.items() if k != "norm"}
    save_file(load_file(str(path)), str(tmp_path / "old.safetensors"),
              metadata={"cnnkit": "texture_generator", "config": json.dumps(old_config)})
    loaded = load_texture_generator(tmp_path / "old.safetensors")
    assert torch.equal(loaded.sample(16, 16, seed=2), generator.sample(16, 16, seed=2))
    instance = save_texture_generator(TextureGenerator(scales=3, width=4), tmp_path / "instance.safetensors")
    assert isinstance(load_texture_generator(instance).norms[0], nn.GroupNorm)
