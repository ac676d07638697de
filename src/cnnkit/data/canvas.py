"""An offline detection and segmentation data set: MNIST or Fashion-MNIST objects on cluttered canvases.

    data = load_canvas("canvas-mnist", num_train=2000, num_test=400, canvas_size=64, seed=0)
    data.train.images          # uint8 (N, 1, 64, 64) grey canvases
    data.train.boxes           # float32 (T, 4): every object's exact (x1, y1, x2, y2), image by image
    data.train.labels          # int64 (T,): 1 + the digit's class (0 is the background)
    data.train.instances       # uint8 (N, 64, 64): 0 background, k the k-th object of its canvas
    data.train.semantic        # uint8 (N, 64, 64): each pixel's label
    image, target = data.train[0]                # target: boxes, labels, masks (n, 64, 64) of the one canvas
    write_coco_json(data.test, "canvas-test.json")   # for read_coco and pycocotools

Each canvas holds one to ``max_objects`` whole objects, each a 28x28 image scaled to a random size (a fifth
to a half of the canvas by default) at a random place, no two sharing a pixel, over clutter: fragments cut
from other images of the same split at the objects' scale, as in cluttered MNIST (Mnih et al. 2014), so that a
detector has to tell a whole object from a stroke of one. An object's mask is where its own scaled image is at
a tenth of full intensity or more, and the object hides the clutter there; its box is the mask's tight bounding
box, so boxes and masks are exact by construction. Training canvases are cut
from the source's training images and test canvases from its test images, so no object is seen twice;
everything comes from one seeded ``torch.Generator`` per split and is drawn in batches (bilinear resampling as
two small matrix products per image), so
the same seed gives the same canvases on any machine.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch

from ..errors import DataError, UnknownNameError, did_you_mean
from .catalog import GENERATED
from .datasets import load_dataset

SOURCE_SIZE = 28  # MNIST and Fashion-MNIST images are 28x28
# An object's pixel belongs to it where its own image is at least a tenth of full intensity: low enough that a dark
# Fashion-MNIST coat is one solid mask, not its bright seams; high enough to leave out resampling's faint halo.
MASK_THRESHOLD = 0.1
PLACEMENT_TRIES = 24  # candidate places per object; an object that fits none is left out (a crowded canvas)
CHUNK = 512  # canvases drawn per batch: bounds the (objects x canvas) layers held at once


@dataclasses.dataclass(repr=False)
class DetectionSplit:
    """Canvases and their objects in memory. The objects of canvas i are rows ``offsets[i]:offsets[i + 1]`` of
    ``boxes`` and ``labels``; its k-th object (from 1) is where ``instances[i] == k``."""

    images: torch.Tensor  # uint8 (N, C, H, W)
    boxes: torch.Tensor  # float32 (T, 4)
    labels: torch.Tensor  # int64 (T,)
    offsets: torch.Tensor  # int64 (N + 1,)
    instances: torch.Tensor  # uint8 (N, H, W)
    semantic: torch.Tensor  # uint8 (N, H, W)
    classes: list[str]

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        c, h, w = self.images.shape[1:]
        return f"DetectionSplit({len(self):,} canvases, {len(self.labels):,} objects, {c}x{h}x{w} uint8)"

    def target(self, index: int) -> dict[str, torch.Tensor]:
        """Canvas ``index``'s boxes, labels and per-object masks (uint8, n x H x W)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for a split of {len(self):,} canvases")
        index %= len(self)
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        numbers = torch.arange(1, end - start + 1, dtype=torch.uint8)
        masks = (self.instances[index][None] == numbers[:, None, None]).to(torch.uint8)
        return {"boxes": self.boxes[start:end], "labels": self.labels[start:end], "masks": masks}

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        target = self.target(index)  # checks the index first
        return self.images[index], target

    def image_of_object(self) -> torch.Tensor:
        """For every object, the index of its canvas (T,)."""
        return torch.repeat_interleave(torch.arange(len(self)), self.offsets.diff())


