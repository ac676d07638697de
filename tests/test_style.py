"""Style transfer and texture synthesis: the notes' losses on hand-computed tensors, and small real runs."""

import pytest
import torch

from cnnkit.cli import main
from cnnkit.errors import CnnkitError, ImageError, UnknownNameError
from cnnkit.texture import TextureGenerator, load_texture_generator, save_texture_generator, train_texture_generator
from cnnkit.style import (
    EfficientNetDescriptor,
    StyleConfig,
    VGGDescriptor,
    content_loss,
    gram_matrix,
    save_image,
    smooth_activations,
    style_layer_loss,
    style_loss,
    stylize,
    synthesize_texture,
)


@pytest.fixture(scope="module")
def lite0():
    return EfficientNetDescriptor()


def test_gram_matrix_is_f_f_transpose():
    # two maps (N=2) of 3 positions (M=3): F = [[1, 2, 3], [0, 1, -1]]
    features = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, -1.0]]).view(1, 2, 1, 3)
    # G_11 = 1+4+9, G_12 = 0+2-3, G_22 = 0+1+1
    assert torch.equal(gram_matrix(features), torch.tensor([[[14.0, -1.0], [-1.0, 2.0]]]))


def test_content_loss_is_half_the_squared_error():
    f = torch.tensor([1.0, 2.0, 3.0])
    p = torch.tensor([0.0, 2.0, 5.0])
    assert content_loss(f, p).item() == pytest.approx(0.5 * (1 + 0 + 4))


def test_style_layer_loss_uses_the_notes_normalisation():
    gram = torch.tensor([[14.0, -1.0], [-1.0, 2.0]])
    target = torch.tensor([[10.0, 1.0], [1.0, 2.0]])
    # sum (G - A)^2 = 16 + 4 + 4 + 0 = 24; N = 2 maps, M = 3 positions: 24 / (4 * 4 * 9)
    assert style_layer_loss(gram, target, num_maps=2, map_size=3).item() == pytest.approx(24 / 144)


def test_style_loss_weights_the_layers():
    a = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, -1.0]]).view(1, 2, 1, 3)
    b = torch.ones(1, 1, 2, 2)
    targets = {"a": torch.zeros(1, 2, 2), "b": torch.zeros(1, 1, 1)}
    e_a = (14**2 + 1 + 1 + 2**2) / (4 * 4 * 9)
    e_b = 4**2 / (4 * 1 * 16)  # G = [[4]], N = 1, M = 4
    loss = style_loss({"a": a, "b": b}, targets, {"a": 0.25, "b": 2.0})
    assert loss.item() == pytest.approx(0.25 * e_a + 2.0 * e_b)


def test_smoothing_bounds_peaks_and_softmax_keeps_the_mean_at_one():
    features = torch.tensor([0.1, 0.2, 40.0, -0.3]).view(1, 1, 2, 2)
    tanh = smooth_activations(features, "tanh", scale=2.0)
    assert tanh.abs().max() <= 2.0 and tanh.flatten()[0] == pytest.approx(0.1, rel=1e-2)  # linear for small values
    soft = smooth_activations(torch.randn(2, 3, 4, 5), "softmax", scale=1.0)
    assert torch.allclose(soft.mean(dim=(2, 3)), torch.ones(2, 3))
    with pytest.raises(UnknownNameError):
        smooth_activations(features, "gaussian")


def test_texture_synthesis_lowers_the_style_loss(lite0):
    style = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    style[:, ::6] = 0.0  # stripes: a texture with structure for the loss to find
    config = StyleConfig(iterations=8, scales=(1.0,), tv_weight=0.0)
    image, history = synthesize_texture(style, 24, 30, config, lite0)
    assert image.shape == (3, 24, 30)
    assert history[-1]["style"] < 0.5 * history[0]["style"]


def test_stylize_returns_the_requested_size_and_both_losses(lite0):
    generator = torch.Generator().manual_seed(1)
    content, style = torch.rand(3, 40, 60, generator=generator), torch.rand(3, 50, 50, generator=generator)
    config = StyleConfig(size=48, iterations=6, scales=(0.5, 1.0), preserve_color=True)
    image, history = stylize(content, [style, style.flip(-1)], config, lite0, style_weights=[2, 1])
    assert image.shape == (3, 32, 48)  # longer side 48, content's aspect ratio
    sizes = [row["size"] for row in history]
    # coarse to fine; the coarse scale gets more evaluations (L-BFGS's line search may add a few)
    assert sizes == sorted(sizes) and sizes.count(24) >= 4 and sizes.count(48) >= 2
    assert history[-1]["content"] > 0 and history[-1]["style"] > 0


