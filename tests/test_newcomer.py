"""Issue 22, as a new user meets cnnkit: `make test` on a fresh machine, output that does not mislead, no
tracebacks, no work thrown away, help that says what each option does."""

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnkit
from cnnkit.cli import _parser, main
from cnnkit.data.datasets import LossyDataWarning
from cnnkit.models import create_model
from cnnkit.predict import predict_files
from cnnkit.train import TrainConfig, Trainer
from cnnkit.train.checkpoint import average_checkpoints, load_model_checkpoint, save_model_checkpoint
from helpers import bar_dataset

REPO = Path(__file__).resolve().parents[1]
FAST = dict(batch_size=32, lr=0.01, optimizer="adam", weight_decay=0.0, progress=False, eval_batch_size=64)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def train_bars(out, seed=0, epochs=1, **config):
    """A lenet5_relu run folder on the two-class bar images (bright bars on a dark background, like MNIST)."""
    torch.manual_seed(seed)
    trainer = Trainer(create_model("lenet5_relu", num_classes=2), bar_dataset(n_train=128, n_test=64),
                      TrainConfig(epochs=epochs, seed=seed, **{**FAST, **config}), out=out)
    trainer.fit()
    return trainer


@pytest.fixture
def bars_as_dataset(monkeypatch):
    """`--data bars` reads the bar images (the commands import load_dataset from cnnkit.data when they run)."""
    import cnnkit.data

    real = cnnkit.data.load_dataset
    monkeypatch.setattr(cnnkit.data, "load_dataset",
                        lambda name, **kwargs: bar_dataset(n_train=128, n_test=64) if name == "bars"
                        else real(name, **kwargs))


