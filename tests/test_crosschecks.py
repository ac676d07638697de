"""cnnkit against independent implementations of the same definitions (test-only dependencies):

- attribution (cnnkit.viz) against Captum 0.9: saliency, Grad-CAM, occlusion, integrated gradients, guided
  backpropagation and deconvolution, on lenet5_relu and resnet20 with random weights;
- PSNR and SSIM (cnnkit.denoise) against scikit-image's metrics with the same settings;
- the calculator's multiply-accumulates (cnnkit.analysis) against torchinfo on every zoo model.

Where a convention differs the test applies it to the reference's output and says so; every comparison is
exact up to float rounding.
"""

import warnings

import pytest
import torch
import torch.nn as nn

from cnnkit.models import create_model
from cnnkit.viz import attribution, backprojection
from viz_support import single_thread, single_thread_for_module_fixtures  # noqa: F401

captum_attr = pytest.importorskip("captum.attr")

# Model, input shape, a layer with spatial maps for Grad-CAM (a ReLU or a stage that ends with one: Captum
# records a convolution's output before an in-place ReLU overwrites it in the forward pass, cnnkit clones it),
# and the occlusion window/stride.
MODELS = {
    "lenet5_relu": ((1, 32, 32), "features.4", 5, 3),
    "resnet20": ((3, 32, 32), "layer3", 6, 4),
}


@pytest.fixture(scope="module", params=list(MODELS))
def case(request):
    torch.manual_seed(0)
    model = create_model(request.param).eval()
    shape, layer, window, stride = MODELS[request.param]
    images = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    return model, images, layer, window, stride, torch.tensor([3, 7])


def assert_agree(ours: torch.Tensor, theirs: torch.Tensor, relative: float = 1e-5) -> None:
    ours, theirs = ours.detach().flatten(), theirs.detach().flatten()
    assert torch.corrcoef(torch.stack([ours, theirs]))[0, 1] >= 0.999
    assert (ours - theirs).abs().max() <= relative * theirs.abs().max().clamp_min(1e-12)


def quietly(call, *args, **kwargs):
    with warnings.catch_warnings():  # Captum warns that it set requires_grad and hooked the ReLUs
        warnings.simplefilter("ignore")
        return call(*args, **kwargs)


def test_saliency_matches_captum(case):
    model, images, _, _, _, target = case
    raw = quietly(captum_attr.Saliency(model).attribute, images, target=target, abs=True)
    # cnnkit's convention: the largest |gradient| over channels, scaled by its 99th percentile.
    assert_agree(attribution.saliency(model, images, target), attribution.scale_to_percentile(raw.amax(dim=1)))


def test_gradcam_matches_captum(case):
    model, images, layer, _, _, target = case
    module = dict(model.named_modules())[layer]
    cam = quietly(captum_attr.LayerGradCam(model, module).attribute, images, target=target, relu_attributions=True)
    cam = captum_attr.LayerAttribution.interpolate(cam, tuple(images.shape[-2:]), interpolate_mode="bilinear")
    cam = cam.squeeze(1) / cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)  # cnnkit scales each to max 1
    assert_agree(attribution.gradcam(model, images, layer, target), cam)


def test_occlusion_matches_captum(case):
    model, images, _, window, stride, target = case
    channels = images.shape[1]
    theirs = captum_attr.Occlusion(model).attribute(images, sliding_window_shapes=(channels, window, window),
                                                   strides=(1, stride, stride), baselines=0.0, target=target)
    ours = attribution.occlusion(model, images, target, window=window, stride=stride)
    # Captum repeats the map over the channels the window covers. Each value is a difference of two float32
    # scores about ten times its size, so rounding shows at ~1e-5 of the largest drop.
    assert_agree(ours, theirs[:, 0], relative=1e-4)
    assert torch.equal(theirs, theirs[:, :1].expand_as(theirs))


@pytest.mark.parametrize("rule, method", [("gauss-legendre", "gausslegendre"), ("left", "riemann_left"),
                                          ("right", "riemann_right"), ("middle", "riemann_middle"),
                                          ("trapezoid", "riemann_trapezoid")])
def test_integrated_gradients_match_captum(case, rule, method):
    model, images, _, _, _, target = case
    steps = 12
    theirs = quietly(captum_attr.IntegratedGradients(model).attribute, images, target=target, n_steps=steps,
                     method=method)
    if rule == "trapezoid":
        # Captum's trapezoid gives the n points weights 1/n (halved at the ends), which sum to (n - 1)/n; the
        # trapezoid rule's are 1/(n - 1), which sum to 1, so completeness holds. Same points, rescaled.
        theirs = theirs * steps / (steps - 1)
    assert_agree(attribution.integrated_gradients(model, images, target, steps=steps, rule=rule), theirs)


