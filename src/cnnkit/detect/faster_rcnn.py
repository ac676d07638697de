"""Faster R-CNN (Ren, He, Girshick, Sun 2015, "Faster R-CNN: Towards Real-Time Object Detection with Region
Proposal Networks"), in plain PyTorch on cnnkit's own box operators (:mod:`.ops`).

    model = create_model("faster_rcnn", num_classes=11, in_channels=1, backbone="resnet20")
    losses = model(DetectionBatch(images, boxes, labels))     # training: the four losses of the two stages
    detections = model.eval()(images)                         # one {boxes, scores, labels} dict per image

The network, as the paper lays it out:

  stage                      what it is                                             paper
  backbone                   a zoo classifier's feature stage (``features_only``)   §3, "shareable conv layers"
  RPN head                   3x3 conv, then 1x1 convs: objectness and 4 deltas      §3.1, Fig. 3
                             for each of A anchors (sizes x aspect ratios) per cell
  proposals                  decode, clip to the image, drop tiny boxes, top-k,     §3.1.2, §3.3
                             NMS at IoU 0.7, top-k again
  RoI features               RoIAlign (He et al. 2017) of each proposal, 7x7        §2 (RoI pooling in the paper)
  box head                   two fully connected layers, then class scores and      Fast R-CNN (Girshick 2015)
                             per-class box deltas
  loss                       RPN: BCE objectness + smooth-L1 on 256 sampled         eq. 1; §3.1.2
                             anchors; head: CE + smooth-L1 on sampled RoIs, a
                             quarter foreground (IoU >= 0.5), the rest background
  postprocessing             per-class score threshold, NMS per class, top-k        §3.3

Everything runs over the whole batch at once where the shapes allow (objectness, decoding, the RoIs of all
images in one RoIAlign call, one NMS over all classes of an image); target assignment, whose box counts differ
per image, and NMS (one image's boxes never overlap another's, so comparing them is wasted work) loop over the
images of a batch, never over boxes.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ShapeError
from ..models.registry import create_model, register_model
from .ops import anchor_grid, clip_boxes, decode_boxes, encode_boxes, keep_detections, roi_align
from .targets import match_anchors, rpn_targets, sample_anchors

# The second stage's deltas are scaled so their spread is about one (Fast R-CNN's target normalisation).
HEAD_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
# smooth-L1's switch from quadratic to linear: torchvision's 1/9 for both stages (the paper's sigma = 3 for the RPN)
SMOOTH_L1_BETA = 1.0 / 9


class DetectionBatch(NamedTuple):
    """Images with their variable-length targets: ``boxes[i]`` (n_i, 4) and ``labels[i]`` (n_i,) of image i."""

    images: torch.Tensor
    boxes: list[torch.Tensor]
    labels: list[torch.Tensor]


def unpack_batch(batch) -> tuple[torch.Tensor, list | None, list | None]:
    """(images, boxes, labels) of a :class:`DetectionBatch`, or (images, None, None) of bare images: what every
    detector's forward takes, in training and at inference."""
    images, boxes, labels = batch if isinstance(batch, DetectionBatch) else (batch, None, None)
    if images.ndim != 4:
        raise ShapeError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}.")
    return images, boxes, labels


def check_num_classes(num_classes: int) -> None:
    if num_classes < 2:
        raise ConfigError(f"num_classes={num_classes}: a detector needs the background (class 0) and at least "
                          "one object class.")


def backbone_stage(backbone: str, in_channels: int, feature_stage: int) -> nn.Module:
    """A zoo classifier's feature stage ``feature_stage`` as a detector's trunk (``features_only``)."""
    return create_model(backbone, in_channels=in_channels, features_only=True, out_indices=(feature_stage,))


