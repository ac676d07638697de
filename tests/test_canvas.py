"""The offline canvas data set: reproducible, boxes and masks exact and consistent, drawn as grid_sample would
draw it, and exported to COCO JSON that cnnkit's reader and pycocotools both read back unchanged."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnkit.data import canvas
from cnnkit.data.datasets import load_dataset
from cnnkit.data.canvas import load_canvas, render_canvases, to_coco, write_coco_json
from cnnkit.data.detection import read_coco
from cnnkit.errors import DataError, UnknownNameError


@pytest.fixture(scope="module")
def mnist(shared_data):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNKIT_DATA", str(shared_data))
        return load_dataset("mnist", download=False)


@pytest.fixture()
def bundle(mnist, monkeypatch):
    # MNIST is read once for the module (the official files, about 2 s); load_canvas draws from it each time
    monkeypatch.setattr(canvas, "load_dataset", lambda name, download: mnist)
    return load_canvas("canvas-mnist", num_train=48, num_test=24, canvas_size=64, seed=3, download=False)


def test_the_same_seed_draws_the_same_canvases_and_another_seed_others(bundle):
    again = load_canvas("canvas-mnist", num_train=48, num_test=24, canvas_size=64, seed=3, download=False)
    for name in ("images", "boxes", "labels", "offsets", "instances", "semantic"):
        assert torch.equal(getattr(again.train, name), getattr(bundle.train, name)), name
    other = load_canvas("canvas-mnist", num_train=48, num_test=24, canvas_size=64, seed=4, download=False)
    assert not torch.equal(other.train.images, bundle.train.images)
    assert not torch.equal(bundle.test.images[:24], bundle.train.images[:24])  # the splits use other streams
    assert bundle.classes == ["background", *map(str, range(10))]
    assert bundle.train.images.dtype == torch.uint8 and bundle.train.images.shape == (48, 1, 64, 64)


def test_every_box_is_the_tight_box_of_its_mask_and_masks_agree(bundle):
    split = bundle.train
    counts = split.offsets.diff()
    assert counts.min() >= 1 and counts.max() <= 3 and int(counts.sum()) == len(split.labels)
    for index in range(len(split)):
        image, target = split[index]
        masks, boxes, labels = target["masks"].bool(), target["boxes"], target["labels"]
        assert masks.shape == (len(boxes), 64, 64) and (masks.sum(0) <= 1).all()  # objects share no pixel
        for mask, box, label in zip(masks, boxes.tolist(), labels.tolist()):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert box == [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
            assert (split.semantic[index][mask] == label).all() and 1 <= label <= 10
            assert (image[0][mask] >= 25).all()  # an object's pixels are its own image at a tenth of full intensity
            # the ink of a 28x28 digit spans about 20 pixels of it; the square it is scaled to spans 64/5 to 64/2
            assert 64 / 5 * 0.5 <= max(box[2] - box[0], box[3] - box[1]) <= 64 / 2 + 1
        assert torch.equal(split.semantic[index] > 0, masks.any(0))
    assert (split.image_of_object() == torch.repeat_interleave(torch.arange(len(split)), counts)).all()
    # clutter: pixels lit outside every object on most canvases
    lit_background = ((split.images[:, 0] > 127) & (split.instances == 0)).flatten(1).any(1)
    assert lit_background.float().mean() > 0.8


def test_separable_drawing_is_grid_sample_bilinear():
    g = torch.Generator().manual_seed(0)
    sources = torch.rand(5, 28, 28, generator=g)
    scale = 0.4 + torch.rand(5, generator=g)
    src, dst = torch.rand(5, 2, generator=g) * 6, torch.rand(5, 2, generator=g) * 30
    drawn = canvas._draw(sources, scale, src[:, 0], src[:, 1], dst[:, 0], dst[:, 1], 48)
    # the same mapping as an affine grid: canvas pixel centre c shows source position src + (c - dst) / scale
    a = 48 / scale / 28
    theta = torch.zeros(5, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = a
    theta[:, 0, 2] = (2 * src[:, 0] + (48 - 2 * dst[:, 0]) / scale) / 28 - 1
    theta[:, 1, 2] = (2 * src[:, 1] + (48 - 2 * dst[:, 1]) / scale) / 28 - 1
    grid = F.affine_grid(theta, [5, 1, 48, 48], align_corners=False)
    expected = F.grid_sample(sources[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    torch.testing.assert_close(drawn, expected[:, 0], atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' own, under numpy 2
def test_coco_export_reads_back_through_cnnkit_and_pycocotools(bundle, tmp_path):
    split = bundle.test
    path = write_coco_json(split, tmp_path / "canvas.json")
    annotations = read_coco(path)
    assert annotations.classes == bundle.classes and annotations.category_ids == [None, *range(1, 11)]
    pycocotools = pytest.importorskip("pycocotools.coco")
    coco = pycocotools.COCO(str(path))
    for index, record in enumerate(annotations.images):
        target = split.target(index)
        assert torch.equal(record.boxes, target["boxes"]) and torch.equal(record.labels, target["labels"])
        assert torch.equal(record.decode_masks(), target["masks"])
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[record.image_id]))
        assert [a["area"] for a in anns] == target["masks"].flatten(1).sum(1).tolist()
        for ann, mask in zip(anns, target["masks"]):
            assert torch.equal(torch.from_numpy(coco.annToMask(ann)), mask)
    assert len(to_coco(split)["annotations"]) == len(split.labels)


def test_bad_requests_are_refused(bundle):
    with pytest.raises(UnknownNameError, match="canvas-mnist"):
        load_canvas("canvas-mnst")
    with pytest.raises(DataError, match=r"\(M, 28, 28\)"):
        render_canvases(torch.zeros(3, 32, 32, dtype=torch.uint8), torch.zeros(3, dtype=torch.long), 2, ["bg"])
    with pytest.raises(DataError, match="between 4 and the canvas size"):
        render_canvases(torch.zeros(3, 28, 28, dtype=torch.uint8), torch.zeros(3, dtype=torch.long), 2, ["bg"],
                        canvas_size=32, size_range=(10, 40))
    with pytest.raises(DataError, match="at least one canvas"):
        render_canvases(torch.zeros(3, 28, 28, dtype=torch.uint8), torch.zeros(3, dtype=torch.long), 0, ["bg"])
    with pytest.raises(IndexError, match="out of range"):
        bundle.test[len(bundle.test)]
