"""Box operators for two-stage detection (Ren, He, Girshick, Sun 2015, "Faster R-CNN"; He et al. 2017 for
RoIAlign), in plain PyTorch: torchvision.ops loads here only with a 5.5 GB CUDA build of torch, so cnnkit
carries its own. Every operator is vectorised (tensor ops over all boxes at once; the only Python loops run
over fixed-size chunks or fixed-point iterations, never over boxes), keeps autograd where training needs it
(decoding, RoIAlign, RoI pooling) and follows torchvision's conventions exactly, so that
tests/test_detect_ops.py can hold each to a slow obvious loop and, where torchvision is importable, to
torchvision.ops itself.

Boxes are ``(x1, y1, x2, y2)`` in pixels, float, with x2 >= x1 and y2 >= y1; width is ``x2 - x1`` (no "+1").
"""

from __future__ import annotations

import math

import torch

from ..errors import ShapeError

# Faster R-CNN clamps predicted log-scale changes so exp() cannot overflow: a box may grow at most 1000/16 times.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)

# Elements one chunk of RoI work may gather (per corner or window), about 64 MB of float32: big enough that the
# chunks are few, small enough that a thousand proposals on a large feature map do not exhaust memory.
CHUNK_ELEMENTS = 1 << 24


def check_boxes(boxes: torch.Tensor, name: str = "boxes") -> torch.Tensor:
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ShapeError(f"{name} must be an (N, 4) tensor of (x1, y1, x2, y2), got shape {tuple(boxes.shape)}.")
    return boxes


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """The area of each (x1, y1, x2, y2) box, shape (N,)."""
    boxes = check_boxes(boxes)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Intersection over union of every pair, shape (N, M). Two boxes of zero area give NaN, as torchvision's."""
    check_boxes(boxes1, "boxes1"), check_boxes(boxes2, "boxes2")
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    overlap = (bottom_right - top_left).clamp(min=0)
    inter = overlap[..., 0] * overlap[..., 1]
    return inter / (box_area(boxes1)[:, None] + box_area(boxes2)[None, :] - inter)


def _centre_size(boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * widths, boxes[..., 1] + 0.5 * heights, widths, heights


def encode_boxes(reference: torch.Tensor, targets: torch.Tensor,
                 weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)) -> torch.Tensor:
    """The regression targets (dx, dy, dw, dh) that turn each ``reference`` box (an anchor or a proposal) into
    its matched ``targets`` box (Faster R-CNN eq. 2): dx = wx (x - xa) / wa, dw = ww log(w / wa); the weights
    scale the targets to unit-ish variance (the second stage uses (10, 10, 5, 5))."""
    check_boxes(reference, "reference"), check_boxes(targets, "targets")
    if reference.shape != targets.shape:
        raise ShapeError(f"reference {tuple(reference.shape)} and targets {tuple(targets.shape)} must pair up "
                         "one to one.")
    wx, wy, ww, wh = weights
    ref_x, ref_y, ref_w, ref_h = _centre_size(reference)
    x, y, w, h = _centre_size(targets)
    return torch.stack([wx * (x - ref_x) / ref_w, wy * (y - ref_y) / ref_h,
                        ww * torch.log(w / ref_w), wh * torch.log(h / ref_h)], dim=1)


