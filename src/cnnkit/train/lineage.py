"""Which runs share a start: averaging weights (a model soup, ``cnnkit average``) only works for networks that
began from the same weights. Two independently initialised networks sit in different basins, their units in
different orders, and their average is a broken network (two LeNet-5s on MNIST, each ~98 %: ~37 %).

The Trainer records a fingerprint of each parameter tensor's initial value in checkpoint.json (``lineage``);
runs whose fingerprints agree on most of the weights share an ancestor (seeds of one fine-tuning share the
pretrained backbone and differ only in the new head). For runs trained before fingerprints were recorded, the
weights themselves are compared: networks from one start keep weight vectors pointing the same way (cosine
similarity near 1 after fine-tuning, well above 0.5 after short training), independent ones are near-orthogonal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch

SHARED_FRACTION = 0.5  # at least this share of the weights must have started equal
MIN_COSINE = 0.3  # without fingerprints: the weight vectors' mean cosine similarity below this means independent


def init_fingerprints(model: torch.nn.Module) -> dict[str, str]:
    """A short hash of each parameter's value (call it before the first step): the run's starting point."""
    prints = {}
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            prints[name] = hashlib.sha256(raw).hexdigest()[:16]
    return prints


def shared_start_fraction(a: Mapping[str, str], b: Mapping[str, str], state: Mapping[str, torch.Tensor]) -> float:
    """The share of the weights (counted in elements of ``state``) whose initial fingerprints agree."""
    sizes = {name: state[name].numel() for name in a if name in state}
    total = sum(sizes.values())
    same = sum(size for name, size in sizes.items() if b.get(name) == a[name])
    return same / total if total else 0.0


def weight_cosine(first: Mapping[str, torch.Tensor], second: Mapping[str, torch.Tensor]) -> float:
    """Mean over the weight matrices and kernels (2 dimensions or more) of the cosine similarity between the
    two networks' values: each layer counts once, so no single large layer decides."""
    cosines = []
    for name, x in first.items():
        y = second.get(name)
        if y is None or not x.is_floating_point() or x.dim() < 2 or x.shape != y.shape:
            continue
        x, y = x.double().flatten(), y.double().flatten()
        norms = x.norm() * y.norm()
        if norms > 0:
            cosines.append(float(x @ y / norms))
    return sum(cosines) / len(cosines) if cosines else 1.0


def independence_warning(names: list[str], metas: list[dict], states: list[Mapping[str, torch.Tensor]]) -> str | None:
    """A one-line warning when some run does not share its start with the first, else None."""
    strangers = []
    for name, meta, state in zip(names[1:], metas[1:], states[1:]):
        ours, theirs = (metas[0].get("lineage") or {}).get("init"), (meta.get("lineage") or {}).get("init")
        if ours and theirs:
            fraction = shared_start_fraction(ours, theirs, states[0])
            if fraction < SHARED_FRACTION:
                strangers.append(f"{name} (started from other weights: {100 * fraction:.0f} % shared)")
        else:
            cosine = weight_cosine(states[0], state)
            if cosine < MIN_COSINE:
                strangers.append(f"{name} (weights nearly orthogonal to {names[0]}'s: cosine {cosine:.2f})")
    if not strangers:
        return None
    return (f"{', '.join(strangers)}: not from the same initialisation as {names[0]}. Independently initialised "
            "networks do not average into a working one (their units are in different orders); average runs "
            "fine-tuned from one pretrained model, or checkpoints of one run. Check the result with cnnkit eval.")
