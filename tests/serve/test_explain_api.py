"""The Explain page's endpoints, checked against the networks' own forward passes and the architecture
calculator (cnnkit.analysis), not against the code that answers them."""

import io

import numpy as np
import pytest
import torch
from serve_helpers import TRAINED_RUN, data_url_image, local_client, png_bytes

EXAMPLE = "tubingen.jpg"


@pytest.fixture(scope="module")
def client(checkpoints_dir):
    from cnnkit.serve import create_app

    with local_client(create_app(checkpoints_dir)) as test_client:
        yield test_client


def unit(client, source, **fields):
    fields = {"source": source, "example": EXAMPLE, "channel": 0, **fields}
    response = client.post("/api/explain/unit", data=fields)
    assert response.status_code == 200, response.json()
    return response.json()


def reference_first_conv(model, batch):
    """The first convolution's output for ``batch``, recorded by a hook of the test's own."""
    from cnnkit.viz.hooks import first_module_of_type

    modules = dict(model.named_modules())
    recorded = {}
    name = first_module_of_type(model, torch.nn.Conv2d)
    handle = modules[name].register_forward_hook(lambda m, i, o: recorded.setdefault("out", o.detach().clone()))
    with torch.no_grad():
        model.eval()(batch)
    handle.remove()
    return name, recorded["out"][0]


def check_arithmetic(answer, model, batch):
    """Products are kernel x patch, they and the bias add up to the value, and the value is the network's."""
    a = answer["arithmetic"]
    name, output = reference_first_conv(model, batch)
    channel, row, column = answer["unit"]
    assert answer["layer"] == name and answer["first_convolution"]
    assert abs(answer["value"] - float(output[channel, row, column])) <= 1e-5
    kernel, patch, products = (torch.tensor(a[key]) for key in ("kernel", "patch", "products"))
    assert torch.equal(kernel, dict(model.named_modules())[name].weight[channel].detach())
    assert torch.allclose(products, kernel * patch, atol=1e-7)
    assert abs(float(products.double().sum()) + a["bias"] - a["value"]) <= 1e-5
    assert abs(a["sum"] - a["value"]) <= 1e-5
    height, width = batch.shape[-2:]
    for i, image_row in enumerate(a["image_rows"]):  # the patch is the input where the field says it is
        for j, image_column in enumerate(a["image_columns"]):
            inside = 0 <= image_row < height and 0 <= image_column < width
            assert a["padding"][i][j] == (not inside)
            expected = batch[0, a["input_channels"], image_row, image_column] if inside else torch.zeros(len(patch))
            assert torch.allclose(patch[:, i, j], expected, atol=1e-6), (i, j)


def test_first_conv_arithmetic_of_a_run_adds_up_to_its_feature_map_value(client, checkpoints_dir):
    from PIL import Image

    from cnnkit.predict import preprocess_from_meta
    from cnnkit.runs import load_model_checkpoint
    from cnnkit.serve.images import drawing_to_input
    from serve_helpers import drawn_one

    model, meta = load_model_checkpoint(checkpoints_dir / TRAINED_RUN)
    drawing = drawn_one()
    response = client.post("/api/explain/unit", data={"source": f"run:{TRAINED_RUN}", "channel": 2, "row": 12,
                                                      "column": 13, "drawing": "true"},
                           files={"image": ("drawing.png", png_bytes(drawing), "image/png")})
    answer = response.json()
    pixels = drawing_to_input(Image.open(io.BytesIO(png_bytes(drawing))).convert("RGB"), meta["image_shape"])
    batch = preprocess_from_meta(meta)(pixels)  # what the Draw page and `cnnkit predict` feed this run
    assert batch.shape[-2:] == (32, 32)  # LeNet-5 reads MNIST's 28x28 digits framed in 32x32
    check_arithmetic(answer, model, batch)
    framed = np.pad(pixels[0, 0].numpy(), 2)
    assert np.array_equal(np.asarray(data_url_image(answer["input"])), framed)


