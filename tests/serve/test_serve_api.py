"""The playground's JSON API through FastAPI's test client: every endpoint, bad uploads, path traversal,
the one-training-run rule, and a server that keeps answering after failures."""

import base64
import io
import json
import random
import shutil
import struct
import zlib

import pytest
import torch
from serve_helpers import (DENOISING_RUN, TRAINED_RUN, assert_same_drawing_answer, drawn_one, local_client,
                           png_bytes)
from PIL import Image

from cnnkit.serve import create_app
from cnnkit.serve.images import MAX_UPLOAD_BYTES, drawing_to_input
from cnnkit.serve.pictures import map_layers


@pytest.fixture(scope="module")
def client(checkpoints_dir):
    with local_client(create_app(checkpoints_dir)) as test_client:
        yield test_client


def decode_data_url(url: str) -> Image.Image:
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def draw(client, image_bytes, checkpoint=TRAINED_RUN, content_type="image/png"):
    return client.post("/api/draw", data={"checkpoint": checkpoint},
                       files={"image": ("drawing.png", image_bytes, content_type)})


def png_claiming_size(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header is rewritten to claim width x height: a decompression bomb's header."""
    data = bytearray(png_bytes(Image.new("L", (1, 1))))
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12:ihdr + 13]))
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


# ------------------------------------------------------------------------------------------------------ pages
@pytest.mark.parametrize("path, script", [("/", "draw.js"), ("/photo", "photo.js"), ("/train", "train.js"),
                                          ("/zoo", "zoo.js"), ("/detect", "detect.js")])
def test_pages_are_served_with_their_scripts(client, path, script):
    page = client.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert f"/static/{script}" in page.text
    code = client.get(f"/static/{script}")
    assert code.status_code == 200 and "use strict" in code.text


def test_unknown_route_is_a_json_404(client):
    response = client.get("/api/nothing-here")
    assert response.status_code == 404 and "error" in response.json()


# ------------------------------------------------------------------------------------------------ checkpoints
def test_checkpoints_list_the_trained_run(client):
    rows = client.get("/api/checkpoints").json()["checkpoints"]
    digits = next(r for r in rows if r["name"] == TRAINED_RUN)
    assert digits["model"] == "lenet5_relu" and digits["dataset"] == "mnist"
    assert digits["classes"] == [str(d) for d in range(10)] and digits["image_shape"] == [1, 28, 28]


def test_first_layer_filters(client):
    body = client.get(f"/api/checkpoints/{TRAINED_RUN}/filters").json()
    assert body["layer"] == "features.0" and body["shape"] == [6, 1, 5, 5]
    assert decode_data_url(body["image"]).format == "PNG"