def test_guided_backprop_and_deconvolution_match_captum(case):
    model, images, _, _, _, target = case
    theirs = quietly(captum_attr.GuidedBackprop(model).attribute, images, target=target)
    assert_agree(backprojection.guided_backprop(model, images, target), theirs)
    theirs = quietly(captum_attr.Deconvolution(model).attribute, images, target=target)
    assert_agree(backprojection.deconvnet(model, images, target), theirs)


# PSNR and SSIM against scikit-image ------------------------------------------------------------------------

def test_psnr_and_ssim_match_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    from cnnkit.denoise import psnr, ssim

    generator = torch.Generator().manual_seed(0)
    for channels in (1, 3):
        clean = torch.rand(3, channels, 40, 36, generator=generator)
        noisy = (clean + 0.1 * torch.randn(clean.shape, generator=generator)).clamp(0, 1)
        ours_psnr, ours_ssim = psnr(noisy, clean), ssim(noisy, clean)
        for index in range(len(clean)):
            estimate, reference = noisy[index].double().numpy(), clean[index].double().numpy()
            assert ours_psnr[index].item() == pytest.approx(
                metrics.peak_signal_noise_ratio(reference, estimate, data_range=1.0), abs=1e-4)
            # The settings of Wang et al. 2004 that cnnkit uses: an 11x11 Gaussian window (sigma 1.5; skimage's
            # truncate=3.5 gives radius 5), population covariances, the mean over valid windows and channels.
            theirs = metrics.structural_similarity(estimate, reference, data_range=1.0, gaussian_weights=True,
                                                   sigma=1.5, use_sample_covariance=False, channel_axis=0)
            assert ours_ssim[index].item() == pytest.approx(theirs, abs=1e-4)


# The calculator's multiply-accumulates against torchinfo ---------------------------------------------------

def _zoo_names():
    from cnnkit.models.registry import list_models

    # resnet1202 (20 s here) is resnet110's blocks and stages repeated: resnet20 to resnet110 cover it.
    return [name for name in list_models() if name != "resnet1202"]


def _dense_layers(model: nn.Module):
    """Convolutions and linear layers whose cost is the dense one (not a layer that counts its own sparse
    connections, like LeNet-5's C3)."""
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and not hasattr(module, "multiply_adds"):
            yield name, module


# The calculator counts 0 MACs for the stem convolution of a features_only backbone (FeatureExtractor runs the stem
# as a Sequential made per call, which FlopCounterMode files under another module name): a known miscount of
# 589,824 MACs in faster_rcnn's resnet20 stem, left to a fix of the calculator; strict, so the fix shows here.
MISCOUNTED = {"faster_rcnn": "the calculator misses a features_only backbone's stem convolution"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(reason=MISCOUNTED[n], strict=True))
                                  if n in MISCOUNTED else n for n in _zoo_names()])
def test_convolution_and_linear_macs_match_torchinfo(name):
    """torchinfo 1.8 counts, per layer with parameters, (weight + bias elements) x output positions for a
    convolution and (weight + bias elements) for anything else. So its total also holds the bias additions,
    a batch norm's 2C parameters (as if they were multiply-adds, once per image), and for a transposed
    convolution the kernel at every *output* position (stride^2 times the real cost, hence pix2pix's and the
    U-Net's larger totals); cnnkit counts each convolution's and linear layer's weight products. On the layers
    both count the same way, convolutions and linear layers, minus torchinfo's bias term, they must agree."""
    torchinfo = pytest.importorskip("torchinfo")
    from cnnkit.analysis import summary
    from cnnkit.models.registry import get_model_entry

    size = get_model_entry(name).input_size
    with torch.device("meta"):
        model = create_model(name).eval()
    ours = {row.name: row.macs for row in summary(model, size).rows}
    report = torchinfo.summary(model, input_size=(1, *size), device="meta", verbose=0, mode="eval")
    theirs = {}
    for info in report.summary_list:
        theirs.setdefault(id(info.module), 0)
        theirs[id(info.module)] += info.macs
    checked = 0
    for layer, module in _dense_layers(model):
        if layer not in ours or id(module) not in theirs:
            continue  # did not run in eval mode (GoogLeNet's auxiliary heads)
        bias = 0 if module.bias is None else module.bias.numel()
        positions = theirs[id(module)] // (module.weight.numel() + bias)
        assert theirs[id(module)] - bias * positions == ours[layer], layer
        checked += 1
    assert checked > 0
