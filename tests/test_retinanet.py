"""RetinaNet's own parts against the paper's formulas written out element by element: the focal loss (and its
reduction to binary cross-entropy), the prior-probability initialisation, the anchor targets and the inference
postprocessing. What it shares with Faster R-CNN (losses, overfit, eval format, resume, CLI) is tested, for both
detectors, in tests/test_faster_rcnn.py."""

from __future__ import annotations

import math

import pytest
import torch

from cnnkit import create_model
from cnnkit.detect import decode_boxes, sigmoid_focal_loss
from cnnkit.errors import ConfigError, ShapeError
from viz_support import single_thread  # noqa: F401

SIZE = 64


def build(**options):
    torch.manual_seed(0)
    return create_model("retinanet", num_classes=11, in_channels=1, **options)


def focal_by_formula(logit: float, target: float, alpha, gamma: float) -> float:
    """Eq. 5 for one element: FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t), p_t = p for an object, 1 - p else."""
    p = 1 / (1 + math.exp(-logit))
    p_true = p if target == 1 else 1 - p
    alpha_true = 1.0 if alpha is None else (alpha if target == 1 else 1 - alpha)
    return -alpha_true * (1 - p_true) ** gamma * math.log(p_true)


@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (0.5, 1.0), (None, 3.0), (0.25, 0.0)])
def test_the_focal_loss_is_equation_5_element_by_element(alpha, gamma):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 7, generator=generator, dtype=torch.float64) * 4
    targets = (torch.rand(6, 7, generator=generator) < 0.3).double()
    loss = sigmoid_focal_loss(logits, targets, alpha, gamma)
    expected = torch.tensor([[focal_by_formula(x, t, alpha, gamma) for x, t in zip(row, labels)]
                             for row, labels in zip(logits.tolist(), targets.tolist())], dtype=torch.float64)
    assert loss.shape == logits.shape
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)


def test_without_focusing_or_weighting_the_focal_loss_is_binary_cross_entropy():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(50, generator=generator, dtype=torch.float64) * 3
    targets = (torch.rand(50, generator=generator) < 0.5).double()
    p = torch.sigmoid(logits)
    cross_entropy = -(targets * torch.log(p) + (1 - targets) * torch.log(1 - p))
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, alpha=None, gamma=0.0), cross_entropy)
    # focusing shrinks the loss of well-classified examples far more than that of badly classified ones
    easy = sigmoid_focal_loss(torch.tensor([-5.0]), torch.tensor([0.0]), None, 2.0) / cross_entropy.new_tensor(
        [focal_by_formula(-5.0, 0, None, 0.0)])
    hard = sigmoid_focal_loss(torch.tensor([2.0]), torch.tensor([0.0]), None, 2.0) / cross_entropy.new_tensor(
        [focal_by_formula(2.0, 0, None, 0.0)])
    assert easy.item() < 1e-4 < 0.5 < hard.item()


def test_the_focal_loss_stays_finite_where_the_probability_underflows():
    loss = sigmoid_focal_loss(torch.tensor([-200.0, 200.0]), torch.tensor([1.0, 0.0]), 0.25, 2.0)
    # p_t = sigmoid(-200): log p_t is -200, (1 - p_t)^2 is 1, so the loss is alpha_t x 200
    torch.testing.assert_close(loss, torch.tensor([0.25 * 200, 0.75 * 200]))
    with pytest.raises(ShapeError, match="one shape"):
        sigmoid_focal_loss(torch.zeros(3), torch.zeros(4))


def test_the_prior_initialisation_starts_every_anchor_at_about_one_percent():
    model = build()
    with torch.no_grad():
        probabilities = torch.sigmoid(model.class_subnet(model.backbone(torch.randn(1, 1, SIZE, SIZE))[-1]))
    assert probabilities.shape == (1, 16 * 16 * 9, 10)  # stride 4: 16 x 16 cells, 9 anchors, 10 object classes
    # the bias is the prior's logit, and the N(0, 0.01) weights only spread the probabilities a little around it
    torch.testing.assert_close(model.class_subnet.out.bias, torch.full((90,), -math.log(0.99 / 0.01)))
    assert abs(probabilities.mean().item() - 0.01) < 2e-3 and abs(probabilities.median().item() - 0.01) < 1e-3
    assert (probabilities < 0.1).all()
    with pytest.raises(ConfigError, match="prior_probability"):
        build(prior_probability=1.0)


