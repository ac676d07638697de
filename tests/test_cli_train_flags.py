"""'cnnkit train' has one flag per TrainConfig field, generated with its help; given flags override the recipe;
the old spellings still parse to the same config."""

import argparse
import dataclasses
import json

import pytest

import cnnkit.data
from cnnkit.cli import build_parser, load_recipe, main
from cnnkit.cli.train_flags import flag_of, training_config
from cnnkit.train import TrainConfig
from cnnkit.train.config_help import TRAIN_OPTION_HELP
from cnnkit.train.recipe import load_recipe as recipe_home
from helpers import bar_dataset

FIELDS = [field.name for field in dataclasses.fields(TrainConfig)]


def commands() -> dict[str, argparse.ArgumentParser]:
    return next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices


def train_parser() -> argparse.ArgumentParser:
    return commands()["train"]


def test_every_field_has_help_and_exactly_one_flag():
    missing = [name for name in FIELDS if not TRAIN_OPTION_HELP.get(name)]
    assert not missing, f"TrainConfig fields without a line in TRAIN_OPTION_HELP: {missing}"
    assert not set(TRAIN_OPTION_HELP) - set(FIELDS), "TRAIN_OPTION_HELP describes fields TrainConfig lacks"
    by_dest = {}
    for action in train_parser()._actions:
        if action.dest in FIELDS:
            assert action.dest not in by_dest, f"{action.dest} has two flags"
            by_dest[action.dest] = action
    assert sorted(by_dest) == sorted(FIELDS)
    for name, action in by_dest.items():
        assert action.default is None, f"{name}: a flag left out must mean 'the recipe's value'"
        assert action.help.startswith(TRAIN_OPTION_HELP[name]) and flag_of(name) in action.option_strings


def parse(*argv):
    return train_parser().parse_args(["lenet5", "--data", "mnist", *argv])


def test_old_spellings_parse_to_the_same_config():
    old = parse("--threads", "3", "--workers", "0", "--nesterov", "--channels-last", "--milestones", "3,6",
                "--no-progress", "--sync-batchnorm", "--scale-lr", "--reference-batch", "64", "--early-stopping", "2")
    config = training_config(old)
    assert (config.num_threads, config.num_workers, config.nesterov, config.channels_last) == (3, 0, True, True)
    assert (config.milestones, config.progress, config.sync_batchnorm, config.scale_lr) == ((3, 6), False, True, True)
    assert (config.reference_batch, config.early_stopping) == (64, 2)
    assert training_config(parse()) == TrainConfig()  # nothing given: the TrainConfig defaults


def test_the_yaml_only_fields_have_flags():
    args = parse("--augment", "{crop: 4, flip: true}", "--lr-multipliers", "{features.: 0.1}", "--betas", "0.8,0.99",
                 "--tta-flip", "--tta-sizes", "28,36", "--gamma", "0.5", "--plateau-metric", "val_acc",
                 "--eval-batch-size", "50", "--resize", "interpolate", "--input-size", "40")
    config = training_config(args)
    assert config.augment == {"crop": 4, "flip": True} and config.lr_multipliers == {"features.": 0.1}
    assert (config.betas, config.tta_flip, config.tta_sizes, config.gamma) == ((0.8, 0.99), True, (28, 36), 0.5)
    assert (config.plateau_metric, config.eval_batch_size, config.resize, config.input_size) == \
        ("val_acc", 50, "interpolate", 40)
    with pytest.raises(SystemExit):
        parse("--augment", "[1, 2]")  # not a mapping: argparse says so


def test_a_flag_overrides_the_recipe_and_a_flag_left_out_keeps_it(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: lenet5\ndata: mnist\nlr: 1e-3\nepochs: 4\nnesterov: true\naugment: {crop: 2}\n")
    options = {k: v for k, v in load_recipe(recipe).items() if k not in ("model", "data")}
    assert load_recipe is recipe_home  # cnnkit.cli.load_recipe is the train/recipe.py one
    config = training_config(parse("--lr", "0.05", "--no-nesterov"), options)
    assert (config.lr, config.nesterov, config.epochs, config.augment) == (0.05, False, 4, {"crop": 2})


@pytest.fixture
def bars(monkeypatch):
    monkeypatch.setattr(cnnkit.data, "load_dataset", lambda name, **kwargs: bar_dataset(n_train=32, n_test=16))


def test_train_with_a_recipe_and_flags_then_resume_refuses_a_changed_option(bars, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: lenet5_relu\ndata: bars\nepochs: 1\nbatch_size: 8\noptimizer: adam\nlr: 1e-3\n"
                      "weight_decay: 0\n")
    out = tmp_path / "run"
    assert main(["train", "--recipe", str(recipe), "--lr", "0.002", "--tta-flip", "--eval-batch-size", "8",
                 "-o", str(out), "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())["config"]
    assert (config["lr"], config["tta_flip"], config["eval_batch_size"], config["batch_size"]) == (0.002, True, 8, 8)
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--gamma", "0.5", "--epochs", "2"]) == 2
    assert "--gamma cannot change when resuming" in capsys.readouterr().err


def test_dash_o_follows_one_rule():
    """-o is --output where a command writes a file, else --out (a folder); nothing else."""
    for name, parser in commands().items():  # commands have no subcommands of their own
        options = {o: a for a in parser._actions for o in a.option_strings}
        if "-o" not in options:
            continue
        expected = "--output" if "--output" in options else "--out"
        assert expected in options["-o"].option_strings, f"{name}: -o is {options['-o'].option_strings}"
    for argv in (["train", "m", "-o", "x"], ["finetune", "--from", "a", "--data", "b", "-o", "x"],
                 ["import", "w.pth", "--model", "m", "-o", "x"], ["average", "a", "b", "-o", "x"]):
        assert str(build_parser().parse_args(argv).out) == "x"


@pytest.mark.parametrize("command", ["denoise", "segment", "translate", "gan"])
def test_task_commands_take_precision_and_channels_last_and_leave_them_alone_when_not_given(command):
    parser = commands()[command]
    given = training_config(parser.parse_args(["--train", "--precision", "bf16", "--channels-last"]))
    assert (given.precision, given.channels_last) == ("bf16", True)
    recipe = {"precision": "fp16", "channels_last": True}  # a task's defaults stay when the flags are left out
    kept = training_config(parser.parse_args(["--train"]), recipe)
    assert (kept.precision, kept.channels_last) == ("fp16", True)
    with pytest.raises(SystemExit):
        parser.parse_args(["--train", "--precision", "fp8"])
