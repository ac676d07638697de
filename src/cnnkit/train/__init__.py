"""The training loop and what it needs; names load on first use (cnnkit.lazy), so the command line can read
:mod:`cnnkit.train.config` and :mod:`cnnkit.train.recipe` without loading torch."""

from ..lazy import lazy_exports

_EXPORTS = {
    "StopAtTarget": "callbacks",
    "TrainConfig": "config",
    "Trainer": "trainer",
    "build_optimizer": "optim",
    "build_schedule": "optim",
    "confusion_matrix": "metrics",
    "load_model_checkpoint": "checkpoint",
    "per_class_accuracy": "metrics",
    "read_checkpoint_meta": "checkpoint",
    "time_to_target": "metrics",
    "topk_correct": "metrics",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
