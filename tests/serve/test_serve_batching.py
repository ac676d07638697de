"""Draw requests answered in batches (serve/batching.py): the same answers as alone, no timer, a bounded queue."""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from serve_helpers import TRAINED_RUN, assert_same_drawing_answer, drawn_one, local_client, png_bytes
from PIL import Image, ImageDraw

from cnnkit.predict import preprocess_from_meta
from cnnkit.serve import create_app
from cnnkit.serve.batching import MicroBatcher, ServerBusyError
from cnnkit.serve.checkpoints import CheckpointFolder
from cnnkit.serve.errors import http_status
from cnnkit.serve.images import colours_of, decode_upload, drawing_to_input
from cnnkit.serve.pictures import draw_responses
from cnnkit.serve.routes import drawings_answerer

WAIT_SECONDS = 30


def drawings(count: int) -> list[bytes]:
    pictures = []
    for k in range(count):
        image = Image.new("RGB", (280, 280))
        ImageDraw.Draw(image).line([(60 + 20 * k, 50), (220 - 15 * k, 230)], fill=(255, 255, 255), width=12 + 2 * k)
        pictures.append(png_bytes(image))
    return pictures


def test_colours_match_matplotlib_bit_for_bit():
    from matplotlib import colormaps

    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        values = rng.random((40, 40)).astype(dtype)
        values[0, :7] = [0, 1, 0.5, 1 - 1e-7, 255 / 256, -0.25, 1.5]
        values[1, 0] = np.nan
        for name in ("viridis", "jet"):
            assert np.array_equal(colours_of(values, name), colormaps[name](values)), (dtype, name)


def test_batched_forward_gives_each_drawing_its_answer_alone(checkpoints_dir):
    loaded = CheckpointFolder(checkpoints_dir).load(TRAINED_RUN)
    inputs = [drawing_to_input(decode_upload(d, "image/png"), loaded.meta["image_shape"]) for d in drawings(6)]
    together = draw_responses(loaded, torch.cat(inputs))
    assert len(together) == len(inputs)
    for single, answer in zip(inputs, together):
        assert_same_drawing_answer(answer, draw_responses(loaded, single)[0])
    model = loaded.model
    with torch.no_grad():
        batch = preprocess_from_meta(loaded.meta)(torch.cat(inputs))  # as draw_responses feeds the model
        alone = torch.cat([model(row.unsqueeze(0)) for row in batch])
        torch.testing.assert_close(model(batch), alone, rtol=0, atol=1e-6)


def test_a_bad_upload_fails_only_its_own_request(checkpoints_dir):
    answer = drawings_answerer(CheckpointFolder(checkpoints_dir), 1 << 20)
    good = drawings(2)
    answers = answer(TRAINED_RUN, [(good[0], "image/png", "a.png"), (b"not an image", "image/png", "b.png"),
                                   (good[1], "image/png", "c.png")])
    assert isinstance(answers[1], Exception) and "b.png" in str(answers[1])
    assert answers[0]["checkpoint"] == answers[2]["checkpoint"] == TRAINED_RUN


class HeldBatches:
    """A run_batch that records its batches and holds the first one until released."""

    def __init__(self):
        self.batches, self.started, self.release = [], threading.Event(), threading.Event()

    def __call__(self, key, items):
        self.batches.append(list(items))
        self.started.set()
        assert self.release.wait(WAIT_SECONDS)
        return [f"{key}:{item}" for item in items]


def test_requests_that_arrive_during_a_batch_share_the_next_one():
    held = HeldBatches()
    with ThreadPoolExecutor(2) as pool:
        batcher = MicroBatcher(held, pool.submit)
        first = batcher.enqueue("m", 0)
        assert held.started.wait(WAIT_SECONDS)  # no timer: a lone request starts at once
        rest = [batcher.enqueue("m", item) for item in range(1, 6)]
        other = batcher.enqueue("n", 9)  # another model gets its own batch, beside
        held.release.set()
        answers = [f.result(WAIT_SECONDS) for f in [first, *rest]]
        assert other.result(WAIT_SECONDS) == "n:9"
    assert answers == [f"m:{item}" for item in range(6)]
    assert sorted(held.batches) == [[0], [1, 2, 3, 4, 5], [9]]
    assert batcher.waiting == 0


def test_a_full_queue_turns_requests_away_with_503():
    held = HeldBatches()
    with ThreadPoolExecutor(1) as pool:
        batcher = MicroBatcher(held, pool.submit, max_waiting=2, what="drawings")
        running = batcher.enqueue("m", 0)
        assert held.started.wait(WAIT_SECONDS)
        queued = [batcher.enqueue("m", 1), batcher.enqueue("m", 2)]
        with pytest.raises(ServerBusyError, match="busy: 2 drawings are already waiting") as refused:
            batcher.enqueue("m", 3)
        assert http_status(refused.value) == 503
        held.release.set()
        assert [f.result(WAIT_SECONDS) for f in [running, *queued]] == ["m:0", "m:1", "m:2"]
    assert held.batches == [[0], [1, 2]]


def test_an_error_of_the_whole_batch_reaches_every_request():
    def failing(key, items):
        raise ValueError("broken model")

    with ThreadPoolExecutor(1) as pool:
        batcher = MicroBatcher(failing, pool.submit)
        futures = [batcher.enqueue("m", item) for item in range(3)]
        for future in futures:
            with pytest.raises(ValueError, match="broken model"):
                future.result(WAIT_SECONDS)
        assert batcher.enqueue("m", 4).exception(WAIT_SECONDS) is not None  # the key drains again


def test_the_server_answers_503_when_too_many_drawings_wait(checkpoints_dir):
    app = create_app(checkpoints_dir)
    with local_client(app) as client:
        app.state.drawings.max_waiting = 0
        response = client.post("/api/draw", data={"checkpoint": TRAINED_RUN},
                               files={"image": ("drawing.png", png_bytes(drawn_one()), "image/png")})
        assert response.status_code == 503 and "busy" in response.json()["error"]
        app.state.drawings.max_waiting = 64
        response = client.post("/api/draw", data={"checkpoint": TRAINED_RUN},
                               files={"image": ("drawing.png", png_bytes(drawn_one()), "image/png")})
        assert response.status_code == 200 and response.json()["checkpoint"] == TRAINED_RUN


def test_a_stopped_pool_refuses_without_leaving_the_request_queued():
    pool = ThreadPoolExecutor(1)
    pool.shutdown()
    batcher = MicroBatcher(lambda key, items: items, pool.submit)
    with pytest.raises(RuntimeError):
        batcher.enqueue("m", 0)
    assert batcher.waiting == 0


def test_a_batch_of_big_drawings_is_split_into_smaller_passes(checkpoints_dir, monkeypatch):
    from cnnkit.serve import routes

    passes = []
    monkeypatch.setattr(routes, "MAX_PASS_VALUES", 2 * 28 * 28)  # two MNIST drawings a pass
    monkeypatch.setattr(routes, "draw_responses", lambda loaded, batch: passes.append(len(batch)) or
                        draw_responses(loaded, batch))
    answer = drawings_answerer(CheckpointFolder(checkpoints_dir), 1 << 20)
    answers = answer(TRAINED_RUN, [(d, "image/png", f"{k}.png") for k, d in enumerate(drawings(5))])
    assert passes == [2, 2, 1] and all(a["checkpoint"] == TRAINED_RUN for a in answers)
