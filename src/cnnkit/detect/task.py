"""Object detection as a task of the one training loop: Faster R-CNN, RetinaNet (or any detector whose forward takes a
:class:`DetectionBatch` in training and returns per-image detections otherwise) trained by the Trainer, with its
checkpoints and exact resume, and judged by COCO mAP from pycocotools.

    data = detection_bundle(load_canvas("canvas-mnist", num_train=4000, num_test=500))
    model = create_model("faster_rcnn", num_classes=len(data.classes), in_channels=1)
    Trainer(model, data, TrainConfig(epochs=6, optimizer="sgd", lr=0.02), task=DetectionTask()).fit()

Detection targets differ in length from image to image, while the loop's loaders batch fixed-size label
tensors. So a detection split's "labels" are the canvases' own indices: the loaders shuffle, shard and resume
them like any labels, and :meth:`DetectionTask.prepare` collates each batch's lists of boxes and classes from the
split by those indices (a subset keeps the indices, so a held-out validation subset still finds its boxes).
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch

from ..data.augment import normalize
from ..data.canvas import DetectionBundle, DetectionSplit
from ..data.datasets import DatasetBundle, TensorImageDataset
from ..data.loader import make_loader
from ..errors import CnnkitError
from ..train.tasks import Task, format_metrics
from .evaluate import coco_map
from .faster_rcnn import DetectionBatch

@dataclasses.dataclass(repr=False)
class DetectionDataset(TensorImageDataset):
    """A detection split as the loaders read it: the canvases, and as labels their indices into ``split``."""

    split: DetectionSplit | None = None

    def subset(self, indices) -> DetectionDataset:
        indices = torch.as_tensor(indices, dtype=torch.long)
        return DetectionDataset(self.images[indices], self.labels[indices], self.classes, self.split)

    def targets(self, indices: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The boxes and classes of the canvases at ``indices`` (indices into ``split``), one tensor per canvas."""
        offsets = self.split.offsets.tolist()
        boxes, labels = [], []
        for index in indices.tolist():
            start, end = offsets[index], offsets[index + 1]
            boxes.append(self.split.boxes[start:end]), labels.append(self.split.labels[start:end])
        return boxes, labels

    def ground_truth(self) -> DetectionSplit:
        """The canvases of this dataset as a split of their own (for COCO evaluation), in this dataset's order."""
        split, chosen = self.split, self.labels.cpu()
        counts = split.offsets.diff()[chosen]
        rows = torch.cat([torch.arange(int(split.offsets[i]), int(split.offsets[i + 1])) for i in chosen.tolist()]
                         ) if len(chosen) else torch.zeros(0, dtype=torch.long)
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        return DetectionSplit(split.images[chosen], split.boxes[rows], split.labels[rows], offsets,
                              split.instances[chosen], split.semantic[chosen], split.classes)


def detection_bundle(bundle: DetectionBundle) -> DatasetBundle:
    """A canvas data set (or any DetectionBundle) as the Trainer's data: each split a :class:`DetectionDataset`;
    mean and standard deviation those of the training canvases, per channel."""
    train = bundle.train.images.float() / 255
    mean = tuple(train.mean(dim=(0, 2, 3)).tolist())
    std = tuple(train.std(dim=(0, 2, 3)).clamp(min=1e-3).tolist())
    splits = [DetectionDataset(s.images, torch.arange(len(s)), list(bundle.classes), s)
              for s in (bundle.train, bundle.test)]
    return DatasetBundle(bundle.name, *splits, list(bundle.classes), mean, std)


