"""The RPN's anchor labels and sampling against the paper's rules written as a loop over anchors and boxes."""

from __future__ import annotations

import pytest
import torch
from test_detect_ops import random_boxes, slow_iou

from cnnkit.detect import ops
from cnnkit.detect.targets import IGNORED, NEGATIVE, match_anchors, rpn_targets, sample_anchors
from cnnkit.errors import ShapeError


def slow_match(anchors, gt_boxes, high=0.7, low=0.3):
    iou = [[slow_iou(a, g) for g in gt_boxes.tolist()] for a in anchors.tolist()]
    matches = []
    for row in iou:
        best = max(range(len(row)), key=lambda g: (row[g], -g))
        matches.append(best if row[best] >= high else NEGATIVE if row[best] < low else IGNORED)
    for g in range(len(gt_boxes)):  # rule (i): each box's best anchors, ties included, take their own best box
        top = max(row[g] for row in iou)
        for a, row in enumerate(iou):
            if top > 0 and row[g] == top:
                matches[a] = max(range(len(row)), key=lambda k: (row[k], -k))
    return matches


def test_matching_follows_the_papers_rules():
    g = torch.Generator().manual_seed(0)
    anchors = ops.anchor_grid((6, 6), 8, sizes=(12, 24), aspect_ratios=(0.5, 1.0, 2.0)).double()
    gt = random_boxes(5, g, extent=40, min_size=6, max_size=30)
    matches = match_anchors(anchors, gt)
    assert matches.tolist() == slow_match(anchors, gt)
    iou = ops.box_iou(gt, anchors)
    favourites = iou == iou.max(1, keepdim=True).values
    assert (matches[favourites.any(0)] >= 0).all()  # every box's best anchor is positive (for its own best box,
    # as in the authors' code: two boxes may share a favourite)
    assert (matches == IGNORED).any() and (matches == NEGATIVE).any()
    strict = match_anchors(anchors, gt, best_for_each_box=False)
    assert ((strict >= 0) <= (matches >= 0)).all()
    assert match_anchors(anchors, gt[:0]).eq(NEGATIVE).all()


def test_sampling_is_balanced_random_and_reproducible():
    matches = torch.full((1000,), NEGATIVE)
    matches[:40] = 0
    matches[40:100] = IGNORED
    positive, negative = sample_anchors(matches, 256, 0.5, torch.Generator().manual_seed(1))
    assert int(positive.sum()) == 40 and int(negative.sum()) == 216  # too few positives: negatives fill up
    assert (matches[positive] >= 0).all() and (matches[negative] == NEGATIVE).all() and not (positive & negative).any()
    matches[:300] = 1
    positive, negative = sample_anchors(matches, 256, 0.25, torch.Generator().manual_seed(1))
    assert int(positive.sum()) == 64 and int(negative.sum()) == 192
    again = sample_anchors(matches, 256, 0.25, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], positive) and torch.equal(again[1], negative)
    other = sample_anchors(matches, 256, 0.25, torch.Generator().manual_seed(2))
    assert not torch.equal(other[0], positive)
    counts = torch.zeros(1000)
    for seed in range(200):  # uniform: every positive anchor drawn about 64/300 of the time
        counts += sample_anchors(matches, 256, 0.25, torch.Generator().manual_seed(seed))[0]
    assert counts[:300].min() > 0.1 * 200 and counts[:300].max() < 0.35 * 200


def test_rpn_targets_label_encode_and_leave_out_border_anchors():
    g = torch.Generator().manual_seed(3)
    anchors = ops.anchor_grid((8, 8), 8, sizes=(16, 32), aspect_ratios=(1.0,))
    gt = torch.tensor([[8.0, 8.0, 30.0, 28.0], [36.0, 30.0, 60.0, 62.0]])
    labels, deltas = rpn_targets(anchors, gt, batch_size=32, generator=g)
    positive = labels == 1
    assert positive.any() and int((labels >= 0).sum()) == 32
    matches = match_anchors(anchors, gt)
    torch.testing.assert_close(ops.decode_boxes(deltas[positive], anchors[positive]), gt[matches[positive]])
    assert (deltas[~positive] == 0).all()
    labels, _ = rpn_targets(anchors, gt, image_size=(64, 64), batch_size=64, generator=g)
    crossing = (anchors[:, :2] < 0).any(1) | (anchors[:, 2:] > 64).any(1)
    assert (labels[crossing] == -1).all() and (labels[~crossing] >= 0).any()
    labels, deltas = rpn_targets(anchors, gt[:0], batch_size=16, generator=g)
    assert int((labels == 0).sum()) == 16 and not (labels == 1).any()


def test_bad_thresholds_are_refused():
    with pytest.raises(ShapeError, match="negative_iou"):
        match_anchors(torch.zeros(1, 4), torch.zeros(1, 4), positive_iou=0.3, negative_iou=0.7)
    with pytest.raises(ShapeError, match="batch_size"):
        sample_anchors(torch.zeros(3, dtype=torch.long), 0)
