"""Export a classifier to ONNX or TorchScript, with the preprocessing its weights need written into the file.

    export_model(model, "lenet5.onnx")                         # the model card says size, channels, mean, std
    read_export_metadata("lenet5.onnx")["mean"]                # read back, from ONNX or TorchScript alike

ONNX goes through torch.onnx.export's torch.export-based exporter (``dynamo=True``, the default since torch 2.9):
with torch 2.13 it exports every zoo classifier with a dynamic batch dimension, whereas the legacy TorchScript
exporter (``dynamo=False``, deprecated) cannot express the adaptive average pooling of VGG and AlexNet below
their native input size. TorchScript goes through torch.jit.trace, which the models' plain tensor code suits.

The file records, besides the graph, what a reader needs to feed it (``metadata_props`` in ONNX, the
``cnnkit.json`` extra file in TorchScript), every value JSON-encoded: ``input_size`` (height, width),
``in_channels``, ``mean`` and ``std`` (None: pixels stay in [0, 1]), ``resize`` (shorter side before the centre
crop; None: resized straight to input_size), ``interpolation``, ``fit`` (how a run's own images met
input_size: "auto" zero-pads smaller ones, centred -- LeNet-5's 28x28 digits in 32x32 -- and resizes others;
"interpolate" always resizes), ``classes``, ``input_layout``, and where the
weights came from. The input is float32 NCHW, (pixels / 255 - mean) / std; the output is the logits.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .card import ModelCard, card_of
from .errors import CnnkitError, ShapeError
from .runs import load_model_checkpoint

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
SUFFIX_FORMATS = {".onnx": "onnx", ".pt": "torchscript", ".pth": "torchscript", ".torchscript": "torchscript"}
INPUT_NAME, OUTPUT_NAME = "input", "logits"
TORCHSCRIPT_METADATA = "cnnkit.json"  # the _extra_files entry of a TorchScript export
INPUT_LAYOUT = "float32 NCHW; (pixels / 255 - mean) / std; pixels / 255 when mean is null"
_EXAMPLE_BATCH = 2  # torch.export fixes a dimension of size 0 or 1, so the traced batch has two images


class ExportError(CnnkitError):
    """A model, format or output file that cannot be exported to."""


def export_format(output: str | Path | None, format: str | None) -> str:
    """The format asked for: ``format`` when given, else the one ``output``'s suffix names, else ONNX."""
    if format is not None:
        if format not in FORMATS:
            raise ExportError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}.")
        return format
    suffix = Path(output).suffix.lower() if output is not None else ".onnx"
    if suffix not in SUFFIX_FORMATS:
        raise ExportError(f"cannot tell the export format from {output}'s suffix {suffix!r}; name it with "
                          f"format='onnx' or 'torchscript' (cnnkit export --format), or end the file in "
                          f"{', '.join(SUFFIX_FORMATS)}.")
    return SUFFIX_FORMATS[suffix]


def export_metadata(card: ModelCard, input_size: tuple[int, int], in_channels: int) -> dict[str, str]:
    """What a reader of the exported file needs, each value JSON-encoded (ONNX metadata holds strings)."""
    values = {"format_version": 1, "exported_by": f"cnnkit export (torch {torch.__version__})",
              "model": card.name, "task": card.task,
              "input_size": list(input_size), "in_channels": in_channels, "input_layout": INPUT_LAYOUT,
              "mean": _list_or_none(card.mean), "std": _list_or_none(card.std), "resize": card.resize,
              "interpolation": card.interpolation, "fit": card.fit, "num_classes": card.num_classes,
              "classes": _list_or_none(card.classes), "dataset": card.dataset, "source": card.source,
              "input_name": INPUT_NAME, "output_name": OUTPUT_NAME}
    return {key: json.dumps(value) for key, value in values.items()}


def _list_or_none(values) -> list | None:
    return None if values is None else list(values)