@pytest.fixture
def escape_setup(tmp_path, checkpoints_dir):
    """A checkpoints folder with one real run, a symlink to a real run outside it, and a stray folder."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    shutil.copytree(checkpoints_dir / TRAINED_RUN, root / "inside")
    shutil.copytree(checkpoints_dir / TRAINED_RUN, outside / "secret")
    (root / "escape").symlink_to(outside / "secret", target_is_directory=True)
    (root / "not-a-run").mkdir()
    with local_client(create_app(root)) as test_client:
        yield test_client


def test_only_run_folders_inside_the_folder_are_listed(escape_setup):
    names = [r["name"] for r in escape_setup.get("/api/checkpoints").json()["checkpoints"]]
    assert names == ["inside"]


@pytest.mark.parametrize("name", ["../outside/secret", "..", "escape", "/etc/passwd", "inside/../inside",
                                  "..%2Foutside%2Fsecret", ".hidden", "in side"])
def test_path_traversal_is_refused(escape_setup, name):
    response = draw(escape_setup, png_bytes(drawn_one()), checkpoint=name)
    assert response.status_code == 400, response.text
    assert "checkpoint" in response.json()["error"]


@pytest.mark.parametrize("path", ["/api/checkpoints/..%2F..%2Fetc/filters", "/api/checkpoints/escape/filters",
                                  "/api/checkpoints/%2Fetc%2Fpasswd/filters"])
def test_path_traversal_in_the_url_is_refused(escape_setup, path):
    response = escape_setup.get(path)
    assert response.status_code in (400, 404), response.text
    assert "error" in response.json()
    assert "features" not in response.text  # no filters of the run outside the folder


def test_unknown_checkpoint_is_404(client):
    response = draw(client, png_bytes(drawn_one()), checkpoint="no-such-run")
    assert response.status_code == 404 and "no-such-run" in response.json()["error"]


# ------------------------------------------------------------------------------------------------------ draw
def test_draw_returns_probabilities_and_maps(client, checkpoints_dir):
    response = draw(client, png_bytes(drawn_one()))
    assert response.status_code == 200, response.text
    body = response.json()
    probabilities = [row["p"] for row in body["probabilities"]]
    assert [row["class"] for row in body["probabilities"]] == [str(d) for d in range(10)]
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
    assert body["prediction"] == body["probabilities"][probabilities.index(max(probabilities))]["class"]
    assert decode_data_url(body["input"]).size == (28, 28)
    from cnnkit.train.checkpoint import load_model_checkpoint

    model, _ = load_model_checkpoint(checkpoints_dir / TRAINED_RUN)
    assert [m["layer"] for m in body["maps"]] == [layer for _, layer in map_layers(model, torch.zeros(1, 1, 32, 32))]
    assert [m["layer"] for m in body["maps"]] == ["features.0", "features.3", "features.6", "classifier.1"]
    assert body["maps"][0]["shape"] == [6, 14, 14]  # conv 5x5 on 32x32, then 2x2 max-pooling


def test_drawing_is_centred_like_mnist():
    """A small stroke in a corner of the canvas becomes a digit filling 20 px, centred by its mass."""
    image = Image.new("RGB", (280, 280))
    image.paste((255, 255, 255), (10, 10, 40, 100))  # 30 x 90 px, top left
    pixels = drawing_to_input(image, (1, 28, 28))[0, 0].float()
    rows, cols = pixels.nonzero(as_tuple=True)
    assert rows.max() - rows.min() + 1 == 20  # the longer side scaled to 20 of 28 pixels
    total = pixels.sum()
    centre_row = (pixels.sum(1) * torch.arange(28)).sum() / total
    centre_col = (pixels.sum(0) * torch.arange(28)).sum() / total
    assert abs(centre_row - 13.5) <= 1 and abs(centre_col - 13.5) <= 1


# ---------------------------------------------------------------------------------------------- bad uploads
def test_text_sent_as_png_is_refused(client):
    response = draw(client, b"this is not an image at all")
    assert response.status_code == 400 and "not a readable" in response.json()["error"]


def test_truncated_image_is_refused(client):
    response = draw(client, png_bytes(drawn_one())[:200])
    assert response.status_code == 400, response.text


def test_non_image_type_is_refused(client):
    response = draw(client, png_bytes(drawn_one()), content_type="application/x-sh")
    assert response.status_code == 415 and "PNG" in response.json()["error"]


def test_image_in_an_unsupported_format_is_refused(client):
    response = draw(client, png_bytes(drawn_one(), format="TIFF"))  # declared PNG, really TIFF
    assert response.status_code == 400, response.text


def test_decompression_bomb_is_refused_before_decoding(client):
    response = draw(client, png_claiming_size(40_000, 40_000))
    assert response.status_code == 400
    assert "megapixels" in response.json()["error"]


def test_upload_over_the_size_limit_is_refused(client):
    response = draw(client, b"\x89PNG" + b"\0" * (MAX_UPLOAD_BYTES + 1))
    assert response.status_code == 413 and "5 MB" in response.json()["error"]


def test_upload_limit_is_configurable(checkpoints_dir):
    noise = Image.frombytes("L", (64, 64), random.Random(0).randbytes(64 * 64))  # ~4 KB as PNG: incompressible
    with local_client(create_app(checkpoints_dir, max_upload_bytes=2000)) as small_limit:
        response = draw(small_limit, png_bytes(noise))
        assert response.status_code == 413 and "limited to 1.95 KB" in response.json()["error"]
        assert draw(small_limit, png_bytes(Image.new("L", (8, 8)))).status_code == 200


def test_streamed_upload_without_length_is_cut_off(client):
    def chunks():
        for _ in range(7):
            yield b"x" * 2**20

    response = client.post("/api/draw", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413


def test_missing_fields_are_explained(client):
    response = client.post("/api/draw", data={"checkpoint": TRAINED_RUN})
    assert response.status_code == 422 and "image" in response.json()["error"]


def test_server_keeps_serving_after_failures(client):
    for bad in (b"junk", png_claiming_size(50_000, 50_000)):
        assert draw(client, bad).status_code == 400
    assert draw(client, png_bytes(drawn_one())).status_code == 200


def test_a_bug_becomes_a_json_500_and_the_server_carries_on(checkpoints_dir, monkeypatch):
    app = create_app(checkpoints_dir)

    def broken(picture, top_k=5):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(app.state.photos, "classify", broken)
    with local_client(app, raise_server_exceptions=False) as test_client:
        response = test_client.post("/api/photo", data={"example": "golden_gate.jpg"})
        assert response.status_code == 500 and "simulated bug" in response.json()["error"]
        assert test_client.get("/api/checkpoints").status_code == 200


# ------------------------------------------------------------------------------------------------------ photo
def test_photo_example_gives_five_labels_and_gradcam(client):
    examples = client.get("/api/photo/examples").json()["examples"]
    assert {e["name"] for e in examples} >= {"golden_gate.jpg", "tubingen.jpg"}
    assert client.get(examples[0]["url"]).status_code == 200
    body = client.post("/api/photo", data={"example": "golden_gate.jpg"}).json()
    labels = body["labels"]
    scores = [row["p"] for row in labels]
    assert len(labels) == 5 and scores == sorted(scores, reverse=True)
    assert "suspension bridge" in [row["label"] for row in labels]
    assert decode_data_url(body["overlay"]).size == (224, 224)
    assert body["gradcam_class"] == labels[0]["label"]


def test_photo_upload(client):
    from cnnkit.serve.photo import EXAMPLES_DIR

    data = (EXAMPLES_DIR / "tubingen.jpg").read_bytes()
    response = client.post("/api/photo", files={"image": ("town.jpg", data, "image/jpeg")})
    assert response.status_code == 200, response.text
    assert len(response.json()["labels"]) == 5 and response.json()["source"] == "town.jpg"


@pytest.mark.parametrize("form, status", [({"example": "../../../etc/passwd"}, 404), ({"example": "nope.jpg"}, 404),
                                          ({}, 400)])
def test_photo_refuses_unknown_examples_and_empty_requests(client, form, status):
    response = client.post("/api/photo", data=form)
    assert response.status_code == status and response.json()["error"]


def test_photo_refuses_a_bad_upload(client):
    response = client.post("/api/photo", files={"image": ("x.jpg", b"\xff\xd8\xff garbage", "image/jpeg")})
    assert response.status_code == 400 and "x.jpg" in response.json()["error"]


# ------------------------------------------------------------------------------------------------------ train
def read_events(client, until: str, url: str = "/api/train/events", headers=None) -> list[tuple[str, dict]]:
    """Events of the current run from the start, up to and including the first of type ``until``."""
    events = []
    with client.stream("GET", url, headers=headers or {}) as stream:
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
                if kind == until:
                    break
    return events


@pytest.mark.parametrize("settings", [{"epochs": 0}, {"lr": -1}, {"model": "resnet152"}, {"train_images": 10**9}])
def test_invalid_training_settings_are_explained(client, settings):
    response = client.post("/api/train", json=settings)
    assert response.status_code == 422 and response.json()["error"].startswith("Invalid request")


def test_events_without_a_run_say_idle(checkpoints_dir):
    with local_client(create_app(checkpoints_dir)) as fresh:
        assert read_events(fresh, until="idle") == [("idle", {})]
        assert fresh.post("/api/train/stop").status_code == 409


def test_one_training_run_at_a_time_and_stopping_keeps_the_checkpoint(client):
    # A whole MNIST epoch takes seconds even on a fast CPU, so the stop always lands inside it.
    started = client.post("/api/train", json={"epochs": 2, "train_images": 60000, "lr": 0.003})
    assert started.status_code == 202, started.text
    run = started.json()["run"]
    second = client.post("/api/train", json={"epochs": 1})
    assert second.status_code == 409 and run in second.json()["error"]

    events = read_events(client, until="batch")
    assert [kind for kind, _ in events] == ["started", "batch"]
    assert client.post("/api/train/stop").json()["stop_requested"] is True

    events = read_events(client, until="done")
    kinds = [kind for kind, _ in events]
    done = events[-1][1]
    assert kinds[0] == "started" and "epoch" in kinds and kinds[-1] == "done"
    assert done["state"] == "stopped" and done["epochs_completed"] == 1 and done["checkpoint"] == run
    batch_steps = [data["step"] for kind, data in events if kind == "batch"]
    assert batch_steps == sorted(batch_steps) and max(batch_steps) < 1  # stopped within the first epoch
    assert client.get("/api/train").json()["job"]["state"] == "stopped"
    # A reconnecting page gets only what it missed; a garbled Last-Event-ID replays everything.
    last_two = len(events) - 2
    assert read_events(client, "done", f"/api/train/events?after={last_two}") == events[-1:]
    assert read_events(client, "done", headers={"Last-Event-ID": str(last_two - 1)}) == events[-2:]
    assert read_events(client, "done", headers={"Last-Event-ID": "x'; DROP"}) == events

    names = [r["name"] for r in client.get("/api/checkpoints").json()["checkpoints"]]
    assert run in names
    assert draw(client, png_bytes(drawn_one()), checkpoint=run).status_code == 200
    assert client.post("/api/train/stop").status_code == 409  # nothing left to stop


# -------------------------------------------------------------------------------------------------------- zoo
def test_zoo_models_and_resnet18_summary(client):
    names = [m["name"] for m in client.get("/api/zoo/models").json()["models"]]
    assert {"resnet18", "lenet5", "efficientnet_lite0"} <= set(names)
    body = client.get("/api/zoo/summary", params={"model": "resnet18", "input_size": "3x224x224"}).json()
    assert body["totals"]["params"] == 11_689_512
    assert body["totals"]["output_shape"] == [1000]
    assert [s["name"] for s in body["stages"]] == ["conv1", "layer1", "layer2", "layer3", "layer4", "fc"]
    assert body["stages"][4]["output_shape"] == [512, 7, 7]
    assert sum(s["params"] for s in body["stages"]) == 11_689_512


def test_zoo_stage_of_parallel_branches_reports_their_concatenation(client):
    body = client.get("/api/zoo/summary", params={"model": "googlenet"}).json()
    stages = {s["name"]: s["output_shape"] for s in body["stages"]}
    assert stages["inception3a"] == [256, 28, 28]  # Szegedy et al. 2014, Table 1: 64 + 128 + 32 + 32 maps
    assert stages["inception5b"] == [1024, 7, 7]


def test_zoo_input_size_changes_macs_not_parameters(client):
    small = client.get("/api/zoo/summary", params={"model": "resnet18", "input_size": "128x128"}).json()
    large = client.get("/api/zoo/summary", params={"model": "resnet18", "input_size": "256x256"}).json()
    assert small["totals"]["params"] == large["totals"]["params"]
    assert small["totals"]["macs"] * 4 == pytest.approx(large["totals"]["macs"], rel=0.01)  # MACs grow with the area


@pytest.mark.parametrize("params, status, words", [
    ({"model": "resnet81"}, 404, "resnet18"),
    ({"model": "resnet18", "input_size": "0x0"}, 400, "CxHxW"),
    ({"model": "resnet18", "input_size": "3x100000x100000"}, 400, "too large"),
    ({"model": "alexnet", "input_size": "3x16x16"}, 400, "at least"),
])
def test_zoo_errors(client, params, status, words):
    response = client.get("/api/zoo/summary", params=params)
    assert response.status_code == status and words in response.json()["error"]


# ------------------------------------------------------------------------------- runs of other tasks (issue 22)
@pytest.fixture(scope="module")
def mixed_client(mixed_checkpoints_dir):
    with local_client(create_app(mixed_checkpoints_dir)) as test_client:
        yield test_client


def test_checkpoints_say_which_runs_the_draw_page_can_use(mixed_client):
    rows = {r["name"]: r for r in mixed_client.get("/api/checkpoints").json()["checkpoints"]}
    assert rows[TRAINED_RUN]["drawable"] and rows[TRAINED_RUN]["task"] == "classification"
    assert not rows[DENOISING_RUN]["drawable"] and rows[DENOISING_RUN]["task"] == "denoising"


def test_drawing_for_a_run_of_another_task_is_refused_in_words(mixed_client):
    """A denoising autoencoder has MNIST's class names but outputs images: no raw PyTorch error, no label."""
    response = draw(mixed_client, png_bytes(drawn_one()), checkpoint=DENOISING_RUN)
    assert response.status_code == 422, response.text
    message = response.json()["error"]
    assert "denoising model (conv_autoencoder), not a classifier" in message and "prediction" not in response.json()


