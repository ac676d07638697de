"""COCO's detection metrics from pycocotools' COCOeval, the official evaluator, not a re-implementation: this module
only turns cnnkit's predictions (per image: boxes x1, y1, x2, y2, scores, contiguous labels) into COCO's result
format and reads the twelve summary numbers back.

    ground_truth = to_coco(bundle.test)                      # or json.load(open("instances_val2017.json"))
    metrics = coco_map(ground_truth, predictions)            # predictions[i] is image i's {boxes, scores, labels}
    metrics["mAP"], metrics["mAP@.5"]                        # AP averaged over IoU .50:.05:.95, and at IoU .50

pycocotools is in cnnkit's ``detect`` extra.
"""

from __future__ import annotations

import contextlib
import copy
import io

import torch

from ..data.canvas import DetectionSplit, to_coco
from ..errors import CnnkitError, ShapeError

# COCOeval.stats, in its order (COCOeval.summarize); -1 there means "nothing to measure" (say, no small objects)
METRIC_NAMES = ("mAP", "mAP@.5", "mAP@.75", "mAP_small", "mAP_medium", "mAP_large",
                "AR@1", "AR@10", "AR@100", "AR_small", "AR_medium", "AR_large")


def _pycocotools():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise CnnkitError("COCO mAP comes from pycocotools, the official evaluator, which is in cnnkit's `detect` "
                          "extra: pip install 'cnnkit[detect]'.") from None
    return COCO, COCOeval


def predictions_to_coco(predictions, image_ids, category_ids=None) -> list[dict]:
    """COCO result entries ({image_id, category_id, bbox [x, y, w, h], score}) from one dict of ``boxes`` (n, 4),
    ``scores`` (n,) and ``labels`` (n,) per image; ``category_ids[label]`` is a label's COCO category id
    (default: the label itself, as for cnnkit's canvases)."""
    if len(predictions) != len(image_ids):
        raise ShapeError(f"{len(predictions)} predictions for {len(image_ids)} images: give one dict (empty "
                         "tensors where nothing was found) per ground-truth image, in the same order.")
    results = []
    for index, (prediction, image_id) in enumerate(zip(predictions, image_ids)):
        missing = {"boxes", "scores", "labels"} - set(prediction)
        if missing:
            raise ShapeError(f"prediction {index} lacks {sorted(missing)}; each needs boxes, scores and labels.")
        boxes = torch.as_tensor(prediction["boxes"], dtype=torch.float64).reshape(-1, 4)
        scores = torch.as_tensor(prediction["scores"], dtype=torch.float64).flatten()
        labels = torch.as_tensor(prediction["labels"]).flatten().long()
        if not len(boxes) == len(scores) == len(labels):
            raise ShapeError(f"prediction {index} has {len(boxes)} boxes, {len(scores)} scores and {len(labels)} "
                             "labels; they must pair up.")
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        for (x1, y1, _, _), w, h, score, label in zip(boxes.tolist(), widths.tolist(), heights.tolist(),
                                                      scores.tolist(), labels.tolist()):
            category = category_ids[label] if category_ids is not None else label
            results.append({"image_id": image_id, "category_id": category, "bbox": [x1, y1, w, h], "score": score})
    return results


def _detections(ground, results: list[dict]):
    """The detections as a COCO object. pycocotools' loadRes cannot take an empty list, so the empty case is
    built directly: an evaluation of no detections, which scores 0 wherever there was something to find."""
    coco_class, _ = _pycocotools()
    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            return ground.loadRes(copy.deepcopy(results))
    detections = coco_class()
    detections.dataset = {"images": ground.dataset["images"], "categories": ground.dataset["categories"],
                          "annotations": []}
    with contextlib.redirect_stdout(io.StringIO()):
        detections.createIndex()
    return detections


def coco_map(ground_truth, predictions, category_ids=None, max_detections: int = 100) -> dict[str, float]:
    """COCO's twelve summary metrics for box detections (``mAP`` is AP at IoU .50:.05:.95, ``mAP@.5`` at .50), by
    pycocotools' COCOeval. ``ground_truth`` is a COCO instances document (dict) or a canvas split;
    ``predictions`` one dict per ground-truth image, in its order. A metric with nothing to measure (no large
    objects, say) is NaN; with no detections at all, every metric whose ground truth exists is 0."""
    coco_class, evaluator_class = _pycocotools()
    if isinstance(ground_truth, DetectionSplit):
        ground_truth = to_coco(ground_truth)
    if not isinstance(ground_truth, dict) or not {"images", "annotations", "categories"} <= set(ground_truth):
        raise CnnkitError("ground_truth must be a COCO instances document (images, annotations, categories) or a "
                          "DetectionSplit.")
    ground = coco_class()
    ground.dataset = copy.deepcopy(ground_truth)
    for annotation in ground.dataset["annotations"]:  # COCOeval needs both; files from other tools may lack them
        annotation.setdefault("iscrowd", 0)
        annotation.setdefault("area", annotation["bbox"][2] * annotation["bbox"][3])
    with contextlib.redirect_stdout(io.StringIO()):
        ground.createIndex()
    image_ids = [image["id"] for image in ground_truth["images"]]
    results = predictions_to_coco(predictions, image_ids, category_ids)
    evaluator = evaluator_class(ground, _detections(ground, results), "bbox")
    evaluator.params.imgIds = image_ids
    evaluator.params.maxDets = [1, 10, max_detections]
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress and table
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats.tolist()
    if not results:
        # COCOeval marks categories without detections -1 ("absent"), like those without ground truth
        measured = _measured(ground)
        return {name: 0.0 if measured[name] else float("nan") for name in METRIC_NAMES}
    return {name: float("nan") if value < 0 else float(value) for name, value in zip(METRIC_NAMES, stats)}


def _measured(ground) -> dict[str, bool]:
    """Which metrics have ground truth to measure: any object at all, or any in COCO's small/medium/large ranges."""
    areas = [a["area"] for a in ground.dataset["annotations"] if not a.get("iscrowd", 0)]
    ranges = {"small": lambda a: a < 32**2, "medium": lambda a: 32**2 <= a < 96**2, "large": lambda a: a >= 96**2}
    found = {}
    for name in METRIC_NAMES:
        size = next((s for s in ranges if name.endswith(s)), None)
        found[name] = any(ranges[size](a) for a in areas) if size else bool(areas)
    return found


__all__ = ["METRIC_NAMES", "coco_map", "predictions_to_coco"]
