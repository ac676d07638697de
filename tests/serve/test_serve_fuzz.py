"""Property-based tests of the playground's API (issue 24): whatever JSON, multipart or query a client sends,
every endpoint answers 2xx or 4xx with a JSON body (``{"error": ...}`` for 4xx), never a 500, and a label it
returns is always one of the model's classes, the most probable one."""

import io
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from serve_helpers import DENOISING_RUN, DETECTOR_RUN, TRAINED_RUN, local_client

from cnnkit.serve import create_app
from cnnkit.serve.photo import list_examples

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])
DIGITS = [str(d) for d in range(10)]
IMAGE_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "text/plain",
               "application/octet-stream", ""]


@pytest.fixture(scope="module")
def client(mixed_checkpoints_dir):
    app = create_app(mixed_checkpoints_dir)

    def quick_run(job):  # the settings were accepted; training itself is not what is fuzzed here
        job.finish("finished", {"run": job.run_name, "epochs_completed": 0, "test_acc": None, "checkpoint": None})

    app.state.training._run = quick_run
    with local_client(app, raise_server_exceptions=False) as test_client:
        yield test_client


def answered(response):
    """The response is a JSON answer of a kind the pages handle: 2xx, or 4xx with an error message."""
    assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    assert 200 <= response.status_code < 300 or 400 <= response.status_code < 500, response.status_code
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return None
    body = response.json()
    if response.status_code >= 400:
        assert isinstance(body.get("error"), str) and body["error"], body
    return body


# ------------------------------------------------------------------------------------------ the strategies
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)
setting_values = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False),
                           st.sampled_from(["lenet5", "lenet5_relu", "mnist", "fashion-mnist", "cifar10", "3", ""]),
                           st.none(), st.booleans(), st.lists(st.integers(), max_size=2))
train_settings = st.dictionaries(
    st.sampled_from(["model", "dataset", "epochs", "lr", "train_images", "batch_size", "seed", "extra"]),
    setting_values, max_size=7)


