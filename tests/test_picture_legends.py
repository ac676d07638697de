"""Pictures say what they show (issue 22): pix2pix rows are labelled, segmentation overlays carry a class legend,
receptive-field grids a colour bar, and the loss-landscape surface is not clipped into a flat table."""

import numpy as np
import pytest
import torch
from PIL import Image

import cnnkit.viz.plots
from cnnkit.errors import CnnkitError
from cnnkit.gan import save_grid
from cnnkit.segment import PALETTE, write_overlay
from cnnkit.viz.landscape import surface_ceiling
from cnnkit.viz.receptive import plot_receptive_fields


def test_grid_rows_are_labelled_in_a_left_margin(tmp_path):
    images = torch.ones(6, 3, 8, 8)  # white images: any dark pixel is label text
    plain = Image.open(save_grid(images, tmp_path / "plain.png", columns=2))
    labelled = np.asarray(Image.open(save_grid(images, tmp_path / "rows.png", columns=2,
                                               row_labels=["input", "output", "target"])).convert("L"))
    margin = labelled.shape[1] - plain.width
    assert margin > 20 and labelled.shape[0] == plain.height
    for row in range(3):  # text in the margin beside every row (rows: 2 px padding, 8 px images)
        band = labelled[2 + row * 10:2 + row * 10 + 8, :margin]
        assert (band < 128).any(), f"no label beside row {row}"
    assert (labelled[:, margin:] > 200).all()  # the images themselves untouched
    with pytest.raises(CnnkitError, match="2 row labels for a grid of 3 rows"):
        save_grid(images, tmp_path / "bad.png", columns=2, row_labels=["input", "output"])


def test_segmentation_overlay_has_a_class_legend(tmp_path):
    image = torch.full((1, 32, 32), 128, dtype=torch.uint8)
    mask = torch.zeros(32, 32, dtype=torch.long)
    mask[4:12, 4:12] = 2
    bare = Image.open(write_overlay(image, mask, tmp_path / "bare.png"))
    assert bare.size == (32, 32)
    picture = np.asarray(Image.open(write_overlay(image, mask, tmp_path / "legend.png",
                                                  class_names=["background", "disc", "square"])))
    assert picture.shape[0] == 32 + 4 + 3 * 16 and picture.shape[1] > 32
    assert (picture[:32, :32] == np.asarray(bare.convert("RGB"))).all()
    # legend rows: background, then the present class (square, 2), then the absent one (disc, 1)
    swatch = [tuple(picture[32 + 4 + row * 16 + 8, 10]) for row in range(3)]
    assert swatch == [(255, 255, 255), tuple(PALETTE[2].int().tolist()), tuple(PALETTE[1].int().tolist())]


def test_receptive_field_grid_has_a_shared_colour_bar(tmp_path, monkeypatch):
    shown = {}
    save = cnnkit.viz.plots.save

    def capture(figure, path, **kwargs):
        shown["axes"] = [axis.get_ylabel() for axis in figure.axes]
        return save(figure, path, **kwargs)

    monkeypatch.setattr(cnnkit.viz.plots, "save", capture)
    plot_receptive_fields(torch.randn(5, 9, 9), tmp_path / "rf.png", labels=list("abcde"))
    assert len(shown["axes"]) == 5 + 1 and "max |value|" in shown["axes"][-1]
    assert (tmp_path / "rf.png").is_file()


def test_landscape_ceiling_keeps_most_of_a_steep_bowl():
    axis = torch.linspace(-1, 1, 21)
    a, b = torch.meshgrid(axis, axis, indexing="ij")
    steep = (0.01 + 50 * (a**2 + b**2) ** 2).numpy()  # plain20-like: tiny centre loss, steep walls
    ceiling = surface_ceiling(steep)
    assert (steep >= ceiling).mean() <= 0.21  # at most the outer fifth is cut, not 99 % of the grid
    mild = (1.0 + 0.1 * (a**2 + b**2)).numpy()
    assert surface_ceiling(mild) == pytest.approx(mild.max())  # nothing to clip
    exploding = mild.copy()
    exploding[0, 0] = 1e6  # one diverged corner must not squash the rest
    assert surface_ceiling(exploding) < 10
