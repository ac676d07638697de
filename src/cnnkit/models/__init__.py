"""The model zoo: one module per family, each registering its builders with the registry when imported.

A new family is a new module here, added to the import below; the registry itself knows names, not modules.
(``compress_factorized`` registers from ``cnnkit.compress``, which ``import cnnkit`` loads.)
"""

from . import alexnet, dcgan, efficientnet, fast, googlenet, lenet, pix2pix, resnet, retina, small, unet  # noqa: F401
from . import vgg, xception  # noqa: F401
from .registry import create_model, get_model_entry, list_models, register_model, set_weights_loader

__all__ = ["create_model", "get_model_entry", "list_models", "register_model", "set_weights_loader"]
