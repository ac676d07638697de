"""Training targets of the region proposal network (Ren et al. 2015, "Faster R-CNN" §3.1.2): each anchor is
matched to a ground-truth box by IoU and given a label, and a balanced mini-batch of anchors is sampled.

    matches = match_anchors(anchors, gt_boxes)              # gt index, or NEGATIVE / IGNORED
    labels, deltas = rpn_targets(anchors, gt_boxes, generator=g)
    # labels: 1 object, 0 background, -1 left out of the loss; deltas: (A, 4) regression targets of positives

The paper's rules: an anchor is positive when its IoU with some ground-truth box is above 0.7, or when it is the
anchor (one of the anchors, on ties) with the highest IoU for some ground-truth box, so that every box gets an
anchor; negative when its IoU is below 0.3 for all boxes; anything between is left out. Each image contributes
256 anchors, up to half of them positive, negatives filling the rest. Everything is vectorised over anchors.
"""

from __future__ import annotations

import torch

from ..errors import ShapeError
from .ops import check_boxes, box_iou, encode_boxes

NEGATIVE = -1  # the anchor is background
IGNORED = -2  # between the thresholds (or across the image border): in no loss


def match_anchors(anchors: torch.Tensor, gt_boxes: torch.Tensor, positive_iou: float = 0.7,
                  negative_iou: float = 0.3, best_for_each_box: bool = True) -> torch.Tensor:
    """For each anchor (A,), the index of its ground-truth box, NEGATIVE or IGNORED. An anchor's box is the one it
    overlaps most; with ``best_for_each_box``, the anchors that overlap a box most (ties included, zero overlap
    excluded) are matched to their own best box even below ``positive_iou``, as the paper's rule (i) says."""
    check_boxes(anchors, "anchors"), check_boxes(gt_boxes, "gt_boxes")
    if not 0 <= negative_iou <= positive_iou <= 1:
        raise ShapeError(f"need 0 <= negative_iou ({negative_iou}) <= positive_iou ({positive_iou}) <= 1.")
    if len(gt_boxes) == 0:  # nothing to find: every anchor is background
        return torch.full((len(anchors),), NEGATIVE, dtype=torch.long, device=anchors.device)
    iou = box_iou(gt_boxes, anchors).nan_to_num(0.0)  # (G, A)
    best_iou, best_box = iou.max(dim=0)
    matches = torch.where(best_iou >= positive_iou, best_box,
                          torch.where(best_iou < negative_iou, NEGATIVE, IGNORED))
    if best_for_each_box:
        highest = iou.max(dim=1, keepdim=True).values  # (G, 1): each box's best overlap
        favourite = ((iou == highest) & (highest > 0)).any(dim=0)
        matches = torch.where(favourite, best_box, matches)
    return matches


def sample_anchors(matches: torch.Tensor, batch_size: int = 256, positive_fraction: float = 0.5,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two boolean masks (A,): the positives and the negatives of a mini-batch of at most ``batch_size`` anchors,
    at most ``positive_fraction`` of them positive (fewer when there are fewer), negatives filling the rest;
    each drawn uniformly at random (reproducibly with ``generator``)."""
    if batch_size < 1 or not 0 <= positive_fraction <= 1:
        raise ShapeError(f"batch_size {batch_size} must be positive and positive_fraction {positive_fraction} in "
                         "[0, 1].")
    positive, negative = matches >= 0, matches == NEGATIVE
    take_positive = min(int(positive.sum()), int(batch_size * positive_fraction))
    take_negative = min(int(negative.sum()), batch_size - take_positive)
    return _random_subset(positive, take_positive, generator), _random_subset(negative, take_negative, generator)


def _random_subset(mask: torch.Tensor, count: int, generator) -> torch.Tensor:
    """``count`` of the True entries of ``mask``, chosen uniformly: the ones with the smallest random keys."""
    keys = torch.rand(mask.shape, generator=generator, device=mask.device if generator is None else "cpu")
    keys = keys.to(mask.device).masked_fill(~mask, 2.0)  # never chosen: above every key
    chosen = torch.zeros_like(mask)
    chosen[keys.argsort()[:count]] = True
    return chosen & mask


def rpn_targets(anchors: torch.Tensor, gt_boxes: torch.Tensor, image_size: tuple[int, int] | None = None,
                positive_iou: float = 0.7, negative_iou: float = 0.3, batch_size: int = 256,
                positive_fraction: float = 0.5, weights=(1.0, 1.0, 1.0, 1.0),
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One image's RPN targets: labels (A,) float, 1 for a sampled positive, 0 for a sampled negative, -1 for
    an anchor out of the loss; and deltas (A, 4), the encoded matched box for positives (0 elsewhere). With
    ``image_size`` (height, width), anchors that cross the image border are left out, as the paper trains."""
    matches = match_anchors(anchors, gt_boxes, positive_iou, negative_iou)
    if image_size is not None:
        height, width = image_size
        inside = (anchors[:, 0] >= 0) & (anchors[:, 1] >= 0) & (anchors[:, 2] <= width) & (anchors[:, 3] <= height)
        matches = torch.where(inside, matches, IGNORED)
    positive, negative = sample_anchors(matches, batch_size, positive_fraction, generator)
    labels = torch.full((len(anchors),), -1.0, device=anchors.device)
    labels[positive], labels[negative] = 1.0, 0.0
    deltas = torch.zeros(len(anchors), 4, dtype=anchors.dtype, device=anchors.device)
    if positive.any():
        deltas[positive] = encode_boxes(anchors[positive], gt_boxes[matches[positive]].to(anchors.dtype), weights)
    return labels, deltas


__all__ = ["IGNORED", "NEGATIVE", "match_anchors", "rpn_targets", "sample_anchors"]
