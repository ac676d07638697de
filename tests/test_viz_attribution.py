"""Attribution on a task whose answer is known: the class is decided by a small striped patch placed at a
random position, so an honest explanation must point at the patch.

The tiny CNN is trained by the project's Trainer in the fixture (about a second).
"""

import pytest
import torch
import torch.nn as nn

from cnnkit.data.datasets import DatasetBundle, TensorImageDataset
from cnnkit.errors import CnnkitError, UnknownNameError
from cnnkit.train import TrainConfig, Trainer
from cnnkit.viz import UnitOutOfRangeError, explain, gradcam, saliency, smoothgrad, total_variation
from cnnkit.viz.attribution import INTEGRATION_RULES, integrated_gradients, integration_rule, occlusion
from viz_support import single_thread, single_thread_for_module_fixtures  # noqa: F401

SIZE, PATCH = 24, 8


def patch_dataset(count: int, seed: int):
    """Faint noise with a PATCH x PATCH patch of stripes: horizontal means class 0, vertical class 1."""
    generator = torch.Generator().manual_seed(seed)
    images = 0.1 * torch.rand(count, 1, SIZE, SIZE, generator=generator)
    labels = torch.randint(0, 2, (count,), generator=generator)
    corners = torch.randint(0, SIZE - PATCH + 1, (count, 2), generator=generator)
    horizontal = (torch.arange(PATCH) % 2).float().view(-1, 1).expand(PATCH, PATCH)
    masks = torch.zeros(count, SIZE, SIZE)
    for index, (top, left) in enumerate(corners.tolist()):
        images[index, 0, top:top + PATCH, left:left + PATCH] = horizontal if labels[index] == 0 else horizontal.T
        masks[index, top:top + PATCH, left:left + PATCH] = 1
    return images, labels, masks


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    # Global average pooling before the classifier, as in the CAM papers; no conv biases, so nothing fires
    # on an empty background.
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.ReLU(inplace=True),
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 2),
    )
    # The project's one training loop, on the images as uint8 with mean 0 and std 1, so that the Trainer's
    # preprocessing gives back the float images the tests below feed the model.
    def as_dataset(count, seed):
        images, labels, _ = patch_dataset(count, seed)
        return TensorImageDataset((images * 255).round().to(torch.uint8), labels, ["horizontal", "vertical"])

    bundle = DatasetBundle("patches", as_dataset(1024, seed=0), as_dataset(128, seed=1), ["horizontal", "vertical"],
                           mean=(0.0,), std=(1.0,))
    config = TrainConfig(epochs=4, batch_size=64, optimizer="adam", lr=1e-2, weight_decay=0.0, schedule="constant",
                         progress=False, eval_batch_size=128, device="cpu", num_threads=1)
    Trainer(model, bundle, config).fit()
    return model.eval()


def test_the_tiny_cnn_solves_the_task(trained):
    images, labels, _ = patch_dataset(128, seed=1)
    with torch.no_grad():
        assert (trained(images).argmax(1) == labels).float().mean() >= 0.95


def test_gradcam_puts_most_of_its_mass_on_the_patch(trained):
    images, labels, masks = patch_dataset(64, seed=1)
    heatmaps = gradcam(trained, images, layer="3", target=labels)
    assert heatmaps.shape == (64, SIZE, SIZE)
    on_patch = (heatmaps * masks).sum(dim=(1, 2)) / heatmaps.sum(dim=(1, 2))
    # The patch is 11% of the image; the receptive field (5x5) lets some mass spill just past its border.
    assert on_patch.mean() >= 0.70


def test_gradcam_works_on_a_frozen_model(trained):
    images, labels, _ = patch_dataset(4, seed=5)
    expected = gradcam(trained, images, layer="3", target=labels)
    for parameter in trained.parameters():
        parameter.requires_grad_(False)
    try:
        assert torch.allclose(gradcam(trained, images, layer="3", target=labels), expected)
    finally:
        for parameter in trained.parameters():
            parameter.requires_grad_(True)


def test_saliency_of_a_linear_model_is_its_weight_magnitude():
    torch.manual_seed(0)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    images = torch.randn(2, 3, 4, 4)
    weight = linear[1].weight[3].detach().view(3, 4, 4).abs().amax(dim=0)
    expected = (weight / torch.quantile(weight.flatten(), 0.99)).clamp(max=1)
    heatmaps = saliency(linear, images, target=3)
    assert torch.allclose(heatmaps, expected.expand(2, 4, 4), atol=1e-6)
    # The gradient of a linear model does not depend on the input, so SmoothGrad's noise changes nothing.
    assert torch.allclose(smoothgrad(linear, images, target=3, samples=4), heatmaps, atol=1e-5)