@pytest.mark.parametrize("source, row, column", [("zoo:efficientnet_lite0@imagenet", 0, 111),  # SAME padding
                                                 ("zoo:resnet18", 0, 0), ("zoo:resnet18", 55, 31)])
def test_first_conv_arithmetic_of_zoo_models(client, source, row, column):
    from cnnkit.card import card_of
    from cnnkit.models import create_model
    from cnnkit.serve.photo import EXAMPLES_DIR

    name, _, tag = source[4:].partition("@")
    if tag:
        model = create_model(name, pretrained=tag)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = create_model(name)
    card = card_of(model)
    transform = card.eval_transform((0.5,) * 3, (0.5,) * 3)
    if card.input_size is None:
        import dataclasses
        transform = dataclasses.replace(transform, size=(224, 224))
    batch = transform.normalise(transform.read(EXAMPLES_DIR / EXAMPLE, 3)[None])
    answer = unit(client, source, channel=5, row=row, column=column)
    check_arithmetic(answer, model, batch)
    # The field of the first convolution: its kernel, placed where stride and padding put it.
    layer = next(entry for entry in client.get("/api/explain/layers", params={"source": source}).json()["layers"])
    field = answer["receptive_field"]
    kernel, stride = layer["kernel"][0], layer["stride"][0]
    padding = 0 if layer["same_padding"] else layer["padding"][0]  # TF SAME pads the bottom and right first here
    assert (field["size"], field["top"], field["left"]) == (kernel, row * stride - padding, column * stride - padding)


@pytest.mark.parametrize("source, layer", [(f"run:{TRAINED_RUN}", "features.3"), ("zoo:resnet18", "layer2.0.conv2"),
                                           ("zoo:efficientnet_lite0@imagenet", "_blocks.5._depthwise_conv")])
