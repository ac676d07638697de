"""cnnkit: build, train, transfer, inspect and apply convolutional neural networks, on PyTorch."""

from . import compress  # noqa: F401  (registers compress_factorized with the model registry)
from .analysis import summary
from .data import load_dataset
from .errors import CnnkitError
from .models import create_model, list_models, register_model, set_weights_loader
from .train import TrainConfig, Trainer, load_model_checkpoint
from .runs import load_pretrained

# create_model(pretrained=...) loads through this slot: the weights (and the run folders they come from) sit
# above the models, so the registry cannot import them itself.
set_weights_loader(load_pretrained)

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
