"""Object detection: Faster R-CNN (faster_rcnn), the one-stage RetinaNet (retinanet), their task for the one
training loop (task), box operators in plain PyTorch (ops), the region proposal network's anchor targets (targets)
and COCO mAP through pycocotools (evaluate); names load on first use (cnnkit.lazy), so importing the package costs
nothing until one is used."""

from ..lazy import lazy_exports

_EXPORTS = {
    "anchor_grid": "ops",
    "batched_nms": "ops",
    "box_area": "ops",
    "box_iou": "ops",
    "DetectionBatch": "faster_rcnn",
    "DetectionDataset": "task",
    "DetectionTask": "task",
    "FasterRCNN": "faster_rcnn",
    "detection_bundle": "task",
    "detect_split": "task",
    "map_metrics": "task",
    "clip_boxes": "ops",
    "coco_map": "evaluate",
    "decode_boxes": "ops",
    "encode_boxes": "ops",
    "match_anchors": "targets",
    "nms": "ops",
    "predictions_to_coco": "evaluate",
    "RetinaNet": "retinanet",
    "roi_align": "ops",
    "roi_pool": "ops",
    "rpn_targets": "targets",
    "sample_anchors": "targets",
    "sigmoid_focal_loss": "retinanet",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
