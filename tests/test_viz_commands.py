"""The functions behind `cnnkit viz SUBCOMMAND`: each writes its PNG into the output folder."""

import json

import pytest
import torch
from PIL import Image

from cnnkit.errors import UnknownNameError
from cnnkit.models.registry import create_model
from cnnkit.viz import commands
from viz_support import single_thread, single_thread_for_module_fixtures  # noqa: F401


@pytest.fixture
def model():
    torch.manual_seed(0)
    return create_model("lenet5_relu", num_classes=3)


@pytest.fixture
def digit(tmp_path):
    image = Image.new("L", (28, 28), 0)
    image.paste(255, (12, 4, 16, 24))  # a "1"
    path = tmp_path / "digit.png"
    image.save(path)
    return path


def batches(count: int = 24):
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(count, 1, 32, 32, generator=generator)
    labels = torch.randint(0, 3, (count,), generator=generator)
    return [(images[start:start + 8], labels[start:start + 8]) for start in range(0, count, 8)]


def test_image_commands_write_their_pictures(model, digit, tmp_path):
    out = tmp_path / "out"
    commands.filters(model, out, before=create_model("lenet5_relu", num_classes=3))
    maps = commands.maps(model, [digit, digit], out, mean=[0.1307], std=[0.3081])
    assert list(maps) == commands.default_map_layers(model, torch.zeros(1, 1, 32, 32)) == [
        "features.0", "features.3", "features.6"]
    commands.maximize(model, [0, 2], out, layer="features.3", steps=3)
    commands.maximize(model, [1], out, target="logit", steps=2, class_names=["zero", "one", "two"])
    result = commands.saliency(model, [digit], out, target=1, class_names=["zero", "one", "two"])
    assert result["target"].tolist() == [1]
    result = commands.gradcam(model, [digit], out)
    assert result["gradcam"].shape == (1, 32, 32)
    # The last convolution, features.6 (C5), outputs 1x1 maps; Grad-CAM defaults to the one before it.
    assert commands.default_gradcam_layer(model, torch.zeros(1, 1, 32, 32)) == "features.3"
    for name in ("filters", "maps_0", "maps_1", "maximize", "saliency", "gradcam"):
        assert (out / f"{name}.png").stat().st_size > 0


def test_maps_rejects_an_unknown_layer_before_working(model, digit, tmp_path):
    with pytest.raises(UnknownNameError, match="features.6"):
        commands.maps(model, [digit], tmp_path, layers=["features.0", "feature.6"])


def test_data_commands_write_pictures_and_numbers(model, tmp_path):
    (tmp_path / "run").mkdir()
    header = "epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds"
    (tmp_path / "run" / "metrics.csv").write_text(f"{header}\n1,1,0.5,1,0.5,0.1,1\n")
    commands.curves(tmp_path / "run", tmp_path)
    matrix = commands.confusion(model, batches(), tmp_path, class_names=["a", "b", "c"])
    assert matrix.sum() == 24
    coordinates, labels = commands.embed(model, batches(), tmp_path, max_examples=20)
    assert coordinates.shape == (20, 2) and labels.shape == (20,)
    start = create_model("lenet5_relu", num_classes=3).state_dict()
    summary = commands.landscape(model, batches(), tmp_path, start=start, num_examples=16, resolution=3)
    saved = json.loads((tmp_path / "landscape.json").read_text())
    assert saved["num_examples"] == 16 and len(saved["losses"]) == 3
    assert set(saved["statistics"]) == set(summary["statistics"])
    assert len(saved["interpolation"]["t"]) == 25
    for name in ("curves", "confusion", "embed", "landscape", "interpolation"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0


def test_image_commands_take_a_preprocessed_batch(model, tmp_path):
    batch = (torch.rand(2, 1, 28, 28) - 0.1307) / 0.3081  # e.g. MNIST digits converted as in training
    result = commands.gradcam(model, torch.nn.functional.pad(batch, (2, 2, 2, 2)), tmp_path, mean=[0.1307],
                              std=[0.3081])
    assert result["gradcam"].shape == (2, 32, 32)
    assert (tmp_path / "gradcam.png").stat().st_size > 0


class WithAuxiliaryHead(torch.nn.Module):
    """Like GoogLeNet: an auxiliary head, defined after the main classifier, that runs only in training."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.body = torch.nn.Conv2d(4, 6, 3, padding=1)
        self.fc = torch.nn.Linear(6, 3)
        self.aux = torch.nn.Sequential(torch.nn.Conv2d(4, 2, 1), torch.nn.Flatten(), torch.nn.Linear(2 * 8 * 8, 3))

    def forward(self, x):
        early = torch.relu(self.stem(x))
        logits = self.fc(torch.relu(self.body(early)).mean(dim=(-2, -1)))
        return (logits, self.aux(early)) if self.training else logits


def test_defaults_follow_what_runs_not_what_is_defined(tmp_path):
    from cnnkit.viz import feature_maps, penultimate_features

    model = WithAuxiliaryHead()
    images = torch.rand(2, 1, 8, 8)
    assert commands.default_map_layers(model, images) == ["stem", "body"]
    assert commands.default_gradcam_layer(model, images) == "body"
    features, _ = penultimate_features(model, [(images, torch.tensor([0, 1]))])
    assert features.shape == (2, 6)
    with pytest.raises(UnknownNameError, match="did not run"):
        feature_maps(model, images, ["aux.0"])


def test_attribution_tools_write_their_pictures_from_the_command_line(digit, tmp_path, capsys):
    from cnnkit.cli import main

    out = tmp_path / "out"
    for argv in (["occlusion", "--window", "8", "--stride", "4"], ["integrated-gradients", "--steps", "4"],
                 ["guided-backprop", "--class", "2"], ["deconvnet", "--layer", "features.3"], ["deconvnet"]):
        assert main(["viz", argv[0], "lenet5_relu", str(digit), "-o", str(out), *argv[1:]]) == 0, argv
        assert f"{argv[0]}.png" in capsys.readouterr().out
    for name in ("occlusion", "integrated-gradients", "guided-backprop", "deconvnet"):
        assert (out / f"{name}.png").stat().st_size > 0
    assert main(["viz", "deconvnet", "lenet5_relu", str(digit), "--layer", "features.3", "--channel", "16",
                 "-o", str(out)]) == 2
    assert "channel from 0 to 15" in capsys.readouterr().err


def test_attribution_commands_return_what_they_drew(model, digit, tmp_path):
    result = commands.occlusion(model, [digit], tmp_path, target=1)
    assert result["occlusion"].shape == (1, 32, 32) and result["target"].tolist() == [1]
    # The default window is an eighth of the side, the stride half of it: 4 and 2 on 32x32.
    assert commands.default_occlusion_window(torch.zeros(1, 1, 32, 32)) == 4
    result = commands.deconvnet(model, [digit], tmp_path, layer="features.3")
    assert 0 <= int(result["channel"]) < 16 and result["deconvnet"].shape == (1, 1, 32, 32)
    result = commands.integrated_gradients(model, [digit], tmp_path, steps=3)
    assert result["integrated_gradients"].shape == (1, 1, 32, 32)
