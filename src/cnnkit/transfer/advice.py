"""The notes' 2x2 transfer-learning advice: how much data x how similar to the pretraining data."""

from __future__ import annotations

import dataclasses

from ..errors import CnnkitError

@dataclasses.dataclass(frozen=True)
class Advice:
    data: str  # "very little" | "quite a lot"
    similarity: str  # "very similar" | "very different"
    strategy: str  # a finetune() strategy
    stages: str  # which stages to train or probe
    recommendation: str
    reason: str


LITTLE_DATA_BELOW = 10_000  # labelled images; below this, fine-tuning many layers mostly overfits


def advise(n_images: int, similarity: str | float, little_data_below: int = LITTLE_DATA_BELOW) -> Advice:
    """The notes' 2x2 table (seed 000, "Transfer Learning?"): very little / quite a lot of data x a dataset very
    similar / very different from the one the network was pretrained on. ``similarity`` is "similar" or
    "different" (or a number in [0, 1], >= 0.5 meaning similar)."""
    if isinstance(similarity, (int, float)):
        similar = float(similarity) >= 0.5
    else:
        key = similarity.strip().lower().replace("very ", "")
        if key not in ("similar", "different"):
            raise CnnkitError(f"similarity must be 'similar' or 'different' (or a number in [0, 1]), "
                              f"not {similarity!r}.")
        similar = key == "similar"
    if n_images < 0:
        raise CnnkitError(f"n_images must be >= 0, got {n_images}.")
    little = n_images < little_data_below
    data = "very little" if little else "quite a lot"
    kind = "very similar" if similar else "very different"
    if little and similar:
        return Advice(data, kind, "linear", "top", "Use a linear classifier on the top layer.",
                      "The top features already describe this kind of image, and with few labels any layer you "
                      "train beyond a linear classifier overfits.")
    if little:
        return Advice(data, kind, "linear", "each", "You're in trouble: try linear classifiers on features from "
                      "different stages and keep the best (cnnkit finetune --strategy linear).",
                      "Upper layers are specific to the original task, so the best features may sit lower, and there "
                      "is too little data to retrain them.")
    if similar:
        return Advice(data, kind, "two-phase", "a few top stages", "Fine-tune a few layers: train the new head with "
                      "the base frozen, then unfreeze the top stages at about 0.1x the learning rate.",
                      "Generic lower layers transfer as they are; enough data lets the specific top layers adapt "
                      "without overfitting.")
    return Advice(data, kind, "full", "most stages", "Fine-tune a larger number of layers (or all of them), after "
                  "a head-only warm-up, at a reduced learning rate.",
                  "A different domain needs more of the network to change, and there is enough data to change it; "
                  "pretrained weights remain a better start than random ones.")