@dataclasses.dataclass(repr=False)
class DetectionBundle:
    name: str
    train: DetectionSplit
    test: DetectionSplit
    classes: list[str]

    def __repr__(self) -> str:
        return f"DetectionBundle({self.name!r}, {len(self.classes) - 1} classes)\n  train: {self.train!r}\n" \
               f"  test: {self.test!r}"


def _tent(scale: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, canvas_size: int) -> torch.Tensor:
    """Bilinear resampling along one axis as a matrix (n, S, 28): canvas pixel i shows source position
    src + (i + 0.5 - dst) / scale, a source region starting at ``src`` drawn ``scale`` times larger from ``dst``.
    The tent weights max(0, 1 - |position - j|) are exactly grid_sample's bilinear with zero padding; an
    axis-aligned scaling is separable, so two small matrix products replace a full sampling grid."""
    centres = torch.arange(canvas_size, dtype=torch.float32) + 0.5
    position = src[:, None] + (centres[None] - dst[:, None]) / scale[:, None] - 0.5  # in source pixel indices
    return (1 - (position[..., None] - torch.arange(SOURCE_SIZE, dtype=torch.float32)).abs()).clamp(min=0)


def _draw(sources: torch.Tensor, scale, src_x, src_y, dst_x, dst_y, canvas_size: int, window=None) -> torch.Tensor:
    """Each source image (n, 28, 28) drawn on its own canvas (n, S, S); ``window`` (n,) limits the drawing to a
    square of that many canvas pixels from (dst_x, dst_y)."""
    rows, cols = _tent(scale, src_y, dst_y, canvas_size), _tent(scale, src_x, dst_x, canvas_size)
    if window is not None:
        centres = torch.arange(canvas_size, dtype=torch.float32) + 0.5
        for matrix, dst in ((rows, dst_y), (cols, dst_x)):
            matrix *= ((centres >= dst[:, None]) & (centres <= (dst + window)[:, None]))[..., None]
    return rows @ sources @ cols.transpose(1, 2)


def _place(count: int, max_objects: int, sizes: torch.Tensor, canvas_size: int, generator) -> torch.Tensor:
    """Top-left corners (count, max_objects, 2) of non-overlapping squares of the given sizes, NaN where an
    object found no free place in PLACEMENT_TRIES tries; vectorised over canvases, looping over slots."""
    corners = torch.full((count, max_objects, 2), float("nan"))
    for slot in range(max_objects):
        room = (canvas_size - sizes[:, slot])[:, None, None]
        candidates = torch.rand(count, PLACEMENT_TRIES, 2, generator=generator) * room
        free = torch.ones(count, PLACEMENT_TRIES, dtype=torch.bool)
        for other in range(slot):  # squares overlap when they overlap along both axes
            gap = candidates - corners[:, other, None, :]
            apart = (gap >= sizes[:, other, None, None]) | (-gap >= sizes[:, slot, None, None])
            free &= apart.any(-1) | corners[:, other, None, 0].isnan()
        first = free.float().argmax(1)
        chosen = candidates[torch.arange(count), first]
        corners[:, slot] = torch.where(free.any(1)[:, None], chosen, torch.full_like(chosen, float("nan")))
    return corners


def _clutter(pool: torch.Tensor, count: int, canvas_size: int, fragments: int, size_range, generator):
    """Canvases (count, S, S) of ``fragments`` random pieces of random pool images each, at object scale."""
    if fragments == 0:
        return torch.zeros(count, canvas_size, canvas_size)
    total = count * fragments
    picks = pool[torch.randint(len(pool), (total,), generator=generator)].float() / 255
    scale = (size_range[0] + torch.rand(total, generator=generator) * (size_range[1] - size_range[0])) / SOURCE_SIZE
    piece = 6 + torch.rand(total, generator=generator) * 6  # a 6-12 pixel window of the source image
    src = torch.rand(total, 2, generator=generator) * (SOURCE_SIZE - piece)[:, None]
    extent = piece * scale
    dst = torch.rand(total, 2, generator=generator) * (canvas_size - extent)[:, None]
    layers = _draw(picks, scale, src[:, 0], src[:, 1], dst[:, 0], dst[:, 1], canvas_size, window=extent)
    return layers.reshape(count, fragments, canvas_size, canvas_size).amax(1)


