"""RetinaNet (Lin, Goyal, Girshick, He, Dollár 2017, "Focal Loss for Dense Object Detection"): the one-stage
baseline beside :mod:`.faster_rcnn`, on the same backbone, anchors and box operators (:mod:`.ops`).

    model = create_model("retinanet", num_classes=11, in_channels=1, backbone="resnet20")
    losses = model(DetectionBatch(images, boxes, labels))     # training: focal loss and box regression
    detections = model.eval()(images)                         # one {boxes, scores, labels} dict per image

The network, as the paper lays it out:

  stage                      what it is                                             paper
  backbone                   a zoo classifier's feature stage (``features_only``)   §4 (the paper adds an FPN,
                             the same single stride-4 map Faster R-CNN reads        P3-P7; one level suffices
                                                                                     for 64-pixel canvases)
  anchors                    A = sizes x aspect ratios at every cell                §4, "Anchors"
  classification subnet      4 x (3x3 conv, ReLU), then a 3x3 conv to K x A         §4, Fig. 3 (c)
                             logits, one sigmoid per class (no background class)
  box regression subnet      the same layout, its own weights, 4 x A deltas         §4, Fig. 3 (d)
  anchor targets             IoU >= 0.5 object, < 0.4 background, between           §4, "Anchors"
                             ignored; each box's best anchor kept as its object
  loss                       sigmoid focal loss (alpha 0.25, gamma 2) over every    §3.1 eq. 5, §4 "Training"
                             anchor that is not ignored, plus smooth-L1 on the
                             deltas of the objects, both divided by the number
                             of object anchors
  initialisation             output convs N(0, 0.01), the classification bias       §4 "Initialization"
                             -log((1 - pi) / pi), pi = 0.01, so training starts
                             with every anchor at about 1 % object; the hidden
                             convs He's (the paper's N(0, 0.01) there learns too
                             slowly for a CPU budget: see Subnet)
  inference                  per class, scores above 0.05; the top 1,000 of an      §4 "Inference"
                             image decoded, NMS at 0.5 per class, the top 100 kept

Unlike Faster R-CNN there is no proposal stage and no sampling: every anchor is in the loss, and the focal loss's
(1 - p)^gamma factor keeps the tens of thousands of easy background anchors from drowning the few objects.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ShapeError
from ..models.registry import register_model
from .faster_rcnn import SMOOTH_L1_BETA, backbone_stage, check_num_classes, unpack_batch
from .ops import anchor_grid, clip_boxes, decode_boxes, encode_boxes, keep_detections
from .targets import IGNORED, match_anchors


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float | None = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """The focal loss of every element (eq. 5), unreduced: -alpha_t (1 - p_t)^gamma log(p_t), where p_t is the
    sigmoid probability of the true outcome and alpha_t is ``alpha`` for objects (target 1) and ``1 - alpha``
    for background. gamma = 0 with alpha = None is binary cross-entropy. ``targets`` are 0 or 1, ``logits``'s
    shape."""
    if logits.shape != targets.shape:
        raise ShapeError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must have one shape.")
    probability = torch.sigmoid(logits)
    # log(p_t) from the logits (binary_cross_entropy_with_logits), which stays finite where p_t underflows
    cross_entropy = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_true = probability * targets + (1 - probability) * (1 - targets)
    loss = cross_entropy * (1 - p_true) ** gamma
    if alpha is not None:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss


class Subnet(nn.Module):
    """One of the two heads of Fig. 3: ``depth`` 3x3 convs with ReLU, keeping the channels, then a 3x3 conv to
    ``outputs_per_anchor`` values for each of ``num_anchors`` anchors per cell."""

    def __init__(self, channels: int, num_anchors: int, outputs_per_anchor: int, depth: int = 4,
                 prior_probability: float | None = None):
        super().__init__()
        self.outputs_per_anchor = outputs_per_anchor
        self.body = nn.Sequential(*(layer for _ in range(depth)
                                    for layer in (nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())))
        self.out = nn.Conv2d(channels, num_anchors * outputs_per_anchor, 3, padding=1)
        for layer in self.body.children():
            if isinstance(layer, nn.Conv2d):
                # He initialisation, not the paper's N(0, 0.01): through four layers of 576 inputs that shrinks the
                # features about 6,000 times, which a 90k-iteration schedule outgrows and a 15-minute one does not
                # (overfitting 16 canvases, 40 SGD steps at 0.01: focal loss 1.13 -> 1.12 with it, -> 0.05 with He's)
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)
        nn.init.normal_(self.out.weight, std=0.01)  # §4 "Initialization": N(0, 0.01), zero bias...
        nn.init.zeros_(self.out.bias)
        if prior_probability is not None:  # ...but the classifier's, which start every anchor at the prior
            nn.init.constant_(self.out.bias, -math.log((1 - prior_probability) / prior_probability))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, H*W*A, outputs_per_anchor), in anchor_grid's order (cell-major, anchor-minor)."""
        values = self.out(self.body(features))
        return values.permute(0, 2, 3, 1).reshape(len(features), -1, self.outputs_per_anchor)


