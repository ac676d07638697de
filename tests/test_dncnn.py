"""DnCNN (Zhang et al. 2017) and the BSDS-derived image sets: the residual denoiser, its patch training through
the one loop, the BSD loader's refusals and the full-image evaluation protocol."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit import TrainConfig, Trainer, create_model
from cnnkit.cli import main
from cnnkit.data.augment import random_dihedral, random_patches
from cnnkit.data.photo_sets import photo_files, load_photo_set, load_denoising_data
from cnnkit.denoise import (DenoisingTask, add_noise, denoise_full_images, denoise_image, gaussian_filter_images,
                            noisy_test_images, score_estimates, to_8bit_levels)
from cnnkit.errors import DataError


def test_dncnn_s_has_the_papers_layers_and_parameter_count():
    model = create_model("dncnn")  # DnCNN-S: depth 17, 64 maps, grey
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(convs) == 17 and len(norms) == 15
    # first conv with bias, 15 x (bias-free conv + BN scale/shift), last conv without bias: the authors' code
    expected = (9 * 64 + 64) + 15 * (64 * 9 * 64 + 2 * 64) + 64 * 9
    assert expected == 556_096
    assert sum(p.numel() for p in model.parameters()) == expected
    small = create_model("dncnn", depth=10, width=32)
    assert sum(p.numel() for p in small.parameters()) == (9 * 32 + 32) + 8 * (32 * 9 * 32 + 64) + 32 * 9
    odd = torch.rand(2, 1, 37, 23)  # fully convolutional: any size, output the input's
    assert small(odd).shape == odd.shape
    assert create_model("dncnn", in_channels=3, depth=4, width=8)(torch.rand(1, 3, 9, 9)).shape == (1, 3, 9, 9)


def test_dncnn_output_is_input_minus_predicted_noise():
    torch.manual_seed(0)
    model = create_model("dncnn", depth=5, width=8).eval()
    x = torch.rand(2, 1, 20, 20)
    noise = model.predict_noise(x)
    assert noise.abs().min() > 0  # a real prediction, not zeros (small: the last layer starts 100x scaled down)
    assert torch.allclose(model(x), x - noise)
    torch.nn.init.zeros_(model.body[-1].weight)  # predicting no noise leaves the input untouched
    assert torch.equal(model(x), x)


def test_random_patches_are_windows_of_their_own_image_and_dihedral_keeps_the_pixels():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 1, 30, 25), dtype=torch.uint8, generator=generator)
    patches = random_patches(images, 8, per_image=4, generator=generator)
    assert patches.shape == (12, 1, 8, 8)
    windows = images.unfold(2, 8, 1).unfold(3, 8, 1)  # (3, 1, 23, 18, 8, 8): every 8x8 window
    for index, patch in enumerate(patches):
        own = windows[index // 4, 0].reshape(-1, 8, 8)
        assert (own == patch[0]).all(-1).all(-1).any(), f"patch {index} is not a window of image {index // 4}"
    def symmetries(patch):
        turns = [torch.rot90(patch, k, (-2, -1)) for k in range(4)]
        return turns + [t.flip(-1) for t in turns]

    many = patches.float().repeat(10, 1, 1, 1)
    modes = set()
    for patch, out in zip(many, random_dihedral(many, generator)):
        matches = [k for k, candidate in enumerate(symmetries(patch)) if torch.equal(out, candidate)]
        assert matches, "an output that is no symmetry of its patch"
        modes.add(matches[0])
    assert len(modes) == 8  # all eight symmetries are drawn


def test_unclipped_noise_keeps_its_sigma_and_estimates_are_scored_at_8_bits():
    clean = torch.full((1, 1, 200, 200), 0.02)
    noisy = add_noise(clean, "gaussian", 25 / 255, torch.Generator().manual_seed(0), clip=False)
    assert (noisy < 0).any() and (noisy - clean).std().item() == pytest.approx(25 / 255, rel=0.02)
    assert add_noise(clean, "gaussian", 25 / 255, torch.Generator().manual_seed(0)).min() == 0  # clipped default
    assert torch.equal(to_8bit_levels(torch.tensor([-0.1, 0.6 / 255, 0.31, 1.2])),
                       torch.tensor([0.0, 1 / 255, 79 / 255, 1.0]))
    images = [torch.randint(0, 256, size, dtype=torch.uint8) for size in ((1, 16, 12), (1, 10, 20))]
    exact = score_estimates([image.float() / 255 for image in images], images)
    assert exact["psnr"] == pytest.approx(100.0) and exact["ssim"] == pytest.approx(1.0)
    first, second = noisy_test_images(images, 0.1), noisy_test_images(images, 0.1)
    assert all(torch.equal(a, b) for a, b in zip(first, second))  # every method sees the same noisy images
    blurred = score_estimates(gaussian_filter_images(first, 1.0), images)
    assert len(blurred["per_image_psnr"]) == 2


def _write_set(folder, count, size=(24, 20), corrupt=None):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        path = folder / f"{index + 1:02d}.png"
        if index == corrupt:
            path.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
        else:
            Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(path)


def test_bsd_loader_refuses_a_missing_incomplete_or_corrupt_set(tmp_path):
    with pytest.raises(DataError, match=r"no folder bsd/bsd68 .*CNNKIT_DATA"):
        load_photo_set("bsd68", root=tmp_path)
    _write_set(tmp_path / "bsd" / "set12", 11)
    with pytest.raises(DataError, match="holds 11 .png images, expected 12"):
        photo_files("bsd-set12", root=tmp_path)
    _write_set(tmp_path / "other" / "bsd" / "set12", 12, corrupt=4)
    with pytest.raises(DataError, match=r"05.png is not a readable image"):
        load_photo_set("bsd-set12", root=tmp_path / "other")
    with pytest.raises(DataError, match="never the reverse"):
        load_denoising_data("bsd68", "bsd-set12", root=tmp_path)
    with pytest.raises(Exception, match="Did you mean bsd68"):
        load_photo_set("bsd86")


def test_dncnn_learns_on_train400_patches_through_the_one_loop(shared_data, tmp_path):
    bundle = load_denoising_data("bsd-train400", "bsd68", val_crop=48, root=shared_data)
    assert bundle.train.images.shape == (400, 1, 180, 180) and bundle.test.images.shape == (68, 1, 48, 48)
    bundle.train, bundle.test = bundle.train.subset(range(64)), bundle.test.subset(range(8))
    torch.manual_seed(0)
    model = create_model("dncnn", depth=4, width=16)
    task = DenoisingTask("gaussian", 25 / 255, "mse", clip=False, patch_size=24, patches_per_image=4, augment=True)
    config = TrainConfig(epochs=3, batch_size=8, optimizer="adam", lr=3e-3, weight_decay=0.0, schedule="constant",
                         num_threads=1, progress=False)
    trainer = Trainer(model, bundle, config, out=tmp_path / "run", task=task)
    trainer.fit()
    losses = [m["train_loss"] for m in trainer.history]
    assert losses[-1] < losses[0] * 0.8, losses
    noisy_psnr = 10 * np.log10(255**2 / 25**2)  # ~20.2 dB: unclipped noise of sigma 25
    assert trainer.history[-1]["val_psnr"] > noisy_psnr + 2, trainer.history[-1]
    # train figures are means over patches (4 per image), not 4x the mean: close to the validation figure
    assert abs(trainer.history[-1]["train_psnr"] - trainer.history[-1]["val_psnr"]) < 6
    meta = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert meta["task"]["patch_size"] == 24 and meta["task"]["clip"] is False
    images = load_photo_set("bsd68", root=shared_data)[:2]
    noisy = noisy_test_images(images, 25 / 255)
    assert score_estimates(denoise_full_images(model, noisy), images)["psnr"] > score_estimates(noisy, images)["psnr"]


def test_cli_trains_dncnn_on_bsd_and_denoises_an_image(shared_data, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CNNKIT_DATA", str(shared_data))
    out = tmp_path / "run"
    assert main(["denoise", "--train", "--data", "bsd-train400", "--model", "dncnn", "--sigma", "25", "--depth", "3",
                 "--width", "8", "--epochs", "1", "--train-subset", "16", "--test-subset", "2", "--threads", "1",
                 "--patch-size", "24", "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "denoising.json").read_text())
    assert report["test_set"] == "bsd68 (2 full grey images)" and len(report["per_image_psnr"]) == 2
    assert report["sigma"] == 25
    picture = tmp_path / "photo.png"  # an odd size: DnCNN needs no padding
    Image.fromarray(load_photo_set("bsd68")[0][0, :45, :33].numpy()).save(picture)
    assert main(["denoise", str(out), str(picture), "-o", str(tmp_path / "clean.png"),
                 "--add-noise", "gaussian:0.098"]) == 0
    assert Image.open(tmp_path / "clean.png").size == (33, 45)
    assert main(["denoise", "--train", "--data", "bsd-train400", "--model", "dncnn", "--out", str(tmp_path / "x")]) != 0
    assert "needs --sigma S" in capsys.readouterr().err


def test_full_images_of_any_size_go_through_the_autoencoder_as_through_denoise_image():
    # BSD68's 481x321 is no multiple of 4, which the notes' autoencoder needs: both paths pad and crop back alike.
    torch.manual_seed(0)
    model = create_model("conv_autoencoder", bottleneck_channels=4).eval()
    image = torch.randint(0, 256, (1, 37, 50), dtype=torch.uint8)
    whole = denoise_full_images(model, [image.float() / 255])[0]
    assert whole.shape == image.shape and not whole.requires_grad  # no graph kept for a test set
    assert torch.allclose(whole.clamp(0, 1), denoise_image(model, image), atol=1e-6)
    dncnn = create_model("dncnn", depth=3, width=4).eval()  # size multiple 1: no padding at all
    assert torch.allclose(denoise_full_images(dncnn, [image.float() / 255])[0], dncnn(image[None].float() / 255)[0])
