"""``cnnkit models``, ``cnnkit datasets`` and ``cnnkit summary``: what there is to work with."""

from __future__ import annotations

from ..errors import CnnkitError
from ..schema import positive_int
from .options import add_command

EXAMPLES = {
    "models": "example:\n  cnnkit models --family resnet",
    "datasets": "example:\n  cnnkit datasets",
    "summary": "examples:\n  cnnkit summary resnet18 --input 3x224x224 --batch-size 32\n"
               "  cnnkit summary lenet5            # at the model's native input (1x32x32)",
}


def add_parser(sub) -> None:
    p = add_command(sub, "models", "list the registered models", EXAMPLES)
    p.add_argument("--family", help="only this family (lenet, resnet, vgg, ...)")
    p.set_defaults(func=cmd_models)

    p = add_command(sub, "datasets", "list the dataset catalog and which datasets are present locally", EXAMPLES)
    p.set_defaults(func=cmd_datasets)

    p = add_command(sub, "summary",
                    "per-layer shapes, parameters, multiply-accumulates, memory and receptive fields", EXAMPLES)
    p.add_argument("model", help="model name (see 'cnnkit models')")
    p.add_argument("--input", help="input size CxHxW or HxW (default: the model's native input)")
    p.add_argument("--batch-size", type=positive_int, default=1, help="batch size for the activation-memory column")
    p.set_defaults(func=cmd_summary)


def cmd_models(args) -> None:
    from ..models.registry import get_model_entry, list_models

    names = list_models(args.family)
    if not names:
        raise CnnkitError(f"No models in family {args.family!r}.")
    print(f"{'model':<22} {'family':<12} {'input':<12} {'classes':>7}  paper")
    for name in names:
        e = get_model_entry(name)
        print(f"{name:<22} {e.family:<12} {'x'.join(map(str, e.input_size)):<12} {e.num_classes:>7}  {e.paper}")


def cmd_datasets(args) -> None:
    from ..data.catalog import data_roots
    from ..data.datasets import describe_catalog

    print(f"{'dataset':<15} {'local':<6} description")
    for row in describe_catalog():
        print(f"{row['name']:<15} {'yes' if row['local'] else 'no':<6} {row['description']}")
        if row["copy"]:  # which copy: figures on a lossy one are not comparable to published ones
            print(f"{'':<22} present: {row['copy']}")
    print(f"{'imagefolder:PATH':<15} {'':<6} a folder with one sub-folder per class (or train/ and val/ sub-folders)")
    print("searched: " + ", ".join(str(r) for r in data_roots()) + ", then the download mirrors")


def cmd_summary(args) -> None:
    from ..analysis import summary

    print(summary(args.model, args.input, batch_size=args.batch_size))
