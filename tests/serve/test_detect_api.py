"""The Detect page's API: detection runs listed (and the command to train one when there is none), example
canvases that are the data set's own, detections equal to the detector's own forward pass on the picture as
`cnnkit detect predict` reads it, inside the picture, the score threshold kept, batches that answer as single
requests do, and bad uploads and unusable runs refused with a message."""

import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from serve_helpers import DETECTOR_RUN, TRAINED_RUN, data_url_image, local_client, png_bytes

from cnnkit.data.augment import normalize
from cnnkit.detect.draw import COLOURS
from cnnkit.runs import load_model_checkpoint
from cnnkit.serve import create_app
from cnnkit.serve.checkpoints import CheckpointFolder
from cnnkit.serve.detection import DETECT_EXAMPLES_DIR, EXAMPLE_CANVASES, EXAMPLE_INDICES, detections_answerer

EXAMPLE = "canvas-001.png"  # three digits


@pytest.fixture(scope="module")
def client(detector_checkpoints_dir):
    with local_client(create_app(detector_checkpoints_dir)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def reference(detector_checkpoints_dir):
    """The detector as `cnnkit detect predict` loads it, applied the way predict applies it."""
    model, meta = load_model_checkpoint(detector_checkpoints_dir / DETECTOR_RUN)
    model.eval()

    def detect(pixels: np.ndarray) -> dict:
        image = torch.from_numpy(pixels.copy())[None].float() / 255
        with torch.no_grad():
            return model(normalize(image[None], meta["preprocess"]["mean"], meta["preprocess"]["std"]))[0]

    return detect, meta


def detect(client, min_score=0.0, **fields):
    files = {"image": fields.pop("image")} if "image" in fields else None
    return client.post("/api/detect", data={"detector": DETECTOR_RUN, "min_score": str(min_score), **fields},
                       files=files)


def example_pixels(name: str = EXAMPLE) -> np.ndarray:
    return np.asarray(Image.open(DETECT_EXAMPLES_DIR / name))


def test_only_detection_runs_are_offered_with_the_examples(client, detector_checkpoints_dir):
    listed = client.get("/api/detect/detectors").json()
    assert [row["name"] for row in listed["detectors"]] == [DETECTOR_RUN]  # the classifier beside it is not
    assert listed["detectors"][0]["model"] == "faster_rcnn" and listed["folder"] == str(detector_checkpoints_dir)
    assert listed["train_command"].startswith("cnnkit detect train --data canvas-mnist")
    assert listed["train_command"].endswith(f"--out {detector_checkpoints_dir / 'frcnn-canvas'}")
    examples = client.get("/api/detect/examples").json()["examples"]
    assert [e["name"] for e in examples] == [f"canvas-{i:03d}.png" for i in EXAMPLE_INDICES]
    served = client.get(examples[0]["url"])
    assert served.status_code == 200 and Image.open(io.BytesIO(served.content)).size == (64, 64)
    photos = client.get("/api/photo/examples").json()["examples"]  # the Photo page keeps its own two
    assert not any(e["name"].startswith("canvas-") for e in photos)


def test_the_examples_are_the_canvas_test_set_they_claim_to_be(shared_data, monkeypatch):
    from cnnkit.data.canvas import load_canvas

    monkeypatch.setenv("CNNKIT_DATA", str(shared_data))
    test = load_canvas(**EXAMPLE_CANVASES, download=False).test
    for index in EXAMPLE_INDICES:
        assert np.array_equal(example_pixels(f"canvas-{index:03d}.png"), test.images[index, 0].numpy()), index


def test_an_example_gets_the_detectors_own_boxes_inside_the_picture(client, reference):
    response = detect(client, example=EXAMPLE)
    assert response.status_code == 200, response.text
    answer = response.json()
    detect_directly, meta = reference
    assert (answer["width"], answer["height"], answer["scale"]) == (64, 64, 1.0)
    assert answer["detector"] == DETECTOR_RUN and answer["source"] == EXAMPLE
    assert answer["classes"] == meta["classes"][1:]  # the background is no class to find
    seen = np.asarray(data_url_image(answer["image"]))
    assert np.array_equal(seen, example_pixels())  # read as it is: grey, 64x64, unchanged
    assert data_url_image(answer["drawn"]).size == (256, 256)
    expected = detect_directly(seen)
    detections = answer["detections"]
    assert len(detections) == len(expected["scores"]) > 0
    assert np.allclose([d["box"] for d in detections], expected["boxes"].numpy(), atol=1e-4)
    assert np.allclose([d["score"] for d in detections], expected["scores"].numpy(), atol=1e-5)
    assert [d["class_index"] for d in detections] == expected["labels"].tolist()
    scores = [d["score"] for d in detections]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    for d in detections:
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 <= x2 <= 64 and 0 <= y1 <= y2 <= 64, d
        assert d["label"] == meta["classes"][d["class_index"]] and d["class_index"] >= 1
        assert d["colour"] == "#%02x%02x%02x" % COLOURS[(d["class_index"] - 1) % len(COLOURS)]


def test_the_score_threshold_is_kept(client):
    everything = detect(client, example=EXAMPLE).json()["detections"]
    threshold = float(np.median([d["score"] for d in everything]))
    kept = detect(client, min_score=threshold, example=EXAMPLE).json()
    assert kept["min_score"] == threshold
    assert kept["detections"] == [d for d in everything if d["score"] >= threshold]
    assert 0 < len(kept["detections"]) < len(everything)
    assert detect(client, min_score=1.0, example=EXAMPLE).json()["detections"] == []


def test_uploads_are_read_as_the_detectors_canvases(client):
    canvas = Image.fromarray(example_pixels())
    colour = detect(client, image=("canvas.png", png_bytes(canvas.convert("RGB")), "image/png")).json()
    assert np.array_equal(np.asarray(data_url_image(colour["image"])), example_pixels())  # grey, as trained
    assert colour["detections"] == detect(client, example=EXAMPLE).json()["detections"]
    wide = canvas.resize((256, 128), Image.NEAREST)  # larger than the canvases: scaled down to fit 64x64
    scaled = detect(client, image=("wide.png", png_bytes(wide), "image/png")).json()
    assert (scaled["width"], scaled["height"], scaled["scale"]) == (64, 32, 0.25)
    assert all(0 <= d["box"][2] <= 64 and 0 <= d["box"][3] <= 32 for d in scaled["detections"])
    small = canvas.resize((40, 24))  # smaller: read as it is
    assert detect(client, image=("small.png", png_bytes(small), "image/png")).json()["width"] == 40


@pytest.mark.parametrize("name,data,content_type,status,message", [
    ("notes.txt", b"not a picture", "text/plain", 415, "upload a PNG, JPEG"),
    ("broken.png", b"\x89PNG\r\n\x1a\n broken", "image/png", 400, "not a readable image"),
    ("empty.png", b"", "image/png", 400, "is empty"),
    ("tiny.png", png_bytes(Image.new("L", (12, 40))), "image/png", 400, "at least 16 pixels a side"),
    ("strip.png", png_bytes(Image.new("L", (640, 40))), "image/png", 400, "64x4 once scaled to fit the 64x64"),
])
def test_bad_uploads_are_refused_with_the_playgrounds_messages(client, name, data, content_type, status, message):
    response = detect(client, image=(name, data, content_type))
    assert response.status_code == status and message in response.json()["error"], response.text


def test_an_upload_over_the_limit_is_refused(detector_checkpoints_dir):
    with local_client(create_app(detector_checkpoints_dir, max_upload_bytes=2048)) as small_client:
        noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))
        response = detect(small_client, image=("noise.png", png_bytes(noise), "image/png"))
    assert response.status_code == 413 and "limited to" in response.json()["error"]


