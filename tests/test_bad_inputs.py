"""Inputs a hostile but fair user gives the commands that write run folders: an existing run as --out, options
of the wrong type or range, a doctored checkpoint.json, --out that is a file, a read-only or full disk. Each
ends in one line naming the field and the fix, exit status 2, and nothing written."""

import argparse
import json
import os
import resource
import tempfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from cnnkit.cli import claim_out, main
from cnnkit.models import create_model
from cnnkit.train.checkpoint import save_model_checkpoint
from helpers import checkpoint_meta


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def previous_run(tmp_path) -> Path:
    """A folder holding an earlier run's files, as the trainer writes them."""
    folder = tmp_path / "previous"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model": {"name": "lenet5"}, "dataset": "mnist", "config": {}}))
    (folder / "metrics.csv").write_text("epoch,train_loss\n1,0.5\n")
    return folder


WRITERS = {
    "train": ["train", "lenet5_relu", "--data", "mnist", "--epochs", "1"],
    "finetune": ["finetune", "--from", "efficientnet_lite0:imagenet", "--data", "mnist"],
    "average": ["average", "run-a", "run-b"],
    "denoise": ["denoise", "--train", "--data", "mnist"],
    "segment": ["segment", "--train", "--data", "shapes"],
    "translate": ["translate", "--train", "--task", "edges"],
    "gan": ["gan", "--train", "--data", "mnist"],
    "compress": ["compress", "--train", "--data", "mnist"],
}


# The commands that can continue a run folder (train --resume, compress/segment --train --resume).
RESUMABLE = {"train", "compress", "segment"}


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_every_command_that_writes_a_run_folder_refuses_an_existing_run(command, previous_run, capsys):
    before = snapshot(previous_run)
    code, _, err = run(capsys, *WRITERS[command], "--out", previous_run)
    line = error_line(err)
    assert code == 2 and "already holds a run" in line and "--overwrite" in line
    assert ("--resume" in line) == (command in RESUMABLE)  # pointed to --resume only where it exists
    assert snapshot(previous_run) == before


def test_the_default_folder_is_never_reused_and_overwrite_replaces(tmp_path, capsys):
    default = tmp_path / "runs" / "lenet5-mnist"
    default.mkdir(parents=True)
    assert claim_out(argparse.Namespace(out=None, overwrite=False), default) == default  # empty: no run in it
    (default / "last.safetensors").write_bytes(b"an earlier run")
    fresh = claim_out(argparse.Namespace(out=None, overwrite=False), default)
    assert fresh == tmp_path / "runs" / "lenet5-mnist-2" and "holds an earlier run" in capsys.readouterr().err
    assert (default / "last.safetensors").exists()
    assert claim_out(argparse.Namespace(out=None, overwrite=True), default) == default
    assert not default.exists()  # --overwrite deleted the earlier run: nothing of it can mix with the new one


BAD_OPTIONS = [
    (["--epochs", "0"], "epochs must be a whole number >= 1, not 0"),
    (["--epochs", "-3"], "epochs must be a whole number >= 1, not -3"),
    (["--batch-size", "0"], "batch_size must be a whole number >= 1, not 0"),
    (["--lr", "-1"], "lr must be a number > 0, not -1.0"),
    (["--recipe", "epochs: three"], "epochs must be a whole number >= 1, not 'three' (a string: write it without"),
    (["--recipe", 'batch_size: "64"'], "batch_size must be a whole number >= 1, not '64' (a string"),
    (["--recipe", "lr: [1, 2]"], "lr must be a finite number > 0, not [1, 2]"),
    (["--recipe", "model_args: 3"], "model_args must be a mapping, not 3"),
    (["--recipe", "1: 2"], "Unknown training option(s) ['1']"),
]


@pytest.mark.parametrize("options, message", BAD_OPTIONS, ids=[" ".join(o) for o, _ in BAD_OPTIONS])
def test_bad_training_options_name_the_field_and_write_nothing(options, message, tmp_path, capsys):
    if options[0] == "--recipe":
        (tmp_path / "recipe.yaml").write_text(options[1])
        options = ["--recipe", tmp_path / "recipe.yaml"]
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "lenet5_relu", "--data", "mnist", "--out", out, *options)
    assert code == 2 and message in error_line(err)
    assert not out.exists()