def test_smoothgrad_is_less_speckled_than_the_raw_gradient(trained):
    images, labels, _ = patch_dataset(16, seed=2)
    raw, smooth = saliency(trained, images, labels), smoothgrad(trained, images, labels, samples=16)
    assert total_variation(smooth).mean() < total_variation(raw).mean()


def test_explain_writes_overlays_and_defaults_to_the_predicted_class(trained, tmp_path):
    images, _, _ = patch_dataset(2, seed=3)
    result = explain(trained, images, gradcam_layer="2", png=tmp_path / "explain.png")
    assert set(result) == {"saliency", "smoothgrad", "gradcam", "target"}
    assert torch.equal(result["target"], trained(images).argmax(1))
    assert (tmp_path / "explain.png").stat().st_size > 0


def test_bad_class_and_layer_are_reported(trained):
    images, _, _ = patch_dataset(1, seed=4)
    with pytest.raises(UnitOutOfRangeError, match="valid classes are 0 to 1"):
        gradcam(trained, images, layer="3", target=2)
    with pytest.raises(UnknownNameError, match="Valid names: 0, 1, 2"):
        gradcam(trained, images, layer="conv9", target=0)
    with pytest.raises(UnitOutOfRangeError, match="spatial maps"):
        gradcam(trained, images, layer="6", target=0)


def test_occluding_the_patch_drops_the_class_score_more_than_occluding_the_background(trained):
    images, labels, masks = patch_dataset(16, seed=6)
    drops = occlusion(trained, images, labels, window=4, stride=2)
    assert drops.shape == (16, SIZE, SIZE)
    on_patch = (drops * masks).sum(dim=(1, 2)) / masks.sum(dim=(1, 2))
    off_patch = (drops * (1 - masks)).sum(dim=(1, 2)) / (1 - masks).sum(dim=(1, 2))
    assert (on_patch > 5 * off_patch.clamp_min(0) + 0.1).all()


def test_occlusion_is_the_score_drop_of_each_patch():
    # A linear score: hiding a patch removes exactly that patch's weighted sum, so each pixel's mean drop over
    # the windows covering it can be written out.
    torch.manual_seed(0)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(6 * 6, 2))
    image = torch.randn(1, 1, 6, 6)
    contribution = (linear[1].weight[1].view(6, 6) * image[0, 0]).detach()
    drops = occlusion(linear, image, target=1, window=3, stride=3)
    expected = contribution.view(2, 3, 2, 3).sum(dim=(1, 3)).repeat_interleave(3, 0).repeat_interleave(3, 1)
    assert torch.allclose(drops[0], expected, atol=1e-5)


def test_integrated_gradients_adds_up_to_the_score_difference(trained):
    images, labels, _ = patch_dataset(4, seed=7)
    attributions = integrated_gradients(trained, images, labels, steps=64)
    with torch.no_grad():
        scores = trained(images).gather(1, labels.view(-1, 1)).squeeze(1)
        baseline_scores = trained(torch.zeros_like(images)).gather(1, labels.view(-1, 1)).squeeze(1)
    gap = attributions.sum(dim=(1, 2, 3)) - (scores - baseline_scores)
    assert (gap.abs() <= 0.02 * (scores - baseline_scores).abs() + 1e-3).all()


@pytest.mark.parametrize("rule", INTEGRATION_RULES)
def test_integration_rules_weigh_a_constant_and_a_straight_line_as_they_should(rule):
    alphas, weights = integration_rule(5, rule)
    assert torch.isclose(weights.sum(), torch.tensor(1.0))
    # The integral of t over [0, 1] is 1/2: exact for the trapezoid, midpoint and Gauss rules; the left and
    # right Riemann sums are off by half a step, one each way.
    error = {"left": -0.1, "right": 0.1}.get(rule, 0.0)
    assert torch.isclose((weights * alphas).sum(), torch.tensor(0.5 + error))


def test_bad_occlusion_and_integration_settings_are_reported(trained):
    images, _, _ = patch_dataset(1, seed=4)
    with pytest.raises(CnnkitError, match="window must be 1 to 24"):
        occlusion(trained, images, window=30)
    with pytest.raises(CnnkitError, match="at least 2 steps"):
        integrated_gradients(trained, images, steps=1)
    with pytest.raises(CnnkitError, match="choose one of trapezoid"):
        integrated_gradients(trained, images, rule="simpson")
