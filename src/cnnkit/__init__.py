"""cnnkit: build, train, transfer, inspect and apply convolutional neural networks, on PyTorch."""

from .analysis import summary
from .data import load_dataset
from .errors import CnnkitError
from .models import create_model, list_models, register_model
from .train import TrainConfig, Trainer, load_model_checkpoint

__version__ = "0.1.0"
__all__ = [
    "CnnkitError",
    "TrainConfig",
    "Trainer",
    "__version__",
    "create_model",
    "list_models",
    "load_dataset",
    "load_model_checkpoint",
    "register_model",
    "summary",
]
