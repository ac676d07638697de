"""The architecture calculator: a per-layer table of shapes, parameters, multiply-accumulates, activation memory
and receptive fields, computed the way the notes do it by hand -- but by torch itself.

    >>> print(cnnkit.analysis.summary("resnet18", "3x224x224", batch_size=32))
    >>> report = summary(model, (3, 32, 32)); report.rows[0].macs, report.totals["params"]

How it works. The model runs once on the ``meta`` device (shapes only, no arithmetic, no memory), so the
summary of VGG-19 at 224x224 costs milliseconds. Forward hooks record each layer's output shape;
``torch.utils.flop_counter.FlopCounterMode`` counts the arithmetic; a small dispatch mode follows every
tensor through convolutions and poolings to track the receptive field (the input pixels one output value
can see) and the jump (the distance in input pixels between neighbouring output values).

MACs versus FLOPs, honestly: the table counts multiply-accumulates (one multiply + one add), which is what
the notes (854 M ops for the naive inception module) and He et al. ("3.6 billion FLOPs", really multiply-adds)
report. FLOPs = 2 x MACs. Only convolutions and matrix products are counted -- biases, batch norm, activations,
pooling and additions are left out, as in those papers (they are a few percent at most). A layer that runs a
sparse operation as a dense one (LeNet's partial C3) says what it really costs through a ``multiply_adds(
output_shape)`` method, which replaces the flop counter's dense figure for that layer and in the totals.
Activation memory is the size of each layer's output (what the backward pass must keep), in the model's
dtype; "batch" multiplies it by ``batch_size``. Sizes use binary units (1 MiB = 2**20 bytes).
"""

from __future__ import annotations

import dataclasses
import html
import math
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.weak import WeakTensorKeyDictionary

from .card import architecture_card
from .errors import CnnkitError, ShapeError
from .models.registry import create_model, get_model_entry

aten = torch.ops.aten


@dataclasses.dataclass
class LayerRow:
    name: str  # dotted module path, as in the state dict
    type: str  # module class
    output_shape: tuple[int, ...]  # per instance (no batch dimension)
    trainable_params: int
    frozen_params: int
    macs: int  # multiply-accumulates for ONE instance
    activation_bytes: int  # output size for one instance
    batch_activation_bytes: int  # output size for the whole batch
    receptive_field: int | None  # pixels of the input one output value sees (None: the whole input)
    jump: float | None  # input pixels between neighbouring outputs
    im2col_shape: tuple[int, int] | None  # rows x columns of the unfolded matrix of a convolution (per instance)
    im2col_bytes: int | None
    # Input pixel at the centre of the first output's receptive field (row = column for square layers); output
    # (y, x) sees the rf x rf pixels centred on (start + y * jump, start + x * jump), partly padding at the edges.
    receptive_start: float | None = None

    @property
    def params(self) -> int:
        return self.trainable_params + self.frozen_params


@dataclasses.dataclass
class Summary:
    model_name: str
    input_size: tuple[int, ...]
    batch_size: int
    rows: list[LayerRow]
    totals: dict[str, Any]

    def __str__(self) -> str:
        return format_summary(self)

    def __repr__(self) -> str:  # the table, not the dataclass's wall of LayerRow(...)
        return format_summary(self)

    def _repr_html_(self) -> str:  # Jupyter shows the table as HTML
        return summary_html(self)

    def row(self, name: str) -> LayerRow:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(name)


# ----------------------------------------------------------------------------------------------------------
# Receptive field tracking
# ----------------------------------------------------------------------------------------------------------

_POOLS = {aten.max_pool2d_with_indices, aten.max_pool2d, aten.avg_pool2d}
_ADAPTIVE = {aten._adaptive_avg_pool2d, aten.adaptive_max_pool2d, aten.adaptive_avg_pool2d}
_DENSE = {aten.mm, aten.addmm, aten.bmm, aten.linear}
_GLOBAL = (math.inf, math.inf, 0.0)