def test_anchor_targets_follow_the_iou_thresholds_and_decode_back_to_their_boxes():
    model = build()
    anchors = torch.tensor([[10.0, 10.0, 30.0, 30.0],  # the box itself: object
                            [12.0, 10.0, 32.0, 30.0],  # IoU 0.82: object
                            [16.0, 10.0, 36.0, 30.0],  # IoU 0.54: object
                            [19.0, 10.0, 39.0, 30.0],  # IoU 0.38: background
                            [17.0, 10.0, 37.0, 30.0],  # IoU 0.48: ignored
                            [40.0, 40.0, 60.0, 60.0]])  # no overlap: background
    boxes = [torch.tensor([[10.0, 10.0, 30.0, 30.0]]), torch.zeros(0, 4)]
    labels = [torch.tensor([7]), torch.zeros(0, dtype=torch.long)]
    classes, deltas = model.targets(anchors, boxes, labels)
    assert classes.shape == (2, 6, 10) and deltas.shape == (2, 6, 4)
    one_hot = torch.zeros(10)
    one_hot[6] = 1  # class 7 is column 6: the background has no column
    for anchor in range(3):
        assert torch.equal(classes[0, anchor], one_hot)
        torch.testing.assert_close(decode_boxes(deltas[0, anchor:anchor + 1], anchors[anchor:anchor + 1]), boxes[0])
    assert (classes[0, [3, 5]] == 0).all() and (classes[0, 4] == -1).all() and (deltas[0, 3:] == 0).all()
    assert (classes[1] == 0).all() and (deltas[1] == 0).all()  # an image without objects is all background


def test_the_loss_is_normalised_by_the_object_anchors_and_ignores_the_ignored():
    model = build()
    anchors = torch.tensor([[10.0, 10.0, 30.0, 30.0], [18.0, 10.0, 38.0, 30.0], [40.0, 40.0, 60.0, 60.0]])
    logits = torch.tensor([[[0.5] * 10, [3.0] * 10, [-1.0] * 10]])
    deltas = torch.zeros(1, 3, 4)
    losses = model.loss(anchors, logits, deltas, [torch.tensor([[11.0, 10.0, 31.0, 30.0]])], [torch.tensor([1])])
    expected = sum(focal_by_formula(0.5, float(c == 0), 0.25, 2.0) for c in range(10)) + 10 * focal_by_formula(
        -1.0, 0, 0.25, 2.0)  # one object anchor; the ignored anchor (IoU 0.48) counts nowhere
    assert losses["focal"].item() == pytest.approx(expected, rel=1e-5)
    assert losses["box"].item() > 0


def test_postprocessing_keeps_boxes_inside_the_image_sorted_by_score_one_label_per_class():
    model = build(detections_per_image=20)
    generator = torch.Generator().manual_seed(0)
    anchors = torch.rand(300, 2, generator=generator) * 70 - 3
    anchors = torch.cat([anchors, anchors + 5 + torch.rand(300, 2, generator=generator) * 30], 1)
    logits = torch.randn(2, 300, 10, generator=generator) * 3
    deltas = torch.randn(2, 300, 4, generator=generator) * 0.3
    found = model.postprocess(anchors, logits, deltas, (SIZE, SIZE))
    assert len(found) == 2
    for result in found:
        boxes, scores, labels = result["boxes"], result["scores"], result["labels"]
        assert 0 < len(boxes) <= 20 and boxes.shape == (len(scores), 4) and labels.shape == scores.shape
        assert (boxes >= 0).all() and (boxes <= SIZE).all() and (boxes[:, 2:] >= boxes[:, :2]).all()
        assert (scores[:-1] >= scores[1:]).all() and (scores > model.score_threshold).all()
        assert ((labels >= 1) & (labels <= 10)).all()
