"""Pinned answers: what cnnkit's pretrained EfficientNet-Lite0 says about the shared photos, and what a trained
LeNet-5 run (checked in under tests/golden/lenet5-mnist/) says about the sample digits in docs/digits/.

A refactor of preprocessing, layers, weight loading or prediction that changes an answer fails here. When an
answer changes on purpose, regenerate the pinned files and say why in the commit:

    PYTHONPATH=src python tests/test_golden.py      # rewrites tests/golden/*.json
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from helpers import has_lite0_package

from cnnkit.models import create_model
from cnnkit.predict import predict_files
from cnnkit.train.checkpoint import load_model_checkpoint

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).with_name("golden")
LENET_RUN = GOLDEN / "lenet5-mnist"
# A colour run folder as `cnnkit import` wrote it before the model card existed: a seeded random LeNet-5 on
# three channels with CIFAR-10's classes and statistics (its predictions mean nothing; they only must not move).
IMPORTED_RUN = GOLDEN / "lenet5-cifar10-imported"
DIGITS = sorted((REPO / "docs" / "digits").glob("*.png"))
# The shared photos, found as tests/test_weights.py finds them (CI has them at ../shared/images).
PHOTOS = Path("/work/shared/images")
if not PHOTOS.is_dir():
    PHOTOS = REPO.parent / "shared" / "images"
# Relative tolerance on logits and probabilities: fp32 kernels differ between CPUs and thread counts in the
# last few bits (~1e-5 relative here), a changed answer by far more.
RTOL, ATOL = 1e-3, 1e-4



def _photos() -> list[Path]:
    photos = sorted(PHOTOS.glob("*/*.jpg"))
    if not photos:
        pytest.fail(f"the shared photos are not at {PHOTOS} (CI has them at ../shared/images)")
    return photos


@pytest.fixture(scope="module")
def lite0():
    return create_model("efficientnet_lite0", pretrained="imagenet").eval()


@torch.no_grad()
def lite0_answers(photos: list[Path], model=None) -> dict:
    """Each photo's top-5 ImageNet classes with their logits and probabilities, through cnnkit's own path:
    load_photo (resize, centre crop), the weights' normalisation, the model."""
    from cnnkit.card import card_of
    from cnnkit.data.augment import Preprocess
    from cnnkit.transfer import load_photo

    model = model or create_model("efficientnet_lite0", pretrained="imagenet").eval()
    card = card_of(model)
    batch = torch.stack([load_photo(photo, card) for photo in photos])
    logits = model(Preprocess(card.mean, card.std)(batch)).float()
    probabilities = logits.softmax(1)
    answers = {}
    for photo, row, p in zip(photos, logits, probabilities):
        top = row.topk(5).indices.tolist()
        answers[f"{photo.parent.name}/{photo.name}"] = {
            "classes": [card.classes[i] for i in top], "indices": top,
            "logits": [round(float(row[i]), 5) for i in top], "probabilities": [round(float(p[i]), 6) for i in top]}
    return answers


@torch.no_grad()
def lenet_answers() -> dict:
    """The checked-in LeNet-5 run's top-3 classes and probabilities for each sample digit (cnnkit predict's path)."""
    model, meta = load_model_checkpoint(LENET_RUN)
    results = predict_files(model, meta, DIGITS, top_k=3)
    return {digit.name: {"classes": [name for name, _ in result], "probabilities": [round(p, 6) for _, p in result]}
            for digit, result in zip(DIGITS, results)}


@torch.no_grad()
def imported_answers(photos: list[Path]) -> dict:
    """The checked-in imported colour run's top-3 classes and probabilities for the shared photos and the sample
    digits (grey, read as RGB): the predict path with a resize from photo size to 32 x 32."""
    model, meta = load_model_checkpoint(IMPORTED_RUN)
    images = [*photos, *DIGITS]
    results = predict_files(model, meta, images, top_k=3)
    return {f"{image.parent.name}/{image.name}": {"classes": [name for name, _ in result],
                                                   "probabilities": [round(p, 6) for _, p in result]}
            for image, result in zip(images, results)}