def test_classes_that_do_not_match_the_outputs_give_no_label(checkpoints_dir, tmp_path):
    """checkpoint.json naming 3 classes for a 10-output network: refused, not the first 3 of 10 labels."""
    run = tmp_path / "mislabelled"
    shutil.copytree(checkpoints_dir / TRAINED_RUN, run)
    meta = json.loads((run / "checkpoint.json").read_text())
    meta["classes"] = ["cat", "dog", "bird"]
    (run / "checkpoint.json").write_text(json.dumps(meta))
    with local_client(create_app(tmp_path)) as client:
        response = draw(client, png_bytes(drawn_one()), checkpoint="mislabelled")
    assert response.status_code == 422, response.text
    assert "classes lists 3 names for a model with 10 outputs" in response.json()["error"]


# ------------------------------------------------------------------------------ concurrency (issue 24, item 6)
def drawn_digit(angle: float) -> bytes:
    from PIL import ImageDraw

    image = Image.new("RGB", (280, 280))
    pen = ImageDraw.Draw(image)
    pen.line([(140 - 60 * angle, 50), (140 + 60 * angle, 230)], fill=(255, 255, 255), width=20)
    pen.arc([(80, 40), (200, 160 + 40 * angle)], 0, 300, fill=(255, 255, 255), width=18)
    return png_bytes(image)


