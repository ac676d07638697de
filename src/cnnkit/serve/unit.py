"""One unit of a convolution, explained (the Explain page, after CNN Explainer, Wang et al. 2020): where it
looks in the input, how its value is made, and what the layers after it do with that value.

``explain_unit(model, batch, layer, channel, row, column, rows)``, for a model-ready (1, C, H, W) batch:

* the receptive field: its size, jump and centre from the architecture calculator (cnnkit.analysis), drawn as a
  box on the input;
* for the network's first convolution, the arithmetic itself: the kernel, the input patch it multiplies (taken
  from the tensor the convolution really read, so padding added by the layer, like TensorFlow's "SAME", shows
  as the zeros it is), the elementwise products, their sum and the bias, which add up to the value the
  forward pass computed;
* for deeper convolutions, the gradient of the unit with respect to the input: which pixels move it, and how
  much (it lies inside the receptive field, by construction of the network);
* the steps after the convolution up to the next weighted layer: the value before and after each elementwise
  layer (batch norm, ReLU) and, for a pooling layer, its window, the values in it and the one it keeps.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from ..errors import CnnkitError
from ..viz.hooks import UnitOutOfRangeError, evaluation_mode, find_layer

MAX_STEPS = 6  # layers followed after the convolution: BN, activation, pooling and a dropout are four
POOLS = (nn.MaxPool2d, nn.AvgPool2d)


class NotConvolutionError(CnnkitError):
    http_status = 400


def convolution_rows(model: nn.Module, rows) -> list:
    """The calculator's rows (cnnkit.analysis.summary of ``model``) that are 2-d convolutions, in the order
    they run."""
    modules = dict(model.named_modules())
    return [row for row in rows if isinstance(modules.get(row.name), nn.Conv2d) and len(row.output_shape) == 3]


class _ConvolutionCalls(TorchDispatchMode):
    """Records the arguments of every convolution torch runs while active: the input as the kernel reads it
    (after any padding the module adds itself), the weight, bias, stride, padding, dilation and groups."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket is torch.ops.aten.convolution:
            self.calls.append(tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args))
        return func(*args, **(kwargs or {}))


@dataclasses.dataclass
class _Step:
    name: str
    module: nn.Module
    before: torch.Tensor
    after: torch.Tensor | None = None


@contextlib.contextmanager
def _recording(model: nn.Module, layer: str):
    """Within the block, a forward pass records the layer's output (still in the autograd graph), the
    convolutions it runs, and the leaf layers that run after it up to the next weighted one."""
    target = find_layer(model, layer)
    record = {"output": None, "steps": [], "done": False, "calls": _ConvolutionCalls()}
    modules = [(name, module) for name, module in model.named_modules()
               if name and not any(True for _ in module.children())]

    def target_pre(module, args):
        record["calls"].__enter__()

    def target_post(module, args, output):
        record["calls"].__exit__(None, None, None)
        if record["output"] is None:
            record["output"] = output
            return output.clone()  # an in-place ReLU after it must not overwrite what is explained
        return None

    def step_pre(name):
        def hook(module, args):
            if record["output"] is None or record["done"] or module is target:
                return
            weighted = any(True for _ in module.parameters(recurse=False)) and not isinstance(
                module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm))
            if weighted or len(record["steps"]) >= MAX_STEPS or not isinstance(args[0], torch.Tensor):
                record["done"] = True
                return
            record["steps"].append(_Step(name, module, args[0].detach().clone()))
        return hook

    def step_post(module, args, output):
        steps = record["steps"]
        if steps and steps[-1].module is module and steps[-1].after is None and isinstance(output, torch.Tensor):
            steps[-1].after = output.detach().clone()

    handles = [target.register_forward_pre_hook(target_pre), target.register_forward_hook(target_post)]
    for name, module in modules:
        handles.append(module.register_forward_pre_hook(step_pre(name)))
        handles.append(module.register_forward_hook(step_post))
    try:
        yield record
    finally:
        for handle in handles:
            handle.remove()


def receptive_box(row, unit_row: int, unit_column: int, height: int, width: int) -> dict:
    """The input pixels unit (row, column) of a layer sees, from the calculator's size, jump and start:
    ``top``/``left`` of the full field (negative: it reaches into the padding) and the part inside the image."""
    if row.receptive_field is None:
        return {"size": None, "whole_input": True, "top": 0, "left": 0, "bottom": height - 1, "right": width - 1}
    size, jump, start = row.receptive_field, row.jump, row.receptive_start
    top = round(start + unit_row * jump - (size - 1) / 2)
    left = round(start + unit_column * jump - (size - 1) / 2)
    return {"size": size, "jump": jump, "whole_input": False, "top": top, "left": left,
            "bottom": top + size - 1, "right": left + size - 1,
            "inside": [max(top, 0), max(left, 0), min(top + size - 1, height - 1), min(left + size - 1, width - 1)]}