@pytest.fixture
def run_folder(tmp_path) -> Path:
    """A run folder of a (small, untrained) MNIST classifier, and a digit image to predict."""
    folder = tmp_path / "run"
    save_model_checkpoint(folder, create_model("mnist_fast_cnn", num_classes=10, in_channels=1),
                          checkpoint_meta([str(i) for i in range(10)], channels=1, size=28))
    Image.new("L", (28, 28), 0).save(tmp_path / "digit.png")
    return folder


def edit_meta(folder: Path, change) -> None:
    meta = json.loads((folder / "checkpoint.json").read_text())
    change(meta)
    (folder / "checkpoint.json").write_text(json.dumps(meta))


BAD_METADATA = [
    ("unknown kwargs", lambda m: m["model"].update(kwargs={"depth": 3}), "kwargs ['depth'] are not arguments"),
    ("huge kwargs", lambda m: m["model"].update(kwargs={"widths": [4096, 4096]}), "MiB of weights, but"),
    ("missing image_shape", lambda m: m.pop("image_shape"), "image_shape is missing"),
    ("too few classes", lambda m: m.update(classes=["0", "1"]), "classes lists 2 names for a model with 10"),
    ("std 0", lambda m: m["preprocess"].update(std=[0]), "preprocess: std[0] must be a number > 0, not 0"),
    ("30000 px", lambda m: m.update(image_shape=[1, 30000, 30000]), "image_shape (height) must be >= 1 and <= 8192"),
    ("string classes", lambda m: m.update(classes="0123456789"), "classes must be a list"),
    ("not a mapping", lambda m: m.update(preprocess=[1]), "preprocess must be a mapping"),
]


@pytest.mark.parametrize("change, message", [b[1:] for b in BAD_METADATA], ids=[b[0] for b in BAD_METADATA])
def test_a_doctored_checkpoint_json_is_refused_with_the_field(change, message, run_folder, tmp_path, capsys):
    edit_meta(run_folder, change)
    code, _, err = run(capsys, "predict", run_folder, tmp_path / "digit.png")
    assert code == 2 and message in error_line(err)


def test_out_that_is_a_file_or_under_one(tmp_path, capsys):
    (tmp_path / "file").write_text("mine")
    for out, message in ((tmp_path / "file", "is a file"), (tmp_path / "file" / "run", "which is a file")):
        code, _, err = run(capsys, "train", "lenet5_relu", "--data", "mnist", "--out", out)
        assert code == 2 and message in error_line(err)
    assert (tmp_path / "file").read_text() == "mine"


def in_child(function) -> int:
    """Run ``function`` in a forked child (for limits that must not touch this process); its exit status."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            torch.set_num_threads(1)  # as DataLoader workers do: the parent's OpenMP pool does not survive a fork
            code = function()
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_a_read_only_folder_is_refused_before_anything_is_written(capfd):
    root = Path(tempfile.mkdtemp())
    try:
        root.chmod(0o755)
        (root / "ro").mkdir()
        (root / "ro").chmod(0o555)

        def attempt():
            if os.geteuid() == 0:  # root writes anywhere: drop to an ordinary user, as a read-only disk would
                os.setgid(65534)
                os.setuid(65534)
            return main(["average", "run-a", "run-b", "-o", str(root / "ro" / "soup")])

        assert in_child(attempt) == 2
        line = error_line(capfd.readouterr().err)
        assert "is not writable" in line and "choose a writable --out" in line
        assert not (root / "ro" / "soup").exists()
    finally:
        (root / "ro").chmod(0o755)
        for path in sorted(root.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        root.rmdir()


def test_a_full_disk_is_an_error_not_a_traceback_and_leaves_no_partial_file(run_folder, tmp_path, capfd):
    other = tmp_path / "other"
    torch.manual_seed(1)
    save_model_checkpoint(other, create_model("mnist_fast_cnn", num_classes=10, in_channels=1),
                          checkpoint_meta([str(i) for i in range(10)], channels=1, size=28))
    soup = tmp_path / "soup"

    def average_on_a_small_disk():
        # Files may grow to 20 kB here (the weights take 57 kB): writes past it fail as on a full disk.
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
        return main(["average", str(run_folder), str(other), "-o", str(soup)])

    assert in_child(average_on_a_small_disk) == 2
    line = error_line(capfd.readouterr().err)
    assert f"could not write {soup / 'checkpoint.safetensors'}" in line and "free some disk space" in line
    assert not [p.name for p in soup.iterdir()]  # no temporary file, no half a pair