class RetinaNet(nn.Module):
    """Backbone + box subnet + classification subnet over dense anchors. ``num_classes`` counts the background
    (class 0), as :class:`~.faster_rcnn.FasterRCNN`'s does, so the two share data, task and labels; the network
    itself has one sigmoid per object class. In training mode with a :class:`DetectionBatch` the forward returns
    the losses ``focal`` and ``box``; otherwise one dict of ``boxes`` (x1, y1, x2, y2 pixels), ``scores`` and
    ``labels`` per image, highest score first."""

    def __init__(self, backbone: nn.Module, num_classes: int, anchor_sizes=(12, 20, 32),
                 aspect_ratios=(1.0, 2.0, 3.0), head_depth: int = 4, prior_probability: float = 0.01,
                 focal_alpha: float = 0.25, focal_gamma: float = 2.0, positive_iou: float = 0.5,
                 negative_iou: float = 0.4, score_threshold: float = 0.05, candidates_per_image: int = 1000,
                 nms_iou: float = 0.5, detections_per_image: int = 100, min_box_size: float = 1.0):
        super().__init__()
        check_num_classes(num_classes)
        if not 0 < prior_probability < 1:
            raise ConfigError(f"prior_probability={prior_probability}: the initial object probability must be in "
                              "(0, 1); the paper uses 0.01.")
        self.backbone = backbone
        self.stride = int(backbone.feature_info.reduction()[-1])
        channels = int(backbone.feature_info.channels()[-1])
        self.num_classes = num_classes
        self.anchor_sizes, self.aspect_ratios = tuple(anchor_sizes), tuple(aspect_ratios)
        anchors = len(self.anchor_sizes) * len(self.aspect_ratios)
        # the box subnet first: the generic stages (transfer) call the last child the classifier
        self.box_subnet = Subnet(channels, anchors, 4, head_depth)
        self.class_subnet = Subnet(channels, anchors, num_classes - 1, head_depth, prior_probability)
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.positive_iou, self.negative_iou = positive_iou, negative_iou
        self.score_threshold, self.candidates_per_image = score_threshold, candidates_per_image
        self.nms_iou, self.detections_per_image, self.min_box_size = nms_iou, detections_per_image, min_box_size

    def forward(self, batch):
        images, boxes, labels = unpack_batch(batch)
        features = self.backbone(images)[-1]
        logits, deltas = self.class_subnet(features), self.box_subnet(features)
        if features.is_meta:  # shapes only (the architecture calculator): the raw outputs of both subnets
            return logits, deltas
        anchors = anchor_grid(tuple(features.shape[-2:]), self.stride, self.anchor_sizes, self.aspect_ratios,
                              dtype=features.dtype, device=features.device)
        if self.training and boxes is not None:
            return self.loss(anchors, logits, deltas, boxes, labels)
        return self.postprocess(anchors, logits, deltas, tuple(images.shape[-2:]))

    # ------------------------------------------------------------------------------------------------ losses
    def targets(self, anchors: torch.Tensor, gt_boxes: list[torch.Tensor], gt_labels: list[torch.Tensor]):
        """Per anchor of each image: one-hot class targets (N, A, K), -1 where ignored, and box targets (N, A, 4)
        (zero but for objects). An anchor is an object at IoU >= positive_iou with some box, or when it is a
        box's best anchor; background below negative_iou; ignored between."""
        classes, deltas = [], []
        for boxes, labels in zip(gt_boxes, gt_labels):
            boxes = boxes.to(anchors)
            matches = match_anchors(anchors, boxes, self.positive_iou, self.negative_iou)
            is_object = matches >= 0
            safe = matches.clamp(min=0)
            one_hot = anchors.new_zeros(len(anchors), self.num_classes)
            if len(boxes):
                one_hot[is_object, labels.to(matches.device)[safe[is_object]]] = 1.0
            one_hot = one_hot[:, 1:]  # the background is no column: it is every sigmoid at 0
            one_hot[matches == IGNORED] = -1.0  # between the thresholds: in no loss
            classes.append(one_hot)
            matched = boxes[safe] if len(boxes) else anchors
            deltas.append(encode_boxes(anchors, matched) * is_object[:, None])
        return torch.stack(classes), torch.stack(deltas)

    def loss(self, anchors, logits, deltas, gt_boxes, gt_labels) -> dict[str, torch.Tensor]:
        """§4 "Training": the focal loss summed over every anchor not ignored, smooth-L1 summed over the deltas of
        object anchors, each divided by the batch's number of object anchors (at least one)."""
        classes, targets = self.targets(anchors, gt_boxes, gt_labels)
        counted = (classes >= 0).all(-1)
        is_object = (classes > 0).any(-1)
        normaliser = is_object.sum().clamp(min=1)
        focal = sigmoid_focal_loss(logits[counted], classes[counted], self.focal_alpha, self.focal_gamma).sum()
        box = F.smooth_l1_loss(deltas[is_object], targets[is_object], beta=SMOOTH_L1_BETA, reduction="sum")
        return {"focal": focal / normaliser, "box": box / normaliser}

    # -------------------------------------------------------------------------------------------- inference
    def postprocess(self, anchors, logits, deltas, image_size) -> list[dict[str, torch.Tensor]]:
        """Detections per image (§4 "Inference"): every (anchor, object class) pair whose probability passes
        ``score_threshold``, the best ``candidates_per_image`` of them decoded and clipped, NMS per class, the best
        ``detections_per_image`` kept, highest score first."""
        results = []
        for scores, image_deltas in zip(torch.sigmoid(logits), deltas):
            flat = scores.flatten()
            passing = torch.nonzero(flat > self.score_threshold).flatten()
            top = flat[passing].topk(min(self.candidates_per_image, len(passing)))
            chosen = passing[top.indices]
            anchor, column = chosen // scores.shape[1], chosen % scores.shape[1]
            boxes = clip_boxes(decode_boxes(image_deltas[anchor], anchors[anchor]), image_size)
            labels = column + 1
            own = keep_detections(boxes, top.values, labels, self.min_box_size, self.nms_iou,
                                  self.detections_per_image)
            results.append({"boxes": boxes[own], "scores": top.values[own], "labels": labels[own]})
        return results


@register_model(input_size=(1, 64, 64), num_classes=11, family="retinanet", task="detection",
                paper="Lin, Goyal, Girshick, He, Dollár 2017, RetinaNet (focal loss)")
def retinanet(num_classes: int = 11, in_channels: int = 1, backbone: str = "resnet20", feature_stage: int = -1,
              anchor_sizes=(12, 20, 32), aspect_ratios=(1.0, 2.0, 3.0), **options) -> RetinaNet:
    """RetinaNet on a zoo backbone's feature stage ``feature_stage`` (the last by default), with the anchors of
    :func:`~.faster_rcnn.faster_rcnn` so that the two detectors differ only in their heads and losses.
    ``options`` go to :class:`RetinaNet`."""
    return RetinaNet(backbone_stage(backbone, in_channels, feature_stage), num_classes, anchor_sizes, aspect_ratios,
                     **options)


__all__ = ["RetinaNet", "Subnet", "retinanet", "sigmoid_focal_loss"]