class DetectionTask(Task):
    """Inputs: a :class:`DetectionBatch` of normalised images and their boxes and classes; the model returns its
    losses in training (a dict: Faster R-CNN's four, RetinaNet's two, summed into the loss the Trainer
    minimises) and its detections
    in evaluation, which COCOeval scores: ``map`` (AP at IoU .50:.05:.95), ``map50``, ``map75``."""

    name = "detection"
    higher_is_better = ("map", "map50", "map75")

    def __init__(self, data: dict | None = None):
        # How the data was made (a canvas set's name, sizes and seed), kept in the run's checkpoint.json so that
        # `cnnkit detect eval` and `--resume` can make the same canvases again.
        self.data = data

    def _check(self, dataset) -> DetectionDataset:
        if not isinstance(dataset, DetectionDataset):
            raise CnnkitError(f"the detection task reads DetectionDataset splits (canvases with their boxes), got "
                              f"{type(dataset).__name__}; wrap a canvas data set with cnnkit.detect.detection_bundle.")
        return dataset

    def prepare(self, trainer, images, labels, train=False, generator=None):
        dataset = self._check(trainer.data.train)
        x = normalize(images.float() / 255, trainer.preprocess.mean, trainer.preprocess.std)
        boxes, classes = dataset.targets(labels.cpu())
        device = x.device
        batch = DetectionBatch(x, [b.to(device) for b in boxes], [c.to(device) for c in classes])
        return batch, labels

    # Each detector names its own losses (Faster R-CNN's four, RetinaNet's two): the task sums and reports
    # whichever the model returns.
    def loss(self, trainer, outputs, targets):
        return sum(outputs.values())

    def metrics(self, outputs, targets):
        return {name: value.detach() * len(targets) for name, value in outputs.items()}

    def summarize(self, sums, count):
        return {name: value.item() / max(count, 1) for name, value in sums.items()}

    def describe(self) -> dict:
        return {"name": self.name, **({"data": self.data} if self.data else {})}

    def validate(self, trainer, epoch: int) -> dict:
        every = trainer.config.validate_every
        if not (epoch == trainer.config.epochs or (every and epoch % every == 0)):
            return {"map": float("nan"), "map50": float("nan"), "map75": float("nan")}
        return trainer.evaluate(trainer.val_set)

    @torch.no_grad()
    def evaluate(self, trainer, dataset, **options) -> dict:
        """COCO mAP of the model's detections on ``dataset``, and the inference speed (images per second,
        normalisation to postprocessing, on the Trainer's device and threads)."""
        dataset = self._check(dataset)
        predictions, seconds = detect_split(trainer.evaluation_model, dataset, trainer.preprocess.mean,
                                            trainer.preprocess.std, trainer.config.eval_batch_size, trainer.device)
        return {**map_metrics(dataset.ground_truth(), predictions), "images": len(dataset),
                "images_per_second": round(len(dataset) / max(seconds, 1e-9), 1)}

    def format_epoch(self, metrics: dict, epochs: int) -> str:
        shown = {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}
        return (f"epoch {metrics['epoch']:>3}/{epochs}  {format_metrics(shown)}  lr {metrics['lr']:.3g}  "
                f"{metrics['seconds']:.1f}s")


def map_metrics(ground_truth: DetectionSplit, predictions: list[dict]) -> dict[str, float]:
    """mAP@[.5:.95], mAP@.5 and mAP@.75 by pycocotools."""
    scores = coco_map(ground_truth, predictions)
    return {"map": scores["mAP"], "map50": scores["mAP@.5"], "map75": scores["mAP@.75"]}


@torch.no_grad()
def detect_split(model, dataset, mean, std, batch_size: int = 64, device="cpu") -> tuple[list[dict], float]:
    """The model's detections for every image of ``dataset`` (on the CPU, in its order), and the seconds spent."""
    was_training = model.training
    model.eval()
    predictions, seconds = [], 0.0
    for images, _ in make_loader(dataset, batch_size, shuffle=False, device=device):
        start = time.perf_counter()
        found = model(normalize(images.float() / 255, mean, std))
        seconds += time.perf_counter() - start
        predictions.extend({k: v.cpu() for k, v in p.items()} for p in found)
    model.train(was_training)
    return predictions, seconds


__all__ = ["DetectionDataset", "DetectionTask", "detect_split", "detection_bundle", "map_metrics"]
