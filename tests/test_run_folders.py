"""Run folders under crashes and reruns: a process killed before any rename or fsync of an epoch's files leaves a
folder that loads the previous epoch's model or the new one and that --resume continues exactly; rerunning a
command never destroys a previous run."""

import csv
import json
import os
import shutil

import pytest
import torch

import cnnkit.train.checkpoint as ckpt
import cnnkit.train.report as report_module
from cnnkit.errors import CheckpointError, CnnkitError, RunFolderError
from cnnkit.models import create_model
from cnnkit.train import TrainConfig, Trainer
from cnnkit.train.checkpoint import load_model_checkpoint, save_model_checkpoint
from helpers import bar_dataset

CONFIG = dict(epochs=2, batch_size=32, lr=0.01, optimizer="adam", progress=False, eval_batch_size=64, num_workers=0)
CRASH_EXIT = 17


@pytest.fixture
def one_thread(monkeypatch):
    """Forked children must not touch the parent's OpenMP pool, and every process must add up in the same order
    for 'exactly' to mean bit-identical: one thread throughout. Curves are not what is tested here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(report_module, "plot_curves", lambda *args, **kwargs: None)
    yield
    torch.set_num_threads(threads)


def data():
    return bar_dataset(n_train=64, n_test=16, size=28)


def trainer(out, seed=0, **overrides):
    torch.manual_seed(seed)
    model = create_model("mnist_fast_cnn", num_classes=2, in_channels=1)
    return Trainer(model, data(), TrainConfig(**{**CONFIG, **overrides}), out=out)


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def count_file_operations(monkeypatch, during, on_operation):
    """Route every os.replace and os.fsync made inside ``during`` (a Trainer method) through ``on_operation``."""
    armed = [False]
    real_replace, real_fsync, real_method = os.replace, os.fsync, getattr(Trainer, during)

    def wrap(real):
        def operation(*args, **kwargs):
            if armed[0]:
                on_operation(real.__name__)
            return real(*args, **kwargs)
        return operation

    def armed_method(self, *args, **kwargs):
        armed[0] = True
        try:
            return real_method(self, *args, **kwargs)
        finally:
            armed[0] = False

    monkeypatch.setattr(os, "replace", wrap(real_replace))
    monkeypatch.setattr(os, "fsync", wrap(real_fsync))
    monkeypatch.setattr(Trainer, during, armed_method)


def run_until_killed(monkeypatch, out, epoch, operation_number, resume):
    """Fork a child that trains into ``out`` and dies (os._exit: no cleanup, no flush, as under SIGKILL) just
    before the ``operation_number``-th rename or fsync of epoch ``epoch``'s files."""
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            torch.set_num_threads(1)  # as DataLoader workers do: the parent's OpenMP pool does not survive a fork
            seen = [0]

            def maybe_die(name):
                seen[0] += 1
                if seen[0] == operation_number:
                    os._exit(CRASH_EXIT)

            count_file_operations(monkeypatch, "_write_epoch_files", maybe_die)
            child = trainer(out)
            child.callbacks.append(lambda t, m: setattr(t, "stop_requested", m["epoch"] >= epoch))
            child.fit(resume=resume)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize("epoch", [1, 2])
def test_a_crash_before_any_rename_or_fsync_leaves_the_old_or_the_new_epoch(epoch, tmp_path, monkeypatch, one_thread):
    # The uninterrupted run, with its weights after each epoch and the file operations of one epoch's write.
    reference, after = trainer(tmp_path / "reference"), {}
    reference.callbacks.append(lambda t, m: after.__setitem__(m["epoch"], weights(t.model)))
    reference.callbacks.append(lambda t, m: m["epoch"] == 1 and shutil.copytree(t.out, tmp_path / "after1"))
    operations = []
    with monkeypatch.context() as patch:
        count_file_operations(patch, "_write_epoch_files", operations.append)
        reference.fit()
    per_epoch = len(operations) // 2
    # last.safetensors, the weights, checkpoint.json, metrics.csv: each fsynced, renamed, its folder fsynced
    assert operations[:per_epoch] == ["fsync", "replace", "fsync"] * 4 and per_epoch * 2 == len(operations)
    with open(tmp_path / "reference" / "metrics.csv") as f:
        reference_rows = list(csv.DictReader(f))

    outcomes = []
    for number in range(1, per_epoch + 1):
        out = tmp_path / f"crash-e{epoch}-{number}"
        if epoch == 2:
            shutil.copytree(tmp_path / "after1", out)
        code = run_until_killed(monkeypatch, out, epoch, number, resume=epoch == 2)
        assert code == CRASH_EXIT, (epoch, number)
        # What a reader sees: the previous epoch's model or the new one, each with its own metadata.
        try:
            model, meta = load_model_checkpoint(out)
        except CheckpointError:
            assert epoch == 1 and not (out / "checkpoint.safetensors").exists()
            loaded = 0
        else:
            loaded = meta["epoch"]
            assert loaded in (epoch - 1, epoch) and same(weights(model), after[loaded]), (epoch, number)
        outcomes.append((epoch, number, loaded))
        # --resume continues exactly, repairs the pair and metrics.csv, and leaves no temporary file.
        # (killed before epoch 1's state was committed, the same command starts the run again in the folder)
        resumable = (out / "last.safetensors").exists()
        resumed = trainer(out, seed=123 if resumable else 0)
        resumed.fit(resume=resumable)
        assert same(weights(resumed.model), after[2]), (epoch, number)
        model, meta = load_model_checkpoint(out)
        assert meta["epoch"] == 2 and meta["weights_sha256"] and same(weights(model), after[2])
        with open(out / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in reference_rows], (epoch, number)
        assert not [p.name for p in out.iterdir() if ".tmp" in p.name]
    # Both outcomes occur: the crash points before the weights' rename keep the old epoch, the later ones the new.
    assert {loaded for _, _, loaded in outcomes} == {epoch - 1, epoch}


