"""DCGAN and pix2pix through the one training loop: shapes, GAN steps, checkpoint/resume, the Fréchet distance
and the translate command. Tiny networks on tiny synthetic data: the whole file runs in a few seconds."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit import TrainConfig, Trainer, create_model
from cnnkit.cli import main
from cnnkit.data.augment import Preprocess
from cnnkit.errors import ShapeError
from cnnkit.gan import GAN_TRAINING, FeatureNetwork, GANTask, frechet_distance, gaussian_fit
from cnnkit.models.pix2pix import PatchDiscriminator, patch_grid_size, patch_receptive_field
from cnnkit.train import load_model_checkpoint
from cnnkit.translate import PIX2PIX_TRAINING, Pix2PixTask, create_translator, make_input, sobel_edges, to_grey
from helpers import bar_dataset

TINY_GAN = dict(in_channels=1, image_size=28, latent_dim=8, generator_width=4, discriminator_width=4)


def tiny_features(seed=0) -> FeatureNetwork:
    torch.manual_seed(seed)
    return FeatureNetwork(create_model("mnist_fast_cnn", num_classes=2, widths=(4, 4)), Preprocess((0.1,), (0.2,)),
                          "an untrained mnist_fast_cnn (test)")


def gan_config(**extra):
    # One thread, fixed: the resume test compares bit for bit (see tests/test_trainer.py's FAST).
    return TrainConfig(**{**GAN_TRAINING, "batch_size": 16, "epochs": 2, "progress": False, "num_threads": 1, **extra})


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, module):
    return [k for k, v in module.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, before[k])]


@pytest.mark.parametrize("n_layers, size", [(3, 256), (3, 32), (3, 28), (2, 32), (1, 32), (3, 70)])
def test_patchgan_output_grid_has_the_documented_size(n_layers, size):
    discriminator = PatchDiscriminator(in_channels=4, base_channels=2, n_layers=n_layers).eval()
    logits = discriminator(torch.randn(1, 4, size, size))
    grid = patch_grid_size(size, n_layers)
    assert logits.shape == (1, 1, grid, grid)
    assert patch_grid_size(256) == 30 and patch_grid_size(32) == 2  # the documented examples


def test_patchgan_receptive_field_is_70_pixels():
    torch.manual_seed(0)
    discriminator = PatchDiscriminator(in_channels=1, base_channels=2).eval()
    image = torch.randn(1, 1, 128, 128, requires_grad=True)
    logits = discriminator(image)
    logits[0, 0, logits.shape[-2] // 2, logits.shape[-1] // 2].backward()
    rows = image.grad[0, 0].abs().sum(1).nonzero()
    assert rows.max() - rows.min() + 1 == patch_receptive_field(3) == 70
    assert [patch_receptive_field(n) for n in (1, 2, 4, 5)] == [16, 34, 142, 286]
    with pytest.raises(ShapeError, match="at least 24x24"):
        discriminator(torch.randn(1, 1, 20, 20))


@pytest.mark.parametrize("shape", [(2, 1, 28, 28), (2, 1, 32, 32), (1, 1, 27, 45), (2, 1, 3, 5)])
def test_pix2pix_generator_preserves_input_size(shape):
    model = create_model("pix2pix", in_channels=1, out_channels=3, base_channels=4).eval()
    out = model(torch.rand(shape) * 2 - 1)
    assert out.shape == (shape[0], 3, *shape[2:])
    assert out.abs().max() <= 1  # tanh


def test_colourisation_keeps_the_input_luminance():
    model = create_translator("colorize", 3, base_channels=4).eval()
    grey = torch.rand(2, 1, 32, 32) * 2 - 1
    colour = model(grey)
    assert colour.shape == (2, 3, 32, 32)
    assert torch.allclose(to_grey(colour), grey, atol=1e-5)  # the generator only adds colour
    with pytest.raises(ShapeError, match="colourisation"):
        create_model("pix2pix", in_channels=3, keep_luminance=True)


def test_dcgan_shapes_for_both_sizes():
    for size, channels in ((28, 1), (32, 1), (32, 3)):
        model = create_model("dcgan", in_channels=channels, image_size=size, generator_width=4, discriminator_width=4)
        images = model.generator(model.latent(3))
        assert images.shape == (3, channels, size, size)
        assert model(images).shape == (3,)
        weights = [p for n, p in model.named_parameters() if "conv" in n and p.numel() > 500]
        assert all(abs(p.std().item() - 0.02) < 0.01 for p in weights)  # N(0, 0.02)
    with pytest.raises(ShapeError, match="28 or 32"):
        create_model("dcgan", image_size=64)


def test_a_few_gan_steps_change_both_networks_and_keep_losses_finite(tmp_path):
    torch.manual_seed(0)
    model = create_model("dcgan", **TINY_GAN)
    generator, discriminator = snapshot(model.generator), snapshot(model.discriminator)
    data = bar_dataset(n_train=48, n_test=32, size=28)
    trainer = Trainer(model, data, gan_config(epochs=1), out=tmp_path, task=GANTask(tiny_features(), fid_samples=32))
    trainer.fit()
    assert changed(generator, model.generator) and changed(discriminator, model.discriminator)
    metrics = trainer.history[-1]
    for key in ("train_loss", "train_d_loss", "train_d_real", "train_d_fake", "val_fid"):
        assert np.isfinite(metrics[key]), key
    assert Image.open(tmp_path / "samples" / "epoch_001.png").size == (2 * (8 * 30 + 2),) * 2  # 8x8 grid, x2


def test_pix2pix_steps_train_both_networks_and_l1_only_leaves_the_discriminator(tmp_path):
    data = bar_dataset(n_train=32, n_test=16, size=32, channels=3)
    for weight, discriminator_moves in ((1.0, True), (0.0, False)):
        torch.manual_seed(0)
        model = create_model("pix2pix", in_channels=1, out_channels=3, base_channels=4, discriminator_channels=4)
        generator, discriminator = snapshot(model.generator), snapshot(model.discriminator)
        trainer = Trainer(model, data, TrainConfig(**{**PIX2PIX_TRAINING, "epochs": 1, "batch_size": 8,
                                                      "progress": False}),
                          task=Pix2PixTask("colorize", adversarial_weight=weight))
        trainer.fit()
        assert changed(generator, model.generator)
        assert bool(changed(discriminator, model.discriminator)) == discriminator_moves
        metrics = trainer.history[-1]
        assert all(np.isfinite(metrics[k]) for k in ("train_loss", "val_l1", "val_psnr", "val_ssim"))
        assert ("train_d_loss" in metrics) == discriminator_moves


def test_gan_checkpoint_and_resume_round_trip(tmp_path):
    data = bar_dataset(n_train=48, n_test=32, size=28)

    def run(folder, seed=0, stop_after=None, resume=False):
        torch.manual_seed(seed)
        trainer = Trainer(create_model("dcgan", **TINY_GAN), data, gan_config(), out=tmp_path / folder,
                          task=GANTask(tiny_features(), fid_samples=32))
        if stop_after:
            trainer.callbacks.append(lambda t, m: setattr(t, "stop_requested", m["epoch"] == stop_after))
        trainer.fit(resume=resume)
        return trainer

    full = run("full")
    assert run("part", stop_after=1).epoch == 1
    resumed = run("part", seed=123, resume=True)  # other initial weights: everything must come from the files
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name  # generator and discriminator alike
    assert [m["val_fid"] for m in resumed.history] == pytest.approx([m["val_fid"] for m in full.history])
    model, meta = load_model_checkpoint(tmp_path / "part")
    assert meta["task"]["name"] == "gan" and meta["epoch"] == 2
    assert torch.equal(model.sample(4, torch.Generator().manual_seed(1)),
                       resumed.model.cpu().sample(4, torch.Generator().manual_seed(1)))


def test_gan_trains_its_own_feature_network_and_scores_every_epoch(tmp_path):
    """The README's 'cnnkit gan --train' path: no feature network given, so the first evaluation (under
    no_grad) trains one; it must get gradients there, be saved, and serve the second epoch's score too."""
    torch.manual_seed(0)
    data = bar_dataset(n_train=48, n_test=32, size=28)
    trainer = Trainer(create_model("dcgan", **TINY_GAN), data, gan_config(epochs=2), out=tmp_path,
                      task=GANTask(fid_samples=32))
    trainer.fit()
    assert [m["epoch"] for m in trainer.history] == [1, 2]
    assert all(np.isfinite(m["val_fid"]) for m in trainer.history)
    assert (tmp_path / "fid_features" / "checkpoint.json").is_file()
    assert "mnist_fast_cnn trained 1 epoch on bars" in trainer.task.describe()["fid_features"]