def _render_chunk(pool, pool_labels, count, canvas_size, max_objects, size_range, fragments, generator):
    """One batch of canvases: (count, S, S) floats in [0, 1], and for every object slot (count, max_objects) its
    mask (count, max_objects, S, S), label (0 for an empty slot) and whether it holds an object."""
    present = torch.arange(max_objects)[None] < torch.randint(1, max_objects + 1, (count, 1), generator=generator)
    sizes = size_range[0] + torch.rand(count, max_objects, generator=generator) * (size_range[1] - size_range[0])
    corners = _place(count, max_objects, sizes, canvas_size, generator)
    present &= ~corners[..., 0].isnan()
    chosen = torch.randint(len(pool), (count, max_objects), generator=generator)
    canvases = _clutter(pool, count, canvas_size, fragments, size_range, generator)
    flat = present.flatten()
    scale = sizes.flatten()[flat] / SOURCE_SIZE
    corner = corners.reshape(-1, 2)[flat]
    zero = torch.zeros_like(scale)
    layers = torch.zeros(count * max_objects, canvas_size, canvas_size)
    layers[flat] = _draw(pool[chosen.flatten()[flat]].float() / 255, scale, zero, zero, corner[:, 0], corner[:, 1],
                         canvas_size)
    layers = layers.reshape(count, max_objects, canvas_size, canvas_size)
    masks = layers >= MASK_THRESHOLD
    drawn = layers.amax(1)
    # an object hides the clutter under its mask (what the mask shows is the object); its faint halo only adds light
    canvases = torch.where(masks.any(1), drawn, torch.maximum(canvases, drawn))
    present &= masks.flatten(2).any(2)  # an object too faint to leave a mask is no object
    labels = torch.where(present, pool_labels[chosen] + 1, 0)
    return canvases, masks & present[..., None, None], labels, present


def _tight_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(x1, y1, x2, y2) of each mask's pixels, x2 and y2 one past the last pixel."""
    columns, rows = masks.any(1), masks.any(2)
    size = masks.shape[-1]
    first = lambda m: m.float().argmax(1)  # noqa: E731
    last = lambda m: size - m.flip(1).float().argmax(1)  # noqa: E731
    return torch.stack([first(columns), first(rows), last(columns), last(rows)], 1).float()


def render_canvases(pool: torch.Tensor, pool_labels: torch.Tensor, count: int, classes: list[str],
                    canvas_size: int = 64, max_objects: int = 3, size_range: tuple[float, float] | None = None,
                    fragments: int = 6, generator: torch.Generator | None = None) -> DetectionSplit:
    """``count`` canvases from ``pool`` (uint8 (M, 28, 28) images, int64 (M,) labels). ``size_range`` is the
    side in pixels an object is scaled to, by default a fifth to a half of the canvas."""
    if pool.ndim != 3 or pool.shape[1:] != (SOURCE_SIZE, SOURCE_SIZE) or len(pool) != len(pool_labels):
        raise DataError(f"the source images must be (M, 28, 28) with M labels, got {tuple(pool.shape)} and "
                        f"{tuple(pool_labels.shape)}.")
    if count < 1 or max_objects < 1 or fragments < 0:
        raise DataError(f"asked for {count} canvases of up to {max_objects} objects and {fragments} clutter "
                        "fragments; give at least one canvas, at least one object and no negative count.")
    size_range = size_range or (canvas_size / 5, canvas_size / 2)
    if not 4 <= size_range[0] <= size_range[1] <= canvas_size:
        raise DataError(f"object sizes {size_range} must lie between 4 and the canvas size {canvas_size}.")
    generator = generator or torch.Generator().manual_seed(0)
    images, instances, semantic, boxes, labels, per_canvas = [], [], [], [], [], []
    for start in range(0, count, CHUNK):
        n = min(CHUNK, count - start)
        canvases, masks, slot_labels, present = _render_chunk(pool, pool_labels, n, canvas_size, max_objects,
                                                              size_range, fragments, generator)
        # objects never share a pixel, so each pixel takes the one object (if any) whose mask covers it
        number = torch.cumsum(present, 1) * present  # the k-th object of its canvas, from 1; 0 for empty slots
        instances.append((masks * number[..., None, None]).amax(1).to(torch.uint8))
        semantic.append((masks * slot_labels[..., None, None]).amax(1).to(torch.uint8))
        images.append((canvases.clamp(0, 1) * 255).round().to(torch.uint8)[:, None])
        boxes.append(_tight_boxes(masks[present])), labels.append(slot_labels[present])
        per_canvas.append(present.sum(1))
    counts = torch.cat(per_canvas)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)])
    return DetectionSplit(torch.cat(images), torch.cat(boxes), torch.cat(labels).long(), offsets,
                          torch.cat(instances), torch.cat(semantic), list(classes))