class _ReceptiveFieldMode(TorchDispatchMode):
    """Propagates (receptive field, jump, start) along every tensor: convolutions and poolings grow them with
    r_out = r_in + (k - 1) * j_in and j_out = j_in * s (dilated kernels count as k' = d (k - 1) + 1), and move
    the centre of the first output's field by start_out = start_in + ((k - 1) / 2 - p) * j_in; explicit padding
    (F.pad) moves it back by the pixels added on the left; element-wise ops, concatenations and reshapes take
    the largest of their inputs; dense layers and global pooling see the whole input. ``strict`` raises when a
    filter does not land on the last pixel (the notes' rule). Columns are followed (the last axis): square
    layers treat rows alike."""

    def __init__(self, strict: bool = False):
        super().__init__()
        self.info = WeakTensorKeyDictionary()
        self.strict = strict
        self.current_layer = "input"

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        known = [self.info[t] for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and t in self.info]
        if packet is aten.convolution and args[0] in self.info:
            known = [self.info[args[0]]]
        field = max(known) if known else None
        if field is not None:
            if packet is aten.convolution:
                field = self._convolution(args, field)
            elif packet in _POOLS:
                field = self._pool(packet, args, field)
            elif packet in _ADAPTIVE:
                field = self._adaptive(args, field)
            elif packet is aten.constant_pad_nd and len(args[1]) >= 2:
                rf, jump, start = field
                field = rf, jump, start - args[1][0] * jump  # args[1][0]: pixels added left of the last axis
            elif packet in _DENSE or packet is aten.mean and len(args) > 1 and _reduces_spatial(args):
                field = _GLOBAL
        out = func(*args, **kwargs)
        if field is not None:
            for tensor in tree_leaves(out):
                if isinstance(tensor, torch.Tensor) and tensor.dim() > 0 and tensor not in self.info:
                    self.info[tensor] = field
        return out

    def _check_fit(self, size: int, kernel: int, stride: int, padding: int) -> None:
        span = size + 2 * padding - kernel
        if span < 0:
            raise ShapeError(f"layer {self.current_layer}: a {kernel}x{kernel} window does not fit a {size}x{size} "
                             f"input with padding {padding}; use a larger input or a smaller kernel")
        if self.strict and span % stride:
            raise ShapeError(
                f"layer {self.current_layer}: a {kernel}x{kernel} filter with stride {stride} does not fit a "
                f"{size}x{size} input with padding {padding}: ({size} + 2*{padding} - {kernel})/{stride} + 1 = "
                f"{span / stride + 1:.2f} is not a whole number; change the stride or padding")

    def _convolution(self, args, field):
        x, weight, _, stride, padding, dilation, transposed = args[:7]
        rf, jump, start = field
        kernel = dilation[-1] * (weight.shape[-1] - 1) + 1
        if transposed:  # the start of an upsampling layer's field is left as it was (an approximation)
            jump = jump / stride[-1]
            return rf + (weight.shape[-1] - 1) * jump, jump, start
        for axis in (-2, -1):
            k = dilation[axis] * (weight.shape[axis] - 1) + 1
            self._check_fit(x.shape[axis], k, stride[axis], padding[axis])
        return rf + (kernel - 1) * jump, jump * stride[-1], start + ((kernel - 1) / 2 - padding[-1]) * jump

    def _pool(self, packet, args, field):
        x = args[0]
        kernel = _pair(args[1])
        stride = _pair(args[2]) if len(args) > 2 and args[2] else kernel
        padding = _pair(args[3]) if len(args) > 3 else (0, 0)
        ceil_mode = bool(args[5]) if packet is not aten.avg_pool2d and len(args) > 5 else (
            bool(args[4]) if packet is aten.avg_pool2d and len(args) > 4 else False)
        if not ceil_mode:
            for axis in (0, 1):
                self._check_fit(x.shape[axis - 2], kernel[axis], stride[axis], padding[axis])
        rf, jump, start = field
        return rf + (kernel[-1] - 1) * jump, jump * stride[-1], start + ((kernel[-1] - 1) / 2 - padding[-1]) * jump

    def _adaptive(self, args, field):
        x, output_size = args[0], _pair(args[1])
        size, out = x.shape[-1], output_size[-1]
        if out == 1:
            return _GLOBAL
        rf, jump, start = field
        if out >= size:  # repeats pixels (e.g. VGG's 7x7 pool on a 1x1 map): no new context
            return rf, jump * size / out, start
        kernel, stride = math.ceil(size / out), size // out
        return rf + (kernel - 1) * jump, jump * stride, start + (kernel - 1) / 2 * jump


def _pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    value = list(value)
    return (value[0], value[0]) if len(value) == 1 else (value[0], value[1])


def _reduces_spatial(args) -> bool:
    x, dims = args[0], args[1]
    dims = {d % x.dim() for d in dims}
    return x.dim() >= 3 and {x.dim() - 1, x.dim() - 2} <= dims


# ----------------------------------------------------------------------------------------------------------
# The calculator
# ----------------------------------------------------------------------------------------------------------


