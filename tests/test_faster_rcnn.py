"""Faster R-CNN, the one-stage RetinaNet and their task: the losses a batch gives, a loss that falls on a tiny
overfit, detections that are inside the image and sorted, exact resume through the one Trainer, the CLI's
train/eval/predict/resume for both detectors, and its refusals. RetinaNet's own parts (focal loss, prior, anchor
targets): tests/test_retinanet.py."""

from __future__ import annotations

import json

import pytest
import torch

from cnnkit import TrainConfig, Trainer, create_model
from cnnkit.data import canvas
from cnnkit.data.canvas import load_canvas
from cnnkit.data.datasets import load_dataset
from cnnkit.detect import DetectionBatch, DetectionTask, detection_bundle
from cnnkit.detect.task import DetectionDataset
from cnnkit.errors import CnnkitError, ConfigError
from viz_support import single_thread  # noqa: F401

SIZE = 64
DETECTORS = ("faster_rcnn", "retinanet")
# Each detector's losses, and the heads that every loss must reach
LOSSES = {"faster_rcnn": {"rpn_objectness", "rpn_box", "head_class", "head_box"}, "retinanet": {"focal", "box"}}
HEADS = {"faster_rcnn": ("rpn", "head"), "retinanet": ("class_subnet", "box_subnet")}


@pytest.fixture(scope="module")
def canvases(shared_data):
    mnist = load_dataset_from(shared_data)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(canvas, "load_dataset", lambda name, download: mnist)
        return load_canvas("canvas-mnist", num_train=32, num_test=8, canvas_size=SIZE, seed=1, download=False)


def load_dataset_from(shared_data):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNKIT_DATA", str(shared_data))
        return load_dataset("mnist", download=False)


def batch_of(split, count: int) -> DetectionBatch:
    images = split.images[:count].float() / 255
    targets = [split.target(i) for i in range(count)]
    return DetectionBatch(images, [t["boxes"] for t in targets], [t["labels"] for t in targets])


def build(name: str = "faster_rcnn", **options):
    torch.manual_seed(0)
    return create_model(name, num_classes=11, in_channels=1, **options)


@pytest.mark.parametrize("name", DETECTORS)
def test_training_gives_the_losses_and_evaluation_one_result_per_image(canvases, name):
    model = build(name)
    losses = model(batch_of(canvases.train, 3))
    assert set(losses) == LOSSES[name]
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for head in HEADS[name]:
        assert sum(p.grad.abs().sum() for p in getattr(model, head).parameters()) > 0, head
    if name == "retinanet":  # its untrained classifier finds nothing above the 0.05 threshold: train it a little
        model.class_subnet.out.bias.data.fill_(0.0)
    model.eval()
    with torch.no_grad():
        found = model(canvases.test.images[:5].float() / 255)
    assert len(found) == 5
    for result in found:
        count = len(result["boxes"])
        assert result["boxes"].shape == (count, 4) and result["scores"].shape == result["labels"].shape == (count,)
        assert 0 < count <= model.detections_per_image
        assert ((result["labels"] >= 1) & (result["labels"] <= 10)).all()
        assert result["scores"].dtype == result["boxes"].dtype == torch.float32 and result["labels"].dtype == torch.long


