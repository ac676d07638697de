from .checkpoint import load_model_checkpoint, read_checkpoint_meta
from .metrics import confusion_matrix, per_class_accuracy, topk_correct
from .optim import build_optimizer, build_schedule
from .trainer import TrainConfig, Trainer

__all__ = [
           "TrainConfig",
           "Trainer",
           "build_optimizer",
           "build_schedule",
           "confusion_matrix",
           "load_model_checkpoint",
           "per_class_accuracy",
           "read_checkpoint_meta",
           "topk_correct",
]