def parse_input_size(input_size) -> tuple[int, ...]:
    """'3x224x224', (3, 224, 224), (224, 224) or 224 -> a shape tuple (a 2-tuple or int has no channels)."""
    if isinstance(input_size, str):
        try:
            parts = tuple(int(p) for p in input_size.lower().replace(",", "x").split("x") if p.strip())
        except ValueError:
            parts = ()
        if not parts or any(p <= 0 for p in parts):
            raise CnnkitError(f"input size {input_size!r} is not CxHxW (e.g. 3x224x224) or HxW")
        return parts
    if isinstance(input_size, int):
        return (input_size, input_size)
    return tuple(int(p) for p in input_size)


def summary(model: nn.Module | str, input_size=None, batch_size: int = 1, *, dtype: torch.dtype = torch.float32,
            strict: bool = False, num_classes: int | None = None, in_channels: int | None = None,
            **model_kwargs) -> Summary:
    """Per-layer table and totals for ``model`` on inputs of ``input_size`` (CxHxW, without the batch).

    ``model`` may be a registered name: it is then built on the meta device (instant even for VGG), with
    ``in_channels`` taken from ``input_size`` when that has three entries. ``input_size=None`` uses the
    registry's native input. ``strict=True`` raises a ShapeError when a filter's stride does not land on the
    last pixel (the notes' rule), instead of silently flooring as torch does.
    """
    model_name = model if isinstance(model, str) else type(model).__name__
    size = None if input_size is None else parse_input_size(input_size)
    if isinstance(model, str):
        entry = get_model_entry(model)
        if size is None:
            size = entry.input_size
        elif len(size) == 2:
            size = (in_channels or entry.input_size[0], *size)
        with torch.device("meta"):
            model = create_model(model_name, num_classes=num_classes, in_channels=in_channels or size[0],
                                 **model_kwargs)
    else:
        if size is None:
            card = architecture_card(model)
            if card.input_size is None:
                raise CnnkitError("summary needs an input size for a model built outside the registry, "
                                  "e.g. summary(model, (3, 224, 224))")
            size = (card.in_channels, *card.input_size)
        elif len(size) == 2:
            size = (_first_in_channels(model), *size)
    if batch_size < 1:
        raise CnnkitError(f"batch_size must be at least 1, got {batch_size}")
    return _run(model, model_name, tuple(size), batch_size, dtype, strict)


def _first_in_channels(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return m.in_channels
    raise CnnkitError("cannot guess the input channels; give input_size as CxHxW")


def _leaf_modules(model: nn.Module):
    for name, module in model.named_modules():
        has_children = any(True for _ in module.children())
        own_params = any(True for _ in module.parameters(recurse=False))
        if not has_children or own_params:
            yield name, module


@dataclasses.dataclass
class _Trace:
    """What one shapes-only forward pass saw: the leaf layers in call order, each one's output and receptive
    field, how often each ran, and the FLOPs torch counted per module."""
    leaves: dict[str, nn.Module]
    order: list[str]
    outputs: dict[str, Any]
    calls: dict[str, int]
    flops_by_layer: dict[str, int]  # FLOPs counted while each leaf layer ran, over all its calls
    total_flops: int
    output: Any


def _run(model: nn.Module, model_name: str, input_size: tuple[int, ...], batch_size: int, dtype, strict) -> Summary:
    element_bytes = torch.empty((), dtype=dtype).element_size()
    trace = _trace(model, model_name, input_size, batch_size, dtype, strict)
    total_macs = trace.total_flops // 2 // batch_size
    rows = []
    for name in trace.order:
        row, dense_macs = _layer_row(model, model_name, name, trace, batch_size, element_bytes)
        total_macs += row.macs - dense_macs  # a layer that counts its own connections replaces torch's figure
        rows.append(row)
    return Summary(model_name, input_size, batch_size, rows,
                   _totals(model, trace, rows, total_macs, input_size, batch_size, element_bytes))


def _trace(model: nn.Module, model_name: str, input_size, batch_size: int, dtype, strict) -> _Trace:
    # Shapes only: swap every parameter and buffer for a meta tensor of the same shape (no copy, no compute).
    tensors = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    state = {name: torch.empty(t.shape, dtype=dtype if t.is_floating_point() else t.dtype, device="meta")
             for name, t in tensors}
    x = torch.empty((batch_size, *input_size), dtype=dtype, device="meta")

    leaves = dict(_leaf_modules(model))
    order: list[str] = []
    outputs: dict[str, Any] = {}
    calls: dict[str, int] = {}
    field_mode = _ReceptiveFieldMode(strict)
    field_mode.info[x] = (1, 1, 0.0)
    flop_counter = FlopCounterMode(display=False)
    # Each layer's FLOPs are the counter's growth while it runs, not the counter's per-module table: that table
    # names modules by the path they were called through, and a container made per call (a features_only
    # backbone's stem, an Inception branch) would file a layer's FLOPs under a name no row has.
    flops_at_start: dict[str, int] = {}
    flops_by_layer: dict[str, int] = {}
    handles = []

    def make_hooks(name):
        def pre(module, args):
            field_mode.current_layer = name or model_name
            flops_at_start[name] = flop_counter.get_total_flops()

        def post(module, args, output):
            if name not in outputs:
                order.append(name)
            outputs[name] = (output, field_mode.info.get(_first_tensor(output)))
            calls[name] = calls.get(name, 0) + 1
            grown = flop_counter.get_total_flops() - flops_at_start.pop(name)
            flops_by_layer[name] = flops_by_layer.get(name, 0) + grown

        return pre, post

    for name, module in leaves.items():
        pre, post = make_hooks(name)
        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))

    was_training = model.training
    model.eval()
    try:
        with flop_counter, field_mode:
            output = torch.func.functional_call(model, state, (x,), strict=False)
    except RuntimeError as error:  # torch's own shape complaints, reworded with the layer that raised them
        raise ShapeError(f"{model_name} cannot run on a {'x'.join(map(str, input_size))} input: layer "
                         f"{field_mode.current_layer} failed with: {error}") from None
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return _Trace(leaves, order, outputs, calls, flops_by_layer, flop_counter.get_total_flops(),
                  output)


