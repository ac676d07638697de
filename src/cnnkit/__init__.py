"""cnnkit: build, train, transfer, inspect and apply convolutional neural networks, on PyTorch.

The public names load on first use (cnnkit.lazy): ``import cnnkit``, and with it every ``cnnkit ... --help``,
loads no network library until a model, a dataset or the training loop is asked for.
"""

from .train.openmp import set_wait_policy_defaults

set_wait_policy_defaults()  # before anything loads torch: libgomp reads its wait policy once, when it loads

from .lazy import lazy_exports  # noqa: E402
from .models import registry as _registry  # noqa: E402  (the registry alone: the zoo's families load at the first lookup)

_EXPORTS = {
    "CnnkitError": "errors",
    "TrainConfig": "train",
    "Trainer": "train",
    "create_model": "models",
    "export_model": "export",
    "read_export_metadata": "export",
    "list_models": "models",
    "load_dataset": "data",
    "load_model_checkpoint": "train",
    "load_pretrained": "runs",
    "register_model": "models",
    "summary": "analysis",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


# The layers above the models plug into the registry here, the one module that sees them all.
def _load_pretrained(model, spec):
    """create_model(pretrained=...): weights and the run folders they come from sit above the models."""
    from .runs import load_pretrained

    return load_pretrained(model, spec)


def _import_compression_models() -> None:
    from . import compress  # noqa: F401  (registers compress_factorized, a model of the compression tools)


def _import_detection_models() -> None:
    from .detect import faster_rcnn, retinanet  # noqa: F401  (register faster_rcnn and retinanet, on zoo backbones)


_registry.set_weights_loader(_load_pretrained)
_registry.add_family_loader(_import_compression_models)
_registry.add_family_loader(_import_detection_models)

__version__ = "0.1.0"
__all__ = ["__version__", *sorted(set(_EXPORTS) - {"load_pretrained"})]
