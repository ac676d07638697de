"""COCO JSON and Pascal VOC XML readers on small generated files: what they read, and a clear DataError for each
kind of bad file."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from cnnkit.data.detection import VOC_CLASSES, parse_coco, parse_voc, read_coco, read_voc, read_voc_folder
from cnnkit.errors import DataError


def coco_document() -> dict:
    return {
        "images": [{"id": 7, "file_name": "a.jpg", "width": 40, "height": 30},
                   {"id": 9, "file_name": "b.jpg", "width": 20, "height": 20}],
        "categories": [{"id": 18, "name": "dog"}, {"id": 3, "name": "car"}],  # out of order, with gaps
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 18, "bbox": [2, 3, 10, 5], "iscrowd": 0,
             "segmentation": [[2, 3, 12, 3, 12, 8, 2, 8]]},
            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [20.5, 0, 19.5, 30], "iscrowd": 1,
             "segmentation": {"size": [30, 40], "counts": [30 * 21, 30 * 19]}},
            {"id": 3, "image_id": 9, "category_id": 3, "bbox": [0, 0, 4, 4]},
        ],
    }


def write_json(tmp_path, document, name="instances.json"):
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def test_coco_boxes_labels_and_categories(tmp_path):
    annotations = read_coco(write_json(tmp_path, coco_document()))
    assert annotations.classes == ["background", "car", "dog"]  # contiguous labels in category-id order
    assert annotations.category_ids == [None, 3, 18]
    first, second = annotations.images
    assert (first.image_id, first.file_name, first.height, first.width) == (7, "a.jpg", 30, 40)
    assert first.boxes.tolist() == [[2, 3, 12, 8], [20.5, 0, 40, 30]]
    assert first.labels.tolist() == [2, 1] and first.crowd.tolist() == [False, True]
    assert second.boxes.tolist() == [[0, 0, 4, 4]] and second.labels.tolist() == [1]
    assert "2 images, 3 objects, 2 classes" in repr(annotations)


def test_coco_masks_decode_from_polygons_and_rle(tmp_path):
    pytest.importorskip("pycocotools")
    first = read_coco(write_json(tmp_path, coco_document())).images[0]
    masks = first.decode_masks()
    assert masks.shape == (2, 30, 40) and masks.dtype == torch.uint8
    ys, xs = torch.nonzero(masks[0], as_tuple=True)
    assert (int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())) == (2, 11, 3, 7)  # the polygon's pixels
    expected = torch.zeros(30, 40, dtype=torch.uint8)
    expected[:, 21:] = 1  # column-major RLE: 21 columns of zeros, then 19 of ones
    assert torch.equal(masks[1], expected)
    with pytest.raises(DataError, match="not every object has a segmentation"):
        read_coco(write_json(tmp_path, coco_document())).images[1].decode_masks()


def broken(change):
    document = coco_document()
    change(document)
    return document


BAD_COCO = {
    "missing images": (lambda d: d.pop("images"), "has no 'images'"),
    "missing bbox": (lambda d: d["annotations"][0].pop("bbox"), r"annotation #0 .* has no 'bbox'"),
    "bbox not four numbers": (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), "not four finite numbers"),
    "negative width": (lambda d: d["annotations"][0].update(bbox=[1, 2, -3, 4]), "negative width or height"),
    "outside the image": (lambda d: d["annotations"][2].update(bbox=[10, 10, 15, 4]), "outside its image 9"),
    "unknown category": (lambda d: d["annotations"][0].update(category_id=5), "category_id 5 is not among"),
    "unknown image": (lambda d: d["annotations"][0].update(image_id=8), "image_id 8 is not among"),
    "repeated image id": (lambda d: d["images"][1].update(id=7), "id 7 repeats"),
    "zero-size image": (lambda d: d["images"][0].update(width=0), "not positive"),
    "string id": (lambda d: d["images"][0].update(id="7"), "expected type int"),
    "bad segmentation": (lambda d: d["annotations"][0].update(segmentation=[[1, 2]]), "neither polygons"),
    "repeated category": (lambda d: d["categories"].append({"id": 3, "name": "van"}), "category ids repeat"),
}


@pytest.mark.parametrize("case", sorted(BAD_COCO))
def test_bad_coco_files_are_refused_naming_the_fault(tmp_path, case):
    change, message = BAD_COCO[case]
    with pytest.raises(DataError, match=message):
        read_coco(write_json(tmp_path, broken(change)))


def test_truncated_non_json_and_enormous_coco_files_are_refused(tmp_path):
    text = json.dumps(coco_document())
    with pytest.raises(DataError, match="not valid JSON"):
        parse_coco(text[: len(text) // 2].encode(), "half.json")
    with pytest.raises(DataError, match="not valid JSON"):
        parse_coco(b"\xff\xd8\xff\xe0 a jpeg", "photo.jpg")
    with pytest.raises(DataError, match="not a list"):
        parse_coco(b"[1, 2]", "list.json")
    big = write_json(tmp_path, coco_document())
    with pytest.raises(DataError, match=r"more than the 100 a COCO annotation file may be"):
        read_coco(big, max_bytes=100)
    with pytest.raises(DataError, match="no such COCO annotation file"):
        read_coco(tmp_path / "absent.json")
    assert copy.deepcopy(coco_document()) == coco_document()  # the cases above changed copies only


def voc_xml(objects=(("dog", (3, 4, 12, 9), 0), ("person", (1, 1, 40, 30), 1)), width=40, height=30) -> str:
    parts = [f"<annotation><folder>VOC2007</folder><filename>000005.jpg</filename>"
             f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]
    for name, (x1, y1, x2, y2), difficult in objects:
        parts.append(f"<object><name>{name}</name><pose>Left</pose><truncated>0</truncated>"
                     f"<difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
                     f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
    return "".join(parts) + "</annotation>"


def test_voc_boxes_names_and_difficult_flags(tmp_path):
    path = tmp_path / "000005.xml"
    path.write_text(voc_xml())
    record = read_voc(path)
    assert (record.file_name, record.height, record.width) == ("000005.jpg", 30, 40)
    assert record.boxes.tolist() == [[2, 3, 12, 9], [0, 0, 40, 30]]  # 1-based inclusive pixels -> [x1 - 1, x2)
    assert record.labels.tolist() == [VOC_CLASSES.index("dog") + 1, VOC_CLASSES.index("person") + 1]
    assert record.crowd.tolist() == [False, True]
    (tmp_path / "000007.xml").write_text(voc_xml(objects=()))
    folder = read_voc_folder(tmp_path)
    assert [r.image_id for r in folder.images] == [0, 1] and len(folder.images[1]) == 0
    assert folder.classes[0] == "background" and folder.classes[1:] == list(VOC_CLASSES)
    own = parse_voc(voc_xml(objects=(("digit", (1, 1, 5, 5), 0),)).encode(), classes=("digit",))
    assert own.labels.tolist() == [1]


BAD_VOC = {
    "unknown class": (voc_xml(objects=(("unicorn", (1, 1, 5, 5), 0),)), "'unicorn', not one of the classes"),
    "missing box corner": (voc_xml().replace("<xmax>12</xmax>", ""), r"<bndbox/xmax> is missing"),
    "inverted box": (voc_xml(objects=(("dog", (9, 4, 3, 9), 0),)), "xmax < xmin"),
    "outside the image": (voc_xml(objects=(("dog", (3, 4, 60, 9), 0),)), "outside the 40x30 image"),
    "not a number": (voc_xml().replace("<ymin>4</ymin>", "<ymin>four</ymin>"), "'four', not a number"),
    "missing size": (voc_xml().replace("<width>40</width>", ""), "<size/width> is missing"),
    "wrong root": ("<svg></svg>", "expected <annotation>"),
    "truncated": (voc_xml()[:100], "not well-formed XML"),
    "entities": ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><annotation>&lol;</annotation>',
                 "declares a DTD or entities"),
}


@pytest.mark.parametrize("case", sorted(BAD_VOC))
def test_bad_voc_files_are_refused_naming_the_fault(case):
    text, message = BAD_VOC[case]
    with pytest.raises(DataError, match=message):
        parse_voc(text.encode(), "bad.xml")


def test_enormous_or_missing_voc_files_are_refused(tmp_path):
    path = tmp_path / "big.xml"
    path.write_text(voc_xml())
    with pytest.raises(DataError, match="more than the 64 a VOC annotation file may be"):
        read_voc(path, max_bytes=64)
    with pytest.raises(DataError, match="no .xml annotation files"):
        read_voc_folder(_empty(tmp_path))
    with pytest.raises(DataError, match="no such folder"):
        read_voc_folder(tmp_path / "nowhere")


def _empty(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder
