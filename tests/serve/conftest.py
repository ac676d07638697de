"""Fixtures of the `cnnkit serve` tests: a small trained checkpoint, and the app served on a loopback port."""

import contextlib
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch
from serve_helpers import DENOISING_RUN, DETECTOR_RUN, TRAINED_RUN, free_port

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


@contextlib.contextmanager
def serving(checkpoints: Path):
    """The app for ``checkpoints`` under uvicorn on a free loopback port, in a background thread."""
    import uvicorn

    from cnnkit.serve import create_app

    port = free_port()
    config = uvicorn.Config(create_app(checkpoints, port=port), host="127.0.0.1", port=port, log_level="warning",
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail(f"cnnkit serve did not start on 127.0.0.1:{port} within {SERVER_START_SECONDS} s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def live_server(checkpoints_dir):
    """The app serving the trained run, for the browser tests."""
    with serving(checkpoints_dir) as url:
        yield url


@pytest.fixture(scope="session")
def mixed_checkpoints_dir(tmp_path_factory, checkpoints_dir) -> Path:
    """The trained classifier plus a newer run of another task: a denoising autoencoder trained by the Trainer
    for an epoch on 128 MNIST digits (a real run folder, with MNIST's class names, as such runs have)."""
    from cnnkit import TrainConfig, Trainer, create_model
    from cnnkit.data.datasets import DatasetBundle
    from cnnkit.denoise import DenoisingTask
    from cnnkit.serve.training import cached_dataset

    root = tmp_path_factory.mktemp("mixed-checkpoints")
    shutil.copytree(checkpoints_dir / TRAINED_RUN, root / TRAINED_RUN)
    full = cached_dataset("mnist")
    data = DatasetBundle(full.name, full.train.subset(torch.arange(128)), full.test.subset(torch.arange(64)),
                         full.classes, full.mean, full.std)
    torch.manual_seed(0)
    config = TrainConfig(epochs=1, lr=0.003, optimizer="adam", weight_decay=0.0, batch_size=64, progress=False,
                         num_workers=0)
    Trainer(create_model("conv_autoencoder"), data, config, out=root / DENOISING_RUN,
            task=DenoisingTask("gaussian", 0.3)).fit()
    newer = time.time() + 60  # the newest run, whatever the clock's resolution
    os.utime(root / DENOISING_RUN / "checkpoint.json", (newer, newer))
    return root


@pytest.fixture(scope="session")
def detector_checkpoints_dir(tmp_path_factory, checkpoints_dir, shared_data) -> Path:
    """The trained classifier plus a Faster R-CNN trained by the Trainer for one step on 8 canvas-mnist canvases:
    a real detection run folder (safetensors and checkpoint.json) in a few seconds; its detections are those of
    a barely trained network, which is all the Detect page's tests need."""
    from cnnkit import TrainConfig, Trainer, create_model
    from cnnkit.data.canvas import load_canvas
    from cnnkit.detect import DetectionTask, detection_bundle

    root = tmp_path_factory.mktemp("detector-checkpoints")
    shutil.copytree(checkpoints_dir / TRAINED_RUN, root / TRAINED_RUN)
    spec = {"name": "canvas-mnist", "num_train": 8, "num_test": 2, "seed": 0}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNKIT_DATA", str(shared_data))
        data = detection_bundle(load_canvas(spec["name"], num_train=8, num_test=2, seed=0, download=False))
    torch.manual_seed(0)
    config = TrainConfig(epochs=1, batch_size=8, eval_batch_size=8, optimizer="sgd", lr=0.01, progress=False,
                         num_workers=0)
    model = create_model("faster_rcnn", num_classes=len(data.classes), in_channels=1)
    Trainer(model, data, config, out=root / DETECTOR_RUN, task=DetectionTask(spec)).fit()
    return root