def test_a_layer_the_descriptor_lacks_is_named_with_the_valid_ones(lite0):
    config = StyleConfig(size=32, iterations=1, style_layers=["blocks.4", "relu4_1"])
    with pytest.raises(UnknownNameError, match=r"no layer 'relu4_1'.*Valid names: .*blocks\.0"):
        stylize(torch.rand(3, 32, 32), torch.rand(3, 32, 32), config, lite0)


def test_vgg_descriptor_loads_torchvision_features_and_names_layers_like_the_paper(tmp_path):
    from safetensors.torch import save_file

    from cnnkit.models.vgg import VGG_CONFIGS, _make_features

    torch.manual_seed(0)
    reference = _make_features(VGG_CONFIGS["D"], 3, batch_norm=False)
    save_file({f"features.{k}": v for k, v in reference.state_dict().items()}, str(tmp_path / "vgg16.safetensors"))
    descriptor = VGGDescriptor(16, tmp_path / "vgg16.safetensors")
    assert torch.equal(descriptor.features[0].weight, reference[0].weight)
    names = descriptor.layer_names
    assert names[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert "relu4_2" in names and "relu5_3" in names and "relu5_4" not in names
    features = descriptor(torch.rand(1, 3, 32, 32), ["relu1_1", "relu3_1"])
    assert features["relu1_1"].shape == (1, 64, 32, 32) and features["relu3_1"].shape == (1, 256, 8, 8)


def test_vgg_without_or_with_wrong_weights_says_what_to_do(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(CnnkitError, match="--weights FILE"):
        VGGDescriptor(19)
    save_file({"features.0.weight": torch.zeros(64, 3, 3, 3)}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(CnnkitError, match="does not hold vgg19 features in torchvision's layout"):
        VGGDescriptor(19, tmp_path / "partial.safetensors")


def test_texture_generator_samples_any_size_and_round_trips(lite0, tmp_path):
    generator = TextureGenerator(scales=3, width=4)
    style = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(2))
    generator, history = train_texture_generator(style, lite0, iterations=2, size=24, batch_size=1,
                                                 generator=generator)
    assert len(history) == 2
    samples = generator.sample(37, 50, count=2, seed=3)
    assert samples.shape == (2, 3, 37, 50) and 0 <= samples.min() and samples.max() <= 1
    path = save_texture_generator(generator, tmp_path / "gen.safetensors")
    assert torch.equal(load_texture_generator(path).sample(37, 50, count=2, seed=3), samples)


def test_cli_stylize_writes_the_image_and_rejects_bad_input(tmp_path, capsys):
    content, style = tmp_path / "content.png", tmp_path / "style.png"
    save_image(torch.rand(3, 30, 40), content)
    save_image(torch.rand(3, 30, 30), style)
    out = tmp_path / "out.png"
    assert main(["stylize", str(content), str(style), "-o", str(out), "--size", "32", "--iterations", "2",
                 "--loss-csv", str(tmp_path / "loss.csv"), "--snapshots", str(tmp_path / "snaps"),
                 "--snapshot-every", "1"]) == 0
    assert out.is_file() and len((tmp_path / "loss.csv").read_text().splitlines()) >= 3  # header + evaluations
    assert (tmp_path / "snaps" / "step00001.png").is_file()
    assert main(["stylize", str(content), str(style), "-o", str(tmp_path / "adam.png"), "--size", "16",
                 "--iterations", "2", "--optimizer", "adam", "--init", "noise", "--scales", "1"]) == 0

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    assert main(["stylize", str(content), str(broken), "-o", str(out)]) == 2
    assert "broken.jpg is not a readable image" in capsys.readouterr().err
    assert main(["stylize", str(content), str(style), "-o", str(out), "--style-layers", "conv9"]) == 2
    assert "no layer 'conv9'" in capsys.readouterr().err


def test_unreadable_image_raises_image_error(tmp_path):
    from cnnkit.style import load_image

    with pytest.raises(ImageError, match="no such image file"):
        load_image(tmp_path / "missing.png")


def test_cli_texture_trains_a_generator_then_samples_it(tmp_path, capsys):
    style = tmp_path / "style.png"
    save_image(torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(4)), style)
    generator_file = tmp_path / "gen.safetensors"
    assert main(["texture", str(style), "--feedforward", "--train-iterations", "1", "--train-size", "16",
                 "--save-generator", str(generator_file), "-o", str(tmp_path / "a.png"), "--size", "16"]) == 0
    assert main(["texture", "--generator", str(generator_file), "--height", "20", "--width", "36", "--count", "2",
                 "-o", str(tmp_path / "b.png")]) == 0
    from PIL import Image

    assert Image.open(tmp_path / "b.png").size == (72, 20)  # two samples side by side
    assert main(["texture", "-o", str(tmp_path / "c.png")]) == 2
    assert "Give the texture image" in capsys.readouterr().err