def test_a_torn_pair_written_by_the_old_layout_still_loads_and_a_crash_leftover_is_removed(tmp_path, one_thread):
    """Folders from earlier versions: no metadata in the weights' header, checkpoint.json the only record."""
    run = trainer(tmp_path / "run", epochs=1)
    run.fit()
    state = weights(run.model)
    meta = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    old = tmp_path / "old"
    old.mkdir()
    ckpt.atomic_save_tensors(state, old / "checkpoint.safetensors")  # no header: the old layout
    del meta["checkpoint_id"]
    meta["weights_sha256"] = ckpt.file_sha256(old / "checkpoint.safetensors")
    (old / "checkpoint.json").write_text(json.dumps(meta))
    model, loaded = load_model_checkpoint(old)
    assert same(weights(model), state) and loaded["epoch"] == 1
    leftover = tmp_path / "run" / ".checkpoint.json.tmp999999999"  # no such process
    leftover.write_text("{")
    trainer(tmp_path / "run", epochs=2).fit(resume=True)
    assert not leftover.exists()


def test_rerunning_into_a_run_folder_is_refused_unless_overwrite(tmp_path, one_thread):
    out = tmp_path / "run"
    first = trainer(out, epochs=1)
    first.fit()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(RunFolderError, match=r"already holds a run.*resume=True.*overwrite=True"):
        trainer(out, epochs=1).fit()
    assert before == {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    (out / "extra.txt").write_text("from the old run")
    again = trainer(out, seed=5, epochs=1)
    again.overwrite = True
    again.fit()
    assert not (out / "extra.txt").exists() and load_model_checkpoint(out)[1]["epoch"] == 1
    # A folder of someone else's files is never deleted, even with overwrite.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "metrics.csv").write_text("not cnnkit's")
    with pytest.raises(RunFolderError, match="cnnkit did not write"):
        ckpt.claim_run_folder(foreign, overwrite=True)
    assert (foreign / "metrics.csv").exists()


def test_fresh_default_names_and_folders_that_are_files(tmp_path):
    base = tmp_path / "runs" / "lenet5-mnist"
    assert ckpt.fresh_run_folder(base) == base
    base.mkdir(parents=True)
    assert ckpt.fresh_run_folder(base) == base  # an empty folder (or one with only config.json) holds no run
    (base / "last.safetensors").write_bytes(b"")
    (tmp_path / "runs" / "lenet5-mnist-2").write_text("a file")
    assert ckpt.fresh_run_folder(base) == tmp_path / "runs" / "lenet5-mnist-3"
    with pytest.raises(RunFolderError, match="is a file"):
        ckpt.claim_run_folder(tmp_path / "runs" / "lenet5-mnist-2")
    with pytest.raises(RunFolderError, match="which is a file"):
        ckpt.claim_run_folder(tmp_path / "runs" / "lenet5-mnist-2" / "sub")


def test_save_refuses_metadata_that_would_not_load(tmp_path):
    model = create_model("mnist_fast_cnn", num_classes=2, in_channels=1)
    good = {"classes": ["a", "b"], "image_shape": [1, 28, 28],
            "preprocess": {"mean": [0.1], "std": [0.2], "input_size": None}}
    for bad, field in (({"image_shape": [1, 30000, 30000]}, "image_shape"), ({"classes": ["a"]}, "classes"),
                       ({"preprocess": {"mean": [0.1], "std": [0]}}, "std")):
        with pytest.raises(CnnkitError, match=field):
            save_model_checkpoint(tmp_path / "x", model, {**good, **bad})
        assert not (tmp_path / "x" / "checkpoint.json").exists()