@st.composite
def images(draw):
    """Image files as a browser might send them: real images of any mode and a small size, in any of the
    formats, sometimes cut short or with a byte flipped; or bytes that are no image at all."""
    kind = draw(st.sampled_from(["image", "image", "truncated", "flipped", "noise"]))
    if kind == "noise":
        return draw(st.binary(max_size=300))
    mode = draw(st.sampled_from(["RGB", "L", "RGBA", "P", "1", "I;16", "LA", "CMYK"]))
    size = (draw(st.integers(1, 64)), draw(st.integers(1, 64)))
    fmt = draw(st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"]))
    pixels = np.random.default_rng(draw(st.integers(0, 2**32))).integers(0, 256, (size[1], size[0], 3), np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt)
    except (OSError, ValueError, KeyError):  # a mode the format cannot store: send it as an RGB PNG
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
    data = buffer.getvalue()
    if kind == "truncated":
        data = data[:draw(st.integers(0, len(data)))]
    elif kind == "flipped" and data:
        position = draw(st.integers(0, len(data) - 1))
        data = data[:position] + bytes([data[position] ^ 0xFF]) + data[position + 1:]
    return data


checkpoint_names = st.one_of(st.sampled_from([TRAINED_RUN, DENOISING_RUN, "..", "../digits", "no-such-run", ""]),
                             st.text(max_size=30))


# ---------------------------------------------------------------------------------------------- the tests
@FAST
@given(body=st.one_of(json_values, train_settings))
def test_training_settings_of_any_shape(client, body):
    result = answered(client.post("/api/train", json=body))
    if result is not None and "run" in result:
        assert result["settings"]["model"] in ("lenet5", "lenet5_relu")


@FAST
@given(raw=st.binary(max_size=200), content_type=st.sampled_from(["application/json", "text/plain", ""]))
def test_training_request_bytes(client, raw, content_type):
    answered(client.post("/api/train", content=raw, headers={"content-type": content_type}))


@FAST
@given(body=st.one_of(st.none(), json_values))
def test_stop_and_state(client, body):
    answered(client.post("/api/train/stop", json=body))
    answered(client.get("/api/train"))


@settings(FAST, max_examples=100)
@given(checkpoint=checkpoint_names, image=images(), content_type=st.sampled_from(IMAGE_TYPES),
       filename=st.text(max_size=30), send=st.sampled_from(["both", "both", "no image", "no checkpoint"]))
def test_draw_answers_or_refuses_and_labels_are_right(client, checkpoint, image, content_type, filename, send):
    fields = {} if send == "no checkpoint" else {"checkpoint": checkpoint}
    files = {} if send == "no image" else {"image": (filename or "x", image, content_type)}
    body = answered(client.post("/api/draw", data=fields, files=files or None))
    if body is not None and "prediction" in body:
        assert checkpoint == TRAINED_RUN  # the denoiser and every other name are refused
        probabilities = body["probabilities"]
        assert [row["class"] for row in probabilities] == DIGITS
        assert math.isclose(sum(row["p"] for row in probabilities), 1.0, rel_tol=1e-4)
        best = max(probabilities, key=lambda row: row["p"])
        assert body["prediction"] == best["class"] and body["confidence"] == best["p"]


@settings(FAST, max_examples=20)
@given(image=images(), content_type=st.sampled_from(IMAGE_TYPES), filename=st.text(max_size=30),
       example=st.one_of(st.none(), st.sampled_from(list_examples()), st.text(max_size=20)))
def test_photo_answers_or_refuses_and_labels_are_right(client, image, content_type, filename, example):
    from cnnkit.weights import pretrained_config

    files = {"image": (filename or "x", image, content_type)} if example is None or len(image) % 2 else None
    data = {"example": example} if example is not None else None
    response = client.post("/api/photo", data=data, files=files)
    if response.status_code == 503:  # no pretrained weights on this machine: said in words
        pytest.skip(response.json()["error"])
    body = answered(response)
    if "labels" in body:
        names = pretrained_config("efficientnet_lite0", "imagenet")["class_names"]
        labels = body["labels"]
        assert len(labels) == 5 and all(names[row["index"]] == row["label"] for row in labels)
        assert [row["p"] for row in labels] == sorted((row["p"] for row in labels), reverse=True)
        assert body["gradcam_class"] == labels[0]["label"]


@FAST
@given(raw=st.binary(max_size=400), boundary=st.text(st.characters(codec="ascii"), max_size=20),
       path=st.sampled_from(["/api/draw", "/api/photo"]))
def test_malformed_multipart(client, raw, boundary, path):
    answered(client.post(path, content=raw, headers={"content-type": f"multipart/form-data; boundary={boundary}"}))


@FAST
@given(name=checkpoint_names)
def test_filters_of_any_name(client, name):
    from urllib.parse import quote

    answered(client.get(f"/api/checkpoints/{quote(name, safe='')}/filters"))


@FAST
@given(model=st.one_of(st.sampled_from(["lenet5", "cifar_fast_cnn", "fashion_cnn", "resnet"]), st.text(max_size=12)),
       size=st.one_of(st.none(), st.text(max_size=12),
                      st.builds("{}x{}x{}".format, st.integers(-2, 20), st.integers(-2, 300), st.integers(-2, 300))))
def test_zoo_summary_of_any_query(client, model, size):
    params = {"model": model} if size is None else {"model": model, "input_size": size}
    answered(client.get("/api/zoo/summary", params=params))


@FAST
@given(after=st.one_of(st.integers(-10, 10**6), st.text(max_size=8)),
       last=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=8))
def test_events_of_any_position(client, after, last):
    answered(client.get("/api/train/events", params={"after": after}, headers={"last-event-id": last}))


@pytest.fixture(scope="module")
def detect_client(detector_checkpoints_dir):
    with local_client(create_app(detector_checkpoints_dir), raise_server_exceptions=False) as test_client:
        yield test_client


@settings(FAST, max_examples=25)
@given(detector=st.one_of(st.sampled_from([DETECTOR_RUN, DETECTOR_RUN, TRAINED_RUN, "../" + DETECTOR_RUN, ""]),
                          st.text(max_size=20)),
       image=images(), content_type=st.sampled_from(IMAGE_TYPES), filename=st.text(max_size=30),
       min_score=st.one_of(st.floats(-1, 2), st.sampled_from(["nan", "inf", "", "0.5", "x"])))
def test_detect_answers_or_refuses_and_boxes_stay_inside(detect_client, detector, image, content_type, filename,
                                                         min_score):
    result = answered(detect_client.post("/api/detect", data={"detector": detector, "min_score": str(min_score)},
                                         files={"image": (filename or "upload", image, content_type)}))
    if result is not None and "detections" in result:
        for found in result["detections"]:
            x1, y1, x2, y2 = found["box"]
            assert 0 <= x1 <= x2 <= result["width"] and 0 <= y1 <= y2 <= result["height"], found
            assert found["score"] >= result["min_score"] and found["label"] in result["classes"]