@pytest.mark.parametrize("name", DETECTORS)
def test_the_loss_falls_when_overfitting_a_few_canvases(canvases, name):
    model = build(name)
    batch = batch_of(canvases.train, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    first = None
    for _ in range(25):
        loss = sum(model(batch).values())
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * first


def test_postprocessing_keeps_boxes_inside_the_image_sorted_by_score():
    model = build(detections_per_image=20)
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(2, 50, 2, generator=generator) * 70 - 3
    proposals = [torch.cat([c, c + 5 + torch.rand(50, 2, generator=generator) * 30], 1) for c in corners]
    scores = torch.randn(100, 11, generator=generator) * 3
    deltas = torch.randn(100, 44, generator=generator)
    found = model.postprocess(proposals, scores, deltas, (SIZE, SIZE))
    assert len(found) == 2
    for result in found:
        boxes, kept = result["boxes"], result["scores"]
        assert 0 < len(boxes) <= 20
        assert (boxes >= 0).all() and (boxes <= SIZE).all() and (boxes[:, 2:] >= boxes[:, :2]).all()
        assert (kept[:-1] >= kept[1:]).all() and (kept > model.score_threshold).all()


@pytest.mark.parametrize("name", DETECTORS)
def test_a_detector_needs_a_background_and_an_object_class(name):
    with pytest.raises(ConfigError, match="background"):
        create_model(name, num_classes=1, in_channels=1)


@pytest.mark.parametrize("name", DETECTORS)
def test_a_resumed_run_ends_with_the_weights_of_the_uninterrupted_one(canvases, tmp_path, name):
    data = detection_bundle(canvases)
    options = dict(batch_size=16, optimizer="sgd", lr=0.01, schedule="constant", progress=False, num_threads=1,
                   eval_batch_size=8)

    def run(folder, epochs, resume=False):
        trainer = Trainer(build(name), data, TrainConfig(epochs=epochs, **options), out=tmp_path / folder,
                          task=DetectionTask())
        summary = trainer.fit(resume=resume)
        return trainer, summary

    whole, summary = run("whole", 2)
    run("parts", 1)
    resumed, _ = run("parts", 2, resume=True)
    for name, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert 0 <= summary["test_map"] <= summary["test_map50"] <= 1 and summary["test_images"] == 8
    assert (tmp_path / "whole" / "checkpoint.safetensors").exists()


def test_the_task_collates_each_canvas_boxes_by_index_even_from_a_subset(canvases):
    data = detection_bundle(canvases)
    subset = data.train.subset([5, 2])
    assert isinstance(subset, DetectionDataset) and subset.labels.tolist() == [5, 2]
    boxes, labels = subset.targets(subset.labels)
    assert torch.equal(boxes[0], canvases.train.target(5)["boxes"]) and torch.equal(labels[1],
                                                                                  canvases.train.target(2)["labels"])
    truth = subset.ground_truth()
    assert len(truth) == 2 and torch.equal(truth.boxes, torch.cat(boxes))


def test_the_task_refuses_data_without_boxes():
    from cnnkit.data.datasets import TensorImageDataset

    plain = TensorImageDataset(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), ["a"])
    with pytest.raises(CnnkitError, match="detection_bundle"):
        DetectionTask()._check(plain)


@pytest.mark.parametrize("name", DETECTORS)
def test_cli_trains_evaluates_draws_and_resumes(tmp_path, capsys, monkeypatch, shared_data, name):
    from PIL import Image

    from cnnkit.cli import main

    monkeypatch.setenv("CNNKIT_DATA", str(shared_data))
    run = tmp_path / "run"
    assert main(["detect", "train", "--model", name, "--num-train", "16", "--num-test", "4", "--epochs", "1",
                 "--batch-size", "8", "--threads", "1", "--out", str(run), "--no-progress"]) == 0
    assert "mAP@.5" in capsys.readouterr().out
    assert json.loads((run / "checkpoint.json").read_text())["model"]["name"] == name
    assert main(["detect", "eval", str(run), "--num-test", "3"]) == 0
    assert "3 canvases: mAP@[.5:.95]" in capsys.readouterr().out
    picture = tmp_path / "canvas.png"
    Image.fromarray(torch.randint(0, 255, (40, 50), dtype=torch.uint8).numpy()).save(picture)
    assert main(["detect", "predict", str(run), str(picture), "-o", str(tmp_path / "boxes.png"), "--min-score", "0",
                 "--scale", "2"]) == 0
    assert Image.open(tmp_path / "boxes.png").size == (100, 80)
    assert main(["detect", "train", "--resume", "--out", str(run), "--epochs", "2"]) == 0  # one more epoch
    meta = json.loads((run / "checkpoint.json").read_text())
    assert "resuming" in capsys.readouterr().out and meta["epoch"] == 2 and meta["model"]["name"] == name


def test_cli_refuses_bad_arguments(tmp_path, capsys, monkeypatch, shared_data):
    from cnnkit.cli import main

    monkeypatch.setenv("CNNKIT_DATA", str(shared_data))
    run, picture = tmp_path / "run", tmp_path / "canvas.png"
    # a score outside [0, 1] and a missing image are refused by the parser, naming the argument
    for argv, message in ((["predict", str(run), str(picture), "--min-score", "1.5"], "a score is between 0 and 1"),
                          (["predict", str(run)], "required: image"),
                          (["train", "--backbone", "vgg16"], "invalid choice: 'vgg16'"),
                          (["train", "--model", "yolo"], "invalid choice: 'yolo'")):
        with pytest.raises(SystemExit) as exit_info:
            main(["detect", *argv])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    # a run of another task, and --resume without a run to continue, are refused with the fix
    (tmp_path / "empty").mkdir()
    assert main(["detect", "train", "--resume", "--out", str(tmp_path / "empty")]) == 2
    assert "--resume continues the run in --out" in capsys.readouterr().err
    assert main(["detect", "train", "--data", "canvas-nmist", "--out", str(tmp_path / "typo")]) == 2
    assert "canvas-mnist" in capsys.readouterr().err