def test_deeper_units_field_matches_the_calculator_and_holds_the_gradient(client, source, layer):
    from cnnkit.analysis import summary

    layers = client.get("/api/explain/layers", params={"source": source}).json()
    entry = next(item for item in layers["layers"] if item["name"] == layer)
    channels, height, width = entry["output_shape"]
    for row, column in ((0, 0), (height // 2, width - 1)):
        if source.startswith("run"):
            answer = run_unit(client, source, layer, row, column)
        else:
            answer = unit(client, source, layer=layer, channel=channels - 1, row=row, column=column)
        model_name = source[4:].partition("@")[0] if source.startswith("zoo") else "lenet5_relu"
        shape = tuple(layers["input_shape"])
        assert answer["receptive_field"]["size"] == summary(model_name, shape).row(layer).receptive_field
        assert "arithmetic" not in answer and not answer["first_convolution"]
        support, inside = answer["gradient_support"], answer["receptive_field"]["inside"]
        assert support is not None, "the unit's gradient should reach the input"
        top, left, bottom, right = inside
        assert top <= support[0] and left <= support[1] and support[2] <= bottom and support[3] <= right


def run_unit(client, source, layer, row, column):
    from serve_helpers import drawn_one

    response = client.post("/api/explain/unit", data={"source": source, "layer": layer, "row": row, "column": column,
                                                      "drawing": "true", "channel": 0},
                           files={"image": ("drawing.png", png_bytes(drawn_one()), "image/png")})
    assert response.status_code == 200, response.json()
    return response.json()


def test_relu_and_pooling_steps_follow_the_value(client):
    answer = run_unit(client, f"run:{TRAINED_RUN}", "features.0", 13, 13)
    relu, pool = answer["steps"]
    assert relu["type"] == "ReLU" and relu["before"] == answer["value"] and relu["after"] == max(answer["value"], 0)
    assert pool["type"] == "MaxPool2d" and pool["output_position"] == [6, 6] and pool["before"] == relu["after"]
    window = [v for line in pool["window"] for v in line]
    assert relu["after"] in window and pool["chosen"] == max(window) == pool["after"]


def test_maps_are_the_chosen_layer_and_channel(client):
    answer = client.post("/api/explain/maps", data={"source": "zoo:resnet18", "example": EXAMPLE,
                                                    "layer": "layer1.0.conv1", "channel": 63}).json()
    assert answer["layer"]["output_shape"] == [64, 56, 56] and answer["channel"] == 63
    assert data_url_image(answer["map"]["image"]).size == (56, 56) and len(answer["thumbnails"]) == 32
    assert answer["map"]["min"] <= answer["map"]["max"]


@pytest.mark.parametrize("fields, status, words", [
    ({"layer": "features.1"}, 404, "no convolution 'features.1'"),
    ({"layer": "nope"}, 404, "pick one of features.0, features.3, features.6"),
    ({"channel": 6}, 400, "channel 6 is outside"),
    ({"row": 28}, 400, "row 28 is outside"),
    ({"column": -1}, 400, "column -1 is outside"),
    ({"source": "zoo:nope"}, 404, "Unknown model 'nope'"),
    ({"source": "zoo:unet"}, 404, "takes classifiers"),
    ({"source": "zoo:efficientnet_lite0@cifar"}, 404, "No pretrained weights 'cifar'"),
    ({"source": "run:../etc"}, 400, "not a checkpoint name"),
    ({"source": "lenet5"}, 404, "run:NAME, zoo:MODEL"),
    ({"example": "../../setup.py"}, 404, "No example picture"),
    ({"example": ""}, 400, "No input"),
])
def test_bad_requests_say_what_was_wrong(client, fields, status, words):
    data = {"source": f"run:{TRAINED_RUN}", "example": EXAMPLE, "row": 0, "column": 0, **fields}
    response = client.post("/api/explain/unit", data=data)
    assert response.status_code == status and words in response.json()["error"], response.json()


def test_sources_list_runs_then_pretrained_then_random(client):
    sources = client.get("/api/explain/sources").json()["sources"]
    kinds = [s["kind"] for s in sources]
    assert kinds == sorted(kinds, key=["run", "pretrained", "random"].index)
    names = [s["source"] for s in sources]
    assert f"run:{TRAINED_RUN}" in names and "zoo:efficientnet_lite0@imagenet" in names and "zoo:unet" not in names


# ------------------------------------------------------------------------------------------- fuzzed requests
SOURCES = [f"run:{TRAINED_RUN}", "run:denoiser", "run:", "run:..", "zoo:lenet5_relu", "zoo:mnist_fast_cnn",
           "zoo:conv_autoencoder", "zoo:lenet5_relu@imagenet", "zoo:", "zoo:@", "", ":", "x" * 300]
LAYERS = [None, "", "features.0", "features.3", "features.1", "classifier.1", "features.0.0", ".", "x" * 300]


@pytest.fixture(scope="module")
def mixed_client(mixed_checkpoints_dir):
    from cnnkit.serve import create_app

    with local_client(create_app(mixed_checkpoints_dir), raise_server_exceptions=False) as test_client:
        yield test_client


def test_fuzzed_explain_requests_are_answered_not_crashed_on(mixed_client):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    numbers = st.one_of(st.integers(-3, 40), st.integers(-2**70, 2**70), st.sampled_from(["", "1.5", "a", "1e3"]))

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(source=st.sampled_from(SOURCES), layer=st.sampled_from(LAYERS), channel=numbers, row=numbers,
           column=numbers, example=st.sampled_from([EXAMPLE, "", "../x", None]),
           drawing=st.sampled_from(["true", "false", "2", None]), route=st.sampled_from(["unit", "maps"]))
    def check(source, layer, channel, row, column, example, drawing, route):
        data = {key: str(value) for key, value in {"source": source, "layer": layer, "channel": channel, "row": row,
                "column": column, "example": example, "drawing": drawing}.items() if value is not None}
        response = mixed_client.post(f"/api/explain/{route}", data=data)
        assert response.status_code < 500, response.text[:500]
        body = response.json()
        assert ("error" in body) == (response.status_code >= 400)
        if response.status_code == 200 and route == "unit" and "arithmetic" in body:
            assert abs(body["arithmetic"]["sum"] - body["value"]) <= 1e-5

    check()
    response = mixed_client.get("/api/explain/layers", params={"source": "run:denoiser"})
    assert response.status_code == 422 and "not a classifier" in response.json()["error"]