def test_concurrent_drawings_get_their_own_answers(client):
    """Each drawing gets its own maps: eight drawings at once (batched into shared forward passes) get the
    answers they get one at a time."""
    from concurrent.futures import ThreadPoolExecutor

    drawings = [drawn_digit(a / 8) for a in range(-4, 4)]
    alone = [draw(client, d).json() for d in drawings]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda d: draw(client, d).json(), drawings * 2))
    for index, answer in enumerate(together):
        assert_same_drawing_answer(answer, alone[index % len(drawings)])


def test_inference_workers_use_their_own_few_threads():
    """However many threads torch would use elsewhere in the process, a worker uses cores // workers."""
    import asyncio

    from cnnkit.serve.inference import InferencePool

    async def ask_workers(pool):
        return await asyncio.gather(*(pool.run(torch.get_num_threads) for _ in range(6)))

    before = torch.get_num_threads()
    pool = InferencePool(workers=2, threads_per_worker=1)
    try:
        torch.set_num_threads(3)  # e.g. a training run started in between
        counts = asyncio.run(asyncio.wait_for(ask_workers(pool), 30))
    finally:
        pool.shutdown()
        torch.set_num_threads(before)
    assert counts == [1] * 6


def test_concurrent_photos_borrow_separate_networks(checkpoints_dir):
    """Grad-CAM hooks attach to the network: concurrent photos each use their own copy (at most one per worker)
    and get the same answers as alone."""
    from concurrent.futures import ThreadPoolExecutor

    app = create_app(checkpoints_dir)
    with local_client(app) as photo_client:
        examples = ["golden_gate.jpg", "tubingen.jpg"]
        ask = (lambda name: photo_client.post("/api/photo", data={"example": name}).json())
        alone = {name: ask(name) for name in examples}
        if "error" in alone[examples[0]]:
            pytest.skip(alone[examples[0]]["error"])
        with ThreadPoolExecutor(2) as pool:
            together = list(pool.map(ask, examples))
    for name, answer in zip(examples, together):
        assert answer["labels"] == alone[name]["labels"] and answer["overlay"] == alone[name]["overlay"]
    assert 1 <= app.state.photos._copies <= app.state.inference.workers
