"""Detection annotations in the formats people have: COCO JSON and Pascal VOC XML.

    annotations = read_coco("instances_val2017.json")           # every image's boxes, labels, crowd flags
    annotations.images[0].boxes                                 # float32 (N, 4) x1, y1, x2, y2 in pixels
    annotations.images[0].labels                                # int64 (N,), indices into annotations.classes
    annotations.images[0].decode_masks()                        # uint8 (N, H, W), through pycocotools
    record = read_voc("VOC2007/Annotations/000005.xml")         # one image: boxes, labels, difficult flags

Labels are contiguous: 0 is the background and COCO's category ids, which have gaps (1..90 for 80 classes), map to
1..K in id order; ``category_ids`` maps them back, for the official evaluator. Every file is verified before use:
its size is bounded before it is read, every key a record needs is present with the right type, every box lies in
its image, every category is known; a fault raises :class:`DataError` naming the file, the entry and the fix.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import warnings
from pathlib import Path

import torch

from ..errors import DataError

# The largest annotation files read: COCO's train2017 instances file is 448 MB; one VOC XML is a few KB.
MAX_COCO_BYTES = 1 << 30
MAX_VOC_BYTES = 1 << 20
# Coordinates are floats and some tools round outwards: a box may overhang its image by this much (then it is
# clipped); beyond it the box belongs to another image or another size and is refused.
EDGE_TOLERANCE = 1.0

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")


@dataclasses.dataclass(repr=False)
class DetectionRecord:
    """One image's annotations. ``boxes`` float32 (N, 4) as (x1, y1, x2, y2) in pixels; ``labels`` int64 (N,)
    indices into the classes (0 is the background, never an object's); ``crowd`` bool (N,): COCO's iscrowd, VOC's
    difficult (both are ignored, not counted as misses, by their evaluators); ``segmentations``: COCO's polygons
    or RLE per object, undecoded (None where an object has none)."""

    image_id: int
    file_name: str
    height: int
    width: int
    boxes: torch.Tensor
    labels: torch.Tensor
    crowd: torch.Tensor
    segmentations: list = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (f"DetectionRecord(image_id={self.image_id}, {self.file_name!r}, {self.width}x{self.height}, "
                f"{len(self)} objects)")

    def decode_masks(self) -> torch.Tensor:
        """The objects' masks, uint8 (N, H, W) of 0/1, decoded from polygons or RLE by pycocotools."""
        if any(s is None for s in self.segmentations) or len(self.segmentations) != len(self):
            raise DataError(f"image {self.image_id} ({self.file_name}): not every object has a segmentation, so "
                            "there are no masks to decode; use the boxes.")
        if not self.segmentations:
            return torch.zeros(0, self.height, self.width, dtype=torch.uint8)
        mask_api = _pycocotools_mask()
        decoded = []
        for segmentation in self.segmentations:
            if isinstance(segmentation, list):  # polygons: one RLE per polygon, merged
                rle = mask_api.merge(mask_api.frPyObjects(segmentation, self.height, self.width))
            elif isinstance(segmentation["counts"], list):  # uncompressed RLE
                rle = mask_api.frPyObjects(segmentation, self.height, self.width)
            else:
                rle = segmentation
            with warnings.catch_warnings():  # pycocotools' own numpy 2 deprecation, not the caller's concern
                warnings.simplefilter("ignore", DeprecationWarning)
                decoded.append(torch.from_numpy(mask_api.decode(rle)))
        return torch.stack(decoded).to(torch.uint8)


@dataclasses.dataclass(repr=False)
class DetectionAnnotations:
    """A data set's annotations: the classes (``classes[0] == "background"``), each label's original category id
    (``category_ids[label]``; None for the background) and one record per image."""

    source: str
    classes: list[str]
    category_ids: list[int | None]
    images: list[DetectionRecord]

    def __repr__(self) -> str:
        objects = sum(len(r) for r in self.images)
        return (f"DetectionAnnotations({self.source!r}, {len(self.images):,} images, {objects:,} objects, "
                f"{len(self.classes) - 1} classes)")


def _pycocotools_mask():
    try:
        from pycocotools import mask
    except ImportError:
        raise DataError("Decoding COCO masks needs pycocotools, which is in cnnkit's `detect` extra: "
                        "pip install 'cnnkit[detect]'.") from None
    return mask


def _read_bounded(path: Path, max_bytes: int, kind: str) -> bytes:
    """A file's bytes, its size checked before a byte is read."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise DataError(f"{path} is {size:,} bytes, more than the {max_bytes:,} a {kind} file may be; it is not "
                            f"a {kind} file, or pass a larger max_bytes if it really is one.")
        with open(path, "rb") as stream:
            return stream.read(max_bytes + 1)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise DataError(f"{path}: no such {kind} file.") from None


# ------------------------------------------------------------------------------------------------------ COCO
def _field(entry: dict, key: str, kinds, where: str):
    if not isinstance(entry, dict):
        raise DataError(f"{where} is a {type(entry).__name__}, not a JSON object.")
    if key not in entry:
        raise DataError(f"{where} has no {key!r} (it has {sorted(entry)}); a COCO instances file needs it there.")
    value = entry[key]
    if not isinstance(value, kinds) or isinstance(value, bool):
        names = " or ".join(k.__name__ for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
        raise DataError(f"{where}: {key!r} is {value!r}, expected type {names}.")
    return value


def _coco_categories(document: dict, source: str) -> tuple[list[str], list[int | None], dict[int, int]]:
    categories = _field(document, "categories", list, f"{source}")
    seen = {}
    for index, category in enumerate(categories):
        where = f"category #{index} of {source}"
        seen.setdefault(_field(category, "id", int, where), _field(category, "name", str, where))
    ids = sorted(seen)
    if len(ids) != len(categories):
        raise DataError(f"{source}: category ids repeat ({[c.get('id') for c in categories]}); each must be unique.")
    return ["background"] + [seen[i] for i in ids], [None] + ids, {cid: label for label, cid in enumerate(ids, 1)}


def _coco_box(annotation: dict, image: DetectionRecord, where: str) -> list[float]:
    bbox = _field(annotation, "bbox", list, where)
    if len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                 for v in bbox):
        raise DataError(f"{where}: bbox {bbox!r} is not four finite numbers [x, y, width, height].")
    x, y, w, h = (float(v) for v in bbox)
    if w < 0 or h < 0:
        raise DataError(f"{where}: bbox {bbox!r} has a negative width or height; COCO boxes are "
                        "[x, y, width, height], not corners.")
    if x < -EDGE_TOLERANCE or y < -EDGE_TOLERANCE or x + w > image.width + EDGE_TOLERANCE or \
            y + h > image.height + EDGE_TOLERANCE:
        raise DataError(f"{where}: bbox {bbox!r} lies outside its image {image.image_id} ({image.width}x"
                        f"{image.height}); the annotation belongs to another image or the image's size is wrong.")
    return [max(x, 0.0), max(y, 0.0), min(x + w, image.width), min(y + h, image.height)]


def _check_segmentation(segmentation, where: str):
    if isinstance(segmentation, list):
        if all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and
               all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p) for p in segmentation):
            return segmentation
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("size"), list) and \
            isinstance(segmentation.get("counts"), (list, str)):
        return segmentation
    raise DataError(f"{where}: segmentation is neither polygons (lists of at least three x, y pairs) nor RLE "
                    "({'size': [h, w], 'counts': ...}).")


def _coco_images(document: dict, source: str) -> dict[int, DetectionRecord]:
    records = {}
    for index, image in enumerate(_field(document, "images", list, f"{source}")):
        where = f"image #{index} of {source}"
        image_id = _field(image, "id", int, where)
        width, height = _field(image, "width", int, where), _field(image, "height", int, where)
        if width <= 0 or height <= 0:
            raise DataError(f"{where}: size {width}x{height} is not positive.")
        if image_id in records:
            raise DataError(f"{where}: id {image_id} repeats; each image needs its own id.")
        records[image_id] = DetectionRecord(image_id, _field(image, "file_name", str, where), height, width,
                                            torch.zeros(0, 4), torch.zeros(0, dtype=torch.long),
                                            torch.zeros(0, dtype=torch.bool))
    return records


def parse_coco(data: bytes, source: str = "<bytes>") -> DetectionAnnotations:
    """COCO instances JSON (``images``, ``annotations`` with ``bbox`` [x, y, w, h], ``categories``) from bytes."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{source} is not valid JSON ({exc}); it is truncated or not a COCO annotation file.") from None
    if not isinstance(document, dict):
        raise DataError(f"{source}: a COCO file is a JSON object with images, annotations and categories, "
                        f"not a {type(document).__name__}.")
    classes, category_ids, label_of = _coco_categories(document, source)
    records = _coco_images(document, source)
    gathered = {image_id: ([], [], [], []) for image_id in records}
    for index, annotation in enumerate(_field(document, "annotations", list, f"{source}")):
        where = f"annotation #{index} of {source}"
        image_id = _field(annotation, "image_id", int, where)
        if image_id not in records:
            raise DataError(f"{where}: image_id {image_id} is not among the file's images.")
        category = _field(annotation, "category_id", int, where)
        if category not in label_of:
            raise DataError(f"{where}: category_id {category} is not among the file's categories "
                            f"{category_ids[1:]}.")
        boxes, labels, crowd, segmentations = gathered[image_id]
        boxes.append(_coco_box(annotation, records[image_id], where))
        labels.append(label_of[category])
        crowd.append(bool(annotation.get("iscrowd", 0)))
        segmentation = annotation.get("segmentation")
        segmentations.append(None if segmentation in (None, []) else _check_segmentation(segmentation, where))
    for image_id, (boxes, labels, crowd, segmentations) in gathered.items():
        record = records[image_id]
        record.boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        record.labels = torch.tensor(labels, dtype=torch.long)
        record.crowd = torch.tensor(crowd, dtype=torch.bool)
        record.segmentations = segmentations
    return DetectionAnnotations(source, classes, category_ids, list(records.values()))


