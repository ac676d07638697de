"""Helpers shared by the `cnnkit serve` tests (fixtures are in conftest.py)."""

import io
import socket
from pathlib import Path

from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
TRAINED_RUN = "digits"
DENOISING_RUN = "denoiser"  # a run of another task (mixed_checkpoints_dir): no drawing goes to it
DETECTOR_RUN = "canvas-detector"  # a Faster R-CNN run (detector_checkpoints_dir), beside the classifier
LOCAL_URL = "http://127.0.0.1"  # the test client's requests name a loopback host, as a browser's would


def local_client(app, **options):
    """FastAPI's test client addressing the app as 127.0.0.1 (its default, "testserver", is refused as a
    foreign Host by the playground)."""
    from fastapi.testclient import TestClient

    return TestClient(app, base_url=LOCAL_URL, **options)


def png_bytes(image: Image.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def drawn_one() -> Image.Image:
    """A canvas-sized drawing of a '1': a thick white vertical stroke on black."""
    image = Image.new("RGB", (280, 280))
    ImageDraw.Draw(image).line([(150, 50), (140, 230)], fill=(255, 255, 255), width=20)
    return image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_same_drawing_answer(answer: dict, expected: dict) -> None:
    """Two Draw answers for one drawing agree: the same prediction, probabilities to 1e-6 and map pixels to one
    level. A forward pass over a batch may round differently in the last bits than one over a single image
    (another matrix kernel), which can move a map's rounded pixel by one; nothing more."""
    import numpy as np

    assert answer["prediction"] == expected["prediction"]
    assert [row["class"] for row in answer["probabilities"]] == [row["class"] for row in expected["probabilities"]]
    for row, want in zip(answer["probabilities"], expected["probabilities"]):
        assert abs(row["p"] - want["p"]) <= 1e-6, (row, want)
    assert answer["input"] == expected["input"]
    assert [m["layer"] for m in answer["maps"]] == [m["layer"] for m in expected["maps"]]
    for picture, want in zip(answer["maps"], expected["maps"]):
        got, wanted = (np.asarray(data_url_image(m["image"]), dtype=np.int16) for m in (picture, want))
        assert got.shape == wanted.shape and np.abs(got - wanted).max() <= 1, picture["layer"]


def data_url_image(url: str) -> Image.Image:
    import base64

    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
