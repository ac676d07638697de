"""Fixtures of the `cnnkit serve` tests: a small trained checkpoint, and the app served on a loopback port."""

import io
import socket
import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
TRAINED_RUN = "digits"
SERVER_START_SECONDS = 30


@pytest.fixture(scope="session")
def checkpoints_dir(tmp_path_factory, shared_data) -> Path:
    """A checkpoints folder holding one LeNet-5 (ReLU) trained for an epoch on 512 MNIST digits: a real run
    folder written by the Trainer, in a second or two; the tests check what the pages show, not how well."""
    from cnnkit import TrainConfig, Trainer, create_model
    from cnnkit.data.datasets import DatasetBundle
    from cnnkit.serve.training import cached_dataset

    root = tmp_path_factory.mktemp("checkpoints")
    full = cached_dataset("mnist")
    data = DatasetBundle(full.name, full.train.subset(torch.arange(512)), full.test.subset(torch.arange(200)),
                         full.classes, full.mean, full.std)
    torch.manual_seed(0)
    model = create_model("lenet5_relu")
    config = TrainConfig(epochs=1, lr=0.003, optimizer="adam", weight_decay=0.0, batch_size=64, progress=False,
                         num_workers=0)
    Trainer(model, data, config, out=root / TRAINED_RUN).fit()
    return root


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


@pytest.fixture(scope="session")
def live_server(checkpoints_dir):
    """The app under uvicorn on a free loopback port, in a background thread, for the browser tests."""
    import uvicorn

    from cnnkit.serve import create_app

    port = free_port()
    config = uvicorn.Config(create_app(checkpoints_dir), host="127.0.0.1", port=port, log_level="warning",
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail(f"cnnkit serve did not start on 127.0.0.1:{port} within {SERVER_START_SECONDS} s")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