def read_coco(path, max_bytes: int = MAX_COCO_BYTES) -> DetectionAnnotations:
    """A COCO instances JSON file, its size bounded by ``max_bytes`` before it is read."""
    return parse_coco(_read_bounded(path, max_bytes, "COCO annotation"), str(path))


# ------------------------------------------------------------------------------------------------------- VOC
try:  # defusedxml refuses entity expansion and external references outright; use it where it is installed
    from defusedxml import ElementTree as _xml
    from defusedxml.common import DefusedXmlException as _Refused
except ImportError:
    from xml.etree import ElementTree as _xml

    class _Refused(Exception):
        pass

# Without defusedxml, documents that declare a DTD or entities are refused before parsing: a VOC file has no
# need of them, and they are what entity-expansion ("billion laughs") and external-entity attacks are made of.
_DECLARATION = re.compile(rb"<!(DOCTYPE|ENTITY)", re.IGNORECASE)


def _voc_text(element, path: str, source: str) -> str:
    found = element.find(path)
    if found is None or found.text is None or not found.text.strip():
        raise DataError(f"{source}: <{path}> is missing; a VOC annotation needs it.")
    return found.text.strip()


def _voc_number(element, path: str, source: str) -> float:
    text = _voc_text(element, path, source)
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{source}: <{path}> is {text!r}, not a number.") from None
    if not math.isfinite(value):
        raise DataError(f"{source}: <{path}> is {text!r}, not a finite number.")
    return value