def _layer_row(model: nn.Module, model_name: str, name: str, trace: _Trace, batch_size: int,
               element_bytes: int) -> tuple["LayerRow", int]:
    """One table row, and the MACs torch counted for the layer (which the row's own count may replace)."""
    module = trace.leaves[name]
    out, field = trace.outputs[name]
    tensor = _first_tensor(out)
    shape = tuple(tensor.shape[1:]) if tensor is not None and tensor.dim() > 0 else ()
    numel = math.prod(shape) if shape else 0
    dense_macs = macs = trace.flops_by_layer.get(name, 0) // 2 // batch_size
    if hasattr(module, "multiply_adds") and shape:  # the connections that exist, not the dense stand-in
        macs = module.multiply_adds(shape) * trace.calls[name]
    direct = list(module.parameters(recurse=not any(True for _ in module.children())))
    trainable = sum(p.numel() for p in direct if p.requires_grad)
    frozen = sum(p.numel() for p in direct if not p.requires_grad)
    rf, jump, start = field if field is not None else (None, None, None)
    if rf == math.inf:
        rf = jump = start = None
    im2col_shape = im2col_bytes = None
    if isinstance(module, nn.Conv2d) and len(shape) == 3:
        kh, kw = module.kernel_size
        im2col_shape = (module.in_channels * kh * kw, shape[1] * shape[2])
        im2col_bytes = im2col_shape[0] * im2col_shape[1] * element_bytes
    row = LayerRow(name or model_name, type(module).__name__, shape, trainable, frozen, macs,
                   numel * element_bytes, numel * element_bytes * batch_size,
                   None if rf is None else int(rf), jump, im2col_shape, im2col_bytes, start)
    return row, dense_macs


def _totals(model: nn.Module, trace: _Trace, rows, total_macs: int, input_size, batch_size: int,
            element_bytes: int) -> dict:
    # Layers the forward pass did not use (GoogLeNet's auxiliary classifiers in eval mode) still count in the
    # totals, since they are trained and saved; their share is reported separately.
    used = {id(p) for name in trace.order for p in trace.leaves[name].parameters()}
    params = list({id(p): p for p in model.parameters()}.values())
    unused = sum(p.numel() for p in params if id(p) not in used)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    frozen = sum(p.numel() for p in params if not p.requires_grad)
    activations = sum(r.activation_bytes for r in rows)
    final = _first_tensor(trace.output)
    return {
        "params": trainable + frozen,
        "trainable_params": trainable,
        "frozen_params": frozen,
        "unused_params": unused,
        "param_bytes": sum(p.numel() * element_bytes for p in params),
        "macs": total_macs,
        "flops": 2 * total_macs,
        "batch_macs": total_macs * batch_size,
        "activation_bytes": activations,
        "batch_activation_bytes": activations * batch_size,
        "input_bytes": math.prod(input_size) * element_bytes,
        "output_shape": tuple(final.shape[1:]) if final is not None else (),
        "max_im2col_bytes": max((r.im2col_bytes for r in rows if r.im2col_bytes), default=0),
    }


