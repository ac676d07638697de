"""The model zoo: one module per family, each registering its builders with the registry when imported.

A new family is a new module here, added to the list below; the registry itself knows names, not modules. The
families load at the first lookup (``add_family_loader``), not when ``cnnkit.models`` is imported, so that the
command line's ``--help`` does not load torch. (``compress_factorized`` registers from ``cnnkit.compress``.)
"""

import importlib

from ..lazy import lazy_exports
from .registry import add_family_loader, create_model, get_model_entry, list_models, register_model, set_weights_loader

FAMILIES = ("alexnet", "dcgan", "dncnn", "efficientnet", "fast", "fcn", "googlenet", "lenet", "pix2pix", "resnet",
            "retina", "small", "unet", "vgg", "xception")


def _import_families() -> None:
    for family in FAMILIES:
        importlib.import_module(f".{family}", __name__)
    importlib.import_module(".features", __name__)  # installs create_model(features_only=True)'s builder


add_family_loader(_import_families)

# Backbones of feature maps (create_model(..., features_only=True)) load with torch, on first use.
__getattr__, __dir__ = lazy_exports(__name__, {"FeatureExtractor": "features", "FeatureInfo": "features"})

__all__ = ["FAMILIES", "FeatureExtractor", "FeatureInfo", "add_family_loader", "create_model", "get_model_entry",
           "list_models", "register_model", "set_weights_loader"]
