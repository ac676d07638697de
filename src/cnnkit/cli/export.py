"""``cnnkit export``: a run folder's or a pretrained model's classifier as an ONNX or TorchScript file."""

from __future__ import annotations

from pathlib import Path

from ..errors import CnnkitError
from .options import add_command

EXAMPLES = {"export": """examples:
  cnnkit export runs/lenet5                          # writes runs/lenet5.onnx (dynamic batch)
  cnnkit export runs/lenet5 --format torchscript -o lenet5.pt
  cnnkit export --model efficientnet_lite0 --pretrained imagenet -o lite0.onnx
The file records the preprocessing its input needs (input size, channels, mean, std, resize, classes): ONNX
in metadata_props, TorchScript in the extra file cnnkit.json; each value is JSON. ONNX needs
pip install 'cnnkit[export]'."""}


def add_parser(sub) -> None:
    p = add_command(sub, "export", "write a classifier as an ONNX or TorchScript file, with its preprocessing",
                    EXAMPLES)
    p.add_argument("checkpoint", nargs="?", type=Path,
                   help="run folder (or its checkpoint.json); omit with --model/--pretrained")
    p.add_argument("--model", help="a registered model to build instead of reading a run folder")
    p.add_argument("--pretrained", help="with --model: a pretrained tag (imagenet), weights file or run folder")
    p.add_argument("--format", choices=["onnx", "torchscript"],
                   help="file format (default: from --output's suffix, .onnx or .pt; else onnx)")
    p.add_argument("-o", "--output", type=Path,
                   help="the file to write (default RUN_DIR.onnx beside the run folder, or MODEL-TAG.onnx)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> None:
    from ..export import FORMATS, export_format, export_model, read_export_metadata

    _check_sources(args)
    format = export_format(args.output, args.format)
    output = args.output or default_output(args, FORMATS[format])
    model = _load_model(args)
    path = export_model(model, output, format, overwrite=args.overwrite)
    metadata = read_export_metadata(path)
    normalised = ("pixels / 255" if metadata["mean"] is None else
                  f"(pixels / 255 - {_short(metadata['mean'])}) / {_short(metadata['std'])}")
    classes = metadata["classes"]
    print(f"wrote {path} ({format}, {path.stat().st_size / 2**20:.1f} MiB): input N x {metadata['in_channels']} x "
          f"{' x '.join(map(str, metadata['input_size']))} float32, {normalised}; output logits over "
          f"{len(classes) if classes else metadata['num_classes']} classes")
    print(_check(model, path, format, metadata))


def default_output(args, suffix: str) -> Path:
    """RUN_DIR.onnx beside the run folder (a dot in its name stays), or MODEL-TAG.onnx here."""
    if args.checkpoint is not None:
        folder = args.checkpoint.parent if args.checkpoint.suffix == ".json" else args.checkpoint
        folder = folder.resolve() if folder.name in ("", ".", "..") else folder
        return folder.with_name(folder.name + suffix)
    tag = Path(args.pretrained).name if Path(args.pretrained).exists() else args.pretrained
    return Path(f"{args.model}-{tag}{suffix}")


def _check_sources(args) -> None:
    """One source: a run folder, or --model with --pretrained."""
    if args.model or args.pretrained:
        if not (args.model and args.pretrained) or args.checkpoint is not None:
            raise CnnkitError("--model and --pretrained go together, without a run folder: cnnkit export --model "
                              "efficientnet_lite0 --pretrained imagenet")
    elif args.checkpoint is None:
        raise CnnkitError("name a run folder (cnnkit export runs/lenet5) or a pretrained model (cnnkit export "
                          "--model efficientnet_lite0 --pretrained imagenet).")


def _load_model(args):
    from ..models.registry import create_model
    from ..train.checkpoint import load_model_checkpoint

    if args.model:
        return create_model(args.model, pretrained=args.pretrained)
    return load_model_checkpoint(args.checkpoint)[0]


def _short(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _check(model, path: Path, format: str, metadata: dict) -> str:
    """The written file run on a random batch of three beside the PyTorch model: the export's own check."""
    import importlib.util

    import torch

    batch = torch.randn(3, metadata["in_channels"], *metadata["input_size"])
    with torch.no_grad():
        expected = model.eval()(batch)
        if format == "torchscript":
            from ..export import quiet_exporters

            with quiet_exporters():  # torch.jit.load's deprecation notice is torch's, not the user's to act on
                got, runtime = torch.jit.load(str(path))(batch), "torch.jit.load"
        elif importlib.util.find_spec("onnxruntime") is None:
            return "not checked: onnxruntime is not installed (pip install 'cnnkit[export]')"
        else:
            import onnxruntime

            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            got = torch.from_numpy(session.run(None, {metadata["input_name"]: batch.numpy()})[0])
            runtime = f"onnxruntime {onnxruntime.__version__}"
    return (f"checked with {runtime}: max |difference| from PyTorch {(got - expected).abs().max().item():.2g} "
            "over the logits of a random batch of 3")