def _arithmetic(call: tuple, output_value: float, channel: int, row: int, column: int, box: dict,
                image_shape) -> dict:
    """The products and sum that make one value of the first convolution, from its recorded arguments."""
    x, weight, bias, stride, padding, dilation, _, _, groups = call[:9]
    padded = F.pad(x[:1], (padding[1], padding[1], padding[0], padding[0]))
    per_group = weight.shape[0] // groups
    group = channel // per_group
    kernel = weight[channel]  # (C_in / groups, kh, kw)
    rows = row * stride[0] + dilation[0] * torch.arange(kernel.shape[1])
    columns = column * stride[1] + dilation[1] * torch.arange(kernel.shape[2])
    patch = padded[0, group * kernel.shape[0]:(group + 1) * kernel.shape[0]][:, rows][:, :, columns]
    products = patch * kernel
    bias_value = float(bias[channel]) if bias is not None else 0.0
    total = float(products.double().sum()) + bias_value
    # Where each patch cell lies in the image (the first convolution reads the image itself, jump 1).
    height, width = image_shape
    image_rows = [box["top"] + dilation[0] * i for i in range(kernel.shape[1])]
    image_columns = [box["left"] + dilation[1] * j for j in range(kernel.shape[2])]
    padding_cells = [[not (0 <= r < height and 0 <= c < width) for c in image_columns] for r in image_rows]
    return {"kernel": kernel.tolist(), "patch": patch.tolist(), "products": products.tolist(),
            "channel_sums": products.double().sum((1, 2)).tolist(), "bias": bias_value, "sum": total,
            "has_bias": bias is not None, "value": output_value, "input_channels": list(
                range(group * kernel.shape[0], (group + 1) * kernel.shape[0])),
            "image_rows": image_rows, "image_columns": image_columns, "padding": padding_cells,
            "stride": list(stride), "conv_padding": list(padding), "dilation": list(dilation)}


def _pool_step(step: _Step, channel: int, row: int, column: int) -> dict:
    pool = step.module
    pair = (lambda v: (v, v) if isinstance(v, int) else tuple(v))
    (kh, kw), (sh, sw), (ph, pw) = pair(pool.kernel_size), pair(pool.stride or pool.kernel_size), pair(pool.padding)
    out_rows, out_columns = step.after.shape[-2:]
    out_row, out_column = min((row + ph) // sh, out_rows - 1), min((column + pw) // sw, out_columns - 1)
    top, left = out_row * sh - ph, out_column * sw - pw
    answer = {"layer": step.name, "type": type(pool).__name__, "kernel": [kh, kw], "stride": [sh, sw],
              "before": float(step.before[0, channel, row, column]), "output_position": [out_row, out_column],
              "window_top": top, "window_left": left}
    if not (top <= row < top + kh and left <= column < left + kw):
        answer["note"] = "this unit falls between the pooling windows (stride larger than the window)"
        return answer
    height, width = step.before.shape[-2:]
    window = [[float(step.before[0, channel, r, c]) if 0 <= r < height and 0 <= c < width else None
               for c in range(left, left + kw)] for r in range(top, top + kh)]
    answer.update(window=window, after=float(step.after[0, channel, out_row, out_column]))
    if isinstance(pool, nn.MaxPool2d):
        cells = [(v, i, j) for i, line in enumerate(window) for j, v in enumerate(line) if v is not None]
        best = max(cells, key=lambda cell: cell[0])  # the first of equal values, as torch's max pooling keeps
        answer.update(chosen=best[0], chosen_cell=[best[1], best[2]])
    return answer


def _steps(steps: list[_Step], start: torch.Tensor, channel: int, row: int, column: int) -> list[dict]:
    """The layers that carry this unit's value on, while each reads what the one before it wrote."""
    out, previous = [], start
    for step in steps:
        if step.after is None or step.before.shape != previous.shape or not torch.equal(step.before, previous):
            break
        if isinstance(step.module, POOLS):
            out.append(_pool_step(step, channel, row, column))
            break
        if step.after.shape != step.before.shape:
            break
        out.append({"layer": step.name, "type": type(step.module).__name__,
                    "before": float(step.before[0, channel, row, column]),
                    "after": float(step.after[0, channel, row, column])})
        previous = step.after
    return out


def _input_gradient(model_input: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    (gradient,) = torch.autograd.grad(value, model_input)
    return gradient[0].detach()


def explain_unit(model: nn.Module, batch: torch.Tensor, layer: str, channel: int, row: int, column: int,
                 rows) -> dict:
    """What makes unit (``channel``, ``row``, ``column``) of convolution ``layer`` for the (1, C, H, W) model-
    ready ``batch``; ``rows``: the calculator's table for the model at this input size."""
    convolutions = convolution_rows(model, rows)
    names = [r.name for r in convolutions]
    if layer not in names:
        find_layer(model, layer)  # an unknown name: the error lists the model's layers
        raise NotConvolutionError(f"Layer {layer!r} is not a 2-d convolution; pick one of {', '.join(names)}.")
    layer_row = convolutions[names.index(layer)]
    channels, height, width = layer_row.output_shape
    for what, value, limit in (("channel", channel, channels), ("row", row, height), ("column", column, width)):
        if not 0 <= value < limit:
            raise UnitOutOfRangeError(f"{what} {value} is outside layer {layer!r}, whose output is"
                                      f" {channels}x{height}x{width} (channels x rows x columns), 0 to {limit - 1}.")
    model_input = batch.detach().clone().requires_grad_(True)
    with evaluation_mode(model), torch.enable_grad(), _recording(model, layer) as record:
        model(model_input)
        output = record["output"]
        value = output[0, channel, row, column]
        gradient = _input_gradient(model_input, value)
    box = receptive_box(layer_row, row, column, *batch.shape[-2:])
    answer = {"layer": layer, "type": layer_row.type, "unit": [channel, row, column], "value": float(value.detach()),
              "output_shape": list(layer_row.output_shape), "receptive_field": box,
              "first_convolution": layer == names[0], "gradient": gradient,
              "steps": _steps(record["steps"], output.detach(), channel, row, column)}
    if answer["first_convolution"] and record["calls"].calls:
        answer["arithmetic"] = _arithmetic(record["calls"].calls[0], float(value.detach()), channel, row, column, box,
                                           tuple(batch.shape[-2:]))
    return answer
