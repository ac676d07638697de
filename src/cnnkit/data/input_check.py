"""Is an image given to a trained model anything like the images it was trained on?

A classifier answers confidently whatever it is given: a colour photo handed to an MNIST model comes back as
"8 100.0%". Training records a few cheap statistics of its training images (``input_statistics``, kept in
checkpoint.json); prediction compares each input with them (``distribution_warnings``) and says when it is far
outside, and when the inverted image would fit (a dark digit on white paper for a model trained on MNIST's white
digits on black).

The statistics, per image, in [0, 1] units: its mean, its standard deviation, the mean of its border (a two-pixel
frame: MNIST's is black, a photo's is not) and, for colour images, its saturation. What was recorded is the
central 99 % range of each over the training set; an input outside that range, widened by a margin, is flagged.
"""

from __future__ import annotations

import torch

FEATURES = ("mean", "std", "border", "saturation")
BORDER = 2  # pixels of the frame whose mean is the border feature
LOW, HIGH = 0.005, 0.995  # the central 99 % of the training images
MARGIN = 0.1  # the range is widened by this fraction of its width, plus 0.02, before anything is flagged
SAMPLE = 10_000  # training images the statistics are taken from (a fixed stride through the split)


def image_features(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image features of a (N,C,H,W) uint8 batch: mean, std, border mean and saturation (0 for grey)."""
    x = images.float() / 255
    frame = torch.ones(x.shape[-2:], dtype=torch.bool)
    if min(x.shape[-2:]) > 2 * BORDER:
        frame[BORDER:-BORDER, BORDER:-BORDER] = False
    saturation = (x.amax(dim=1) - x.amin(dim=1)).mean(dim=(1, 2)) if x.shape[1] == 3 else torch.zeros(len(x))
    return {"mean": x.mean(dim=(1, 2, 3)), "std": x.std(dim=(1, 2, 3)) if x[0].numel() > 1 else torch.zeros(len(x)),
            "border": x[:, :, frame].mean(dim=(1, 2)), "saturation": saturation}


def input_statistics(images: torch.Tensor) -> dict:
    """The central 99 % range of each feature over (a stride of) a split's uint8 images, for checkpoint.json."""
    sample = images[:: max(1, len(images) // SAMPLE)]
    features = image_features(sample)
    return {"images": len(sample),
            **{name: [round(float(features[name].quantile(LOW)), 4), round(float(features[name].quantile(HIGH)), 4)]
               for name in FEATURES}}


def _outside(value: float, bounds: list[float]) -> bool:
    low, high = bounds
    slack = MARGIN * (high - low) + 0.02
    return not low - slack <= value <= high + slack


def _describe(name: str, value: float, bounds: list[float]) -> str:
    what = {"mean": "mean brightness", "std": "contrast (std)", "border": "border brightness",
            "saturation": "colour saturation"}[name]
    return f"{what} {value:.2f} (training images: {bounds[0]:.2f}-{bounds[1]:.2f})"


def _fallback_statistics(meta: dict) -> dict:
    """For runs trained before statistics were recorded: ranges guessed from the recorded channel mean and std
    (each image's mean within two pixel standard deviations of the training mean; a mostly dark training set,
    such as MNIST, has a dark border)."""
    mean = sum(meta["preprocess"]["mean"]) / len(meta["preprocess"]["mean"])
    std = sum(meta["preprocess"]["std"]) / len(meta["preprocess"]["std"])
    stats = {"mean": [max(0.0, mean - 2 * std), min(1.0, mean + 2 * std)]}
    if mean < 0.25:
        stats["border"] = [0.0, mean]
    return stats


def distribution_warnings(meta: dict, images: torch.Tensor, names: list[str], colourful: list[bool] | None = None,
                          inverted: bool = False) -> list[str]:
    """One line per input that looks unlike the run's training images, saying how, and suggesting --invert when
    the inverted image fits (or when --invert was given and the image fits without it)."""
    stats = meta.get("input_statistics") or _fallback_statistics(meta)
    checked = [name for name in FEATURES if name in stats]
    features = image_features(images)
    flipped = image_features(255 - images)
    lines = []
    for index, name in enumerate(names):
        off = [_describe(f, float(features[f][index]), stats[f]) for f in checked
               if _outside(float(features[f][index]), stats[f])]
        colour = bool(colourful and colourful[index]) and images.shape[1] == 1
        if not off and not colour:
            continue
        problems = "; ".join(off + (["a colour picture for a model trained on grey images"] if colour else []))
        text = f"{name} looks unlike the images this model was trained on ({meta.get('dataset', 'its data')}): " \
               f"{problems}. Its prediction is unreliable."
        fits_inverted = off and not any(_outside(float(flipped[f][index]), stats[f]) for f in checked)
        if fits_inverted:
            text += (" Without --invert it would fit: drop --invert." if inverted else
                     " Inverted it would fit: for a dark drawing on a light background, add --invert.")
        elif "mean" in stats and stats["mean"][1] < 0.5 and not inverted:
            text += (" The model expects light strokes on a dark background, like its training images; --invert "
                     "turns a dark drawing on white paper into that.")
        lines.append(text)
    return lines


def is_colourful(rgb: torch.Tensor, threshold: float = 0.08) -> bool:
    """Whether a (3,H,W) uint8 image has real colour (mean saturation above ``threshold``), not just grey."""
    return float(image_features(rgb[None])["saturation"][0]) > threshold
