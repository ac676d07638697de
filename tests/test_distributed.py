"""Data-parallel training on CPU with gloo, 2 processes, on a real MNIST subset.

The equivalence tests start the ranks with torch.multiprocessing and let the Trainer join the group from the
environment torchrun would set; the fault-tolerance test runs the real command line under torchrun.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from cnnkit import cli
from cnnkit.errors import CnnkitError
from cnnkit.models import create_model
from cnnkit.train import TrainConfig, Trainer
from cnnkit.train import distributed
from ddp_worker import RUNS, SGD, TEST_IMAGES, TRAIN_IMAGES, build, mnist_subset, rank_main, stop_after
from helpers import bar_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("ddp")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNKIT_DATA", str(shared_data))
        # The parent hosts the rendezvous store, as torchrun's agent does, on a port it already holds.
        store = torch.distributed.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
        mp.spawn(rank_main, args=(2, store.port, str(root)), nprocs=2, join=True)
    return root


def one_process_reference(label: str, tmp_path) -> Trainer:
    """The same run in one process with the global batch (twice the per-rank batch, no accumulation)."""
    model_name, options, epochs, train_images = RUNS[label]
    options = {**options, "batch_size": options["batch_size"] * 2 * options.get("accumulate", 1), "accumulate": 1,
               "sync_batchnorm": False}
    trainer = Trainer(build(model_name), mnist_subset(train_images), TrainConfig(**{**SGD, **options}),
                      out=tmp_path / label, callbacks=[stop_after(epochs)])
    trainer.fit()
    return trainer


def metrics_rows(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("label", ["plain", "syncbn", "accumulate"])
def test_two_processes_reach_the_weights_of_one_process_with_the_global_batch(label, two_process_runs, tmp_path,
                                                                               shared_data, monkeypatch):
    monkeypatch.setenv("CNNKIT_DATA", str(shared_data))
    reference = one_process_reference(label, tmp_path)
    weights = load_file(two_process_runs / label / "checkpoint.safetensors")
    expected = reference.model.state_dict()
    assert weights.keys() == expected.keys()  # no "module." prefixes, SyncBN saved as BatchNorm
    for name, value in expected.items():
        torch.testing.assert_close(weights[name], value, rtol=1e-4, atol=1e-5, msg=name)
    # The reported figures are all-reduced over both ranks: the whole training subset and the whole test set.
    (ddp,), (single,) = metrics_rows(two_process_runs / label), metrics_rows(tmp_path / label)
    for column in ("train_loss", "train_acc", "val_loss", "val_acc", "val_top5", "lr"):
        assert float(ddp[column]) == pytest.approx(float(single[column]), rel=1e-4, abs=0.11), column
    summary = json.loads((two_process_runs / label / "summary.json").read_text())
    assert summary["test_acc"] == pytest.approx(reference.evaluate()["acc"], abs=0.11)


def test_a_run_resumes_on_another_number_of_processes(two_process_runs, tmp_path, shared_data, monkeypatch):
    """Epoch 1 ran on 2 processes with batch 32 each; epoch 2 runs on one with batch 32: twice the steps. The
    schedule is laid out again for that geometry, so it ends where a one-process run ends."""
    monkeypatch.setenv("CNNKIT_DATA", str(shared_data))
    data = mnist_subset()
    model_name, options, _, _ = RUNS["plain"]
    run = tmp_path / "continued"
    run.mkdir()
    for name in ("last.safetensors", "config.json"):
        (run / name).write_bytes((two_process_runs / "plain" / name).read_bytes())
    resumed = Trainer(build(model_name), data, TrainConfig(**{**SGD, **options}), out=run)
    resumed.fit(resume=True)
    assert [row["epoch"] for row in metrics_rows(run)] == ["1", "2"]
    single = Trainer(build(model_name), data, TrainConfig(**{**SGD, **options}), out=tmp_path / "single")
    single.fit()
    final_lr = single.optimizer.param_groups[0]["lr"]
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(final_lr, rel=1e-9)
    assert resumed.history[-1]["val_acc"] > 50  # it learned across the change (chance: 10%)


def test_a_killed_worker_restarts_from_the_checkpoint_and_the_run_completes(tmp_path, shared_data):
    """Rank 1 dies in the middle of epoch 2; torchrun restarts both workers, which continue after epoch 1 and
    end with exactly the weights of the same two-process run left uninterrupted. (Against a one-process run with
    the global batch the weights agree only to the order of the gradient all-reduce's sums, which after three
    epochs of SGD depends on the CPU's kernels: the restart itself must add no difference at all.)"""
    # The reference's settings as a recipe: without one, 'cnnkit train' would use lenet5's default recipe.
    recipe = tmp_path / "sgd.yaml"
    recipe.write_text(json.dumps({"model": "lenet5_relu", "data": "mnist", **SGD}))  # JSON is YAML
    env = {**os.environ, "CNNKIT_DATA": str(shared_data), "CNNKIT_TEST_SUBSET": f"{TRAIN_IMAGES},{TEST_IMAGES}",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests")]), "OMP_NUM_THREADS": "1"}

    def two_processes(out, crash):
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                   "--max-restarts", "1", "--monitor-interval", "0.1", str(REPO / "tests" / "ddp_worker.py"),
                   "train", "--recipe", str(recipe), "--epochs", "3", "--batch-size", "32", "--threads", "1",
                   "--out", str(out), "--no-progress"]
        crash_env = {"CNNKIT_TEST_CRASH": "1:2:5"} if crash else {}
        result = subprocess.run(command, env={**env, **crash_env}, capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    run, uninterrupted = tmp_path / "run", tmp_path / "uninterrupted"
    result = two_processes(run, crash=True)
    # Only a restarted attempt resumes (the first starts afresh), and only a failure makes torchrun restart.
    assert f"resuming {run} after epoch 1" in result.stdout, result.stdout + result.stderr
    assert [row["epoch"] for row in metrics_rows(run)] == ["1", "2", "3"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_completed"] == 3 and summary["test_acc"] > 80, summary["test_acc"]

    assert "resuming" not in two_processes(uninterrupted, crash=False).stdout
    weights, expected = (load_file(folder / "checkpoint.safetensors") for folder in (run, uninterrupted))
    assert weights.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(weights[name], value, rtol=0, atol=0, msg=name)


# ------------------------------------------------------------------------------------------------ bad input
def test_more_processes_than_cores_is_refused_before_anything_starts(capsys):
    cores = distributed.usable_cpu_cores()
    assert cli.main(["train", "lenet5", "--data", "mnist", "--device", "cpu", "--nproc", str(cores + 1)]) == 2
    assert f"this job use {cores} core(s); use --nproc {cores} or fewer" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_processes_without_a_gpu_are_refused(capsys):
    assert cli.main(["train", "lenet5", "--data", "mnist", "--device", "cuda", "--nproc", "2"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_launcher_options_without_nproc_are_explained(capsys):
    assert cli.main(["train", "lenet5", "--data", "mnist", "--max-restarts", "2"]) == 2
    assert "--max-restarts configure the torchrun launch: add --nproc N" in capsys.readouterr().err


def test_nproc_must_match_what_torchrun_started(monkeypatch, capsys):
    for name, value in dict(RANK="0", WORLD_SIZE="4", LOCAL_RANK="0", LOCAL_WORLD_SIZE="4", MASTER_ADDR="localhost",
                            MASTER_PORT="29500").items():
        monkeypatch.setenv(name, value)
    assert cli.main(["train", "lenet5", "--data", "mnist", "--nproc", "2"]) == 2
    assert "torchrun started 4 processes" in capsys.readouterr().err


def test_world_size_without_a_process_group_is_explained():
    with pytest.raises(CnnkitError, match="torchrun --nproc-per-node"):
        Trainer(create_model("lenet5_relu"), bar_dataset(n_train=8, n_test=8), TrainConfig(progress=False),
                world_size=2)


def test_torchrun_command_for_one_node_and_for_several():
    one = distributed.torchrun_command(2, ["train", "lenet5", "--nproc", "2"], max_restarts=3)
    assert one[1:] == ["-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", "--max-restarts", "3",
                       "-m", "cnnkit", "train", "lenet5", "--nproc", "2"]
    static = distributed.torchrun_command(4, ["train"], nnodes="2", node_rank=1, rdzv_endpoint="node0:29400")
    assert static[5:13] == ["--nnodes", "2", "--rdzv-endpoint", "node0:29400", "--node-rank", "1",
                            "--rdzv-backend", "static"]
    elastic = distributed.torchrun_command(4, ["train"], nnodes="1:4", rdzv_endpoint="node0:29400", rdzv_id="job7")
    assert elastic[9:13] == ["--rdzv-backend", "c10d", "--rdzv-id", "job7"]
    with pytest.raises(CnnkitError, match="--rdzv-endpoint"):
        distributed.torchrun_command(4, ["train"], nnodes="2")


def test_the_workers_command_line_leaves_out_nproc():
    """torchrun's parser stops at --nproc after the module name (an ambiguous --nproc-per-node)."""
    assert cli.train._without_nproc(["train", "m", "--nproc", "2", "--epochs", "1", "--npro=3", "--no-progress"]) == [
        "train", "m", "--epochs", "1", "--no-progress"]


# ------------------------------------------------------------------------------------------------ scale_lr
def test_scale_lr_follows_the_global_batch_and_warms_up():
    data = bar_dataset(n_train=8, n_test=8)
    config = TrainConfig(batch_size=4, accumulate=2, scale_lr=True, lr=0.1, schedule="cosine", epochs=8,
                         progress=False)
    trainer = Trainer(create_model("lenet5_relu", num_classes=2), data, config)
    assert trainer.lr_scale == 2 and trainer.base_lrs == [pytest.approx(0.2)] * len(trainer.base_lrs)
    assert trainer.warmup_epochs == 2  # Goyal et al.'s 5 epochs, capped at a quarter of the run
    assert trainer.optimizer.param_groups[0]["lr"] < 0.2  # the ramp starts low
    with pytest.raises(CnnkitError, match="needs a warm-up"):
        Trainer(create_model("lenet5_relu", num_classes=2), data,
                TrainConfig(**{**config.to_dict(), "schedule": "step", "milestones": (4,)}))


def test_a_run_resumed_with_more_epochs_follows_the_longer_schedule(tmp_path):
    """Same re-layout when only the epoch budget changes (cnnkit train --resume RUN --epochs N): one-cycle
    spans all epochs, and the saved one-cycle would run out of steps."""
    data = bar_dataset(n_train=128, n_test=16)
    config = dict(batch_size=8, optimizer="sgd", lr=0.05, schedule="onecycle", progress=False, num_threads=1)
    Trainer(create_model("lenet5_relu", num_classes=2), data, TrainConfig(epochs=1, **config), out=tmp_path).fit()
    resumed = Trainer(create_model("lenet5_relu", num_classes=2), data, TrainConfig(epochs=2, **config),
                      out=tmp_path)
    resumed.fit(resume=True)
    planned = Trainer(create_model("lenet5_relu", num_classes=2), data, TrainConfig(epochs=2, **config))
    planned.fit()
    assert [m["lr"] for m in resumed.history[1:]] == pytest.approx([m["lr"] for m in planned.history[1:]])
