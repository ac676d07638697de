"""The Zoo page: the architecture calculator's table for a model and input size, and the stages to draw."""

from __future__ import annotations

import functools

from ..analysis import parse_input_size, summary
from ..errors import ShapeError
from ..models.registry import create_model, get_model_entry, list_models

MAX_SIDE = 1024  # the calculator runs on the meta device, but a huge input still means a huge table of numbers
MAX_CHANNELS = 16
MIN_STAGES = 4
NORM_TYPES = {"BatchNorm2d", "BatchNorm1d", "GroupNorm", "LayerNorm", "LocalResponseNorm"}


def zoo_models() -> list[dict]:
    rows = []
    for name in list_models():
        entry = get_model_entry(name)
        rows.append({"name": name, "family": entry.family, "input_size": list(entry.input_size),
                     "num_classes": entry.num_classes, "paper": entry.paper, "min_input_size": entry.min_input_size,
                     "task": entry.task})
    return rows


def checked_input_size(model: str, text: str | None) -> tuple[int, ...]:
    entry = get_model_entry(model)  # unknown names fail here, with suggestions
    if not text:
        return tuple(entry.input_size)
    size = parse_input_size(text)
    if len(size) == 2:
        size = (entry.input_size[0], *size)
    if len(size) != 3:
        raise ShapeError(f"input size {text!r} must be CxHxW (e.g. 3x224x224) or HxW.")
    channels, height, width = size
    if channels > MAX_CHANNELS or max(height, width) > MAX_SIDE:
        raise ShapeError(f"input size {text!r} is too large for the playground: at most {MAX_CHANNELS} channels and "
                         f"{MAX_SIDE} pixels a side.")
    if min(height, width) < entry.min_input_size:
        raise ShapeError(f"{model} needs inputs of at least {entry.min_input_size}x{entry.min_input_size} pixels "
                         f"(its pooling and strides shrink anything smaller to nothing); got {height}x{width}.")
    return size


@functools.lru_cache(maxsize=64)
def zoo_summary(model: str, input_size: tuple[int, ...]) -> dict:
    try:
        report = summary(model, input_size)
    except (RuntimeError, ValueError) as exc:  # an architecture that rejects this size in its own words
        raise ShapeError(f"{model} cannot run on a {'x'.join(map(str, input_size))} input: {exc}") from None
    rows = [{"name": r.name, "type": r.type, "output_shape": list(r.output_shape), "params": r.params,
             "macs": r.macs, "activation_bytes": r.activation_bytes, "receptive_field": r.receptive_field}
            for r in report.rows]
    t = report.totals
    totals = {key: t[key] for key in ("params", "trainable_params", "param_bytes", "macs", "flops",
                                      "activation_bytes", "input_bytes")}
    totals["output_shape"] = list(t["output_shape"])
    drawn = stages(rows)
    for stage in drawn:  # a composite stage (an inception module) outputs more than its last leaf layer
        stage["output_shape"] = module_output_shapes(model, input_size).get(stage["name"], stage["output_shape"])
    return {"model": model, "input_size": list(input_size), "rows": rows, "totals": totals, "stages": drawn}


@functools.lru_cache(maxsize=64)
def module_output_shapes(model: str, input_size: tuple[int, ...]) -> dict[str, list[int]]:
    """Output shape (without the batch) of every module that runs, from one pass on the meta device (shapes
    only, no arithmetic)."""
    import torch

    with torch.device("meta"):
        network = create_model(model, in_channels=input_size[0]).eval()
    shapes: dict[str, list[int]] = {}

    def record(name):
        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor):
                shapes[name] = list(output.shape[1:])
        return hook

    handles = [module.register_forward_hook(record(name)) for name, module in network.named_modules() if name]
    try:
        with torch.no_grad():
            network(torch.empty((1, *input_size), device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def stages(rows: list[dict]) -> list[dict]:
    """Consecutive layers grouped by the top of their dotted name (``layer3.1.conv2`` -> ``layer3``), one level
    deeper while that gives fewer than MIN_STAGES boxes (LeNet-5 is just ``features`` and ``classifier``).

    A group without weights of its own (an activation, a pooling, a batch norm at the top level) joins the
    stage before it, so the diagram shows the network's real stages rather than every ReLU; a stage's shape
    is that of its last weighted layer (a shared activation module reports only its last call's shape).
    """
    depth, groups = 1, _group(rows, 1)
    while len(groups) < MIN_STAGES and depth < 3:
        deeper = _group(rows, depth + 1)
        if len(deeper) == len(groups):
            break
        depth, groups = depth + 1, deeper
    merged: list[tuple[str, list[dict]]] = []
    for name, members in groups:
        if merged and not any(m["params"] and m["type"] not in NORM_TYPES for m in members):
            merged[-1][1].extend(members)
        else:
            merged.append((name, list(members)))
    out = []
    for name, members in merged:
        weighted = [m for m in members if m["params"] and m["output_shape"]]
        shaped = weighted or [m for m in members if m["output_shape"]]
        out.append({"name": name, "layers": len(members),
                    "types": sorted({m["type"] for m in members}),
                    "output_shape": shaped[-1]["output_shape"] if shaped else [],
                    "params": sum(m["params"] for m in members), "macs": sum(m["macs"] for m in members)})
    return out


def _group(rows: list[dict], depth: int) -> list[tuple[str, list[dict]]]:
    groups: list[tuple[str, list[dict]]] = []
    for row in rows:
        key = ".".join(row["name"].split(".")[:depth])
        if groups and groups[-1][0] == key:
            groups[-1][1].append(row)
        else:
            groups.append((key, [row]))
    return groups
