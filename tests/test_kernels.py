"""Hand-designed kernels (notes 001/002), the glyph toy set and the network that learns its filters."""

import math

import pytest
import torch
import torch.nn.functional as F

from cnnkit.data.glyphs import GLYPH_CLASSES, glyph_dataset, render_glyphs
from cnnkit.viz.glyphs import correlation, match_filters, train_glyph_network
from cnnkit.viz.kernels import filter_image, gabor, gaussian, named_kernels, notes_feature, prewitt, sharpen, sobel


def _edge(direction: str, size: int = 16) -> torch.Tensor:
    image = torch.zeros(size, size)
    if direction == "vertical":
        image[:, size // 2:] = 1  # dark left half, bright right half
    else:
        image[size // 2:, :] = 1
    return image


def test_gaussian_is_a_normalised_separable_bump():
    kernel = gaussian(7, 1.5)
    assert kernel.sum().item() == pytest.approx(1, abs=1e-6)
    assert kernel.argmax().item() == 24 and torch.allclose(kernel, kernel.T) and torch.allclose(kernel, kernel.flip(0))
    row = torch.exp(-(torch.arange(7.0) - 3) ** 2 / (2 * 1.5**2))
    assert torch.allclose(kernel, torch.outer(row, row) / torch.outer(row, row).sum(), atol=1e-7)
    flat = filter_image(torch.full((10, 10), 0.4), kernel)
    assert torch.allclose(flat, torch.full((10, 10), 0.4), atol=1e-6)  # blurring keeps flat regions
    with pytest.raises(ValueError, match="odd size"):
        gaussian(4)


@pytest.mark.parametrize("edge_kernel", [sobel, prewitt])
def test_edge_kernels_respond_to_their_edge_direction_only(edge_kernel):
    for direction, other in (("vertical", "horizontal"), ("horizontal", "vertical")):
        kernel = edge_kernel(direction)
        assert kernel.sum().item() == 0  # no response to flat regions
        assert filter_image(_edge(direction), kernel).abs().max() > 2.5
        assert filter_image(_edge(other), kernel).abs().max() == 0
    assert sobel("vertical")[1].tolist() == [-2, 0, 2]
    with pytest.raises(ValueError, match="edge direction"):
        sobel("diagonal")


def test_gabor_responds_most_to_a_grating_of_its_own_orientation():
    size = 41
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                          indexing="ij")
    angles = [math.radians(a) for a in range(0, 180, 15)]
    for theta in (0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4):
        kernel = gabor(theta, wavelength=6.0)
        assert abs(kernel.sum().item()) < 1e-6
        energy = []
        for angle in angles:
            grating = torch.cos(2 * math.pi * (x * math.cos(angle) + y * math.sin(angle)) / 6.0)
            energy.append(filter_image(grating, kernel)[10:-10, 10:-10].pow(2).mean().item())
        peak = angles[max(range(len(angles)), key=energy.__getitem__)]
        assert min(abs(peak - theta), math.pi - abs(peak - theta)) < 1e-6


def test_notes_diagonal_feature_reproduces_the_notes_filtered_x():
    # Notes 002 "Convolution: Trying a match at every location": the 9x9 X of +-1 pixels filtered with the "\"
    # feature, each value the mean of the nine products; the notes print two decimals (truncated).
    x = -torch.ones(9, 9)
    for i in range(1, 8):
        x[i, i] = x[i, 8 - i] = 1
    notes = torch.tensor([[0.77, -0.11, 0.11, 0.33, 0.55, -0.11, 0.33], [-0.11, 1.00, -0.11, 0.33, -0.11, 0.11, -0.11],
                          [0.11, -0.11, 1.00, -0.33, 0.11, -0.11, 0.55], [0.33, 0.33, -0.33, 0.55, -0.33, 0.33, 0.33],
                          [0.55, -0.11, 0.11, -0.33, 1.00, -0.11, 0.11], [-0.11, 0.11, -0.11, 0.33, -0.11, 1.00, -0.11],
                          [0.33, -0.11, 0.55, 0.33, 0.11, -0.11, 0.77]])
    response = F.conv2d(x[None, None], notes_feature("\\")[None, None])[0, 0] / 9
    assert torch.allclose(response, notes, atol=0.011)
    assert notes_feature("/").tolist() == [[-1, -1, 1], [-1, 1, -1], [1, -1, -1]]
    assert notes_feature("x").tolist() == [[1, -1, 1], [-1, 1, -1], [1, -1, 1]]


def test_sharpen_keeps_flat_regions_and_overshoots_edges():
    assert sharpen().sum().item() == 1
    response = filter_image(_edge("vertical"), sharpen())
    assert response[:, 7].max() < 0 and response[:, 8].min() > 1  # darker and brighter beside the edge
    assert set(named_kernels()) >= {"sobel vertical", "gaussian blur", "gabor 45°", "diagonal /", "sharpen"}


def test_glyphs_are_the_classes_they_are_labelled():
    labels = torch.arange(4).repeat(50)
    images = render_glyphs(labels, 12, noise=0.0, generator=torch.Generator().manual_seed(0))[:, 0] > 0
    ys, xs = torch.meshgrid(torch.arange(12), torch.arange(12), indexing="ij")
    for image, label in zip(images, labels.tolist()):
        name = GLYPH_CLASSES[label]
        y, x = ys[image], xs[image]
        if name == "\\":
            assert len(set((y - x).tolist())) == 1 and len(y) >= 5
        elif name == "/":
            assert len(set((y + x).tolist())) == 1 and len(y) >= 5
        elif name == "X":
            on_down, on_up = (y - x) == (y - x).mode().values, (y + x) == (y + x).mode().values
            assert (on_down | on_up).all() and on_down.sum() == on_up.sum() >= 5
        else:  # O: a ring around an empty centre, as wide as it is high
            cy, cx = y.float().mean(), x.float().mean()
            radius = ((y - cy) ** 2 + (x - cx) ** 2).float().sqrt()
            assert radius.min() > 1.4 and (radius.max() - radius.min()) < 1.2 and y.max() - y.min() == x.max() - x.min()
    bundle = glyph_dataset(40, 20, seed=3)
    assert torch.equal(bundle.train.images, glyph_dataset(40, 20, seed=3).train.images)
    assert torch.bincount(bundle.train.labels).tolist() == [10] * 4 and bundle.classes == ["X", "O", "/", "\\"]
    noisy = glyph_dataset(400, 4, noise=0.05, seed=3).train.images > 0
    clean = render_glyphs(glyph_dataset(400, 4, noise=0.0, seed=3).train.labels, 12, 0.0,
                          torch.Generator().manual_seed(6))
    assert noisy.float().mean() > (clean > 0).float().mean()  # flipped pixels add strokes to the background


def test_filter_matching_finds_the_kernel_and_its_sign():
    filters = torch.stack([notes_feature("/") * 3, -sobel("vertical"), sobel("horizontal") + 0.01])[:, None]
    matches = match_filters(filters)
    assert (matches[0].kernel, matches[2].kernel) == ("notes /", "sobel horizontal")
    assert matches[0].correlation == pytest.approx(1) and matches[2].correlation == pytest.approx(1, abs=1e-3)
    assert correlation(sobel("vertical"), -sobel("vertical")) == pytest.approx(-1)
    assert matches[1].correlation < 0.9  # a negated Sobel is no Sobel


def test_the_tiny_network_learns_the_glyphs_in_seconds():
    result = train_glyph_network(filters=4, epochs=4, num_train=1200, seed=1)
    assert result.test_acc > 85
    assert result.filters.shape == (4, 1, 3, 3)
    assert max(m.correlation for m in match_filters(result.filters)) > 0.8  # at least one clean diagonal


def test_kernels_tool_draws_a_photo_and_refuses_a_missing_one(tmp_path, capsys):
    from cnnkit.cli.main import main

    image = tmp_path / "photo.png"
    from PIL import Image

    Image.fromarray((torch.rand(40, 60, 3) * 255).byte().numpy()).save(image)
    assert main(["viz", "kernels", str(image), "-o", str(tmp_path / "out")]) in (0, None)
    assert (tmp_path / "out" / "kernels.png").stat().st_size > 10_000
    assert main(["viz", "kernels", str(tmp_path / "missing.jpg"), "-o", str(tmp_path / "out")]) != 0
    assert "missing.jpg is not an image file" in capsys.readouterr().err
