"""Fully convolutional segmentation (Long et al. 2015): any input size, bilinear-initialised deconvolution,
skip connections from the backbone's finer stages, training through the one loop, per-class IoU and the
``cnnkit segment`` command with FCNs on the canvas data."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix, jaccard_score

from cnnkit.cli import main
from cnnkit.errors import CnnkitError, ConfigError
from cnnkit.layers import BilinearUpsample
from cnnkit.models import create_model
from cnnkit.segment import class_iou, iou_report, load_segmentation_data

# Tiny tensors: on a busy machine a second OpenMP thread only adds waiting.
from viz_support import single_thread  # noqa: F401


@pytest.mark.parametrize("name, backbone", [("fcn8s", "resnet18"), ("fcn16s", "resnet18"), ("fcn32s", "resnet18"),
                                            ("fcn8s", "resnet20"), ("fcn8s", "vgg11")])
def test_the_output_has_the_input_size_for_odd_sizes(name, backbone):
    model = create_model(name, num_classes=5, in_channels=1, backbone=backbone).eval()
    with torch.no_grad():
        for height, width in ((65, 65), (37, 50), (1, 3)):
            assert model(torch.randn(1, 1, height, width)).shape == (1, 5, height, width)


def test_the_skips_come_from_the_finer_stages_of_the_backbone():
    strides = {name: create_model(name, num_classes=3, backbone="resnet18").backbone.feature_info.reduction()
               for name in ("fcn8s", "fcn16s", "fcn32s")}
    assert strides == {"fcn8s": [8, 16, 32], "fcn16s": [16, 32], "fcn32s": [32]}  # the paper's pool3, pool4, conv7
    cifar = create_model("fcn8s", num_classes=3, backbone="resnet20").backbone.feature_info
    assert cifar.reduction() == [1, 2, 4] and cifar.get("stage") == ["layer1", "layer2", "layer3"]
    # the backbone's classifier is gone: its weights would be dead weight in every checkpoint
    assert not any(".fc." in name for name, _ in create_model("fcn32s", num_classes=3).named_parameters())
    with pytest.raises(ConfigError, match="too few"):
        create_model("fcn8s", num_classes=3, backbone="mnist_fast_cnn")


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_the_bilinear_deconvolution_is_bilinear_upsampling(factor):
    x = torch.randn(2, 3, 9, 7)
    up = BilinearUpsample(3, factor)
    ours = up(x)
    reference = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert ours.shape == reference.shape == (2, 3, 9 * factor, 7 * factor)
    border = factor  # interpolate repeats the edge pixel where the deconvolution sees zeros
    torch.testing.assert_close(ours[..., border:-border, border:-border],
                               reference[..., border:-border, border:-border], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours, reference)  # ... so the border differs, and the comparison above is not vacuous
    assert up.weight.requires_grad and not BilinearUpsample(3, factor, learnable=False).weight.requires_grad


def test_an_untrained_fcn_upsamples_its_coarse_scores_bilinearly():
    model = create_model("fcn32s", num_classes=2, in_channels=1, backbone="resnet20").eval()
    with torch.no_grad():  # a score layer that passes one backbone channel through, so the output is inspectable
        model.score[0].weight.zero_()
        model.score[0].weight[0, 0] = 1.0
        x = torch.randn(1, 1, 32, 32)
        coarse = model.score[0](model.backbone(x)[-1])
        expected = F.interpolate(coarse, scale_factor=4, mode="bilinear", align_corners=False)
        torch.testing.assert_close(model(x)[..., 4:-4, 4:-4], expected[..., 4:-4, 4:-4], rtol=1e-5, atol=1e-5)


def test_a_short_training_run_lowers_the_loss():
    torch.manual_seed(0)
    bundle = load_segmentation_data("shapes:1", image_size=24, num_train=6, num_test=2)
    model = create_model("fcn8s", num_classes=len(bundle.classes), in_channels=3, backbone="resnet20")
    x = (bundle.train.images.float() / 255 - 0.5) / 0.25
    masks = bundle.train.labels
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = F.cross_entropy(model(x), masks)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    # the 2x upsampling steps learn; the final bilinear one stays fixed, as in the paper (§4.2)
    assert not torch.equal(model.upsample[0].weight, BilinearUpsample(len(bundle.classes), 2).weight)
    assert torch.equal(model.upsample[-1].weight, BilinearUpsample(len(bundle.classes), 1).weight)


def test_iou_per_class_and_miou_match_scikit_learn():
    generator = torch.Generator().manual_seed(0)
    num_classes = 6
    truth = torch.randint(0, 5, (4000,), generator=generator)  # class 5 never occurs in the truth ...
    predicted = torch.where(torch.rand(4000, generator=generator) < 0.6, truth,
                            torch.randint(0, 5, (4000,), generator=generator))
    predicted[:3] = 4
    truth[truth == 3] = 2  # ... class 3 occurs only in predictions
    confusion = torch.bincount(truth * num_classes + predicted, minlength=num_classes**2).view(num_classes, -1)
    np.testing.assert_array_equal(confusion.numpy(), confusion_matrix(truth, predicted, labels=range(num_classes)))
    present = sorted(set(truth.tolist()) | set(predicted.tolist()))
    assert present == [0, 1, 2, 3, 4]  # class 5 absent from both: no IoU, not in the mean
    reference = jaccard_score(truth, predicted, labels=present, average=None)
    iou = class_iou(confusion)
    np.testing.assert_allclose(iou[present].numpy(), reference, rtol=1e-12)
    assert iou[5].isnan() and iou[3] == 0
    report = iou_report(confusion, [f"c{i}" for i in range(num_classes)])
    assert report["miou"] == pytest.approx(jaccard_score(truth, predicted, labels=present, average="macro"))
    assert report["iou_per_class"]["c5"] is None and report["iou_per_class"]["c1"] == pytest.approx(reference[1])
    with pytest.raises(ValueError, match="6 classes"):
        iou_report(confusion[:5, :5], [f"c{i}" for i in range(num_classes)])


def test_the_canvas_data_gives_the_semantic_masks(shared_data):
    bundle = load_segmentation_data("canvas-mnist:1", image_size=48, num_train=8, num_test=4)
    assert bundle.train.images.shape == (8, 1, 48, 48) and bundle.train.labels.shape == (8, 48, 48)
    assert bundle.classes[0] == "background" and len(bundle.classes) == 11
    labels = bundle.train.labels
    assert labels.dtype == torch.int64 and 0 < (labels > 0).float().mean() < 0.5 and labels.max() <= 10
    with pytest.raises(CnnkitError, match="whole number"):
        load_segmentation_data("canvas-mnist:x")


def test_segment_command_trains_resumes_evaluates_and_predicts_an_fcn(shared_data, tmp_path, capsys, monkeypatch):
    from safetensors.torch import load_file

    from cnnkit.train import Trainer

    run, straight = tmp_path / "fcn", tmp_path / "straight"
    common = ["--data", "canvas-mnist", "--image-size", "32", "--num-train", "8", "--num-test", "8",
              "--model", "fcn8s", "--backbone", "resnet20", "--batch-size", "8", "--no-progress", "--threads", "1",
              "--epochs", "2"]
    assert main(["segment", "--train", *common, "--out", str(straight)]) == 0
    # the same command, interrupted after its first epoch ...
    start = Trainer.__init__

    def interrupted(self, *args, **kwargs):
        start(self, *args, **kwargs)
        self.callbacks.append(lambda trainer, metrics: setattr(trainer, "stop_requested", metrics["epoch"] == 1))

    monkeypatch.setattr(Trainer, "__init__", interrupted)
    assert main(["segment", "--train", *common, "--out", str(run)]) == 0
    monkeypatch.undo()
    assert json.loads((run / "checkpoint.json").read_text())["epoch"] == 1
    # ... and resumed from its run folder alone gives exactly the weights of the uninterrupted run
    assert main(["segment", "--train", "--resume", str(run), "--no-progress", "--threads", "1"]) == 0
    resumed, reference = load_file(run / "checkpoint.safetensors"), load_file(straight / "checkpoint.safetensors")
    assert resumed.keys() == reference.keys()
    for key in reference:
        assert torch.equal(resumed[key], reference[key]), key

    summary = json.loads((run / "summary.json").read_text())
    classes = load_segmentation_data("canvas-mnist", 32, 8, 8).classes
    assert list(summary["test_iou_per_class"]) == classes
    meta = json.loads((run / "checkpoint.json").read_text())
    assert meta["model"]["name"] == "fcn8s" and meta["task"]["data"]["name"] == "canvas-mnist"
    assert not meta["train_config"]["augment"].get("flip")  # digits are not mirrored

    capsys.readouterr()
    assert main(["segment", str(run), "--eval", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((run / "eval.json").read_text())
    assert f"mIoU {result['miou']:.4f}" in printed and "background" in printed
    assert result["miou"] == pytest.approx(json.loads((run / "summary.json").read_text())["test_miou"])

    picture = tmp_path / "canvas.png"
    from PIL import Image

    Image.fromarray(load_segmentation_data("canvas-mnist", 32, 8, 8).test.images[0, 0].numpy()).save(picture)
    assert main(["segment", str(run), str(picture), "-o", str(tmp_path / "overlay.png")]) == 0
    assert Image.open(tmp_path / "overlay.png").size == (32, 32)
    capsys.readouterr()
    assert main(["segment", "--resume", str(run)]) != 0
    assert "give it with --train" in capsys.readouterr().err
