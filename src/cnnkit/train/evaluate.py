"""Classification's evaluation: loss, top-1 and top-5 accuracy over a split, with test-time views, the
confusion matrix and every image's logits on request. The Trainer reaches it through ClassificationTask."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.augment import average_probabilities, evaluation_views, ten_crop
from ..data.loader import make_loader
from ..errors import CnnkitError
from . import distributed
from .metrics import confusion_matrix, per_class_accuracy, topk_hits


@torch.no_grad()
def evaluate_classifier(trainer, dataset, with_confusion: bool = False, keep_logits: bool = False) -> dict:
    """Loss, top-1 and top-5 accuracy (in %) on ``dataset``; with_confusion adds the confusion matrix and
    per-class accuracy; keep_logits adds every image's logits (in the split's order, one process only) for
    ensembles and calibration.

    Under DDP this is collective (call it on every rank): each rank evaluates an interleaved shard of the
    split and the sums of loss, hits and counts (and the confusion matrix) are all-reduced, so every rank
    returns the figures of the whole split."""
    if keep_logits and trainer.world_size > 1:
        raise CnnkitError("evaluate(keep_logits=True) needs one process: under DDP each rank sees a shard.")
    config, device = trainer.config, trainer.device
    was_training = trainer.model.training
    trainer.model.eval()
    loader = make_loader(dataset, config.eval_batch_size, shuffle=False, device=device,
                         num_workers=config.num_workers, rank=trainer.rank, world_size=trainer.world_size)
    n_classes = len(trainer.data.classes)
    # Loss, top-1 hits, top-5 hits and images, summed on the device and read once at the end: read per batch,
    # each read would make the CPU wait for the GPU.
    # (Apple's MPS has no float64; float32 counts images exactly up to 16 million.)
    sums = torch.zeros(4, dtype=torch.float32 if device.type == "mps" else torch.float64, device=device)
    confusion = torch.zeros(n_classes, n_classes, dtype=torch.long, device=device)
    kept: list[torch.Tensor] = []
    for images, labels in loader:
        logits = view_averaged_logits(trainer, images)
        if keep_logits:
            kept.append(logits.cpu())
        sums[0] += F.cross_entropy(logits, labels, reduction="sum")
        sums[1:3] += topk_hits(logits, labels, (1, 5))
        sums[3] += len(labels)
        if with_confusion:
            confusion += confusion_matrix(logits.argmax(1), labels, n_classes)
    trainer.model.train(was_training)
    if trainer.world_size > 1:
        distributed.all_reduce_sum(sums)
        if with_confusion:
            distributed.all_reduce_sum(confusion)
    total_loss, hits1, hits5, seen = sums.tolist()
    seen = int(seen)
    result = {"loss": total_loss / max(seen, 1), "acc": 100.0 * hits1 / max(seen, 1),
              "top5": 100.0 * hits5 / max(seen, 1), "images": seen}
    if with_confusion:
        result["confusion"] = confusion.cpu()
        result["per_class_acc"] = (100 * per_class_accuracy(confusion)).cpu()
    if keep_logits:
        result["logits"] = torch.cat(kept) if kept else torch.zeros(0, n_classes)
    return result


def view_averaged_logits(trainer, images: torch.Tensor) -> torch.Tensor:
    """The evaluation model's logits averaged over the test-time views: the mirror image (and slightly moved
    copies) are as likely views of the object, and so are the images a little larger or smaller (tta_sizes):
    the views' errors partly cancel."""
    config, preprocess = trainer.config, trainer.preprocess
    if config.tta_crop:
        return ten_crop_logits(trainer, images, config.tta_crop)
    scales = [preprocess(images)] + [preprocess(images, size=(size, size)) for size in config.tta_sizes]
    eval_model = trainer.evaluation_model
    with trainer.autocast():
        return torch.stack([eval_model(view).float() for x in scales for view in evaluation_views(
            x, config.tta_flip, config.tta_shift, preprocess.augment.crop_mode)]).mean(0)


def ten_crop_logits(trainer, images: torch.Tensor, size: int) -> torch.Tensor:
    """AlexNet's testing (Krizhevsky et al. 2012, section 4.1): the softmax averaged over ``size`` px crops of the
    images at the four corners and the centre and their mirror images, each crop fitted to the model's input."""
    if size > min(images.shape[-2:]):
        raise CnnkitError(f"tta_crop={size} is larger than the {images.shape[-2]}x{images.shape[-1]} images; "
                          f"give a crop of at most {min(images.shape[-2:])} px (AlexNet: 224 of 256).")
    target = tuple(trainer.preprocess.input_size or images.shape[-2:])  # no input size: the images' own
    logits = []
    for view in ten_crop(images, size):
        if tuple(view.shape[-2:]) != target:  # a crop is enlarged to the input, never framed
            view = F.interpolate(view.float(), size=target, mode="bilinear", align_corners=False,
                                 antialias=size > min(target))  # only a shrink needs it, and it is slow
        with trainer.autocast():
            logits.append(trainer.evaluation_model(trainer.preprocess(view.contiguous())))
    return average_probabilities(logits)