class RPNHead(nn.Module):
    """The region proposal network's head (Fig. 3): a 3x3 conv slid over the map, then two sibling 1x1 convs,
    one objectness logit and four box deltas for each of the ``num_anchors`` anchors of a cell."""

    def __init__(self, in_channels: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.objectness = nn.Conv2d(in_channels, num_anchors, 1)
        self.deltas = nn.Conv2d(in_channels, 4 * num_anchors, 1)
        for layer in (self.conv, self.objectness, self.deltas):  # the paper's N(0, 0.01) initialisation
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Objectness (N, H*W*A) and deltas (N, H*W*A, 4), in anchor_grid's order (cell-major, anchor-minor)."""
        hidden = F.relu(self.conv(features))
        batch = features.shape[0]
        logits = self.objectness(hidden).permute(0, 2, 3, 1).reshape(batch, -1)
        deltas = self.deltas(hidden).permute(0, 2, 3, 1).reshape(batch, -1, 4)
        return logits, deltas


class BoxHead(nn.Module):
    """Fast R-CNN's head: two fully connected layers over the pooled RoI, then class scores (background is
    class 0) and class-specific box deltas."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 256):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.scores = nn.Linear(hidden, num_classes)
        self.deltas = nn.Linear(hidden, 4 * num_classes)
        nn.init.normal_(self.scores.weight, std=0.01)
        nn.init.normal_(self.deltas.weight, std=0.001)
        nn.init.zeros_(self.scores.bias), nn.init.zeros_(self.deltas.bias)

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = F.relu(self.fc2(F.relu(self.fc1(pooled.flatten(1)))))
        return self.scores(hidden), self.deltas(hidden)


class FasterRCNN(nn.Module):
    """Backbone + RPN + RoIAlign + box head. ``num_classes`` counts the background (class 0). In training mode
    with a :class:`DetectionBatch` the forward returns the four losses; otherwise it returns one dict of
    ``boxes`` (x1, y1, x2, y2 pixels), ``scores`` and ``labels`` per image, highest score first."""

    def __init__(self, backbone: nn.Module, num_classes: int, anchor_sizes=(12, 20, 32),
                 aspect_ratios=(1.0, 2.0, 3.0), roi_size: int = 7, sampling_ratio: int = 1, head_hidden: int = 256,
                 rpn_pre_nms: tuple[int, int] = (300, 300), rpn_post_nms: tuple[int, int] = (150, 50),
                 rpn_nms_iou: float = 0.7, rpn_batch: int = 256, rois_per_image: int = 32,
                 foreground_fraction: float = 0.25, score_threshold: float = 0.05, nms_iou: float = 0.5,
                 detections_per_image: int = 100, min_box_size: float = 1.0):
        super().__init__()
        check_num_classes(num_classes)
        self.backbone = backbone
        self.stride = int(backbone.feature_info.reduction()[-1])
        channels = int(backbone.feature_info.channels()[-1])
        self.num_classes = num_classes
        self.anchor_sizes, self.aspect_ratios = tuple(anchor_sizes), tuple(aspect_ratios)
        self.rpn = RPNHead(channels, len(self.anchor_sizes) * len(self.aspect_ratios))
        self.roi_size, self.sampling_ratio = roi_size, sampling_ratio
        self.head = BoxHead(channels * roi_size * roi_size, num_classes, head_hidden)
        self.rpn_pre_nms, self.rpn_post_nms, self.rpn_nms_iou = tuple(rpn_pre_nms), tuple(rpn_post_nms), rpn_nms_iou
        self.rpn_batch, self.rois_per_image, self.foreground_fraction = rpn_batch, rois_per_image, foreground_fraction
        self.score_threshold, self.nms_iou, self.detections_per_image = score_threshold, nms_iou, detections_per_image
        self.min_box_size = min_box_size

    # ------------------------------------------------------------------------------------------- the network
    def forward(self, batch):
        images, boxes, labels = unpack_batch(batch)
        image_size = tuple(images.shape[-2:])
        features = self.backbone(images)[-1]
        if features.is_meta:
            return self._shapes_only(features)
        anchors = anchor_grid(tuple(features.shape[-2:]), self.stride, self.anchor_sizes, self.aspect_ratios,
                              dtype=features.dtype, device=features.device)
        objectness, rpn_deltas = self.rpn(features)
        training = self.training and boxes is not None
        proposals = self.propose(anchors, objectness.detach(), rpn_deltas.detach(), image_size, training)
        if not training:
            scores, deltas = self.head(self.pool(features, proposals))
            return self.postprocess(proposals, scores, deltas, image_size)
        rpn_objectness, rpn_box = self.rpn_loss(anchors, objectness, rpn_deltas, boxes, image_size)
        rois, classes, targets = self.sample_rois(proposals, boxes, labels)
        scores, deltas = self.head(self.pool(features, rois))
        head_class, head_box = self.head_loss(scores, deltas, classes, targets)
        return {"rpn_objectness": rpn_objectness, "rpn_box": rpn_box, "head_class": head_class, "head_box": head_box}

    def _shapes_only(self, features: torch.Tensor):
        """On the ``meta`` device (shapes, no values: the architecture calculator, FLOP counting) proposals cannot
        be chosen, so the head runs on as many RoIs per image as inference keeps, and the raw outputs of both
        stages are returned: the cost of every layer is that of inference."""
        objectness, deltas = self.rpn(features)
        rois = len(features) * self.rpn_post_nms[1]
        scores, box_deltas = self.head(features.new_zeros(rois, features.shape[1], self.roi_size, self.roi_size))
        return objectness, deltas, scores, box_deltas

    def pool(self, features: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
        """RoIAlign of every image's boxes in one call, pixel-aligned. One sample per bin by default: a 7x7 grid
        already samples a 3-8 cell RoI of the canvases' stride-4 map more densely than its cells (RoIAlign's
        adaptive rule, ceil(size / bins), would also take 1), at a quarter of the work of 2x2."""
        return roi_align(features, boxes, self.roi_size, 1.0 / self.stride, self.sampling_ratio, aligned=True)

    # ------------------------------------------------------------------------------------------- proposals
    def propose(self, anchors, objectness, deltas, image_size, training: bool) -> list[torch.Tensor]:
        """Each image's proposals (§3.3): the pre-NMS top-k anchors by objectness, decoded and clipped, tiny
        boxes dropped, NMS at rpn_nms_iou within each image, the post-NMS top-k kept."""
        batch = objectness.shape[0]
        pre, post = (self.rpn_pre_nms[0], self.rpn_post_nms[0]) if training else (self.rpn_pre_nms[1],
                                                                                  self.rpn_post_nms[1])
        top = objectness.topk(min(pre, objectness.shape[1]), dim=1)
        chosen_anchors = anchors[top.indices]  # (N, k, 4)
        chosen_deltas = torch.gather(deltas, 1, top.indices[..., None].expand(-1, -1, 4))
        boxes = decode_boxes(chosen_deltas.reshape(-1, 4), chosen_anchors.reshape(-1, 4))
        boxes = clip_boxes(boxes, image_size).reshape(batch, -1, 4)
        proposals = []
        for image_boxes, image_scores in zip(boxes, top.values):  # image by image: boxes of two never overlap
            keep = keep_detections(image_boxes, image_scores, None, self.min_box_size, self.rpn_nms_iou, post)
            proposals.append(image_boxes[keep])
        return proposals

    # ------------------------------------------------------------------------------------------------ losses
    def rpn_loss(self, anchors, objectness, deltas, gt_boxes, image_size):
        """Eq. 1 of the paper over each image's 256 sampled anchors: BCE on objectness, smooth-L1 on the deltas
        of the positives, both averaged over the sampled anchors."""
        labels, targets = zip(*(rpn_targets(anchors, boxes.to(anchors), image_size, batch_size=self.rpn_batch)
                                for boxes in gt_boxes))
        labels, targets = torch.stack(labels), torch.stack(targets)
        sampled, positive = labels >= 0, labels > 0
        count = sampled.sum().clamp(min=1)
        classification = F.binary_cross_entropy_with_logits(objectness[sampled], labels[sampled], reduction="sum")
        regression = F.smooth_l1_loss(deltas[positive], targets[positive], beta=SMOOTH_L1_BETA, reduction="sum")
        return classification / count, regression / count

    def sample_rois(self, proposals, gt_boxes, gt_labels):
        """Each image's mini-batch of RoIs (Fast R-CNN §2.3): the proposals and the ground-truth boxes, matched
        at IoU >= 0.5 (foreground) or below (background), ``foreground_fraction`` of ``rois_per_image`` at most
        foreground. Returns the RoIs per image, their classes and their box targets, concatenated."""
        rois, classes, targets = [], [], []
        for boxes, labels, candidates in zip(gt_boxes, gt_labels, proposals):
            boxes = boxes.to(candidates)
            candidates = torch.cat([candidates, boxes])  # the ground truth guarantees some foreground early on
            matches = match_anchors(candidates, boxes, 0.5, 0.5, best_for_each_box=False)
            foreground, background = sample_anchors(matches, self.rois_per_image, self.foreground_fraction)
            chosen = foreground | background
            picked, match = candidates[chosen], matches[chosen]
            is_object = match >= 0
            safe = match.clamp(min=0)
            classes.append(torch.where(is_object, labels.to(match.device)[safe] if len(boxes) else 0, 0))
            matched = boxes[safe] if len(boxes) else picked
            targets.append(encode_boxes(picked, matched, HEAD_BOX_WEIGHTS) * is_object[:, None])
            rois.append(picked)
        return rois, torch.cat(classes), torch.cat(targets)

    def head_loss(self, scores, deltas, classes, targets):
        """Cross-entropy over all sampled RoIs; smooth-L1 on the foreground RoIs' deltas for their own class,
        divided by the number of RoIs (Fast R-CNN's lambda = 1 with the loss averaged over the mini-batch)."""
        classification = F.cross_entropy(scores, classes)
        foreground = torch.nonzero(classes > 0).flatten()
        own = deltas.reshape(len(deltas), -1, 4)[foreground, classes[foreground]]
        regression = F.smooth_l1_loss(own, targets[foreground], beta=SMOOTH_L1_BETA, reduction="sum")
        return classification, regression / max(len(classes), 1)

    # -------------------------------------------------------------------------------------------- inference
    def postprocess(self, proposals, scores, deltas, image_size) -> list[dict[str, torch.Tensor]]:
        """Detections per image: every (RoI, object class) pair whose score passes ``score_threshold``, its
        class's box decoded and clipped, NMS per class (one batched call per image), the best
        ``detections_per_image`` kept, highest score first."""
        counts = [len(p) for p in proposals]
        rois = torch.cat(proposals)
        probabilities = F.softmax(scores, dim=1)[:, 1:]  # object classes only
        boxes = clip_boxes(decode_boxes(deltas, rois, HEAD_BOX_WEIGHTS).reshape(len(rois), -1, 4)[:, 1:],
                           image_size)
        image = torch.repeat_interleave(torch.arange(len(counts), device=rois.device),
                                        torch.tensor(counts, device=rois.device))
        classes = torch.arange(1, self.num_classes, device=rois.device).expand(len(rois), -1)
        image = image[:, None].expand(-1, self.num_classes - 1)
        keep = probabilities > self.score_threshold
        boxes, probabilities, classes, image = boxes[keep], probabilities[keep], classes[keep], image[keep]
        results = []
        for i in range(len(counts)):
            own = torch.nonzero(image == i).flatten()
            own = own[keep_detections(boxes[own], probabilities[own], classes[own], self.min_box_size,
                                      self.nms_iou, self.detections_per_image)]
            results.append({"boxes": boxes[own], "scores": probabilities[own], "labels": classes[own]})
        return results


@register_model(input_size=(1, 64, 64), num_classes=11, family="faster_rcnn", task="detection",
                paper="Ren, He, Girshick, Sun 2015, Faster R-CNN (RoIAlign: He et al. 2017)")
def faster_rcnn(num_classes: int = 11, in_channels: int = 1, backbone: str = "resnet20", feature_stage: int = -1,
                anchor_sizes=(12, 20, 32), aspect_ratios=(1.0, 2.0, 3.0), **options) -> FasterRCNN:
    """Faster R-CNN on a zoo backbone's feature stage ``feature_stage`` (the last by default): ``resnet20`` (a
    CIFAR ResNet, stride 4 at its last stage: right for 64-pixel canvases), or resnet18/34/50 for larger images.
    The defaults (anchors of 12-32 pixels, upright ratios 1-3) suit MNIST digits on 64-pixel canvases; set
    ``anchor_sizes`` and ``aspect_ratios`` for other objects. ``options`` go to :class:`FasterRCNN`."""
    return FasterRCNN(backbone_stage(backbone, in_channels, feature_stage), num_classes, anchor_sizes, aspect_ratios,
                      **options)


__all__ = ["HEAD_BOX_WEIGHTS", "BoxHead", "DetectionBatch", "FasterRCNN", "RPNHead", "backbone_stage",
           "check_num_classes", "faster_rcnn", "unpack_batch"]
