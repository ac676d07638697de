"""COCO mAP through pycocotools: perfect predictions score 1, a known shift scores what COCO's IoU thresholds say
it must, wrong classes and no detections score 0."""

from __future__ import annotations

import math

import pytest
import torch

from cnnkit.detect.evaluate import coco_map, predictions_to_coco
from cnnkit.errors import ShapeError

pytest.importorskip("pycocotools")


def ground_truth() -> dict:
    # 10x10 boxes on 100x100 images, two categories, one image without objects
    boxes = {1: [(10, 10, 1), (50, 20, 2)], 2: [(30, 60, 1)], 3: []}
    annotations = []
    for image_id, objects in boxes.items():
        for x, y, category in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "bbox": [x, y, 10, 10], "iscrowd": 0, "area": 100})
    return {"images": [{"id": i, "file_name": f"{i}.png", "width": 100, "height": 100} for i in boxes],
            "annotations": annotations, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}


def perfect(shift: float = 0.0, label_offset: int = 0) -> list[dict]:
    by_image = {image["id"]: [] for image in ground_truth()["images"]}
    for a in ground_truth()["annotations"]:
        by_image[a["image_id"]].append(a)
    predictions = []
    for objects in by_image.values():
        boxes = torch.tensor([[a["bbox"][0] + shift, a["bbox"][1], a["bbox"][0] + shift + 10, a["bbox"][1] + 10]
                              for a in objects]).reshape(-1, 4)
        labels = torch.tensor([a["category_id"] for a in objects], dtype=torch.long)
        labels = (labels - 1 + label_offset) % 2 + 1
        predictions.append({"boxes": boxes, "scores": torch.full((len(boxes),), 0.9), "labels": labels})
    return predictions


def test_perfect_predictions_score_one():
    metrics = coco_map(ground_truth(), perfect())
    assert metrics["mAP"] == pytest.approx(1.0) and metrics["mAP@.5"] == pytest.approx(1.0)
    assert metrics["AR@100"] == pytest.approx(1.0)
    assert math.isnan(metrics["mAP_large"])  # no object of 96x96 or more: nothing to measure


def test_a_shift_counts_only_at_the_iou_thresholds_it_passes():
    # shifted 2 px along x: IoU = 80 / 120 = 0.667, a match at IoU .50, .55, .60, .65 of the ten thresholds
    metrics = coco_map(ground_truth(), perfect(shift=2.0))
    assert metrics["mAP@.5"] == pytest.approx(1.0)
    assert metrics["mAP@.75"] == pytest.approx(0.0)
    assert metrics["mAP"] == pytest.approx(0.4)
    worse = coco_map(ground_truth(), perfect(shift=4.0))  # IoU 60 / 140 = 0.43: no match at all
    assert worse["mAP@.5"] == pytest.approx(0.0) and worse["mAP"] == pytest.approx(0.0)


def test_no_detections_and_wrong_classes_score_zero():
    empty = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}] * 3
    metrics = coco_map(ground_truth(), empty)
    assert metrics["mAP"] == 0.0 and metrics["mAP@.5"] == 0.0 and metrics["AR@100"] == 0.0
    assert math.isnan(metrics["mAP_large"])
    assert coco_map(ground_truth(), perfect(label_offset=1))["mAP@.5"] == pytest.approx(0.0)


def test_a_false_positive_ranked_first_lowers_precision():
    predictions = perfect()
    extra = {"boxes": torch.tensor([[70.0, 70.0, 80.0, 80.0]]), "scores": torch.tensor([0.99]),
             "labels": torch.tensor([1])}
    predictions[2] = extra  # the empty image gets a confident false "a"
    metrics = coco_map(ground_truth(), predictions)
    assert 0.0 < metrics["mAP@.5"] < 1.0
    ranked_last = perfect()
    ranked_last[2] = dict(extra, scores=torch.tensor([0.01]))  # below every true detection: recall is already full
    assert coco_map(ground_truth(), ranked_last)["mAP@.5"] == pytest.approx(1.0)


def test_category_ids_map_labels_and_bad_predictions_are_refused():
    results = predictions_to_coco(perfect()[:1], [1], category_ids=[None, 18, 3])
    assert [r["category_id"] for r in results] == [18, 3]
    assert results[0]["bbox"] == [10.0, 10.0, 10.0, 10.0]
    with pytest.raises(ShapeError, match="one dict"):
        coco_map(ground_truth(), perfect()[:2])
    with pytest.raises(ShapeError, match="lacks"):
        coco_map(ground_truth(), [{"boxes": torch.zeros(0, 4)}] * 3)
    with pytest.raises(ShapeError, match="pair up"):
        predictions_to_coco([{"boxes": torch.zeros(2, 4), "scores": torch.zeros(1), "labels": torch.zeros(2)}], [1])


def test_canvas_splits_evaluate_against_their_own_boxes():
    from cnnkit.data.canvas import render_canvases

    pool = torch.zeros(4, 28, 28, dtype=torch.uint8)
    pool[:, 6:22, 8:20] = 255  # solid blocks: every object has a mask
    split = render_canvases(pool, torch.arange(4), 6, ["background", "a", "b", "c", "d"], canvas_size=48,
                            fragments=0, generator=torch.Generator().manual_seed(0))
    predictions = [{"boxes": t["boxes"], "scores": torch.ones(len(t["boxes"])), "labels": t["labels"]}
                   for t in (split.target(i) for i in range(len(split)))]
    assert coco_map(split, predictions)["mAP"] == pytest.approx(1.0)