def _first_tensor(output):
    for leaf in tree_leaves(output):
        if isinstance(leaf, torch.Tensor):
            return leaf
    return None


# ----------------------------------------------------------------------------------------------------------
# Formatting
# ----------------------------------------------------------------------------------------------------------


def format_count(value: float) -> str:
    """1234 -> '1.23 K', 225e6 -> '225.00 M', 19.6e9 -> '19.63 G'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f}"


def format_bytes(value: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f} B"


_HEADER = ["layer", "type", "output (CxHxW)", "params", "frozen", "MACs", "act/instance", "act/batch", "RF", "jump",
           "im2col"]
_FIRST_NUMERIC = 3  # the columns from "params" on are numbers, right-aligned
_LEGEND = ("MACs count convolutions and matrix products only (FLOPs = 2 x MACs); RF = receptive field in input pixels, "
           "jump = input pixels between neighbouring outputs.")


def _title(report: Summary) -> str:
    return f"{report.model_name} on {'x'.join(map(str, report.input_size))} input, batch {report.batch_size}"


def _cells(report: Summary) -> tuple[list[str], list[list[str]]]:
    """The table's header and one row of formatted cells per layer, shared by the text and HTML views."""
    header = [*_HEADER[:7], f"act/batch {report.batch_size}", *_HEADER[8:]]
    table = []
    for r in report.rows:
        table.append([
            r.name, r.type, "x".join(map(str, r.output_shape)) or "-", f"{r.trainable_params:,}",
            f"{r.frozen_params:,}" if r.frozen_params else "-", format_count(r.macs) if r.macs else "-",
            format_bytes(r.activation_bytes), format_bytes(r.batch_activation_bytes),
            "all" if r.receptive_field is None else str(r.receptive_field),
            "-" if r.jump is None else f"{r.jump:g}",
            f"{r.im2col_shape[0]}x{r.im2col_shape[1]}" if r.im2col_shape else "-",
        ])
    return header, table


def _total_lines(report: Summary) -> list[str]:
    t = report.totals
    params_line = (f"parameters: {t['params']:,} ({t['trainable_params']:,} trainable, {t['frozen_params']:,} "
                   f"frozen), {format_bytes(t['param_bytes'])}")
    if t["unused_params"]:
        params_line += f"; {t['unused_params']:,} of them in layers this forward pass does not use"
    macs_line = (f"multiply-accumulates per instance: {t['macs']:,} ({format_count(t['macs'])}MACs = "
                 f"{format_count(t['flops'])}FLOPs); batch: {format_count(t['batch_macs'])}MACs")
    memory_line = (f"activation memory (layer outputs): {format_bytes(t['activation_bytes'])} per instance, "
                   f"{format_bytes(t['batch_activation_bytes'])} per batch of {report.batch_size}")
    io_line = (f"input: {format_bytes(t['input_bytes'])} per instance; output shape: "
               f"{'x'.join(map(str, t['output_shape']))}; largest im2col matrix: {format_bytes(t['max_im2col_bytes'])}")
    return [params_line, macs_line, memory_line, io_line]


def format_summary(report: Summary) -> str:
    header, table = _cells(report)
    widths = [max(len(h), *(len(row[i]) for row in table)) if table else len(h) for i, h in enumerate(header)]

    def line(cells):
        return "  ".join(c.rjust(w) if i >= _FIRST_NUMERIC else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "-" * len(line(header))
    lines = [_title(report), rule, line(header), rule, *(line(row) for row in table), rule,
             *_total_lines(report), _LEGEND]
    return "\n".join(lines)


def summary_html(report: Summary) -> str:
    """The summary as an HTML table (what a Jupyter notebook shows for a ``Summary``), every cell escaped."""
    header, table = _cells(report)

    def row(cells, tag):
        return "<tr>" + "".join(
            f'<{tag} style="text-align:{"right" if i >= _FIRST_NUMERIC else "left"}">{html.escape(c)}</{tag}>'
            for i, c in enumerate(cells)) + "</tr>"

    body = "\n".join(row(cells, "td") for cells in table)
    totals = "".join(f"<li>{html.escape(line)}</li>" for line in _total_lines(report))
    return (f'<div class="cnnkit-summary"><table>\n<caption>{html.escape(_title(report))}</caption>\n'
            f"<thead>{row(header, 'th')}</thead>\n<tbody>\n{body}\n</tbody>\n</table>\n"
            f"<ul>{totals}</ul>\n<p><small>{html.escape(_LEGEND)}</small></p></div>")


__all__ = ["LayerRow", "Summary", "format_summary", "parse_input_size", "summary", "summary_html"]
