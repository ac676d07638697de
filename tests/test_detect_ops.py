"""cnnkit.detect.ops against slow, obvious references written from the papers and torchvision's C++ kernels
(one Python loop per box, per bin, per sample), on random inputs; and against torchvision.ops itself where it
is importable (a separate reference venv: the default install has no torchvision, those cases skip)."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from cnnkit.detect import ops
from cnnkit.errors import ShapeError

HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None
REFERENCES = ["slow", pytest.param("torchvision", marks=pytest.mark.skipif(not HAS_TORCHVISION,
                                                                             reason="torchvision not installed"))]


def random_boxes(count: int, generator: torch.Generator, extent: float = 60.0, min_size: float = 1.0,
                 max_size: float = 30.0) -> torch.Tensor:
    x1y1 = torch.rand(count, 2, generator=generator, dtype=torch.float64) * extent
    wh = min_size + torch.rand(count, 2, generator=generator, dtype=torch.float64) * (max_size - min_size)
    return torch.cat([x1y1, x1y1 + wh], dim=1)


# ------------------------------------------------------------------------------------------- slow references
def slow_iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def slow_nms(boxes, scores, threshold) -> list[int]:
    order = sorted(range(len(boxes)), key=lambda i: -float(scores[i]))
    kept = []
    for i in order:
        if all(slow_iou(boxes[i].tolist(), boxes[j].tolist()) <= threshold for j in kept):
            kept.append(i)
    return kept


def slow_bilinear(plane, y, x):
    height, width = len(plane), len(plane[0])
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    return (hy * hx * plane[y_low][x_low] + hy * lx * plane[y_low][x_high] + ly * hx * plane[y_high][x_low]
            + ly * lx * plane[y_high][x_high])


def slow_roi_align(features, rois, size, scale, sampling_ratio, aligned):
    out = torch.zeros(len(rois), features.shape[1], size, size, dtype=features.dtype)
    offset = 0.5 if aligned else 0.0
    for k, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        sx, sy = x1 * scale - offset, y1 * scale - offset
        rw, rh = x2 * scale - offset - sx, y2 * scale - offset - sy
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(rh / size)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(rw / size)
        count = max(gh * gw, 1)
        for c in range(features.shape[1]):
            plane = features[int(b), c].tolist()
            for ph in range(size):
                for pw in range(size):
                    total = 0.0
                    for iy in range(gh):
                        y = sy + ph * rh / size + (iy + 0.5) * rh / size / gh
                        for ix in range(gw):
                            x = sx + pw * rw / size + (ix + 0.5) * rw / size / gw
                            total += slow_bilinear(plane, y, x)
                    out[k, c, ph, pw] = total / count
    return out


def c_round(value: float) -> int:
    return int(math.floor(abs(value) + 0.5)) * (1 if value >= 0 else -1)


def slow_roi_pool(features, rois, size, scale):
    _, channels, height, width = features.shape
    out = torch.zeros(len(rois), channels, size, size, dtype=features.dtype)
    for k, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        sx, sy, ex, ey = (c_round(v * scale) for v in (x1, y1, x2, y2))
        bin_h, bin_w = max(ey - sy + 1, 1) / size, max(ex - sx + 1, 1) / size
        for ph in range(size):
            h0 = min(max(math.floor(ph * bin_h) + sy, 0), height)
            h1 = min(max(math.ceil((ph + 1) * bin_h) + sy, 0), height)
            for pw in range(size):
                w0 = min(max(math.floor(pw * bin_w) + sx, 0), width)
                w1 = min(max(math.ceil((pw + 1) * bin_w) + sx, 0), width)
                if h1 > h0 and w1 > w0:
                    out[k, :, ph, pw] = features[int(b), :, h0:h1, w0:w1].amax(dim=(1, 2))
    return out


def reference(name: str, op: str):
    if name == "torchvision":
        import torchvision.ops as tv

        return {"nms": lambda b, s, t: tv.nms(b, s, t).tolist(),
                "roi_align": lambda f, r, n, s, g, a: tv.roi_align(f, r, n, s, g, a),
                "roi_pool": lambda f, r, n, s: tv.roi_pool(f, r, n, s),
                "iou": lambda a, b: tv.box_iou(a, b)}[op]
    return {"nms": slow_nms, "roi_align": slow_roi_align, "roi_pool": slow_roi_pool,
            "iou": lambda a, b: torch.tensor([[slow_iou(x, y) for y in b.tolist()] for x in a.tolist()],
                                             dtype=a.dtype)}[op]


# --------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("ref", REFERENCES)
def test_iou_and_area_match_the_reference(ref):
    g = torch.Generator().manual_seed(1)
    a, b = random_boxes(13, g), random_boxes(7, g)
    torch.testing.assert_close(ops.box_iou(a, b), reference(ref, "iou")(a, b))
    torch.testing.assert_close(ops.box_area(a), (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))
    assert ops.box_iou(a, a).diagonal().allclose(torch.ones(13, dtype=a.dtype))
    assert (ops.box_iou(a, b) >= 0).all() and (ops.box_iou(a, b) <= 1).all()


def test_encoding_round_trips_and_matches_the_formula():
    g = torch.Generator().manual_seed(2)
    anchors, targets = random_boxes(50, g), random_boxes(50, g)
    weights = (10.0, 10.0, 5.0, 5.0)
    deltas = ops.encode_boxes(anchors, targets, weights)
    for (ax1, ay1, ax2, ay2), (tx1, ty1, tx2, ty2), d in zip(anchors.tolist(), targets.tolist(), deltas.tolist()):
        aw, ah, tw, th = ax2 - ax1, ay2 - ay1, tx2 - tx1, ty2 - ty1
        expected = [10 * ((tx1 + tw / 2) - (ax1 + aw / 2)) / aw, 10 * ((ty1 + th / 2) - (ay1 + ah / 2)) / ah,
                    5 * math.log(tw / aw), 5 * math.log(th / ah)]
        assert d == pytest.approx(expected, rel=1e-9, abs=1e-9)
    torch.testing.assert_close(ops.decode_boxes(deltas, anchors, weights), targets)
    # several classes' deltas at once decode each against the same reference
    two = ops.decode_boxes(torch.cat([deltas, torch.zeros_like(deltas)], 1), anchors, weights)
    torch.testing.assert_close(two[:, :4], targets)
    torch.testing.assert_close(two[:, 4:], anchors)


def test_decoding_clamps_the_growth_of_wild_deltas():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    boxes = ops.decode_boxes(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), anchors)
    assert torch.isfinite(boxes).all()
    assert float(boxes[0, 2] - boxes[0, 0]) == pytest.approx(10 * 1000 / 16)


@pytest.mark.parametrize("ref", REFERENCES)
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_keeps_what_greedy_suppression_keeps(ref, threshold):
    g = torch.Generator().manual_seed(3)
    boxes = random_boxes(300, g, extent=80)  # dense, so chains of suppression are long
    scores = torch.rand(300, generator=g, dtype=torch.float64)
    assert ops.nms(boxes, scores, threshold).tolist() == reference(ref, "nms")(boxes, scores, threshold)


def test_nms_across_blocks_matches_one_block(monkeypatch):
    g = torch.Generator().manual_seed(4)
    boxes, scores = random_boxes(200, g, extent=70), torch.rand(200, generator=g, dtype=torch.float64)
    whole = ops.nms(boxes, scores, 0.4).tolist()
    monkeypatch.setattr(ops, "NMS_BLOCK", 16)
    assert ops.nms(boxes, scores, 0.4).tolist() == whole == slow_nms(boxes, scores, 0.4)
    assert ops.nms(boxes[:0], scores[:0], 0.5).tolist() == []


def test_batched_nms_suppresses_only_within_a_group():
    g = torch.Generator().manual_seed(5)
    boxes, scores = random_boxes(120, g, extent=50), torch.rand(120, generator=g, dtype=torch.float64)
    groups = torch.randint(0, 3, (120,), generator=g)
    kept = set(ops.batched_nms(boxes, scores, groups, 0.5).tolist())
    expected = set()
    for group in range(3):
        members = torch.nonzero(groups == group).flatten()
        expected |= {int(members[i]) for i in slow_nms(boxes[members], scores[members], 0.5)}
    assert kept == expected
    # two identical boxes of different classes both survive
    twin = torch.tensor([[0.0, 0.0, 5.0, 5.0]] * 2)
    assert sorted(ops.batched_nms(twin, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), 0.5).tolist()) == [0, 1]
    assert ops.nms(twin, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0]



def test_keep_detections_drops_tiny_boxes_suppresses_within_a_class_and_keeps_the_best():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0],   # 0: best of class 1
                          [1.0, 1.0, 10.0, 10.0],   # 1: overlaps 0 (IoU 0.81), same class: suppressed
                          [1.0, 1.0, 10.0, 10.0],   # 2: the same box in class 2: kept
                          [20.0, 20.0, 20.5, 30.0],  # 3: 0.5 px wide: under min_size, dropped before NMS
                          [30.0, 30.0, 40.0, 40.0],  # 4: alone, lowest score
                          [50.0, 50.0, 60.0, 60.0]])  # 5: alone
    scores = torch.tensor([0.9, 0.8, 0.7, 0.99, 0.1, 0.5])
    classes = torch.tensor([1, 1, 2, 1, 1, 2])
    kept = ops.keep_detections(boxes, scores, classes, 1.0, 0.5, top_k=10)
    assert kept.tolist() == [0, 2, 5, 4]  # indices into the input, highest score first
    assert ops.keep_detections(boxes, scores, classes, 1.0, 0.5, top_k=2).tolist() == [0, 2]
    # one group (region proposals): the class-2 twin of box 1 is suppressed by box 0 too
    assert ops.keep_detections(boxes, scores, None, 1.0, 0.5, top_k=10).tolist() == [0, 5, 4]
    assert ops.keep_detections(boxes[:0], scores[:0], classes[:0], 1.0, 0.5, top_k=10).tolist() == []

def test_anchor_grid_places_every_ratio_and_size_at_every_cell():
    sizes, ratios, stride = (16, 32), (0.5, 1.0, 2.0), 8
    anchors = ops.anchor_grid((3, 4), stride, sizes, ratios)
    assert anchors.shape == (3 * 4 * 6, 4)
    k = 0
    for row in range(3):
        for col in range(4):
            for ratio in ratios:
                for size in sizes:
                    w, h = size / math.sqrt(ratio), size * math.sqrt(ratio)
                    cx, cy = col * stride, row * stride
                    expected = [cx + round(-w / 2), cy + round(-h / 2), cx + round(w / 2), cy + round(h / 2)]
                    assert anchors[k].tolist() == pytest.approx(expected, abs=1e-4), (row, col, ratio, size)
                    k += 1
    shapes = (anchors[:, 3] - anchors[:, 1]) / (anchors[:, 2] - anchors[:, 0])
    assert shapes.reshape(12, 3, 2).mean(dim=(0, 2)).tolist() == pytest.approx(ratios, rel=0.05)


def _rois(generator, count, batch, extent, max_size=30.0):
    boxes = random_boxes(count, generator, extent=extent, min_size=0.5, max_size=max_size)
    index = torch.randint(0, batch, (count, 1), generator=generator).to(boxes.dtype)
    return torch.cat([index, boxes], dim=1)


@pytest.mark.parametrize("ref", REFERENCES)
@pytest.mark.parametrize("sampling_ratio,aligned,scale", [(2, True, 0.25), (-1, True, 0.5), (0, False, 0.25),
                                                          (3, False, 1.0)])
def test_roi_align_matches_the_reference(ref, sampling_ratio, aligned, scale):
    g = torch.Generator().manual_seed(6)
    features = torch.randn(2, 3, 12, 14, generator=g, dtype=torch.float64)
    rois = _rois(g, 9, 2, extent=14 / scale, max_size=12 / scale)  # some run past the map's edge
    got = ops.roi_align(features, rois, 5, scale, sampling_ratio, aligned)
    torch.testing.assert_close(got, reference(ref, "roi_align")(features, rois, 5, scale, sampling_ratio, aligned))


@pytest.mark.parametrize("ref", REFERENCES)
@pytest.mark.parametrize("scale", [1.0, 0.5, 0.25])
def test_roi_pool_matches_the_reference(ref, scale):
    g = torch.Generator().manual_seed(7)
    features = torch.randn(2, 3, 11, 13, generator=g, dtype=torch.float64)
    rois = _rois(g, 10, 2, extent=13 / scale, max_size=10 / scale)
    torch.testing.assert_close(ops.roi_pool(features, rois, 4, scale), reference(ref, "roi_pool")(features, rois, 4,
                                                                                                   scale))


def test_roi_ops_take_lists_of_boxes_chunk_the_work_and_pass_gradients(monkeypatch):
    g = torch.Generator().manual_seed(8)
    features = torch.randn(2, 4, 10, 10, generator=g, dtype=torch.float64, requires_grad=True)
    per_image = [random_boxes(3, g, extent=8), random_boxes(2, g, extent=8)]
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i), dtype=b.dtype), b], 1)
                      for i, b in enumerate(per_image)])
    whole = ops.roi_align(features, rois, 3, 1.0, 2, True)
    torch.testing.assert_close(ops.roi_align(features, per_image, 3, 1.0, 2, True), whole)
    monkeypatch.setattr(ops, "CHUNK_ELEMENTS", 1)  # one box per chunk
    torch.testing.assert_close(ops.roi_align(features, rois, 3, 1.0, 2, True), whole)
    torch.testing.assert_close(ops.roi_pool(features, rois, 3), slow_roi_pool(features.detach(), rois, 3, 1.0))
    small = torch.randn(1, 1, 6, 6, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f: ops.roi_align(f, [per_image[0] * 0.6], 2, 1.0, 2, True), (small,))
    pooled = ops.roi_pool(features, rois, 2)
    pooled.sum().backward()
    assert features.grad.abs().sum() > 0 and torch.isfinite(features.grad).all()


def test_bad_shapes_are_refused_with_the_expected_shape():
    with pytest.raises(ShapeError, match=r"\(N, 4\)"):
        ops.box_iou(torch.zeros(3, 5), torch.zeros(2, 4))
    with pytest.raises(ShapeError, match="one per box"):
        ops.nms(torch.zeros(3, 4), torch.zeros(2), 0.5)
    with pytest.raises(ShapeError, match=r"\(K, 5\)"):
        ops.roi_align(torch.zeros(1, 1, 4, 4), torch.zeros(2, 4), 2)
    with pytest.raises(ShapeError, match="2 lists of boxes for a batch of 1"):
        ops.roi_pool(torch.zeros(1, 1, 4, 4), [torch.zeros(1, 4), torch.zeros(1, 4)], 2)
    with pytest.raises(ShapeError, match="positive"):
        ops.anchor_grid((2, 2), 4, sizes=(0,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_every_operator_gives_the_same_on_cuda():
    g = torch.Generator().manual_seed(9)
    boxes, scores = random_boxes(400, g, extent=90), torch.rand(400, generator=g, dtype=torch.float64)
    groups = torch.randint(0, 4, (400,), generator=g)
    features = torch.randn(2, 3, 12, 14, generator=g, dtype=torch.float64)
    rois = _rois(g, 20, 2, extent=50, max_size=40)
    cuda = torch.device("cuda")
    assert ops.nms(boxes.to(cuda), scores.to(cuda), 0.5).tolist() == ops.nms(boxes, scores, 0.5).tolist()
    assert ops.batched_nms(boxes.to(cuda), scores.to(cuda), groups.to(cuda), 0.5).tolist() == \
        ops.batched_nms(boxes, scores, groups, 0.5).tolist()
    for ratio, aligned in ((2, True), (-1, False)):
        torch.testing.assert_close(ops.roi_align(features.to(cuda), rois.to(cuda), 3, 0.25, ratio, aligned).cpu(),
                                   ops.roi_align(features, rois, 3, 0.25, ratio, aligned))
    torch.testing.assert_close(ops.roi_pool(features.to(cuda), rois.to(cuda), 3, 0.25).cpu(),
                               ops.roi_pool(features, rois, 3, 0.25))
    torch.testing.assert_close(ops.anchor_grid((3, 4), 8, device=cuda).cpu(), ops.anchor_grid((3, 4), 8))
