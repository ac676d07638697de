"""Denoising autoencoders and U-Net segmentation through the one training loop, and their data."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit import TrainConfig, Trainer, create_model, load_dataset
from cnnkit.cli import main
from cnnkit.data.masks import load_segmentation_folder
from cnnkit.data.synthetic import SHAPE_CLASSES, synthetic_shapes
from cnnkit.denoise import DenoisingTask, add_noise, denoising_report, psnr, ssim
from cnnkit.errors import DataError
from cnnkit.segment import SegmentationTask, dice_loss, scores_from_confusion


def test_psnr_and_ssim_on_known_images():
    clean = torch.full((1, 1, 16, 16), 0.5)
    off_by_tenth = clean + 0.1  # MSE 0.01 -> 20 dB
    assert psnr(off_by_tenth, clean).item() == pytest.approx(20.0, abs=1e-4)
    texture = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ssim(texture, texture), torch.ones(2))
    assert (ssim(texture.flip(-1), texture) < 0.5).all()


def test_salt_and_pepper_corrupts_the_requested_fraction():
    clean = torch.full((4, 1, 50, 50), 0.5)
    noisy = add_noise(clean, "salt-and-pepper", 0.2, torch.Generator().manual_seed(0))
    changed = (noisy != clean).float().mean().item()
    assert changed == pytest.approx(0.2, abs=0.02)
    assert set(noisy.unique().tolist()) == {0.0, 0.5, 1.0}


def test_autoencoder_trained_through_the_loop_improves_psnr_on_real_mnist(shared_data, monkeypatch, tmp_path):
    monkeypatch.setenv("CNNKIT_DATA", str(shared_data))
    bundle = load_dataset("mnist")
    bundle.train, bundle.test = bundle.train.subset(range(3072)), bundle.test.subset(range(256))
    torch.manual_seed(0)
    model = create_model("conv_autoencoder", bottleneck_channels=8)
    config = TrainConfig(epochs=2, batch_size=32, optimizer="adam", lr=3e-3, weight_decay=0.0, progress=False)
    summary = Trainer(model, bundle, config, out=tmp_path / "run", task=DenoisingTask("gaussian", 0.3)).fit()
    report = denoising_report(model, bundle.test.images, "gaussian", 0.3)
    assert report["denoised_psnr"] > report["noisy_psnr"] + 3, report
    assert summary["test_psnr"] == pytest.approx(report["denoised_psnr"], abs=1e-3)  # same fixed test noise
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,train_loss,train_psnr,train_ssim,val_loss,val_psnr,val_ssim")
    assert json.loads((tmp_path / "run" / "checkpoint.json").read_text())["task"]["noise"] == "gaussian"

    digit = tmp_path / "digit.png"  # any size: padded to the autoencoder's multiple of 4 and cropped back
    Image.fromarray(bundle.test.images[0, 0, :27, :26].numpy()).save(digit)
    assert main(["denoise", str(tmp_path / "run"), str(digit), "-o", str(tmp_path / "clean.png"),
                 "--add-noise", "gaussian:0.3"]) == 0
    assert Image.open(tmp_path / "clean.png").size == (26, 27) and (tmp_path / "digit-noisy.png").is_file()


def test_padded_unet_output_has_the_input_shape():
    model = create_model("unet", num_classes=3, in_channels=3, padding=True, base_channels=4)
    assert model(torch.rand(2, 3, 32, 48)).shape == (2, 3, 32, 48)


def test_shapes_dataset_is_deterministic_and_labelled():
    a = synthetic_shapes(num_train=6, num_test=2, image_size=32, seed=5)
    b = synthetic_shapes(num_train=6, num_test=2, image_size=32, seed=5)
    c = synthetic_shapes(num_train=6, num_test=2, image_size=32, seed=6)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.train.labels, b.train.labels)
    assert not torch.equal(a.train.images, c.train.images)
    assert not torch.equal(a.train.images, a.test.images[:1].expand_as(a.train.images))
    assert a.train.images.shape == (6, 3, 32, 32) and a.train.labels.shape == (6, 32, 32)
    assert a.train.labels.max() < len(SHAPE_CLASSES) and (a.train.labels > 0).any()


def test_scores_from_a_hand_made_confusion_matrix():
    confusion = torch.tensor([[8, 2], [1, 4]])  # rows: true, columns: predicted
    scores = scores_from_confusion(confusion)
    iou = [8 / (8 + 1 + 2), 4 / (4 + 2 + 1)]
    dice = [2 * 8 / (16 + 1 + 2), 2 * 4 / (8 + 2 + 1)]
    assert scores["miou"] == pytest.approx(sum(iou) / 2)
    assert scores["dice"] == pytest.approx(sum(dice) / 2)
    assert scores["pixel_acc"] == pytest.approx(12 / 15)


def test_dice_loss_is_zero_for_a_confident_correct_answer():
    targets = torch.tensor([[[0, 1], [1, 0]]])
    logits = torch.nn.functional.one_hot(targets, 2).permute(0, 3, 1, 2).float() * 50
    assert dice_loss(logits, targets).item() == pytest.approx(0.0, abs=1e-6)
    assert dice_loss(-logits, targets).item() == pytest.approx(1 - 1 / 5, abs=1e-4)  # (2*0 + 1) / (4 + 1)


def test_segmentation_trains_through_the_loop_and_reports_miou(tmp_path):
    bundle = synthetic_shapes(num_train=16, num_test=8, image_size=32, seed=0)
    torch.manual_seed(0)
    model = create_model("unet", num_classes=4, in_channels=3, padding=True, base_channels=4, batch_norm=True)
    config = TrainConfig(epochs=1, batch_size=8, optimizer="adam", lr=1e-3, weight_decay=0.0, progress=False,
                         augment={"flip": True})
    summary = Trainer(model, bundle, config, out=tmp_path / "run", task=SegmentationTask(4)).fit()
    assert 0 <= summary["test_miou"] <= 1 and 0 <= summary["test_dice"] <= 1
    assert "val_miou" in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]


def _write_pair(folder, name, image_size, mask_size, value=1):
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*image_size[::-1], 3), 128, np.uint8)).save(folder / "images" / f"{name}.png")
    mask = np.zeros(mask_size[::-1], np.uint8)
    mask[: mask_size[1] // 2] = value
    Image.fromarray(mask).save(folder / "masks" / f"{name}.png")


def test_segmentation_folder_reads_pairs_and_refuses_a_mask_of_another_size(tmp_path):
    for k in range(4):
        _write_pair(tmp_path / "good", f"img{k}", (24, 16), (24, 16), value=2)
    bundle = load_segmentation_folder(tmp_path / "good")
    assert bundle.train.images.shape[1:] == (3, 16, 24) and bundle.classes == ["background", "class1", "class2"]
    assert set(bundle.train.labels.unique().tolist()) == {0, 2}

    _write_pair(tmp_path / "bad", "a", (24, 16), (24, 16))
    _write_pair(tmp_path / "bad", "b", (24, 16), (20, 16))
    with pytest.raises(DataError, match=r"mask .*b\.png is 20x16 but its image .*b\.png is 24x16"):
        load_segmentation_folder(tmp_path / "bad")


def test_cli_segment_trains_and_writes_an_overlay(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["segment", "--train", "--data", "shapes:3", "--image-size", "32", "--epochs", "1", "--num-train", "32",
                 "--num-test", "8", "--base-channels", "4", "--batch-size", "16", "--out", str(run),
                 "--no-progress"]) == 0
    assert (run / "overlays" / "test00.png").is_file()
    picture = tmp_path / "picture.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(picture)
    assert main(["segment", str(run), str(picture), "-o", str(tmp_path / "o.png"),
                 "--mask-out", str(tmp_path / "m.png")]) == 0
    assert Image.open(tmp_path / "o.png").size == (50, 40) and Image.open(tmp_path / "m.png").size == (50, 40)
    capsys.readouterr()
    _write_pair(tmp_path / "bad", "a", (24, 16), (24, 20))
    assert main(["segment", "--train", "--data", f"segfolder:{tmp_path / 'bad'}", "--out",
                 str(tmp_path / "bad-run")]) == 2
    assert "must have its image's exact size" in capsys.readouterr().err


def test_segmentation_with_ema_validates_the_averaged_weights(tmp_path):
    bundle = synthetic_shapes(num_train=16, num_test=8, image_size=32, seed=0)
    torch.manual_seed(0)
    model = create_model("unet", num_classes=4, in_channels=3, padding=True, base_channels=4, batch_norm=True)
    config = TrainConfig(epochs=2, batch_size=8, optimizer="adam", lr=1e-2, weight_decay=0.0, progress=False,
                         ema=0.5)
    trainer = Trainer(model, bundle, config, task=SegmentationTask(4))
    raw = []  # the last raw weights, before the average takes them in
    trainer.optimizer.register_step_post_hook(
        lambda optimizer, args, kwargs: raw.__setitem__(slice(None), [p.detach().clone() for p in model.parameters()]))
    trainer.fit()
    # The last validation ran on the averaged weights, which fit leaves in the model; the raw ones score otherwise.
    assert trainer.evaluate()["loss"] == pytest.approx(trainer.history[-1]["val_loss"], rel=1e-6)
    assert not all(torch.equal(r, p) for r, p in zip(raw, model.parameters()))
