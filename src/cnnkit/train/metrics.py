"""Classification metrics computed on tensors: top-k accuracy, confusion matrix, per-class accuracy."""

from __future__ import annotations

import torch


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks=(1, 5)) -> dict[int, int]:
    """How many targets are among the k highest logits, for each k (k larger than the class count counts all)."""
    return dict(zip(ks, topk_hits(logits, targets, ks).tolist()))


def topk_hits(logits: torch.Tensor, targets: torch.Tensor, ks=(1, 5)) -> torch.Tensor:
    """:func:`topk_correct`'s counts as one int64 tensor on the logits' device, in the order of ``ks``: a loop that
    adds them up reads nothing back from a GPU until its end."""
    maxk = min(max(ks), logits.shape[1])
    top = logits.topk(maxk, dim=1).indices
    hits = top.eq(targets[:, None])
    return torch.stack([hits[:, : min(k, maxk)].any(dim=1).sum() for k in ks])


def confusion_matrix(predictions: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """counts[true, predicted]."""
    flat = targets.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(confusion: torch.Tensor) -> torch.Tensor:
    totals = confusion.sum(1).clamp(min=1)
    return confusion.diag().float() / totals


def time_to_target(history: list[dict], metric: str, target: float, higher_is_better: bool = True
                   ) -> tuple[int, float] | None:
    """(epoch, training seconds) when ``metric`` first reached ``target`` in a Trainer's ``history``, or None if it
    never did: the first epoch whose value is >= ``target`` (<= when ``higher_is_better`` is False, e.g. an error
    rate), and the sum of the ``seconds`` of the epochs up to and including it -- training time only, the way the
    paper figures count it, not the validation passes between epochs. Time-to-accuracy benchmarks (Krizhevsky et
    al.'s "epochs to 25 % training error") read it off the history rather than re-deriving it each."""
    seconds = 0.0
    for row in history:
        if metric not in row:
            raise KeyError(f"history rows have no {metric!r}; they have {', '.join(row)}")
        seconds += row.get("seconds", 0.0)
        value = row[metric]
        if value is not None and (value >= target if higher_is_better else value <= target):
            return int(row["epoch"]), seconds
    return None