def _voc_object(obj, index: int, size: tuple[int, int], label_of: dict[str, int], source: str):
    where = f"{source}: object #{index}"
    name = _voc_text(obj, "name", where)
    if name not in label_of:
        raise DataError(f"{where} is a {name!r}, not one of the classes {sorted(label_of)}; pass classes= with it.")
    xmin, ymin, xmax, ymax = (_voc_number(obj, f"bndbox/{k}", where) for k in ("xmin", "ymin", "xmax", "ymax"))
    if xmax < xmin or ymax < ymin:
        raise DataError(f"{where}: box ({xmin}, {ymin}, {xmax}, {ymax}) has xmax < xmin or ymax < ymin.")
    height, width = size
    # VOC counts pixels from 1 and includes both ends: pixel columns xmin..xmax cover [xmin - 1, xmax) here.
    box = [xmin - 1, ymin - 1, xmax, ymax]
    if box[0] < -EDGE_TOLERANCE or box[1] < -EDGE_TOLERANCE or box[2] > width + EDGE_TOLERANCE or \
            box[3] > height + EDGE_TOLERANCE:
        raise DataError(f"{where}: box ({xmin}, {ymin}, {xmax}, {ymax}) lies outside the {width}x{height} image.")
    difficult = obj.find("difficult")
    return ([max(box[0], 0.0), max(box[1], 0.0), min(box[2], width), min(box[3], height)], label_of[name],
            difficult is not None and (difficult.text or "0").strip() == "1")