def test_gan_with_no_fid_samples_skips_the_score_and_the_feature_network(tmp_path, capsys):
    torch.manual_seed(0)
    trainer = Trainer(create_model("dcgan", **TINY_GAN), bar_dataset(n_train=32, n_test=16, size=28),
                      gan_config(epochs=2), out=tmp_path, task=GANTask(fid_samples=0))
    trainer.fit()
    assert len(trainer.history) == 2 and not any(k.startswith("val_") for k in trainer.history[-1])
    assert not (tmp_path / "fid_features").exists() and (tmp_path / "curves.png").is_file()
    assert "Fréchet" not in capsys.readouterr().out


def test_frechet_distance_of_known_gaussians():
    features = torch.randn(4000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert frechet_distance(*gaussian_fit(features), *gaussian_fit(features)) == pytest.approx(0, abs=1e-9)
    mean, cov = torch.zeros(3), torch.eye(3)
    # |m1 - m2|^2 + Tr(C1 + C2 - 2 (C1 C2)^1/2): identity vs 4 x identity gives 3 * (1 + 4 - 4) = 3
    assert frechet_distance(mean, cov, mean + 2, 4 * cov) == pytest.approx(12 + 3)


def test_translation_inputs():
    images = torch.zeros(2, 3, 16, 16)
    images[:, :, :, 8:] = 1  # a vertical step
    edges = sobel_edges(images)
    assert edges.shape == (2, 1, 16, 16) and edges[0, 0, 5].nonzero().flatten().tolist() == [7, 8]
    assert torch.allclose(make_input("colorize", images), images[:, :1])
    masked = make_input("inpaint", images, torch.Generator().manual_seed(0), mask_size=5)
    assert masked.shape == (2, 4, 16, 16)  # the image and its hole mask
    assert ((masked[:, :3] == 0.5).all(1).flatten(1).sum(1) == 25).all()
    assert torch.equal(masked[:, 3] == 1, (masked[:, :3] == 0.5).all(1))
    with pytest.raises(ShapeError, match="RGB"):
        make_input("colorize", images[:, :1])


@pytest.fixture(scope="module")
def translator(tmp_path_factory):
    """A tiny pix2pix colouriser trained one epoch: a run folder as the CLI expects."""
    out = tmp_path_factory.mktemp("p2p")
    torch.manual_seed(0)
    model = create_translator("colorize", 3, base_channels=4)
    Trainer(model, bar_dataset(n_train=16, n_test=8, size=32, channels=3),
            TrainConfig(**{**PIX2PIX_TRAINING, "epochs": 1, "batch_size": 8, "progress": False}), out=out,
            task=Pix2PixTask("colorize")).fit()
    return out


def test_translate_cli_applies_a_checkpoint_and_explains_bad_images(translator, tmp_path, capsys):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 36), dtype=np.uint8)).save(grey)
    assert main(["translate", str(translator), str(grey), "-o", str(tmp_path / "out.png")]) == 0
    assert Image.open(tmp_path / "out.png").size == (36, 20)  # any size in, the same size out

    colour = tmp_path / "colour.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(colour)
    assert main(["translate", str(translator), str(colour), "-o", str(tmp_path / "x.png")]) == 2
    assert "has 3 channel(s) (RGB) but this colorize model reads 1-channel (grey) images" in capsys.readouterr().err
    assert main(["translate", str(translator), str(colour), "-o", str(tmp_path / "x.png"), "--make-input"]) == 0
    assert (tmp_path / "colour-input.png").is_file()

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert main(["translate", str(translator), str(broken)]) == 2
    assert "is not a readable image" in capsys.readouterr().err
    assert main(["translate", str(translator), str(tmp_path / "missing.png")]) == 2
    assert "no such image file" in capsys.readouterr().err


def test_translate_refuses_another_tasks_checkpoint(tmp_path, capsys):
    torch.manual_seed(0)
    Trainer(create_model("dcgan", **TINY_GAN), bar_dataset(n_train=16, n_test=16, size=28), gan_config(epochs=1),
            out=tmp_path / "gan", task=GANTask(tiny_features(), fid_samples=16)).fit()
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(image)
    assert main(["translate", str(tmp_path / "gan"), str(image)]) == 2
    assert "holds a gan model, not a pix2pix translator" in capsys.readouterr().err
    assert main(["gan", str(tmp_path / "gan"), "-o", str(tmp_path / "s.png"), "--count", "4"]) == 0
    assert json.loads((tmp_path / "gan" / "checkpoint.json").read_text())["model"]["name"] == "dcgan"
