"""One progress helper (issue 22): a bar on a terminal, plain periodic lines in a piped log (tqdm's carriage
returns flood a log file), and progress where there was none: viz maximize, viz landscape, t-SNE, dataset
downloads and the linear probe's fit."""

import hashlib
import io

import pytest
import torch
import torch.nn as nn
from threadpoolctl import threadpool_limits

import cnnkit.progress
from cnnkit import TrainConfig, Trainer, create_model
from cnnkit.data.catalog import DatasetSpec, RemoteFile
from cnnkit.data.download import locate
from cnnkit.progress import NoProgress, PlainProgress, progress_bar
from cnnkit.transfer import fit_linear_probe
from cnnkit.viz import MaximizeSettings, loss_surface, maximize_activation
from cnnkit.viz.embed import penultimate_features, tsne
from cnnkit.viz.images import InputSpec
from helpers import bar_dataset


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_plain_lines_come_periodically_and_end_with_the_total_time():
    stream, clock = io.StringIO(), Clock()
    bar = PlainProgress(100, "landscape", "point", stream, every_seconds=10, clock=clock)
    for _ in range(100):
        clock.now += 1.0  # one point a second
        bar.update(1)
        bar.set_postfix(loss="2.31")
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert len(lines) == 11  # at 10, 20, ..., 100 s, and the closing line
    assert lines[0] == "landscape: 10/100 point (10%), 1 point/s, ~90 s left, loss=2.31"
    assert lines[-1] == "landscape: 100 point done in 100 s"


def test_short_steps_stay_silent_and_the_stream_decides_the_kind():
    stream = io.StringIO()
    with PlainProgress(5, "quick", stream=stream, every_seconds=10, clock=Clock()) as bar:
        bar.update(5)
    assert stream.getvalue() == ""

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert isinstance(progress_bar(3, "x", stream=io.StringIO()), PlainProgress)
    assert isinstance(progress_bar(3, "x", enabled=False), NoProgress)
    bar = progress_bar(3, "x", stream=Terminal())
    assert type(bar).__module__.startswith("tqdm")
    bar.close()


@pytest.fixture
def every_update(monkeypatch):
    """A plain line after every update, to see in a fast test what a long run prints."""
    monkeypatch.setattr(cnnkit.progress, "EVERY_SECONDS", 0.0)


def test_training_in_a_piped_log_prints_plain_lines_not_a_bar(every_update, capsys):
    torch.manual_seed(0)
    config = TrainConfig(epochs=1, batch_size=8, schedule="constant", lr=0.01, progress=True)
    Trainer(create_model("mnist_fast_cnn", num_classes=2, widths=(4, 4)), bar_dataset(32, 8, size=28), config).fit()
    err = capsys.readouterr().err
    assert "\r" not in err and "epoch 1/1: 1/4 batch (25%)" in err


def test_viz_maximize_and_landscape_report_progress(every_update, capsys):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    spec = InputSpec(channels=1, height=12, width=12, mean=(0.5,), std=(0.25,))
    maximize_activation(model, spec, units=[0], layer="0", settings=MaximizeSettings(steps=3), progress=True)
    assert "maximize: 1/3 step" in capsys.readouterr().err
    batches = [(torch.randn(6, 1, 12, 12), torch.randint(0, 2, (6,)))]
    loss_surface(model, batches, resolution=3, progress=True)
    assert "loss landscape: 9/9 point (100%)" in capsys.readouterr().err


def test_tsne_features_and_fit_report_progress(every_update, capsys):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
    batches = [(torch.randn(10, 1, 4, 4), torch.zeros(10, dtype=torch.long)) for _ in range(3)]
    features, _ = penultimate_features(model, batches, max_examples=30, progress=True)
    with threadpool_limits(1):  # scikit-learn's OpenMP threads spin for a minute on a loaded 2-core machine
        tsne(features, progress=True)
    err = capsys.readouterr().err
    assert "features for t-SNE: 10/30 img" in err and "t-SNE of 30 points x 8 features" in err
    assert "t-SNE done in" in err


def test_download_and_linear_probe_fit_report_progress(every_update, tmp_path, monkeypatch, capsys):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    payload = bytes(range(256)) * 8192  # 2 MB: two 1 MB blocks
    (mirror / "blob.bin").write_bytes(payload)
    monkeypatch.delenv("CNNKIT_DATA", raising=False)
    spec = DatasetSpec("toy", "toy", (1, 2, 2), ("a",), mirrors=(f"file://{mirror}/",),
                       files={"data": RemoteFile("blob.bin", hashlib.md5(payload).hexdigest())})
    assert locate(spec, spec.files["data"]).read_bytes() == payload
    assert "downloading blob.bin: 1.049/2.097 MB (50%)" in capsys.readouterr().err

    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 5, generator=generator), torch.arange(60) % 2
    fit_linear_probe(x + y[:, None], y, x[:20] + y[:20, None], y[:20], c_values=(0.1, 1.0), progress=True)
    assert "linear probe on 5 features: 3/7 fit" in capsys.readouterr().err
