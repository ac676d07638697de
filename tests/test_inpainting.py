"""Inpainting that respects what it was given: the mask is an input channel, the output is composited into the
hole only, hole-only scores, the classical fills, and clear errors for bad masks. Tiny networks; seconds."""

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit import TrainConfig, Trainer, create_model
from cnnkit.cli import main
from cnnkit.denoise import psnr, ssim
from cnnkit.errors import CnnkitError, ShapeError
from cnnkit.translate import (CLASSICAL_FILLS, PIX2PIX_TRAINING, Pix2PixTask, check_mask, classical_fill, composite,
                              create_translator, hole_psnr, hole_ssim, mask_images, square_masks, translate_batch)
from helpers import bar_dataset


def square(n=2, size=16, top=4, left=6, side=5) -> torch.Tensor:
    mask = torch.zeros(n, 1, size, size, dtype=torch.bool)
    mask[:, :, top:top + side, left:left + side] = True
    return mask


def test_the_generator_reads_the_mask_as_one_more_channel():
    for channels in (1, 3):
        model = create_translator("inpaint", channels, base_channels=4)
        assert model.generator.down[0][0].in_channels == channels + 1
        assert model.discriminator.conv1.in_channels == 2 * channels + 1  # (image + mask, output)
    torch.manual_seed(0)
    model = create_translator("inpaint", 3, base_channels=4).eval()
    torch.nn.init.normal_(model.generator.head[1].weight, std=0.02)  # as if trained: its last layer starts at 0
    model.generator.up[0][-1].at_test = False  # no dropout noise: only the mask differs between the calls
    image = torch.rand(1, 3, 32, 32)
    hole = square(1, 32, 8, 8, 12)
    wider = square(1, 32, 6, 6, 16)
    masked = mask_images(image, hole)
    assert masked.shape == (1, 4, 32, 32) and torch.equal(masked[:, 3:] > 0, hole)
    assert (masked[:, :3][hole.expand(1, 3, 32, 32)] == 0.5).all()  # the hole's pixels are neutral grey
    # Same pixels, another mask channel: the generator's answer changes, so it does read the mask.
    same_pixels = torch.cat([masked[:, :3], wider.float()], 1)
    assert not torch.allclose(model.generator(masked * 2 - 1), model.generator(same_pixels * 2 - 1))
    with pytest.raises(ShapeError, match="in_channels=4"):
        create_model("pix2pix", in_channels=3, out_channels=3, fill_hole=True)


def test_compositing_leaves_known_pixels_exactly_unchanged():
    torch.manual_seed(0)
    model = create_translator("inpaint", 3, base_channels=4)
    images = torch.randint(0, 256, (3, 3, 32, 32)).float() / 255
    holes = square_masks(3, 32, 32, 10, torch.Generator().manual_seed(1))
    # Untrained, the inpainter returns its input's fill: its last layer starts at zero.
    assert torch.allclose(translate_batch(model, mask_images(images, holes)), mask_images(images, holes)[:, :3])
    torch.nn.init.normal_(model.generator.head[1].weight, std=0.02)
    out = translate_batch(model, mask_images(images, holes))
    known = ~holes.expand_as(images)
    assert torch.equal(out[known], images[known])  # bit for bit, after the [-1, 1] round trip
    assert (out[~known] != 0.5).any()  # the hole holds the generator's pixels, not the grey it was given
    raw = model.train()(mask_images(images, holes) * 2 - 1)  # the model itself composites, in training too
    assert torch.equal(raw[known], (images * 2 - 1)[known])
    raw.sum().backward()  # and only the hole passes gradients back
    assert model.generator.head[1].weight.grad.abs().sum() > 0
    generated = torch.rand_like(images)
    assert torch.equal(composite(generated, images, holes), torch.where(holes, generated, images))


def test_hole_scores_on_hand_built_examples():
    reference = torch.full((2, 3, 16, 16), 0.5)
    hole = square()
    estimate = reference.clone()
    estimate[hole.expand_as(estimate)] += 0.1  # an error of 0.1 on the hole's 25 pixels only
    assert torch.allclose(hole_psnr(estimate, reference, hole), torch.full((2,), 20.0))  # 10 log10(1 / 0.01)
    # Over the whole image the same error is diluted by the 25 / 256 hole share: 10 log10(256 / 25) dB more.
    assert torch.allclose(psnr(estimate, reference), torch.full((2,), 20 + 10 * np.log10(256 / 25)))
    # SSIM on the hole's box: errors outside it do not count, errors inside do.
    outside = reference.clone()
    outside[..., :2, :] = 0.0
    textured = reference + 0.2 * torch.rand(2, 3, 16, 16)
    assert torch.allclose(hole_ssim(outside, reference, hole), torch.ones(2))
    assert (hole_ssim(reference, textured, hole) < 0.9).all()
    assert torch.equal(hole_ssim(reference + 0, reference, hole), torch.ones(2))
    with pytest.raises(ShapeError, match="no hole"):
        hole_ssim(reference, reference, torch.zeros(2, 1, 16, 16, dtype=torch.bool))