# ------------------------------------------------------------------------------ make test on a fresh machine
def make_browser(tmp_path, root: bool, playwright_ok: bool, chromium: str = "/nonexistent/chromium"):
    """Run the Makefile's `browser` step with stand-ins for apt-get, id and the venv's python; return what
    they were asked to do and what make printed."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir(parents=True, exist_ok=True)
    stubs = {"apt-get": f'echo "apt-get $*" >> {log}', "id": f"echo {0 if root else 1000}",
             "python": f'echo "python $*" >> {log}; exit {0 if playwright_ok else 1}'}
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    stamp = tmp_path / "stamp"
    stamp.touch()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(["make", "-s", "-C", str(REPO), "browser", f"CHROMIUM={chromium}", f"STAMP={stamp}",
                           f"PY={bin_dir / 'python'}"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return (log.read_text().splitlines() if log.exists() else []), done.stdout


def test_make_test_installs_chromium_exactly_as_ci_does(tmp_path):
    calls, _ = make_browser(tmp_path / "root", root=True, playwright_ok=True)
    assert calls[-1] == "apt-get install -y -qq chromium"  # Debian/Ubuntu as root: apt
    calls, _ = make_browser(tmp_path / "user", root=False, playwright_ok=True)
    assert calls == ["python -m playwright install chromium"]  # elsewhere: Playwright's own build
    calls, printed = make_browser(tmp_path / "none", root=False, playwright_ok=False)
    lines = [line for line in printed.splitlines() if "Chromium" in line]
    assert len(lines) == 1 and "apt-get install chromium" in lines[0] and "playwright install chromium" in lines[0]
    calls, printed = make_browser(tmp_path / "there", root=True, playwright_ok=True, chromium="/bin/sh")
    assert calls == [] and printed == ""  # already installed: nothing to do
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^test: .*\bbrowser\b", makefile, re.M)
    ci = (REPO / ".ci" / "run").read_text()
    assert "apt-get" not in ci and "make test" in ci  # CI does what a new user's `make test` does


# ------------------------------------------------------------------------------------- misleading output
def test_epochs_that_were_not_validated_print_and_write_no_nan(tmp_path, capsys):
    train_bars(tmp_path / "run", epochs=2, validate_every=0)
    printed = capsys.readouterr().out
    epoch_lines = [line for line in printed.splitlines() if line.startswith("epoch")]
    assert len(epoch_lines) == 2 and "nan" not in printed
    assert "val loss" not in epoch_lines[0] and "val loss" in epoch_lines[1]
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [rows[0]["val_loss"], rows[0]["val_acc"], rows[0]["val_top5"]] == ["", "", ""]
    assert float(rows[1]["val_acc"]) >= 0 and float(rows[0]["train_loss"]) > 0


def photo(path: Path) -> Path:
    """A colourful photo-like picture: smooth colour gradients, a bright sky."""
    y, x = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 128), indexing="ij")
    rgb = torch.stack([0.9 - 0.5 * y, 0.5 + 0.3 * x * y, 0.95 - 0.7 * y * x]) * 255
    Image.fromarray(rgb.permute(1, 2, 0).round().byte().numpy()).save(path)
    return path


def test_predict_warns_when_the_input_is_unlike_the_training_images_and_suggests_invert(tmp_path, capsys):
    train_bars(tmp_path / "run")
    model, meta = load_model_checkpoint(tmp_path / "run")
    assert meta["input_statistics"]["border"][1] < 0.2  # recorded at training: dark borders, like MNIST
    bar = bar_dataset(n_train=2, n_test=2, seed=5).test.images[0, 0]
    Image.fromarray(bar.numpy()).save(tmp_path / "bar.png")
    Image.fromarray((255 - bar).numpy()).save(tmp_path / "pen_on_paper.png")
    files = [tmp_path / "bar.png", tmp_path / "pen_on_paper.png", photo(tmp_path / "photo.jpg")]
    lines = []
    predict_files(model, meta, files, warn=lines.append)
    assert len(lines) == 2  # the training-like bar passes
    assert "pen_on_paper.png" in lines[0] and "add --invert" in lines[0] and "border brightness" in lines[0]
    assert "photo.jpg" in lines[1] and "colour picture" in lines[1] and "unreliable" in lines[1]
    lines = []
    predict_files(model, meta, files[:2], invert=True, warn=lines.append)
    assert len(lines) == 1 and "bar.png" in lines[0] and "drop --invert" in lines[0]
    # A run from before the statistics were recorded: guessed from its mean and std, still caught.
    old_meta = {k: v for k, v in meta.items() if k != "input_statistics"}
    lines = []
    predict_files(model, old_meta, files[:2], warn=lines.append)
    assert len(lines) == 1 and "pen_on_paper.png" in lines[0]
    code, out, err = run(capsys, "predict", tmp_path / "run", files[2])
    assert code == 0 and "photo.jpg:" in out and err.startswith("warning: ") and "colour picture" in err


def test_average_warns_when_the_runs_do_not_share_an_initialisation(tmp_path, capsys):
    train_bars(tmp_path / "a", seed=0)
    train_bars(tmp_path / "b", seed=1)  # another seed: other initial weights
    train_bars(tmp_path / "c", seed=0, lr=0.005)  # the same start, trained otherwise
    assert load_model_checkpoint(tmp_path / "a")[1]["lineage"]["init"]
    lines = []
    average_checkpoints([tmp_path / "a", tmp_path / "c"], tmp_path / "ac", warn=lines.append)
    assert lines == []
    average_checkpoints([tmp_path / "a", tmp_path / "b"], tmp_path / "ab", warn=lines.append)
    assert len(lines) == 1 and str(tmp_path / "b") in lines[0] and "same initialisation" in lines[0]
    # Runs without a recorded lineage: their weights are compared instead (near-orthogonal: independent).
    for name in "abc":
        meta_file = tmp_path / name / "checkpoint.json"
        meta = json.loads(meta_file.read_text())
        meta.pop("lineage")
        meta_file.write_text(json.dumps(meta))
    lines = []
    average_checkpoints([tmp_path / "a", tmp_path / "c"], tmp_path / "ac2", warn=lines.append)
    average_checkpoints([tmp_path / "a", tmp_path / "b"], tmp_path / "ab2", warn=lines.append)
    assert len(lines) == 1 and "cosine" in lines[0]
    code, out, err = run(capsys, "average", tmp_path / "a", tmp_path / "b", "-o", tmp_path / "ab3")
    assert code == 0 and "averaged 2 runs" in out and err.startswith("warning: ")


def test_datasets_says_which_copy_is_present(tmp_path, monkeypatch, capsys):
    lossy = tmp_path / "cifar10" / "lossy-jpeg" / "cifar10-jpeg-q75-YoongiKim.tar.gz"
    lossy.parent.mkdir(parents=True)
    lossy.touch()
    monkeypatch.setenv("CNNKIT_DATA", str(tmp_path))
    code, out, _ = run(capsys, "datasets")
    cifar = out.split("cifar10 ")[1].split("cifar100")[0]
    assert code == 0 and "lossy JPEG copy" in cifar
    (tmp_path / "cifar10" / "cifar-10-binary.tar.gz").touch()  # the official release wins, as load_dataset reads it
    _, out, _ = run(capsys, "datasets")
    cifar = out.split("cifar10 ")[1].split("cifar100")[0]
    assert "official binary release" in cifar and "lossy" not in cifar


def test_the_interrupt_message_names_the_run_folder(tmp_path, monkeypatch, capsys, bars_as_dataset):
    original = Trainer.train_epoch

    def interrupted_in_epoch_2(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted_in_epoch_2)
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "lenet5_relu", "--data", "bars", "--epochs", "3", "--batch-size", "32",
                       "--out", out, "--no-progress")
    assert code == 130 and "RUN_DIR" not in err
    assert f"'cnnkit train --resume {out}'" in err


# ---------------------------------------------------------------------------------------------- tracebacks
def test_eval_of_a_run_that_is_not_a_classifier_is_a_one_line_error(tmp_path, capsys):
    model = create_model("conv_autoencoder", in_channels=1, bottleneck_channels=4)
    save_model_checkpoint(tmp_path / "denoise-run", model, {
        "dataset": "mnist", "classes": [str(d) for d in range(10)], "image_shape": [1, 28, 28],
        "preprocess": {"mean": [0.13], "std": [0.31]}, "task": {"name": "denoising"}})
    code, _, err = run(capsys, "eval", tmp_path / "denoise-run")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "denoising model" in err and "summary.json" in err and "cnnkit denoise" in err


@pytest.mark.parametrize("argv", [
    ["eval", "runs/x", "--batch-size", "0"], ["predict", "runs/x", "a.png", "--top-k", "0"],
    ["summary", "lenet5", "--batch-size", "0"], ["viz", "embed", "runs/x", "--examples", "0"],
    ["viz", "maximize", "runs/x", "--unit", "0", "--steps", "0"], ["gan", "runs/x", "--count", "0"],
    ["serve", "--port", "70000"], ["texture", "t.jpg", "-o", "t.png", "--feedforward", "--train-iterations", "0"],
    ["segment", "--train", "--num-test", "0"], ["denoise", "--train", "--bottleneck", "0"],
    ["gan", "--train", "--width", "0"], ["compress", "--train", "--channels", "0"],
    ["stylize", "a.jpg", "b.jpg", "-o", "o.png", "--size", "0"], ["finetune", "--from", "x", "--data", "y",
                                                                   "--input-size", "0"]])
def test_sizes_that_would_divide_by_zero_are_refused_in_one_line(argv, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "Traceback" not in err
    assert re.search(r"error: argument --[a-z-]+: (must be at least 1|a port is 1 to 65535)", err)


def test_serve_with_a_checkpoints_folder_it_cannot_create_is_a_one_line_error(tmp_path, capsys):
    blocked = tmp_path / "a-file"
    blocked.touch()
    code, _, err = run(capsys, "serve", "--checkpoints", blocked / "runs")
    assert code == 2 and "cannot create" in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------------- work not thrown away
def test_finetune_keeps_its_model_by_default_and_labels_its_two_phases(tmp_path, monkeypatch, capsys,
                                                                      bars_as_dataset):
    train_bars(tmp_path / "source")
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "finetune", "--from", tmp_path / "source", "--data", "bars", "--strategy",
                         "two-phase", "--top-stages", "1", "--epochs", "1", "--train-subset", "20", "--test-subset",
                         "16", "--no-progress")
    assert code == 0, err
    saved = tmp_path / "runs" / "finetune-source-bars-two-phase"
    assert (saved / "checkpoint.json").is_file() and str(Path("runs") / saved.name) in out
    first, second = out.index("phase 1/2: the new head only"), out.index("phase 2/2: the head and the top 1 stages")
    assert first < second
    assert "20 train / 16 test" in out


def test_every_training_command_takes_train_and_test_subsets(tmp_path, monkeypatch, capsys, bars_as_dataset):
    parser = _parser()
    for argv in (["train", "lenet5"], ["compress", "--train"], ["denoise", "--train"], ["finetune", "--from", "x",
                                                                                          "--data", "y"]):
        args = parser.parse_args([*argv, "--train-subset", "2000", "--test-subset", "500"])
        assert (args.train_subset, args.test_subset) == (2000, 500)
    code, out, err = run(capsys, "train", "lenet5_relu", "--data", "bars", "--epochs", "1", "--batch-size", "16",
                         "--train-subset", "24", "--test-subset", "10", "--out", tmp_path / "quick", "--no-progress")
    assert code == 0 and "24 train / 10 test" in out, err
    code, out, err = run(capsys, "denoise", "--train", "--data", "bars", "--epochs", "1", "--bottleneck", "2",
                         "--train-subset", "16", "--test-subset", "8", "--out", tmp_path / "dae", "--no-progress")
    assert code == 0 and "16 train / 8 test" in out, err


# --------------------------------------------------------------------------------------------------- help
def all_parsers(parser, name="cnnkit"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child_name, child in action.choices.items():
                yield from all_parsers(child, f"{name} {child_name}")


def test_every_option_has_a_description_and_shows_its_default():
    for name, parser in all_parsers(_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction, argparse._VersionAction)):
                continue
            what = f"{name} {action.option_strings or action.dest}"
            assert action.help, f"{what} has no help"
            default = action.default
            if action.option_strings and default is not None and default is not False and default != []:
                shown = formatter._get_help_string(action)
                said = f"({default})" in shown or (isinstance(default, float) and f"({default:g})" in shown)
                assert "default" in shown.lower() or said, f"{what} does not show its default {default!r}"


def test_defaults_appear_in_the_printed_help(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert re.search(r"--epochs EPOCHS\s+epochs to train \(default: the recipe's, else 10\)", text)
    assert re.search(r"--lr LR\s+\(peak\) learning rate \(default: the recipe's, else 0.1\)", text)
    with pytest.raises(SystemExit):
        main(["denoise", "--help"])
    assert re.search(r"--epochs EPOCHS\s+epochs to train \(default: 3\)", capsys.readouterr().out)


def test_each_viz_tool_shows_its_own_examples(capsys):
    for tool in ("filters", "maps", "maximize", "dream", "gradcam", "landscape", "curves", "occlusion",
                 "integrated-gradients", "guided-backprop", "deconvnet", "gradients"):
        with pytest.raises(SystemExit):
            main(["viz", tool, "--help"])
        examples = capsys.readouterr().out.split("\nexample")[1]
        named = set(re.findall(r"cnnkit viz ([\w-]+)", examples))
        assert named == {tool}, (tool, named)


def test_version_and_bare_cnnkit(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0 and capsys.readouterr().out.strip() == f"cnnkit {cnnkit.__version__}"
    code, out, err = run(capsys)
    assert code == 0 and out.startswith("usage: cnnkit") and "train" in out and err == ""


def test_the_demo_hint_names_digits_the_repository_ships():
    hint = next(line for line in (REPO / "Makefile").read_text().splitlines() if "Next:" in line)
    paths = re.findall(r"docs/digits/\d\.png", hint)
    assert paths and "some_digit" not in hint
    for digit in range(10):
        image = torch.from_numpy(np.array(Image.open(REPO / "docs" / "digits" / f"{digit}.png")))
        assert image.shape == (28, 28)  # grey, MNIST's size
        border = torch.cat([image[:2].flatten(), image[-2:].flatten(), image[:, :2].flatten(), image[:, -2:].flatten()])
        assert border.float().mean() < 5 and image.max() > 200  # white on black, as MNIST


def test_a_warning_reaches_the_user_as_one_line_without_source_code(capsys, monkeypatch):
    """Python's default format printed the file, line number and the source line of the warn() call under
    the message (`cnnkit translate --train` on the CIFAR-10 JPEG copy showed `return load_dataset(...)`)."""
    cli_main = sys.modules["cnnkit.cli.main"]

    def parser():
        p = argparse.ArgumentParser(prog="cnnkit")
        sub = p.add_subparsers(dest="command")
        sub.add_parser("try").set_defaults(
            func=lambda args: warnings.warn("cifar10: reading the lossy JPEG copy", LossyDataWarning, stacklevel=2))
        return p

    monkeypatch.setattr(cli_main, "build_parser", parser)
    assert cli_main.main(["try"]) == 0
    assert capsys.readouterr().err == "warning: cifar10: reading the lossy JPEG copy\n"
    assert warnings.showwarning is not cli_main._show_warning  # restored after the command