def decode_boxes(deltas: torch.Tensor, reference: torch.Tensor,
                 weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
                 scale_clamp: float = DEFAULT_SCALE_CLAMP) -> torch.Tensor:
    """The inverse of :func:`encode_boxes`: boxes from deltas. ``deltas`` is (N, 4) or (N, 4 * K) (one set per
    class, as the second stage predicts); the result has the same shape. dw and dh are clamped at
    ``scale_clamp`` so an untrained head cannot produce infinite boxes."""
    check_boxes(reference, "reference")
    if deltas.ndim != 2 or deltas.shape[1] % 4 or deltas.shape[0] != reference.shape[0]:
        raise ShapeError(f"deltas must be (N, 4*K) with N = {reference.shape[0]} reference boxes, got "
                         f"{tuple(deltas.shape)}.")
    wx, wy, ww, wh = weights
    per_class = deltas.reshape(deltas.shape[0], deltas.shape[1] // 4, 4)  # -1 is ambiguous with no boxes
    ref_x, ref_y, ref_w, ref_h = (t[:, None] for t in _centre_size(reference.to(deltas.dtype)))
    x = per_class[..., 0] / wx * ref_w + ref_x
    y = per_class[..., 1] / wy * ref_h + ref_y
    w = torch.exp((per_class[..., 2] / ww).clamp(max=scale_clamp)) * ref_w
    h = torch.exp((per_class[..., 3] / wh).clamp(max=scale_clamp)) * ref_h
    return torch.stack([x - 0.5 * w, y - 0.5 * h, x + 0.5 * w, y + 0.5 * h], dim=2).reshape(deltas.shape)


def clip_boxes(boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Boxes clipped to an image of (height, width)."""
    height, width = image_size
    x = boxes[..., 0::2].clamp(0, width)
    y = boxes[..., 1::2].clamp(0, height)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


# ------------------------------------------------------------------------------------------------------- NMS
NMS_BLOCK = 128  # the fastest of 32-2048 for 2,000 proposals on one CPU thread


def _greedy_keep(overlaps: torch.Tensor) -> torch.Tensor:
    """Greedy suppression inside one block, boxes in descending score order: ``overlaps[j, i]`` says box j
    would suppress box i. Box i is kept when no kept box before it suppresses it. That recurrence has exactly one
    solution, and iterating it from "keep all" reaches it: after k rounds the first k boxes are settled, and in
    practice the longest chain of suppressions is a handful of boxes, so a few rounds of one matrix product
    replace a loop over every box."""
    earlier = torch.triu(overlaps, diagonal=1)  # only a box ranked before i can suppress i
    keep = torch.ones(len(overlaps), dtype=torch.bool, device=overlaps.device)
    for _ in range(len(overlaps)):
        suppressed = (earlier & keep[:, None]).any(0)
        updated = ~suppressed
        if torch.equal(updated, keep):
            break
        keep = updated
    return keep


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Non-maximum suppression: the indices of the boxes kept, highest score first. A box is dropped when a
    higher-scoring kept box overlaps it with IoU > ``iou_threshold`` (torchvision's rule). Boxes are handled in
    blocks of NMS_BLOCK in score order, each first suppressed by the boxes kept from earlier blocks and then
    among itself, so memory stays N x NMS_BLOCK however many proposals there are."""
    check_boxes(boxes)
    if scores.shape != boxes.shape[:1]:
        raise ShapeError(f"scores must be ({len(boxes)},), one per box, got {tuple(scores.shape)}.")
    order = torch.sort(scores, descending=True, stable=True).indices
    ordered = boxes[order].detach()
    kept = []
    for start in range(0, len(order), NMS_BLOCK):
        block = ordered[start:start + NMS_BLOCK]
        alive = torch.ones(len(block), dtype=torch.bool, device=boxes.device)
        if kept:
            alive = ~(box_iou(ordered[torch.cat(kept)], block) > iou_threshold).any(0)
        survivors = torch.nonzero(alive).flatten()
        keep = _greedy_keep(box_iou(block[survivors], block[survivors]) > iou_threshold)
        kept.append(start + survivors[keep])
    return order[torch.cat(kept)] if kept else order[:0]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS within each group (class, or image) separately, in one call: each group's boxes are moved by an
    offset larger than every box so that boxes of different groups never overlap."""
    check_boxes(boxes)
    if groups.shape != boxes.shape[:1]:
        raise ShapeError(f"groups must be ({len(boxes)},), one per box, got {tuple(groups.shape)}.")
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    span = boxes.max() - boxes.min() + 1
    offsets = (groups.to(boxes.dtype) * span)[:, None]
    return nms(boxes + offsets, scores, iou_threshold)


def keep_detections(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor | None, min_size: float,
                    iou_threshold: float, top_k: int) -> torch.Tensor:
    """The last step of every detector here, on one image's (already clipped) boxes: boxes narrower or
    shorter than ``min_size`` dropped, NMS within each group (each class; ``None``: all one group, as for
    region proposals), the best ``top_k`` kept. Returns indices into ``boxes``, highest score first."""
    sizes = boxes[:, 2:] - boxes[:, :2]
    big = torch.nonzero((sizes >= min_size).all(1)).flatten()
    if groups is None:
        kept = nms(boxes[big], scores[big], iou_threshold)
    else:
        kept = batched_nms(boxes[big], scores[big], groups[big], iou_threshold)
    return big[kept[:top_k]]


# --------------------------------------------------------------------------------------------------- anchors
def anchor_grid(feature_size: tuple[int, int], stride: int | tuple[int, int], sizes=(32, 64, 128),
                aspect_ratios=(0.5, 1.0, 2.0), dtype=torch.float32, device=None) -> torch.Tensor:
    """The anchors of one feature map: at each cell (row-major) every aspect ratio (height / width) times every
    size (the square root of the area), ratio-major, as torchvision's AnchorGenerator lays them out; shape
    (H * W * A, 4). The anchors of cell (i, j) are centred on (j * stride, i * stride); their widths and
    heights are rounded to whole pixels, as torchvision's are."""
    stride_y, stride_x = (stride, stride) if isinstance(stride, int) else stride
    sizes = torch.as_tensor(sizes, dtype=dtype, device=device)
    ratios = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)
    if (sizes <= 0).any() or (ratios <= 0).any():
        raise ShapeError(f"anchor sizes {sizes.tolist()} and aspect ratios {ratios.tolist()} must be positive.")
    height_scale = torch.sqrt(ratios)
    widths = (sizes[None, :] / height_scale[:, None]).reshape(-1)
    heights = (sizes[None, :] * height_scale[:, None]).reshape(-1)
    base = (torch.stack([-widths, -heights, widths, heights], dim=1) / 2).round()
    rows, cols = feature_size
    ys = torch.arange(rows, dtype=dtype, device=device) * stride_y
    xs = torch.arange(cols, dtype=dtype, device=device) * stride_x
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    shifts = torch.stack([grid_x, grid_y, grid_x, grid_y], dim=-1).reshape(-1, 1, 4)
    return (shifts + base[None]).reshape(-1, 4)


# ------------------------------------------------------------------------------------------------ RoI pooling
def _rois(boxes, features: torch.Tensor) -> torch.Tensor:
    """Boxes as one (K, 5) tensor of (batch index, x1, y1, x2, y2), from that or from a list of (L_i, 4) per image."""
    if isinstance(boxes, (list, tuple)):
        parts = [check_boxes(b, f"boxes[{i}]") for i, b in enumerate(boxes)]
        if len(parts) != features.shape[0]:
            raise ShapeError(f"{len(parts)} lists of boxes for a batch of {features.shape[0]} feature maps.")
        index = torch.cat([torch.full((len(b), 1), i, dtype=features.dtype, device=features.device)
                           for i, b in enumerate(parts)]) if parts else features.new_zeros(0, 1)
        return torch.cat([index, torch.cat(parts).to(features)], dim=1) if parts else features.new_zeros(0, 5)
    if boxes.ndim != 2 or boxes.shape[1] != 5:
        raise ShapeError(f"RoIs must be (K, 5) of (batch index, x1, y1, x2, y2) or a list of (L, 4) per image, "
                         f"got shape {tuple(boxes.shape)}.")
    return boxes.to(features)


def _pair(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)


def _check_features(features: torch.Tensor) -> None:
    if features.ndim != 4:
        raise ShapeError(f"features must be (N, C, H, W), got shape {tuple(features.shape)}.")


def _chunked(rois: torch.Tensor, per_roi: int, run) -> list[torch.Tensor]:
    step = max(1, CHUNK_ELEMENTS // max(per_roi, 1))
    return [run(rois[start:start + step]) for start in range(0, len(rois), step)]


def _bilinear_axis(coords: torch.Tensor, size: int):
    """For sample positions along one axis: the lower and upper pixel index, their weights, and whether the
    sample is inside [-1, size] at all (torchvision's bilinear_interpolate, outside of which a sample is 0)."""
    inside = (coords >= -1.0) & (coords <= size)
    coords = coords.clamp(min=0)
    low = coords.floor().long().clamp(max=size - 1)
    at_edge = low >= size - 1
    high = torch.where(at_edge, low, low + 1)
    coords = torch.where(at_edge, low.to(coords.dtype), coords)
    frac = coords - low
    return low, high, 1 - frac, frac, inside


def roi_align(features: torch.Tensor, boxes, output_size, spatial_scale: float = 1.0, sampling_ratio: int = -1,
              aligned: bool = False) -> torch.Tensor:
    """RoIAlign (He et al. 2017, "Mask R-CNN" §3): each box, scaled to the feature map by ``spatial_scale``, is cut
    into an output_size grid of bins, each the average of sampling_ratio x sampling_ratio bilinear samples
    (when <= 0, ceil(box size / bins) samples per bin, per box, as torchvision adapts). ``aligned=True`` shifts
    boxes by half a pixel so that pixel centres line up (Detectron2's fix). Result (K, C, out_h, out_w)."""
    _check_features(features)
    rois = _rois(boxes, features)
    out_h, out_w = _pair(output_size)
    offset = 0.5 if aligned else 0.0
    start_x, start_y = rois[:, 1] * spatial_scale - offset, rois[:, 2] * spatial_scale - offset
    roi_w = rois[:, 3] * spatial_scale - offset - start_x
    roi_h = rois[:, 4] * spatial_scale - offset - start_y
    if not aligned:  # the original RoIAlign forces each box to at least one pixel
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    if sampling_ratio > 0:
        grid_h = torch.full_like(roi_h, sampling_ratio).long()
        grid_w = torch.full_like(roi_w, sampling_ratio).long()
    else:
        # an empty box (possible with aligned=True) gets no samples and pools to 0, as in torchvision
        grid_h = torch.ceil(roi_h / out_h).long().clamp(min=0)
        grid_w = torch.ceil(roi_w / out_w).long().clamp(min=0)
    most_h = max(int(grid_h.max()), 1) if len(rois) else 1
    most_w = max(int(grid_w.max()), 1) if len(rois) else 1
    geometry = torch.stack([rois[:, 0], start_x, start_y, roi_w, roi_h, grid_h.to(rois), grid_w.to(rois)], dim=1)
    channels = features.shape[1]
    # Pixels as rows of (N * H * W, C): each bilinear corner of every sample is one row gather.
    table = features.permute(0, 2, 3, 1).reshape(-1, channels)
    per_roi = out_h * most_h * out_w * most_w * channels
    parts = _chunked(geometry, per_roi, lambda g: _align_chunk(table, features.shape, g, out_h, out_w,
                                                                 most_h, most_w))
    return torch.cat(parts) if parts else features.new_zeros(0, channels, out_h, out_w)


def _sample_positions(start, length, grid, bins: int, most: int):
    """Sample coordinates (K, bins * most) along one axis and which of them are real (a box's grid may be finer
    than ``most`` only up to its own ``grid``)."""
    step = torch.arange(most, device=start.device, dtype=start.dtype)
    bin_index = torch.arange(bins, device=start.device, dtype=start.dtype)
    bin_size = (length / bins)[:, None, None]
    grid_f = grid.to(start.dtype)[:, None, None]
    spacing = bin_size / grid_f.clamp(min=1)
    coords = start[:, None, None] + bin_index[None, :, None] * bin_size + (step[None, None, :] + 0.5) * spacing
    valid = step[None, None, :] < grid_f
    return coords.reshape(len(start), -1), valid.expand(len(start), bins, most).reshape(len(start), -1)


def _align_chunk(table, shape, geometry, out_h, out_w, most_h, most_w):
    _, channels, height, width = shape
    batch, start_x, start_y, roi_w, roi_h, grid_h, grid_w = geometry.unbind(1)
    ys, valid_y = _sample_positions(start_y, roi_h, grid_h, out_h, most_h)
    xs, valid_x = _sample_positions(start_x, roi_w, grid_w, out_w, most_w)
    y_low, y_high, y_w_low, y_w_high, y_in = _bilinear_axis(ys, height)
    x_low, x_high, x_w_low, x_w_high, x_in = _bilinear_axis(xs, width)
    base = batch.long()[:, None, None] * (height * width)
    total = 0
    for rows, row_weight in ((y_low, y_w_low), (y_high, y_w_high)):
        for cols, col_weight in ((x_low, x_w_low), (x_high, x_w_high)):
            index = base + rows[:, :, None] * width + cols[:, None, :]
            weight = row_weight[:, :, None] * col_weight[:, None, :]
            total = total + table[index.reshape(-1)].reshape(*index.shape, channels) * weight[..., None]
    mask = (valid_y & y_in)[:, :, None] & (valid_x & x_in)[:, None, :]
    total = total * mask[..., None].to(total.dtype)
    count = (grid_h * grid_w).clamp(min=1)
    k = len(geometry)
    pooled = total.reshape(k, out_h, most_h, out_w, most_w, channels).sum(dim=(2, 4))
    return (pooled / count[:, None, None, None]).permute(0, 3, 1, 2)


def _round_half_away(values: torch.Tensor) -> torch.Tensor:
    """C's round(): halves away from zero (torch.round rounds them to even)."""
    return torch.sign(values) * torch.floor(values.abs() + 0.5)


def _bin_edges(start, length, bins: int, size: int):
    """Integer [first, end) pixel ranges of each bin, (K, bins) each, clipped to the map (RoIPool's rule)."""
    bin_size = (length / bins)[:, None]
    index = torch.arange(bins, device=start.device, dtype=length.dtype)[None]
    first = (torch.floor(index * bin_size) + start[:, None]).clamp(0, size)
    end = (torch.ceil((index + 1) * bin_size) + start[:, None]).clamp(0, size)
    return first.long(), end.long()


def roi_pool(features: torch.Tensor, boxes, output_size, spatial_scale: float = 1.0) -> torch.Tensor:
    """RoI max pooling (Girshick 2015, "Fast R-CNN" §2.1): each box, rounded to whole feature cells, is cut into
    an output_size grid of bins and each bin takes the maximum of its cells; an empty bin gives 0. Result
    (K, C, out_h, out_w); the gradient reaches the maximum of each bin."""
    _check_features(features)
    rois = _rois(boxes, features)
    out_h, out_w = _pair(output_size)
    _, channels, height, width = features.shape
    corners = _round_half_away(rois[:, 1:] * spatial_scale)
    roi_w = (corners[:, 2] - corners[:, 0] + 1).clamp(min=1)
    roi_h = (corners[:, 3] - corners[:, 1] + 1).clamp(min=1)
    y_first, y_end = _bin_edges(corners[:, 1], roi_h, out_h, height)
    x_first, x_end = _bin_edges(corners[:, 0], roi_w, out_w, width)
    # The widest bin bounds the window every bin gathers; cells past a bin's end are masked out.
    most_h = int((y_end - y_first).max().clamp(min=1)) if len(rois) else 1
    most_w = int((x_end - x_first).max().clamp(min=1)) if len(rois) else 1
    table = features.permute(0, 2, 3, 1).reshape(-1, channels)
    geometry = torch.cat([rois[:, :1].long(), y_first, y_end, x_first, x_end], dim=1)
    per_roi = out_h * most_h * out_w * most_w * channels
    parts = _chunked(geometry, per_roi, lambda g: _pool_chunk(table, (height, width), g, out_h, out_w,
                                                               most_h, most_w))
    return torch.cat(parts) if parts else features.new_zeros(0, channels, out_h, out_w)


def _pool_chunk(table, map_size, geometry, out_h, out_w, most_h, most_w):
    height, width = map_size
    batch = geometry[:, 0]
    y_first, y_end = geometry[:, 1:1 + out_h], geometry[:, 1 + out_h:1 + 2 * out_h]
    x_first = geometry[:, 1 + 2 * out_h:1 + 2 * out_h + out_w]
    x_end = geometry[:, 1 + 2 * out_h + out_w:]
    # Window positions past a bin's end repeat the bin's last cell: a repeat cannot change a maximum, so no mask
    # is needed (and a repeated maximum's gradient, split among its copies, adds up again in the gather).
    rows = torch.minimum(y_first[:, :, None] + torch.arange(most_h, device=geometry.device),
                         (y_end - 1).clamp(min=0)[:, :, None]).clamp(max=height - 1)  # (K, out_h, most_h)
    cols = torch.minimum(x_first[:, :, None] + torch.arange(most_w, device=geometry.device),
                         (x_end - 1).clamp(min=0)[:, :, None]).clamp(max=width - 1)
    index = (batch[:, None, None, None, None] * (height * width) + rows[:, :, None, :, None] * width
             + cols[:, None, :, None, :])  # (K, out_h, out_w, most_h, most_w)
    values = table[index.reshape(-1)].reshape(*index.shape[:3], most_h * most_w, table.shape[1])
    pooled = values.amax(dim=3)  # (K, out_h, out_w, C)
    empty = (y_end <= y_first)[:, :, None] | (x_end <= x_first)[:, None, :]
    pooled = pooled.masked_fill(empty[..., None], 0.0)
    return pooled.permute(0, 3, 1, 2)


__all__ = ["DEFAULT_SCALE_CLAMP", "anchor_grid", "batched_nms", "box_area", "box_iou", "clip_boxes",
           "decode_boxes", "encode_boxes", "nms", "roi_align", "roi_pool"]
