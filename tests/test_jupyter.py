"""In a notebook: dataset splits are torch Datasets, bundles and cards print a summary (never raw tensors), and the
calculator's summary renders as an HTML table."""

import dataclasses
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.analysis import summary
from cnnkit.card import ModelCard, card_of
from cnnkit.data.datasets import DatasetBundle, TensorImageDataset, load_image_folder
from cnnkit.models import create_model
from cnnkit.transfer import FeatureDataset


def _split(count: int, classes: int = 3) -> TensorImageDataset:
    generator = torch.Generator().manual_seed(count)
    images = torch.randint(0, 256, (count, 3, 8, 6), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, classes, (count,), generator=generator)
    return TensorImageDataset(images, labels, [f"class{i}" for i in range(classes)])


def test_a_split_is_a_map_style_torch_dataset():
    split = _split(10)
    assert isinstance(split, torch.utils.data.Dataset)
    image, label = split[3]
    assert torch.equal(image, split.images[3]) and image.shape == (3, 8, 6) and image.dtype == torch.uint8
    assert type(label) is int and label == int(split.labels[3])
    assert torch.equal(split[-1][0], split.images[9])
    with pytest.raises(IndexError, match="index 10 is out of range for a split of 10 images"):
        split[10]
    assert len(list(split)) == 10  # iteration stops at the IndexError, as for any sequence
    images, labels = next(iter(torch.utils.data.DataLoader(split, batch_size=4)))  # torch's default collate
    assert torch.equal(images, split.images[:4]) and torch.equal(labels, split.labels[:4])


def test_bundles_and_splits_print_a_summary_not_tensors():
    bundle = DatasetBundle("toy", _split(1200, classes=12), _split(300, classes=12), [f"class{i}" for i in range(12)],
                           (0.5,), (0.25,), note="synthetic")
    text = repr(bundle)
    assert "tensor(" not in text and len(text) < 400, text
    assert text.splitlines() == [
        "DatasetBundle('toy', 12 classes [class0, class1, class2, class3, class4, ...], mean=(0.5,), std=(0.25,), "
        "note='synthetic')",
        "  train: TensorImageDataset(1,200 images, 3x8x6 uint8, 12 classes [class0, class1, class2, class3, "
        "class4, ...])",
        "  test: TensorImageDataset(300 images, 3x8x6 uint8, 12 classes [class0, class1, class2, class3, class4, ...])",
    ]
    features = FeatureDataset(torch.zeros(5, 16, 1, 1), torch.zeros(5, dtype=torch.long), ["a", "b"])
    assert repr(features) == "FeatureDataset(5 images, 16x1x1 float32, 2 classes [a, b])"


def test_an_image_folder_split_names_its_folder(tmp_path):
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i in range(10):
            Image.fromarray(np.full((5, 7, 3), i * 20, dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    bundle = load_image_folder(tmp_path, image_size=16, channels=3)
    assert repr(bundle.train) == f"FolderImageDataset(18 images in {tmp_path}, 3x16x16 uint8, 2 classes [cat, dog])"
    image, label = bundle.train[0]
    assert image.shape == (3, 16, 16) and label in (0, 1)


class _Table(HTMLParser):
    """The caption, header cells and body rows of an HTML table, as text."""

    def __init__(self):
        super().__init__()
        self.caption, self.header, self.rows, self._cell, self._where = "", [], [], None, None

    def handle_starttag(self, tag, attrs):
        if tag in ("caption", "thead", "tbody"):
            self._where = tag
        elif tag == "tr" and self._where == "tbody":
            self.rows.append([])
        elif tag in ("th", "td"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("th", "td"):
            (self.header if self._where == "thead" else self.rows[-1]).append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        elif self._where == "caption":
            self.caption += data


def test_the_summary_is_an_html_table_with_the_text_tables_cells():
    report = summary("lenet5_relu", "1x32x32", batch_size=4)
    table = _Table()
    table.feed(report._repr_html_())
    assert table.caption.strip() == "lenet5_relu on 1x32x32 input, batch 4"
    assert table.header[:4] == ["layer", "type", "output (CxHxW)", "params"] and table.header[7] == "act/batch 4"
    assert [row[0] for row in table.rows] == [row.name for row in report.rows]
    first_conv = next(row for row in table.rows if row[1] == "Conv2d")
    assert first_conv[2] == "6x28x28" and first_conv[3] == "156"  # 6 filters of 5x5x1 + 6 biases
    assert first_conv[3] in str(report) and repr(report) == str(report)


def test_the_html_summary_escapes_what_it_shows():
    report = dataclasses.replace(summary("lenet5_relu", "1x32x32"), model_name="<script>alert(1)</script>")
    page = report._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_a_model_card_prints_its_meaningful_fields_and_a_few_class_names():
    card = dataclasses.replace(card_of(create_model("lenet5")), classes=tuple(f"n{i}" for i in range(1000)),
                               mean=(0.1307,), std=(0.3081,))
    assert repr(card) == ("ModelCard(name='lenet5', num_classes=10, in_channels=1, input_size=(32, 32), "
                          "min_input_size=32, mean=(0.1307,), std=(0.3081,), classes=1000 classes "
                          "[n0, n1, n2, n3, n4, ...])")
    assert repr(ModelCard()) == "ModelCard(name=None)"
