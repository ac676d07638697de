"""benchmarks/kodak_rd.py's resume: a run continues only with the settings it was trained with."""

import argparse
import json

import pytest
from helpers import load_benchmark


def _benchmark():
    return load_benchmark("kodak_rd")


def test_resume_with_another_learning_rate_is_refused_not_silently_ignored(tmp_path, monkeypatch):
    # The optimiser's state (its rate too) comes back from the checkpoint, so a new --lr would only have been
    # written into budget.json.
    bench = _benchmark()
    monkeypatch.setattr(bench, "run_folder", lambda model, lmbda: tmp_path / f"{model}-{lmbda:g}")
    run = tmp_path / "factorized-0.004"
    run.mkdir()
    (run / "last.safetensors").write_bytes(b"")
    (run / "budget.json").write_text(json.dumps({"lr": 1e-3, "crop": 128, "batch_size": 8, "channels": 64,
                                                 "latent_channels": 96, "epochs": 112}))
    args = argparse.Namespace(resume=True, minutes=1.0, lr=1e-4, crop=128, batch_size=16, channels=64,
                              latent_channels=96, threads=1)
    with pytest.raises(SystemExit, match=r"--lr 0.001 \(not 0.0001\), --batch-size 8 \(not 16\); resume it"):
        bench.train("factorized", 0.004, None, args)
    # Without --resume the run is measured as it stands, whatever the flags say.
    args.resume = False
    assert bench.train("factorized", 0.004, None, args)["lr"] == 1e-3


def test_psnr_at_fixed_rates_is_not_read_off_points_that_are_not_one_curve(capsys):
    # Stop 45's mixed-budget curve (the middle codec trained twice as long): interpolating it at 0.75 bpp would
    # have given a figure between a 60- and a 30-minute model. The BD functions refuse it; so does this table.
    bench = _benchmark()
    mixed = [{"bpp": 0.2885, "psnr": 27.216}, {"bpp": 0.6753, "psnr": 30.058}, {"bpp": 0.9793, "psnr": 29.061}]
    assert bench.at_rates("factorized", mixed) == [None] * len(bench.RATES)
    assert "does not rise with its rate" in capsys.readouterr().out
    curve = [{"bpp": 0.25, "psnr": 27.0}, {"bpp": 1.0, "psnr": 31.0}]
    values = bench.at_rates("jpeg", curve)
    assert values[bench.RATES.index(0.5)] == pytest.approx(29.0)  # halfway in log-rate
    assert values[bench.RATES.index(0.25)] == pytest.approx(27.0)