def parse_voc(data: bytes, source: str = "<bytes>", classes=VOC_CLASSES, image_id: int = 0) -> DetectionRecord:
    """One Pascal VOC annotation (``<annotation>`` with ``filename``, ``size`` and ``object``s) from bytes.
    Labels index ``["background", *classes]``; ``crowd`` holds VOC's difficult flags."""
    if _DECLARATION.search(data):
        raise DataError(f"{source} declares a DTD or entities, which VOC annotations never do; refusing to parse it.")
    try:
        root = _xml.fromstring(data)
    except (_xml.ParseError, _Refused, ValueError) as exc:
        raise DataError(f"{source} is not well-formed XML ({exc}); it is truncated or not a VOC annotation.") from None
    if root.tag != "annotation":
        raise DataError(f"{source}: the root element is <{root.tag}>, expected <annotation>.")
    width, height = int(_voc_number(root, "size/width", source)), int(_voc_number(root, "size/height", source))
    if width <= 0 or height <= 0:
        raise DataError(f"{source}: image size {width}x{height} is not positive.")
    label_of = {name: label for label, name in enumerate(classes, 1)}
    objects = [_voc_object(obj, i, (height, width), label_of, source) for i, obj in enumerate(root.iter("object"))]
    return DetectionRecord(image_id, _voc_text(root, "filename", source), height, width,
                           torch.tensor([o[0] for o in objects], dtype=torch.float32).reshape(-1, 4),
                           torch.tensor([o[1] for o in objects], dtype=torch.long),
                           torch.tensor([o[2] for o in objects], dtype=torch.bool), [None] * len(objects))


def read_voc(path, classes=VOC_CLASSES, image_id: int = 0, max_bytes: int = MAX_VOC_BYTES) -> DetectionRecord:
    """A Pascal VOC XML annotation file, its size bounded by ``max_bytes`` before it is read."""
    return parse_voc(_read_bounded(path, max_bytes, "VOC annotation"), str(path), classes, image_id)


def read_voc_folder(folder, classes=VOC_CLASSES, max_bytes: int = MAX_VOC_BYTES) -> DetectionAnnotations:
    """Every ``*.xml`` in a VOC ``Annotations/`` folder, sorted by name, numbered from 0."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder; expected VOC's Annotations/ folder of XML files.")
    files = sorted(folder.glob("*.xml"))
    if not files:
        raise DataError(f"{folder} holds no .xml annotation files.")
    records = [read_voc(f, classes, i, max_bytes) for i, f in enumerate(files)]
    return DetectionAnnotations(str(folder), ["background", *classes], [None, *range(1, len(classes) + 1)], records)


__all__ = ["DetectionAnnotations", "DetectionRecord", "VOC_CLASSES", "parse_coco", "parse_voc", "read_coco",
           "read_voc", "read_voc_folder"]
