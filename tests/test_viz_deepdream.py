"""DeepDream: the chosen layer's activations must grow, jitter must leave the picture where it was, octaves must
give back the input's size, and bad layer names and sizes must say what to do."""

import pytest
import torch
import torch.nn as nn
from PIL import Image

from cnnkit.cli import main
from cnnkit.errors import CnnkitError, ShapeError, UnknownNameError
from cnnkit.models.registry import create_model
from cnnkit.viz import DreamSettings, deep_dream
from cnnkit.viz.deepdream import octave_sizes
from cnnkit.viz.images import InputSpec
from viz_support import single_thread, single_thread_for_module_fixtures  # noqa: F401

SPEC = InputSpec(3, 32, 32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("resnet20")  # random weights: small, fast, with named stages (stem, layer1..3)


def photo(height=32, width=32, seed=0) -> torch.Tensor:
    """A smooth random picture (bilinear upsampling of 4x4 noise), normalised as SPEC says."""
    coarse = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    pixels = nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return SPEC.normalize(pixels)


def test_the_objective_rises_step_by_step_and_the_activation_norm_with_it(model):
    result = deep_dream(model, photo(), "layer2", SPEC, DreamSettings(steps=12, octaves=1, jitter=0, step_size=0.01))
    objective = [value for _, value in result.history]
    assert len(objective) == 12
    rises = sum(later > earlier for earlier, later in zip(objective, objective[1:]))
    assert rises >= 10  # gradient ascent with a fixed step: almost every step goes up
    assert objective[-1] > 1.5 * objective[0]
    assert result.final_norm[0] > 1.2 * result.start_norm[0]
    assert result.images.min() >= 0 and result.images.max() <= 1  # clipped to a valid picture


def test_jitter_is_undone_so_the_dream_stays_aligned():
    # A 1x1 convolution sees each pixel alone, so rolling the image rolls its gradient exactly: with the roll
    # undone, jitter cannot change the result; left in place, the picture would drift by the shifts.
    torch.manual_seed(0)
    pointwise = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
    image = photo(20, 24)
    still = deep_dream(pointwise, image, "1", SPEC, DreamSettings(steps=4, octaves=1, jitter=0))
    jittered = deep_dream(pointwise, image, "1", SPEC, DreamSettings(steps=4, octaves=1, jitter=7))
    assert not torch.allclose(still.images, SPEC.denormalize(image), atol=1e-3)  # the steps did change it
    torch.testing.assert_close(jittered.images, still.images, atol=1e-5, rtol=0)


def test_jitter_changes_what_a_spatial_layer_dreams(model):
    image = photo()
    still = deep_dream(model, image, "layer1", SPEC, DreamSettings(steps=3, octaves=1, jitter=0))
    jittered = deep_dream(model, image, "layer1", SPEC, DreamSettings(steps=3, octaves=1, jitter=4))
    assert not torch.allclose(still.images, jittered.images, atol=1e-4)


def test_zero_steps_with_jitter_and_octaves_give_the_input_back(model):
    image = photo(30, 41)
    result = deep_dream(model, image, "layer1", SPEC, DreamSettings(steps=0, octaves=3, jitter=9))
    torch.testing.assert_close(result.images, SPEC.denormalize(image), atol=1e-6, rtol=0)
    torch.testing.assert_close(result.model_inputs, image, atol=1e-5, rtol=0)


def test_octaves_go_small_to_large_and_return_the_input_size(model):
    settings = DreamSettings(steps=2, octaves=3, octave_scale=1.5, jitter=3)
    assert octave_sizes(37, 50, settings) == [(16, 22), (25, 33), (37, 50)]
    result = deep_dream(model, photo(37, 50), "layer2", SPEC, settings)
    assert result.octave_sizes == [(16, 22), (25, 33), (37, 50)]
    assert result.images.shape == (1, 3, 37, 50) and result.model_inputs.shape == (1, 3, 37, 50)
    assert [octave for octave, _ in result.history] == [0, 0, 1, 1, 2, 2]


def test_each_octave_carries_the_detail_of_the_smaller_ones_up(model):
    image = photo(48, 48)

    def change(octaves):
        result = deep_dream(model, image, "layer2", SPEC, DreamSettings(steps=4, octaves=octaves, jitter=0))
        return (result.images - SPEC.denormalize(image)).abs().mean()

    # Dropped between octaves, only the last octave's four steps would show; carried, all twelve add up.
    assert change(3) > 1.8 * change(1)


def test_a_stage_and_the_module_of_the_same_name_dream_alike(model):
    settings = DreamSettings(steps=3, octaves=2, jitter=2)
    by_stage = deep_dream(model, photo(), "layer1", SPEC, settings)  # runs the stages up to layer1
    by_module = deep_dream(model, photo(), "layer1.2", SPEC, settings)  # its last block, read by a hook
    torch.testing.assert_close(by_stage.images, by_module.images, atol=1e-5, rtol=0)


def test_same_seed_same_dream_other_seed_another(model):
    def dream(seed):
        return deep_dream(model, photo(), "layer2", SPEC, DreamSettings(steps=3, octaves=2, jitter=4, seed=seed))

    assert torch.equal(dream(3).images, dream(3).images)
    assert not torch.equal(dream(3).images, dream(4).images)


def test_the_model_is_left_as_it_was(model):
    model.train()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    deep_dream(model, photo(), "layer3", SPEC, DreamSettings(steps=2, octaves=1))
    assert model.training  # evaluation mode only while dreaming
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert all(parameter.grad is None for parameter in model.parameters())
    model.eval()


def test_an_unknown_layer_lists_the_stages_and_suggests_a_name(model):
    with pytest.raises(UnknownNameError) as error:
        deep_dream(model, photo(), "layer9", SPEC, DreamSettings(steps=1, octaves=1))
    message = str(error.value)
    assert "stem, layer1, layer2, layer3, classifier" in message and "Did you mean" in message
    assert "model.named_modules()" in message


def test_sizes_the_model_cannot_take_say_what_to_change():
    lenet = create_model("lenet5_relu", num_classes=3)  # fully connected layers want 32x32
    spec = InputSpec(1, 32, 32)
    with pytest.raises(ShapeError, match="fewer octaves"):
        deep_dream(lenet, torch.rand(1, 1, 32, 32), "classifier", spec, DreamSettings(steps=1, octaves=2))
    with pytest.raises(CnnkitError, match="octave_scale must be at least 1.*jitter must be 0 or more"):
        DreamSettings(octave_scale=0.5, jitter=-1)


def test_cli_dreams_a_photo_end_to_end(tmp_path, capsys):
    path = tmp_path / "photo.png"
    Image.new("RGB", (60, 40), (90, 140, 200)).save(path)
    out = tmp_path / "viz"
    code = main(["viz", "dream", "resnet20", str(path), "--layer", "layer1", "layer2", "--steps", "2",
                 "--octaves", "2", "--size", "48", "--no-progress", "-o", str(out)])
    assert code in (0, None)
    assert (out / "dream.png").stat().st_size > 0 and "dream.png" in capsys.readouterr().out
    code = main(["viz", "dream", "resnet20", str(path), "--layer", "layer7", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "Unknown layer 'layer7'" in err and "layer1" in err