def test_requests_that_are_not_a_detection_are_refused(client, detector_checkpoints_dir):
    classifier = client.post("/api/detect", data={"detector": TRAINED_RUN, "example": EXAMPLE})
    assert classifier.status_code == 422
    assert "classification model (lenet5_relu), not a detector" in classifier.json()["error"]
    nobody = client.post("/api/detect", data={"example": EXAMPLE})
    assert nobody.status_code == 400 and "cnnkit detect train --data canvas-mnist" in nobody.json()["error"]
    assert str(detector_checkpoints_dir) in nobody.json()["error"]
    for detector, status in (("no-such-run", 404), ("../" + DETECTOR_RUN, 400)):
        assert client.post("/api/detect", data={"detector": detector, "example": EXAMPLE}).status_code == status
    assert detect(client, example="../../checkpoints.py").status_code == 404  # examples by name only
    both = detect(client, example=EXAMPLE, image=("a.png", png_bytes(Image.new("L", (64, 64))), "image/png"))
    assert both.status_code == 400 and "not both" in both.json()["error"]
    assert "No image" in detect(client).json()["error"]
    for score in ("1.5", "-0.1", "nan"):
        refused = detect(client, min_score=score, example=EXAMPLE)
        assert refused.status_code == 400 and "between 0 and 1" in refused.json()["error"]


@pytest.mark.parametrize("edit,message", [
    (lambda meta: meta["classes"].pop(), "names 10 classes (background included) but its network has 11"),
    (lambda meta: meta["model"].update(num_classes=5), "does not match the model's architecture"),
    (lambda meta: meta.update(image_shape=[3, 64, 64]), "pictures have 3 channel(s) but its network reads 1"),
])
def test_a_detector_whose_checkpoint_and_network_disagree_is_refused(detector_checkpoints_dir, tmp_path, edit,
                                                                     message):
    run = tmp_path / "edited"
    shutil.copytree(detector_checkpoints_dir / DETECTOR_RUN, run)
    meta = json.loads((run / "checkpoint.json").read_text())
    edit(meta)
    (run / "checkpoint.json").write_text(json.dumps(meta))
    with local_client(create_app(tmp_path)) as edited_client:
        response = edited_client.post("/api/detect", data={"detector": "edited", "example": EXAMPLE})
    assert response.status_code == 422 and message in response.json()["error"], response.text


def test_a_batch_answers_each_request_as_alone(detector_checkpoints_dir, client):
    """Requests for one detector that queue together share forward passes, grouped by picture size; a bad
    upload among them fails only itself."""
    answer = detections_answerer(CheckpointFolder(detector_checkpoints_dir), 5 * 2**20)
    canvas = Image.fromarray(example_pixels())
    other = Image.open(DETECT_EXAMPLES_DIR / "canvas-013.png")
    requests = [(png_bytes(canvas), "image/png", "a.png", 0.0), (b"junk", "image/png", "junk.png", 0.0),
                (png_bytes(canvas.resize((48, 40))), "image/png", "small.png", 0.0),
                (png_bytes(other), "image/png", "b.png", 0.1)]
    answers = answer(DETECTOR_RUN, requests)
    assert isinstance(answers[1], Exception) and "not a readable image" in str(answers[1])
    for index in (0, 2, 3):
        got, (data, content_type, name, min_score) = answers[index], requests[index]
        alone = detect(client, min_score=min_score, image=(name, data, content_type)).json()
        assert [d["class_index"] for d in got["detections"]] == [d["class_index"] for d in alone["detections"]]
        assert np.allclose([d["box"] for d in got["detections"]], [d["box"] for d in alone["detections"]],
                           atol=1e-4)
        assert np.allclose([d["score"] for d in got["detections"]], [d["score"] for d in alone["detections"]],
                           atol=1e-5)
