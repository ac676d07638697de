"""AlexNet's data augmentation (Krizhevsky et al. 2012, section 4.1), batched: random-scale crops, PCA lighting,
ten-crop testing; checked against numpy and against slicing by hand."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnkit.data.augment import (AugmentConfig, Preprocess, average_probabilities, colour_principal_components,
                                 crop_boxes_resized, lighting_offsets, pca_lighting, random_resized_crop,
                                 resized_crop_boxes, ten_crop)
from cnnkit.errors import CnnkitError
from cnnkit.models import create_model
from cnnkit.train import TrainConfig, Trainer
from helpers import bar_dataset

FAST = dict(batch_size=32, lr=0.01, optimizer="adam", weight_decay=0.0, progress=False, eval_batch_size=64)


def _coloured_images(count=64, size=8, seed=0) -> torch.Tensor:
    """Pixels whose colours are correlated (a shared brightness plus a blue-yellow axis), like photos."""
    g = torch.Generator().manual_seed(seed)
    brightness = torch.rand(count, 1, size, size, generator=g)
    tint = torch.rand(count, 1, size, size, generator=g) - 0.5
    rgb = torch.cat([brightness + 0.3 * tint, brightness + 0.25 * tint, brightness - 0.4 * tint], 1)
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8)


def test_principal_components_match_numpy_eigh_of_the_pixel_covariance():
    images = _coloured_images()
    components = colour_principal_components(images, chunk=7)  # chunks that do not divide the set
    pixels = images.permute(0, 2, 3, 1).reshape(-1, 3).double().numpy() / 255
    values, vectors = np.linalg.eigh(np.cov(pixels, rowvar=False, bias=True))
    values, vectors = values[::-1], vectors[:, ::-1]
    assert np.allclose(components.eigenvalues.numpy(), values, rtol=1e-4, atol=1e-7)
    for i in range(3):  # eigenvectors are defined up to sign
        assert abs(float(np.dot(components.eigenvectors[:, i].numpy(), vectors[:, i]))) == pytest.approx(1, abs=1e-4)
    assert components.eigenvalues[0] > 5 * components.eigenvalues[1]  # brightness dominates


def test_lighting_offset_is_alpha_times_lambda_along_each_principal_component():
    images = _coloured_images()
    components = colour_principal_components(images)
    x = images.float() / 255
    lit = pca_lighting(x, components, std=0.1, generator=torch.Generator().manual_seed(5))
    offset = lit - x
    # One colour shift per image, the same at every pixel.
    per_image = offset[:, :, :1, :1].squeeze(-1).squeeze(-1)
    assert torch.allclose(offset, per_image[:, :, None, None].expand_as(offset), atol=1e-6)
    # Projected onto the eigenvectors, the shift is alpha_i * lambda_i with the alpha drawn from the generator.
    alpha = torch.randn(len(x), 3, generator=torch.Generator().manual_seed(5)) * 0.1
    recovered = per_image @ components.eigenvectors
    assert torch.allclose(recovered, alpha * components.eigenvalues, rtol=1e-3, atol=1e-7)
    assert torch.allclose(lighting_offsets(alpha, components), per_image, atol=1e-6)


def test_lighting_keeps_the_dataset_mean_on_average_over_many_draws():
    components = colour_principal_components(_coloured_images())
    x = torch.full((20000, 3, 1, 1), 0.5)
    offsets = pca_lighting(x, components, 0.1, torch.Generator().manual_seed(0)) - x
    typical = 0.1 * components.eigenvalues[0]
    assert offsets.mean((0, 2, 3)).abs().max() < 4 * typical / math.sqrt(len(x))  # mean ~ 0 within noise
    assert offsets.std((0, 2, 3)).max() > 0.5 * typical  # but each image is shifted


def test_ten_crop_gives_the_four_corners_the_centre_and_their_mirror_images():
    x = torch.arange(2 * 3 * 7 * 9, dtype=torch.float32).view(2, 3, 7, 9)
    views = ten_crop(x, 5)
    by_hand = [x[..., 0:5, 0:5], x[..., 0:5, 4:9], x[..., 2:7, 0:5], x[..., 2:7, 4:9], x[..., 1:6, 2:7]]
    by_hand += [view.flip(-1) for view in by_hand]
    assert len(views) == 10 and all(torch.equal(a, b) for a, b in zip(views, by_hand))
    with pytest.raises(ValueError, match="does not fit"):
        ten_crop(x, 8)


def test_ten_crop_averaging_is_the_mean_of_the_views_softmax():
    logits = [torch.randn(4, 6, generator=torch.Generator().manual_seed(i)) for i in range(10)]
    averaged = average_probabilities(logits)
    expected = torch.stack([F.softmax(view, 1) for view in logits]).mean(0)
    assert torch.allclose(F.softmax(averaged, 1), expected, atol=1e-6)
    assert torch.allclose(averaged.exp(), expected, atol=1e-6)


def test_trainer_ten_crop_evaluation_averages_the_softmax_of_the_ten_preprocessed_crops():
    torch.manual_seed(0)
    data = bar_dataset(n_test=32)
    model = create_model("lenet5_relu", num_classes=2).eval()
    trainer = Trainer(model, data, TrainConfig(tta_crop=24, **FAST))
    size = trainer.preprocess.input_size or (32, 32)
    with torch.no_grad():
        crops = [F.interpolate(view.float(), size=size, mode="bilinear")
                 for view in ten_crop(data.test.images, 24)]
        probabilities = torch.stack([F.softmax(model(trainer.preprocess(c)), 1) for c in crops]).mean(0)
    kept = trainer.evaluate(keep_logits=True)
    assert torch.allclose(F.softmax(kept["logits"], 1), probabilities, atol=1e-5)
    assert kept["loss"] == pytest.approx(F.nll_loss(probabilities.log(), data.test.labels).item(), rel=1e-4)
    with pytest.raises(CnnkitError, match="tta_crop=40 is larger"):
        Trainer(model, data, TrainConfig(tta_crop=40, **FAST)).evaluate()


def test_random_scale_crops_have_the_requested_size_and_lie_inside_the_image():
    boxes = resized_crop_boxes(500, 30, 40, scale=(0.1, 0.6), generator=torch.Generator().manual_seed(0))
    top, left, height, width = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + height <= 30).all() and (left + width <= 40).all()
    share = (height * width).float() / (30 * 40)
    assert share.min() > 0.08 and share.max() < 0.65  # the requested areas, up to rounding to whole pixels
    aspect = width.float() / height
    assert aspect.min() > 0.7 and aspect.max() < 1.45 and aspect.std() > 0.1
    x = torch.rand(6, 3, 30, 40)
    out = random_resized_crop(x, (16, 12), generator=torch.Generator().manual_seed(1))
    assert out.shape == (6, 3, 16, 12)
    assert out.min() >= x.min() - 1e-6 and out.max() <= x.max() + 1e-6  # bilinear: within the image's values


def test_a_box_as_large_as_the_output_is_cut_out_pixel_for_pixel():
    # AlexNet's crop: a 224 box of a 256 image read at 224, i.e. no resampling (here 5 of 9).
    x = torch.rand(3, 2, 9, 9)
    boxes = torch.tensor([[0, 0, 5, 5], [4, 2, 5, 5], [1, 4, 5, 5]])
    out = crop_boxes_resized(x, boxes, (5, 5))
    for image, (top, left, _, _) in enumerate(boxes.tolist()):
        assert torch.allclose(out[image], x[image, :, top:top + 5, left:left + 5], atol=1e-5)
    alexnet = random_resized_crop(x, (5, 5), scale=(25 / 81, 25 / 81), ratio=(1, 1),
                                  generator=torch.Generator().manual_seed(2))
    windows = x.unfold(2, 5, 1).unfold(3, 5, 1)  # every 5x5 window: (N, C, 5, 5, 5, 5)
    for image in range(3):
        found = (windows[image] - alexnet[image][:, None, None]).abs().amax((0, 3, 4)) < 1e-5
        assert found.any(), "each AlexNet crop is one of the image's 5x5 windows"


def test_recipe_options_reach_the_preprocess_and_bad_ones_are_refused():
    config = AugmentConfig.from_dict({"resized_crop": [0.25, 1], "crop_ratio": [1, 1], "lighting": 0.1, "flip": True})
    assert config.resized_crop == (0.25, 1.0) and config.lighting == 0.1
    pre = Preprocess((0.5,) * 3, (0.25,) * 3, (12, 12), config)
    images = _coloured_images(8, 20)
    with pytest.raises(ValueError, match="principal components"):
        pre(images, train=True)
    pre.lighting_components = colour_principal_components(images)
    out = pre(images, train=True, generator=torch.Generator().manual_seed(0))
    again = pre(images, train=True, generator=torch.Generator().manual_seed(0))
    assert out.shape == (8, 3, 12, 12) and torch.equal(out, again)
    assert pre(images).shape == (8, 3, 12, 12)  # evaluation: the whole image, fitted
    for bad, message in (({"resized_crop": [0.5, 2]}, "within"), ({"resized_crop": 0.5}, "range"),
                         ({"lighting": -1}, "lighting"), ({"crop_ratio": [0, 1]}, "crop_ratio")):
        with pytest.raises(ValueError, match=message):
            AugmentConfig.from_dict(bad)


def test_the_trainer_fits_the_lighting_components_to_its_training_images():
    data = bar_dataset(n_test=8)
    trainer = Trainer(create_model("lenet5_relu", num_classes=2), data,
                      TrainConfig(augment={"lighting": 0.1, "resized_crop": [0.5, 1]}, epochs=1, **FAST))
    expected = colour_principal_components(data.train.images)
    assert torch.allclose(trainer.preprocess.lighting_components.eigenvalues, expected.eigenvalues)
    trainer.fit()


def test_a_recipe_names_the_alexnet_options():
    from cnnkit.train.recipe import parse_recipe

    recipe = parse_recipe("augment: {resized_crop: [0.08, 1.0], crop_ratio: [0.75, 1.333], flip: true, "
                          "lighting: 0.1}\ntta_crop: 28\nepochs: 1\n")
    config = TrainConfig.from_dict(recipe)
    augment = AugmentConfig.from_dict(config.augment)
    assert (augment.resized_crop, augment.crop_ratio, augment.lighting, config.tta_crop) == (
        (0.08, 1.0), (0.75, 1.333), 0.1, 28)
    with pytest.raises(CnnkitError, match="tta_crop"):
        TrainConfig.from_dict({"tta_crop": -1})
