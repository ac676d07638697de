"""Regenerate the Fashion-MNIST and MNIST pictures of the README's "Looking inside" section, one command each:

    PYTHONPATH=src python docs/looking_inside/lenet_figures.py --data fashion-mnist [--run RUN_DIR]
    PYTHONPATH=src python docs/looking_inside/lenet_figures.py --data mnist [--run RUN_DIR]

It trains ``lenet5_relu`` with the one training loop (3 epochs, under a minute on a 2-core CPU), unless --run
names a finished run folder on the same dataset. Then it draws training curves, the confusion matrix, a t-SNE of
the penultimate features, feature maps, Grad-CAM, first-layer filters and class-logit maximisation. The PNGs land
in ``fashion-mnist/`` or ``mnist/`` next to this script.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from cnnkit.data import load_dataset
from cnnkit.models import create_model
from cnnkit.predict import preprocess_from_meta
from cnnkit.train import TrainConfig, Trainer, load_model_checkpoint
from cnnkit.viz import commands

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=["fashion-mnist", "mnist"], default="fashion-mnist")
    parser.add_argument("--run", type=Path, help="a finished lenet5_relu run on --data (skips training)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, help="default: a folder named after --data next to this script")
    args = parser.parse_args()
    args.out = args.out or HERE / args.data
    bundle = load_dataset(args.data)
    torch.manual_seed(0)
    if args.run:
        model, meta = load_model_checkpoint(args.run)
        run_dir, preprocess = args.run, preprocess_from_meta(meta)
        # A run folder does not keep its initial weights; compare with a fresh initialisation instead.
        initial = create_model("lenet5_relu", num_classes=len(bundle.classes)).state_dict()
    else:
        model = create_model("lenet5_relu", num_classes=len(bundle.classes))
        initial = {key: value.detach().clone() for key, value in model.state_dict().items()}
        run_dir = REPO / "runs" / f"lenet5-{args.data}"
        config = TrainConfig(epochs=args.epochs, lr=0.05, schedule="onecycle", progress=False)
        trainer = Trainer(model, bundle, config, out=run_dir)
        trainer.fit()
        preprocess = trainer.preprocess
    model.eval()
    out, names = args.out, bundle.classes
    test = [(preprocess(bundle.test.images[start:start + 500]), bundle.test.labels[start:start + 500])
            for start in range(0, len(bundle.test), 500)]
    normalisation = dict(mean=preprocess.mean, std=preprocess.std)
    commands.curves(run_dir, out)
    commands.confusion(model, test, out, class_names=names)
    commands.embed(model, test, out, class_names=names, max_examples=2000)
    commands.filters(model, out, before=initial)
    examples = test[0][0][:4]
    commands.maps(model, examples[:1], out, **normalisation)
    commands.gradcam(model, examples, out, class_names=names, **normalisation)
    commands.maximize(model, list(range(len(names))), out, target="logit", steps=150, class_names=names,
                      **normalisation)
    print(f"pictures written to {out}")


if __name__ == "__main__":
    main()