def test_imported_colour_run_predictions_are_pinned():
    pinned = json.loads((GOLDEN / "lenet5_cifar10_imported.json").read_text())
    answers = imported_answers(_photos())
    assert sorted(answers) == sorted(pinned)
    for image, expected in pinned.items():
        assert answers[image]["classes"] == expected["classes"], image
        torch.testing.assert_close(torch.tensor(answers[image]["probabilities"]),
                                   torch.tensor(expected["probabilities"]), rtol=RTOL, atol=ATOL, msg=image)


@pytest.mark.skipif(not has_lite0_package(), reason="needs pip install 'cnnkit[pretrained]'")
def test_efficientnet_lite0_answers_on_the_shared_photos_are_pinned(lite0):
    pinned = json.loads((GOLDEN / "efficientnet_lite0_imagenet.json").read_text())
    photos = _photos()
    assert sorted(pinned) == [f"{p.parent.name}/{p.name}" for p in photos]
    answers = lite0_answers(photos, lite0)
    for photo, expected in pinned.items():
        got = answers[photo]
        assert got["classes"] == expected["classes"], photo
        torch.testing.assert_close(torch.tensor(got["logits"]), torch.tensor(expected["logits"]), rtol=RTOL,
                                   atol=ATOL, msg=photo)
        torch.testing.assert_close(torch.tensor(got["probabilities"]), torch.tensor(expected["probabilities"]),
                                   rtol=RTOL, atol=ATOL, msg=photo)
    assert pinned["content/golden_gate.jpg"]["classes"][0] == "suspension bridge"


@pytest.mark.skipif(not has_lite0_package(), reason="needs pip install 'cnnkit[pretrained]'")
def test_classify_images_gives_the_pinned_probabilities(lite0):
    from cnnkit.transfer import classify_images

    pinned = json.loads((GOLDEN / "efficientnet_lite0_imagenet.json").read_text())["content/golden_gate.jpg"]
    result = classify_images(lite0, [PHOTOS / "content" / "golden_gate.jpg"])[0]
    assert [name for name, _ in result] == pinned["classes"]
    torch.testing.assert_close(torch.tensor([p for _, p in result]), torch.tensor(pinned["probabilities"]),
                               rtol=RTOL, atol=ATOL)


def test_trained_lenet5_predictions_on_the_sample_digits_are_pinned():
    pinned = json.loads((GOLDEN / "lenet5_digits.json").read_text())
    assert sorted(pinned) == [d.name for d in DIGITS] and len(DIGITS) == 10
    answers = lenet_answers()
    for digit, expected in pinned.items():
        assert answers[digit]["classes"] == expected["classes"], digit
        assert expected["classes"][0] == digit[0]  # each sample is named by its true class, and is recognised
        torch.testing.assert_close(torch.tensor(answers[digit]["probabilities"]),
                                   torch.tensor(expected["probabilities"]), rtol=RTOL, atol=ATOL, msg=digit)


def test_cnnkit_predict_on_a_sample_digit(capsys):
    # The README's and `make demo`'s hint, on the checked-in run: cnnkit predict RUN_DIR docs/digits/....png
    from cnnkit.cli import main

    seven = REPO / "docs" / "digits" / "7.png"
    assert main(["predict", str(LENET_RUN), str(seven), "--top-k", "1", "--json"]) in (0, None)
    (name, probability), = json.loads(capsys.readouterr().out)[str(seven)]
    pinned = json.loads((GOLDEN / "lenet5_digits.json").read_text())[seven.name]
    assert name == "7" and probability == pytest.approx(pinned["probabilities"][0], rel=RTOL)


if __name__ == "__main__":
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    (GOLDEN / "lenet5_digits.json").write_text(json.dumps(lenet_answers(), indent=1) + "\n")
    (GOLDEN / "lenet5_cifar10_imported.json").write_text(json.dumps(imported_answers(_photos()), indent=1) + "\n")
    if has_lite0_package():
        (GOLDEN / "efficientnet_lite0_imagenet.json").write_text(
            json.dumps(lite0_answers(_photos()), indent=1) + "\n")
    print("rewrote", *sorted(p.name for p in GOLDEN.glob("*.json")), file=sys.stderr)