def test_ssim_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    generator = torch.Generator().manual_seed(0)
    reference = torch.rand(1, 3, 24, 24, generator=generator)
    estimate = (reference + 0.1 * torch.randn(1, 3, 24, 24, generator=generator)).clamp(0, 1)
    expected = metrics.structural_similarity(estimate[0].numpy(), reference[0].numpy(), data_range=1.0,
                                             channel_axis=0, gaussian_weights=True, sigma=1.5,
                                             use_sample_covariance=False)
    assert ssim(estimate, reference).item() == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("method", CLASSICAL_FILLS)
def test_classical_fills_continue_a_ramp_and_keep_known_pixels(method):
    pytest.importorskip("skimage" if method == "biharmonic" else "cv2")
    ramp = torch.linspace(0.1, 0.9, 32).expand(2, 3, 32, 32).clone()  # brightness rises left to right
    hole = square(2, 32, 10, 12, 8)
    filled = classical_fill(ramp, hole, method)
    known = ~hole.expand_as(ramp)
    assert torch.equal(filled[known], ramp[known])
    grey = mask_images(ramp, hole)[:, :3]
    error, grey_error = (filled - ramp)[~known].abs(), (grey - ramp)[~known].abs()
    assert error.mean() < 0.5 * grey_error.mean() and error.max() < 0.08  # close to the ramp, far better than grey
    assert hole_psnr(filled, ramp, hole).min() > hole_psnr(grey, ramp, hole).max() + 5
    with pytest.raises(CnnkitError, match="unknown classical fill"):
        classical_fill(ramp, hole, "patchmatch")


def test_a_classical_prefill_is_what_the_generator_corrects():
    pytest.importorskip("cv2")
    images = torch.rand(2, 3, 16, 16)
    hole = square()
    prefilled = mask_images(images, hole, "telea")
    assert torch.equal(prefilled[:, :3], classical_fill(images, hole, "telea"))
    assert torch.equal(prefilled[:, 3:] > 0, hole)
    model = create_translator("inpaint", 3, base_channels=4)
    assert torch.allclose(translate_batch(model, prefilled), prefilled[:, :3])  # untrained: Telea's answer
    with pytest.raises(CnnkitError, match="unknown hole prefill 'noise'"):
        mask_images(images, hole, "noise")
    with pytest.raises(CnnkitError, match="unknown hole prefill"):
        Pix2PixTask("inpaint", prefill="zeros")


def test_bad_masks_are_refused_with_the_shapes_named():
    images = torch.rand(2, 3, 16, 16)
    with pytest.raises(ShapeError, match=r"shape \(2, 3, 16, 16\) does not fit images of shape \(2, 3, 16, 16\)"):
        check_mask(images, torch.zeros(2, 3, 16, 16))  # one channel, not three
    with pytest.raises(ShapeError, match=r"expected \(16, 16\)"):
        mask_images(images, torch.zeros(2, 1, 8, 8))
    with pytest.raises(ShapeError, match="0 \\(known pixel\\) and 1 \\(hole\\)"):
        check_mask(images, torch.full((16, 16), 255))
    with pytest.raises(ShapeError, match="batch of images"):
        check_mask(images[0], torch.zeros(16, 16))
    assert check_mask(images, torch.ones(16, 16)).shape == (2, 1, 16, 16)  # one mask for the whole batch


@pytest.fixture(scope="module")
def inpainter(tmp_path_factory):
    """A tiny inpainting pix2pix trained one epoch: a run folder as the CLI expects."""
    out = tmp_path_factory.mktemp("inpaint")
    torch.manual_seed(0)
    Trainer(create_translator("inpaint", 3, base_channels=4), bar_dataset(n_train=16, n_test=8, size=32, channels=3),
            TrainConfig(**{**PIX2PIX_TRAINING, "epochs": 1, "batch_size": 8, "progress": False}), out=out,
            task=Pix2PixTask("inpaint", mask_size=8)).fit()
    return out


def test_inpainting_task_scores_the_hole(inpainter):
    import json

    summary = json.loads((inpainter / "summary.json").read_text())
    assert {"test_hole_psnr", "test_hole_ssim", "test_hole_l1"} <= set(summary)
    # The composited output equals the target outside the 8x8 hole, so the whole-image error is the hole's
    # error diluted by its 64 / 1024 share of the pixels.
    assert summary["test_l1"] == pytest.approx(summary["test_hole_l1"] * 64 / 1024, rel=1e-4)


def test_translate_cli_fills_the_hole_a_mask_names(inpainter, tmp_path, capsys):
    photo, hole = tmp_path / "photo.png", tmp_path / "hole.png"
    pixels = np.random.default_rng(0).integers(0, 255, (20, 36, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(photo)
    mask = np.zeros((20, 36), dtype=np.uint8)
    mask[5:12, 10:20] = 255
    Image.fromarray(mask).save(hole)
    assert main(["translate", str(inpainter), str(photo), "--mask", str(hole), "-o", str(tmp_path / "out.png")]) == 0
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert np.array_equal(out[mask == 0], pixels[mask == 0])  # what it was given comes back unchanged
    assert main(["translate", str(inpainter), str(photo), "-o", str(tmp_path / "x.png")]) == 2
    assert "pass --mask MASK.png" in capsys.readouterr().err
    Image.fromarray(mask[:10]).save(hole)
    assert main(["translate", str(inpainter), str(photo), "--mask", str(hole)]) == 2
    assert "is 36x10 but its image is 36x20" in capsys.readouterr().err
    assert main(["translate", str(inpainter), str(photo), "--make-input", "-o", str(tmp_path / "y.png")]) == 0
