"""Default recipes (issue 22: `cnnkit train lenet5 --data mnist --epochs 3` gave 39.75 % with the generic SGD
lr 0.1): the plain command trains each zoo model with its family's recipe for the data, flags override single
fields, and the command says which recipe it used."""

import dataclasses
import json

import pytest

import cnnkit.data
from cnnkit.cli import main
from cnnkit.models.registry import get_model_entry, list_models
from cnnkit.train import TrainConfig
from cnnkit.train.recipes import RECIPES, check_recipes, data_family, default_recipe
from helpers import bar_dataset


def test_every_row_names_real_options_and_builds_a_train_config():
    check_recipes()
    for model in list_models():
        for data in ("mnist", "cifar10", "imagefolder:photos"):
            recipe = default_recipe(model, data)
            if recipe is not None:
                TrainConfig.from_dict(recipe.options)  # no unknown option, no unreadable value


def test_every_classifier_has_a_recipe_for_the_data_of_its_paper():
    paper_data = {1: "mnist", 3: "cifar10"}
    for model in list_models():
        entry = get_model_entry(model)
        if entry.task != "classification":
            assert default_recipe(model, "mnist") is None  # U-Nets, GANs, autoencoders train through their tasks
            continue
        data = paper_data[entry.input_size[0]] if max(entry.input_size[1:]) <= 32 else "imagefolder:photos"
        assert default_recipe(model, data) is not None, (model, data)
    # grey digits are never mirrored; colour photographs are
    assert all("flip" not in row["grey28"].get("augment", {}) for row in RECIPES.values() if "grey28" in row)


def test_recipes_follow_the_model_and_the_data():
    assert data_family("mnist") == data_family("fashion-mnist") == "grey28"
    assert data_family("cifar100") == "colour32" and data_family("imagefolder:x") == "folder"
    lenet = default_recipe("lenet5", "mnist")
    assert (lenet.options["optimizer"], lenet.options["lr"], lenet.source) == ("adam", 2e-3, "lenet")
    # a model's own row wins over its family's, and a pair the table lacks gets none
    assert default_recipe("mnist_fast_cnn", "mnist").source == "mnist_fast_cnn"
    assert default_recipe("cifar_fast_cnn", "mnist") is None
    # VGG reads 32 px and more, AlexNet ~67 px: the smallest, not the paper's 224 px, for small images
    assert default_recipe("vgg11", "mnist").options["input_size"] == 32
    assert default_recipe("alexnet", "cifar10").options["input_size"] == get_model_entry("alexnet").min_input_size
    assert "input_size" not in default_recipe("vgg11", "cifar10").options  # 32 px is readable as it is


@pytest.fixture
def tiny_mnist(monkeypatch):
    """`--data mnist` names the data family; a 28x28 grey stand-in keeps the run to a few batches."""
    bundle = dataclasses.replace(bar_dataset(n_train=64, n_test=32, size=28), name="mnist")
    monkeypatch.setattr(cnnkit.data, "load_dataset", lambda *args, **kwargs: bundle)


def test_the_plain_command_uses_the_default_recipe_and_flags_override_single_fields(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "lenet5", "--data", "mnist", "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    assert "default recipe for lenet5 on mnist (28x28 grey images, the 'lenet' table)" in stdout
    assert "overridden by --epochs" in stdout
    config = json.loads((out / "config.json").read_text())["config"]
    assert (config["optimizer"], config["lr"], config["weight_decay"]) == ("adam", 2e-3, 0.0)
    assert (config["augment"], config["batch_size"], config["epochs"]) == ({"crop": 2}, 128, 1)

    assert main(["train", "lenet5", "--data", "mnist", "--epochs", "1", "--lr", "0.01", "--out", str(out),
                 "--overwrite", "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())["config"]
    assert (config["optimizer"], config["lr"]) == ("adam", 0.01)  # one field replaced, the rest kept


def test_a_recipe_file_replaces_the_default(tiny_mnist, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: lenet5\ndata: mnist\nepochs: 1\noptimizer: sgd\nlr: 0.05\n")
    assert main(["train", "--recipe", str(recipe), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert "default recipe" not in capsys.readouterr().out
    config = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert (config["optimizer"], config["lr"], config["augment"]) == ("sgd", 0.05, {})


def test_alexnet_trains_from_he_initialisation_by_default_and_from_the_papers_when_asked(tiny_mnist, tmp_path):
    import torch

    from cnnkit.models.registry import create_model

    # the paper's N(0, 0.01) stays at chance on a few epochs of small images; the recipe asks for He et al.'s
    assert default_recipe("alexnet", "mnist").model_args == {"init": "he"}
    assert default_recipe("alexnet_owt", "mnist").model_args == {}  # torchvision's layout keeps PyTorch's init
    assert "init=he" in default_recipe("alexnet", "cifar10").describe()
    torch.manual_seed(0)
    he, paper = create_model("alexnet", init="he"), create_model("alexnet")
    fan_in = 96 * 5 * 5 // 2  # C3 reads 48 maps of its own tower through 5x5 kernels
    assert abs(he.features[4].weight.std().item() - (2 / fan_in) ** 0.5) < 2e-3
    assert abs(paper.features[4].weight.std().item() - 0.01) < 1e-3 and paper.features[4].bias.eq(1).all()
    with pytest.raises(ValueError, match="init must be"):
        create_model("alexnet", init="xavier")

    out = tmp_path / "run"
    assert main(["train", "alexnet", "--data", "mnist", "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "checkpoint.json").read_text())["model"]["kwargs"]["init"] == "he"
