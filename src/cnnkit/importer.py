"""Third-party weights as ordinary run folders: ``cnnkit import`` and :func:`import_checkpoint`.

A foreign checkpoint (a torchvision ``.pth``, an akamaster CIFAR ResNet ``.th``, ...) holds tensors only: not
the preprocessing the weights were trained with, not the class names, and not the parameter-free choices of
its architecture. Importing builds the cnnkit model, loads the weights in whichever known layout they come
(cnnkit.weights), applies what that layout implies about the architecture (the akamaster ResNets pad their
option-A shortcuts on both sides), and writes checkpoint.safetensors + checkpoint.json with the mean, std,
classes and dataset given here, so ``cnnkit eval``, ``predict``, ``viz`` and ``serve`` read it like a run
that cnnkit trained:

    cnnkit import resnet20-12fca82f.th --model resnet20 --data cifar10 \\
        --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --out runs/resnet20-akamaster
    cnnkit eval runs/resnet20-akamaster
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .data.catalog import CATALOG, IMAGEFOLDER_PREFIX
from .errors import CnnkitError
from .models.registry import create_model, get_model_entry
from .runs import file_sha256, save_model_checkpoint
from .weights import load_state_dict_into, read_state_dict

# The pretrained weights people import most often, and the preprocessing their authors trained them with:
# the hint an error gives when --mean/--std are missing.
KNOWN_PREPROCESSING = {
    "resnet20": "the akamaster CIFAR ResNets (resnetNN-*.th) were trained on CIFAR-10 with ImageNet's "
                "normalisation: --data cifar10 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225",
}
for _depth in (32, 44, 56, 110, 1202):
    KNOWN_PREPROCESSING[f"resnet{_depth}"] = KNOWN_PREPROCESSING["resnet20"]


def imported_meta(model_name: str, *, mean: Sequence[float] | None, std: Sequence[float] | None,
                  classes: Sequence[str] | None = None, dataset: str | None = None,
                  image_shape: Sequence[int] | None = None, hint: str = "") -> dict:
    """The checkpoint.json fields (dataset, classes, image_shape, preprocess, task) a foreign checkpoint needs
    to be used like a trained run. ``classes`` defaults to the catalog dataset's; ``image_shape`` to the
    dataset's, else the model's native input; ``mean``/``std`` to the model's registered ones, if any. ``hint``
    ends each error message (what else the caller could do)."""
    entry = get_model_entry(model_name)
    spec = None
    if dataset is not None:
        spec = CATALOG.get(dataset)
        if spec is None and not dataset.startswith(IMAGEFOLDER_PREFIX):
            raise CnnkitError(f"unknown dataset {dataset!r}; give one of {', '.join(sorted(CATALOG))} or "
                              f"imagefolder:PATH (or leave --data out and name the --classes){hint}")
    if classes is None and spec is not None and spec.classes:
        classes = list(spec.classes)
    if classes is None:
        raise CnnkitError(f"the class names are not in the weights file; give --data with a dataset whose classes "
                          f"are known (e.g. cifar10) or --classes NAME,NAME,... or --classes FILE (one name per "
                          f"line, in the order of the model's outputs){hint}")
    classes = [str(name) for name in classes]
    if mean is None or std is None:
        mean, std = (mean or entry.mean), (std or entry.std)
    if mean is None or std is None:
        known = KNOWN_PREPROCESSING.get(model_name, "e.g. --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 for "
                                                    "weights trained with ImageNet's normalisation")
        raise CnnkitError(f"give the normalisation the weights were trained with, --mean and --std (one number per "
                          f"channel, on 0..1 pixels): the file does not record it, and a guess silently lowers "
                          f"accuracy; {known}{hint}")
    if image_shape is None:
        image_shape = spec.image_shape if spec is not None else entry.input_size
    channels = int(image_shape[0])
    mean, std = [float(v) for v in mean], [float(v) for v in std]
    if len(mean) != channels or len(std) != channels:
        raise CnnkitError(f"--mean and --std need one number per input channel ({channels}), got "
                          f"{len(mean)} and {len(std)}")
    if any(v <= 0 for v in std):
        raise CnnkitError(f"--std values must be positive, got {std}")
    return {"dataset": dataset, "classes": classes, "image_shape": [int(v) for v in image_shape],
            "preprocess": {"mean": mean, "std": std, "input_size": None, "resize": "auto"},
            "task": {"name": "classification"}}


def read_class_names(text: str) -> list[str]:
    """``--classes``: a file with one name per line, or names separated by commas."""
    path = Path(text)
    if path.is_file():
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise CnnkitError(f"--classes {text!r} names no classes; give NAME,NAME,... or a file with one per line")
    return names


def build_imported_model(weights: str | Path, model_name: str, layout: str | None = None,
                         model_args: dict | None = None, num_classes: int | None = None,
                         in_channels: int | None = None):
    """(model, layout): the registered model ``model_name`` with the tensors of the file ``weights`` loaded
    from whichever known layout they are in (or ``layout``), its architecture adapted to what that layout
    implies; ``model_args`` (builder arguments) take precedence over it."""
    model = create_model(model_name, num_classes=num_classes, in_channels=in_channels, **(model_args or {}))
    matched = load_state_dict_into(model, read_state_dict(weights), layout)
    return model, matched


def import_checkpoint(weights: str | Path, model_name: str, out: str | Path, *, mean: Sequence[float] | None = None,
                      std: Sequence[float] | None = None, classes: Sequence[str] | None = None,
                      dataset: str | None = None, layout: str | None = None, model_args: dict | None = None,
                      image_shape: Sequence[int] | None = None) -> Path:
    """Turn a foreign checkpoint into a cnnkit run folder ``out``; returns the path of its checkpoint.json.

    ``layout`` forces a key layout (``torchvision``, ``cifar_resnet``, ``cnnkit``; found by default);
    ``model_args`` are builder arguments that override what the layout implies (e.g.
    ``{"shortcut_padding": "after"}``). The model is built with as many outputs as ``classes`` has names."""
    weights = Path(weights)
    if weights.is_dir():
        raise CnnkitError(f"{weights} is a folder; a cnnkit run folder needs no import (use it "
                          "directly), a foreign checkpoint is one .pth/.th/.pt/.safetensors file")
    meta = imported_meta(model_name, mean=mean, std=std, classes=classes, dataset=dataset, image_shape=image_shape)
    model, matched = build_imported_model(weights, model_name, layout, model_args, num_classes=len(meta["classes"]),
                                          in_channels=meta["image_shape"][0])
    meta["imported_from"] = {"file": str(weights.resolve()), "sha256": file_sha256(weights), "layout": matched}
    return save_model_checkpoint(Path(out), model.eval(), meta)


__all__ = ["build_imported_model", "import_checkpoint", "imported_meta", "read_class_names"]
