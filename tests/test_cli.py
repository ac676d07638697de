import json

import pytest
import torch
from PIL import Image, ImageDraw

from cnnkit.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def make_folder(root, n=24):
    """A tiny two-class image folder: white discs vs white squares on black, 36x28 RGB images."""
    for cls in ("disc", "square"):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            im = Image.new("RGB", (36, 28))
            d = ImageDraw.Draw(im)
            box = (4 + i % 8, 4 + i % 5, 24 + i % 8, 22 + i % 5)
            (d.ellipse if cls == "disc" else d.rectangle)(box, fill=(255, 255, 255))
            im.save(root / cls / f"{i}.png")


@pytest.fixture
def trained_run(tmp_path, capsys):
    make_folder(tmp_path / "shapes")
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "train", "lenet5_relu", "--data", f"imagefolder:{tmp_path / 'shapes'}",
                            "--epochs", "2", "--batch-size", "8", "--lr", "0.003", "--optimizer", "adam",
                            "--workers", "0", "--out", out, "--no-progress")
    assert code == 0, err
    assert "test accuracy" in stdout
    return out


def test_train_predict_eval_on_an_image_folder(trained_run, tmp_path, capsys):
    image = tmp_path / "shapes" / "disc" / "3.png"
    code, stdout, err = run(capsys, "predict", trained_run, image, "--top-k", "2", "--json")
    assert code == 0, err
    ranked = json.loads(stdout)[str(image)]
    assert {name for name, _ in ranked} == {"disc", "square"} and abs(sum(p for _, p in ranked) - 1) < 1e-4
    code, stdout, err = run(capsys, "eval", trained_run, "--data", f"imagefolder:{tmp_path / 'shapes'}")
    assert code == 0 and "top-1 accuracy" in stdout, err


def test_predict_refuses_unreadable_image(trained_run, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated jpeg")
    code, _, err = run(capsys, "predict", trained_run, bad)
    assert code == 2 and "bad.jpg is not a readable image" in err and "Traceback" not in err


def test_unknown_model_and_dataset(capsys):
    code, _, err = run(capsys, "train", "lenet6", "--data", "mnist")
    assert code == 2 and "Unknown model 'lenet6'" in err and "lenet5" in err
    code, _, err = run(capsys, "train", "lenet5", "--data", "mnits")
    assert code == 2 and "Did you mean mnist" in err


def test_missing_dataset_files_say_where_to_put_them(tmp_path, capsys, monkeypatch):
    import dataclasses

    from cnnkit.data import catalog

    monkeypatch.setenv("CNNKIT_DATA", str(tmp_path / "empty"))
    offline = dataclasses.replace(catalog.CATALOG["mnist"], mirrors=(f"file://{tmp_path}/no-mirror/",))
    monkeypatch.setitem(catalog.CATALOG, "mnist", offline)
    code, _, err = run(capsys, "train", "lenet5", "--data", "mnist")
    assert code == 2 and "train-images-idx3-ubyte.gz" in err and str(tmp_path / "empty") in err


def test_checkpoint_that_is_not_one(tmp_path, capsys):
    code, _, err = run(capsys, "eval", tmp_path)
    assert code == 2 and "checkpoint.json" in err


def test_resume_without_a_run(tmp_path, capsys):
    code, _, err = run(capsys, "train", "--resume", tmp_path)
    assert code == 2 and "no last.safetensors" in err


def test_bad_recipe(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: lenet5\ndata: mnist\nepochz: 3\n")
    code, _, err = run(capsys, "train", "--recipe", recipe)
    assert code == 2 and "epochz" in err


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "examples:" in capsys.readouterr().out


def test_viz_commands_write_pictures(trained_run, tmp_path, capsys):
    out = tmp_path / "viz"
    image = tmp_path / "shapes" / "square" / "1.png"
    for argv in (["filters", trained_run], ["maps", trained_run, image], ["gradcam", trained_run, image],
                 ["curves", trained_run]):
        code, _, err = run(capsys, "viz", *argv, "-o", out)
        assert code == 0, err
    assert {p.name for p in out.glob("*.png")} >= {"filters.png", "maps.png", "gradcam.png", "curves.png"}
    code, _, err = run(capsys, "viz", "maps", trained_run, image, "--layer", "features.99", "-o", out)
    assert code == 2 and "Valid names" in err and "features.0" in err


def test_average_runs_into_a_run_folder_the_tools_read(trained_run, tmp_path, capsys):
    from cnnkit.train.checkpoint import load_model_checkpoint, read_checkpoint_meta, save_model_checkpoint

    model, meta = load_model_checkpoint(trained_run)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.5)
    other = tmp_path / "other"
    save_model_checkpoint(other, model, {k: v for k, v in meta.items() if k not in ("format", "model")})
    code, stdout, err = run(capsys, "average", trained_run, other, "-o", tmp_path / "soup")
    assert code == 0 and "cnnkit eval" in stdout, err
    soup, soup_meta = load_model_checkpoint(tmp_path / "soup")
    first = load_model_checkpoint(trained_run)[0]
    for name, value in soup.named_parameters():
        torch.testing.assert_close(value, dict(first.named_parameters())[name] + 0.25)
    assert soup_meta["averaged_from"] == [str(trained_run), str(other)] and "metrics" not in soup_meta
    code, stdout, err = run(capsys, "eval", tmp_path / "soup", "--data", f"imagefolder:{tmp_path / 'shapes'}")
    assert code == 0 and "top-1 accuracy" in stdout, err

    meta = read_checkpoint_meta(other)
    meta["classes"] = ["a", "b"]
    (other / "checkpoint.json").write_text(json.dumps(meta))
    code, _, err = run(capsys, "average", trained_run, other, "-o", tmp_path / "soup2")
    assert code == 2 and "differs from" in err and "in its classes" in err and "Traceback" not in err
    code, _, err = run(capsys, "average", trained_run, trained_run, "-o", trained_run)
    assert code == 2 and "is one of the runs being averaged" in err
    assert not (tmp_path / "soup2").exists()
