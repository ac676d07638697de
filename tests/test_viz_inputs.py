"""Reading images into a model's input, feature maps, and clear messages for bad input."""

import pytest
import torch
from PIL import Image

from cnnkit.errors import ImageError, UnknownNameError
from cnnkit.models.registry import create_model
from cnnkit.viz import InputSpec, feature_maps, input_spec, layer_names, load_image
from viz_support import single_thread, single_thread_for_module_fixtures  # noqa: F401


@pytest.fixture
def photo(tmp_path):
    """A 40x20 RGB image: left half red, right half blue."""
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))
    path = tmp_path / "photo.png"
    image.save(path)
    return path


def test_input_spec_comes_from_the_models_card():
    spec = input_spec(create_model("lenet5_relu"))
    assert (spec.channels, spec.height, spec.width, spec.mean) == (1, 32, 32, None)
    spec = input_spec(create_model("lenet5_relu", in_channels=3), mean=[0.5], std=[0.25])
    assert (spec.channels, spec.mean, spec.std) == (3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def test_load_image_resizes_centre_crops_converts_and_normalises(photo):
    rgb = load_image(photo, InputSpec(3, 16, 16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
    assert rgb.shape == (1, 3, 16, 16)
    # Shorter side to 16 (32x16), centre crop keeps the middle: left part red, right part blue.
    assert rgb[0, 0, 8, 2].item() == pytest.approx(1.0, abs=0.02)
    assert rgb[0, 2, 8, 2].item() == pytest.approx(-1.0, abs=0.02)
    assert rgb[0, 2, 8, 13].item() == pytest.approx(1.0, abs=0.02)
    grey = load_image(photo, input_spec(create_model("lenet5_relu")))
    assert grey.shape == (1, 1, 32, 32) and 0.0 <= grey.min() and grey.max() <= 1.0


def test_unreadable_or_missing_image_says_what_to_do(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not an image")
    spec = InputSpec(3, 8, 8)
    with pytest.raises(ImageError, match="broken.jpg is not a readable image.* re-save"):
        load_image(broken, spec)
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "missing.png", spec)


def test_feature_maps_of_named_layers(tmp_path):
    model = create_model("lenet5_relu")
    images = torch.rand(2, 1, 32, 32)
    maps = feature_maps(model, images, ["features.0", "features.1", "classifier.1"], png=tmp_path / "maps.png",
                        display_image=images[0])
    assert maps["features.0"].shape == (2, 6, 28, 28)
    # The ReLU after features.0 is in place; the recorded convolution output must still have negatives.
    assert maps["features.0"].min() < 0 and torch.equal(maps["features.1"], maps["features.0"].clamp_min(0))
    assert maps["classifier.1"].shape == (2, 84)
    assert (tmp_path / "maps.png").stat().st_size > 0


def test_unknown_layer_lists_the_valid_names():
    model = create_model("lenet5_relu")
    with pytest.raises(UnknownNameError) as error:
        feature_maps(model, torch.rand(1, 1, 32, 32), ["features.9"])
    message = str(error.value)
    assert "'features.9'" in message and "Valid names:" in message
    assert all(name in message for name in layer_names(model))