def export_model(model: nn.Module | str | Path, output: str | Path, format: str | None = None, *,
                 input_size: tuple[int, int] | None = None, overwrite: bool = False) -> Path:
    """Write ``model`` (in eval mode; or the model of a run folder) to ``output`` as ONNX (dynamic batch) or
    TorchScript, with its card's preprocessing as metadata. ``format`` None: from ``output``'s suffix.
    ``input_size`` (height, width) overrides the card's; an existing ``output`` is refused unless ``overwrite``.
    Returns the path written."""
    output = Path(output)
    format = export_format(output, format)
    if format == "onnx":
        require_onnx()
    if output.is_dir():
        example = output / f"model{FORMATS[format]}"
        raise ExportError(f"{output} is a folder; name the file to write, e.g. -o {example}")
    if output.exists() and not overwrite:
        raise ExportError(f"{output} already exists; pass --overwrite (overwrite=True) to replace it, or name "
                          "another file with -o.")
    if not isinstance(model, nn.Module):
        model, _ = load_model_checkpoint(model)
    card = card_of(model)
    if card.task != "classification":
        raise ExportError(f"export writes classifiers; {card.name or type(model).__name__} is a {card.task} model.")
    example = example_input(model, card, input_size)
    metadata = export_metadata(card, tuple(example.shape[-2:]), example.shape[1])
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp{os.getpid()}")
    was_training = model.training
    model.eval()
    try:
        with quiet_exporters():
            if format == "onnx":
                _write_onnx(model, example, metadata, tmp)
            else:
                _write_torchscript(model, example, metadata, tmp)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
        model.train(was_training)
    return output


def example_input(model: nn.Module, card: ModelCard, input_size: tuple[int, int] | None) -> torch.Tensor:
    """The batch the exporters trace: the card's channels and input size (or ``input_size``)."""
    size = tuple(input_size) if input_size is not None else card.input_size
    if size is None or card.in_channels is None:
        raise ExportError(f"{type(model).__name__} has no model card saying its input size and channels; build it "
                          "with cnnkit.create_model (or load a run folder), which gives it one.")
    if len(size) != 2 or min(size) < card.min_input_size:
        raise ShapeError(f"input_size {size} is not (height, width) of at least {card.min_input_size} pixels, the "
                         f"smallest side {card.name} accepts.")
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else "cpu"
    return torch.zeros(_EXAMPLE_BATCH, card.in_channels, *size, device=device)


def require_onnx() -> None:
    """ONNX export needs the onnx and onnxscript packages (the optional extra ``cnnkit[export]``)."""
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"ONNX export needs the {' and '.join(missing)} package{'s' * (len(missing) > 1)}: "
                          "pip install 'cnnkit[export]' (or use --format torchscript, which needs only torch).")


@contextlib.contextmanager
def quiet_exporters():
    """The exporters' own chatter, about what cnnkit cannot act on, kept off the user's terminal: torch.onnx
    logs the torchvision operators it skips (cnnkit needs none), torch.jit.trace is deprecated in favour of
    torch.export, and tracing turns the models' input-size checks into constants (the size is fixed anyway)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            for category in (DeprecationWarning, FutureWarning, torch.jit.TracerWarning):
                warnings.simplefilter("ignore", category)
            yield
    finally:
        logger.setLevel(level)


def _write_onnx(model: nn.Module, example: torch.Tensor, metadata: dict[str, str], path: Path) -> None:
    import onnx

    program = torch.onnx.export(model, (example,), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    proto = program.model_proto
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = f"cnnkit export of {json.loads(metadata['model'])}: input {INPUT_LAYOUT}"
    onnx.save(proto, str(path))


def _write_torchscript(model: nn.Module, example: torch.Tensor, metadata: dict[str, str], path: Path) -> None:
    with torch.no_grad():
        traced = torch.jit.trace(model, example)
    values = {key: json.loads(value) for key, value in metadata.items()}
    torch.jit.save(traced, str(path), _extra_files={TORCHSCRIPT_METADATA: json.dumps(values, indent=1)})


def read_export_metadata(path: str | Path) -> dict:
    """The metadata an exported file carries, decoded (``{"input_size": [32, 32], "mean": [...], ...}``)."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path} is not a file.")
    if export_format(path, None) == "onnx":
        require_onnx()
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        return {entry.key: json.loads(entry.value) for entry in proto.metadata_props}
    files = {TORCHSCRIPT_METADATA: ""}
    with quiet_exporters():
        torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    if not files[TORCHSCRIPT_METADATA]:
        raise ExportError(f"{path} holds no {TORCHSCRIPT_METADATA}; it was not written by cnnkit export.")
    return json.loads(files[TORCHSCRIPT_METADATA])


__all__ = ["FORMATS", "ExportError", "export_format", "export_metadata", "export_model", "read_export_metadata"]