def load_canvas(name: str = "canvas-mnist", num_train: int = 2000, num_test: int = 400, canvas_size: int = 64,
                max_objects: int = 3, seed: int = 0, download: bool = True) -> DetectionBundle:
    """A generated canvas data set from the catalog (``cnnkit.data.catalog.GENERATED``), drawn from the source
    data set's official files: training canvases from its training images, test canvases from its test images."""
    if name not in GENERATED:
        raise UnknownNameError(f"Unknown generated data set {name!r}.{did_you_mean(name, GENERATED)}")
    source = load_dataset(GENERATED[name].source, download=download)
    classes = ["background", *source.classes]
    splits = {}
    for offset, (role, split, count) in enumerate((("train", source.train, num_train),
                                                   ("test", source.test, num_test))):
        generator = torch.Generator().manual_seed(seed * 2 + offset)  # disjoint streams for the two splits
        splits[role] = render_canvases(split.images[:, 0], split.labels, count, classes, canvas_size, max_objects,
                                       generator=generator)
    return DetectionBundle(f"{name}(seed={seed}, {canvas_size}px)", splits["train"], splits["test"], classes)


# ------------------------------------------------------------------------------------------------ COCO export
def _rle(mask: torch.Tensor) -> dict:
    """COCO's uncompressed run-length encoding of a 0/1 mask: run lengths in column-major order, zeros first."""
    flat = mask.t().reshape(-1).to(torch.int8)
    change = torch.nonzero(flat.diff()).flatten() + 1
    bounds = torch.cat([torch.zeros(1, dtype=torch.long), change, torch.tensor([len(flat)])])
    runs = bounds.diff().tolist()
    if flat[0] == 1:
        runs = [0, *runs]
    return {"size": list(mask.shape), "counts": runs}


def to_coco(split: DetectionSplit, file_pattern: str = "canvas-{:06d}.png") -> dict:
    """The split's annotations as a COCO instances document: image ids from 1, category ids = labels, boxes as
    [x, y, width, height], masks as uncompressed RLE, areas the masks' pixel counts."""
    height, width = split.images.shape[2:]
    images = [{"id": i + 1, "file_name": file_pattern.format(i), "width": int(width), "height": int(height)}
              for i in range(len(split))]
    areas = []
    annotations = []
    owner = split.image_of_object()
    number = torch.arange(len(owner)) - split.offsets[owner] + 1
    for index, (box, label, image, k) in enumerate(zip(split.boxes.tolist(), split.labels.tolist(), owner.tolist(),
                                                       number.tolist())):
        mask = split.instances[image] == k
        areas.append(int(mask.sum()))
        x1, y1, x2, y2 = box
        annotations.append({"id": index + 1, "image_id": image + 1, "category_id": label, "iscrowd": 0,
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "area": areas[-1], "segmentation": _rle(mask)})
    categories = [{"id": label, "name": name} for label, name in enumerate(split.classes) if label]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_coco_json(split: DetectionSplit, path, file_pattern: str = "canvas-{:06d}.png") -> Path:
    """Write :func:`to_coco` to ``path`` atomically (a temporary file renamed into place)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    temporary.write_text(json.dumps(to_coco(split, file_pattern)))
    os.replace(temporary, path)
    return path


__all__ = ["DetectionBundle", "DetectionSplit", "load_canvas", "render_canvases", "to_coco", "write_coco_json"]
