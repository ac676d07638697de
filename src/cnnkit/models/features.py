"""Multi-stage feature maps, as timm's ``features_only``: a backbone whose forward returns a list of maps.

    backbone = create_model("resnet50", features_only=True, out_indices=(2, 3, 4))
    maps = backbone(images)                       # [layer2, layer3, layer4] maps
    backbone.feature_info.channels()              # [512, 1024, 2048]
    backbone.feature_info.reduction()             # [8, 16, 32]: input pixels per output pixel

The feature stages are the model's own stages (its family's ``feature_stages()``, :mod:`.stages`) below the
classifier whose output is a map (N, C, H, W); ``out_indices`` counts them from 0, negative from the top.
Channels and reductions are measured, not declared: the backbone runs once on the ``meta`` device (shapes only,
no arithmetic) at two input sizes 64 pixels apart, so the reduction is the exact stride (64 / the growth of the
map) rather than a ratio blurred by unpadded borders.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import CnnkitError, ConfigError
from .registry import set_backbone_builder
from .stages import CLASSIFIER, model_stages, run_stages

_SIZE_STEP = 64  # a multiple of every stride in the zoo (at most 32), so map sizes grow by exactly 64 / stride


class FeatureInfo:
    """What each feature map of a backbone is, as timm's ``feature_info``: per map a dict with ``num_chs``
    (channels), ``reduction`` (stride with respect to the input), ``module`` (the stage's module path or name)
    and ``stage`` (the stage's name); ``channels()``, ``reduction()`` and ``module_name()`` list one field."""

    def __init__(self, entries: Sequence[dict]):
        self._entries = [dict(e) for e in entries]

    def get(self, key: str, idx: int | Sequence[int] | None = None):
        if idx is None:
            return [e[key] for e in self._entries]
        if isinstance(idx, int):
            return self._entries[idx][key]
        return [self._entries[i][key] for i in idx]

    def channels(self, idx: int | Sequence[int] | None = None):
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None):
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None):
        return self.get("module", idx)

    def get_dicts(self, keys: Sequence[str] | None = None) -> list[dict]:
        return [dict(e) if keys is None else {k: e[k] for k in keys} for e in self._entries]

    def __getitem__(self, idx: int) -> dict:
        return dict(self._entries[idx])

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self):
        return iter(self.get_dicts())

    def __repr__(self) -> str:
        return "FeatureInfo([" + ", ".join(
            f"{e['stage']}: {e['num_chs']} ch, /{e['reduction']}" for e in self._entries) + "])"


class FeatureExtractor(nn.Module):
    """``model`` as a backbone: ``forward(x)`` returns the maps of the feature stages at ``out_indices`` (all of
    them by default), lowest first, computing nothing above the highest one of a chain model. ``input_size`` is
    (channels, height, width) of an input the model accepts, used once to measure ``feature_info``. The
    model's parameters keep their names under ``model.``; what it needs at inference (mean, std, input size)
    stays on it too: ``card_of(backbone.model)``."""

    def __init__(self, model: nn.Module, input_size: Sequence[int], out_indices: Sequence[int] | None = None,
                 name: str | None = None):
        super().__init__()
        self.model = model
        name = name or type(model).__name__
        body = [s.name for s in model_stages(model) if s.name != CLASSIFIER]
        channels, height = int(input_size[0]), int(input_size[-2])
        self._stage_names = body
        small = self._probe(channels, height)
        # Only maps are probed at the larger size: a stage after a flatten (retina_net's fc) needs the paper's size.
        self._stage_names = [n for n in body if _is_map(small.get(n))]
        try:
            large = self._probe(channels, height + _SIZE_STEP) if self._stage_names else {}
        except CnnkitError:  # a model sized for one input (retina_net's dense layer): reductions from one size
            large = {}
        maps = [n for n in self._stage_names if _is_map(large.get(n, small[n]))]
        if not maps:
            raise CnnkitError(f"{name} has no stage below its classifier whose output is a feature map (N, C, H, W) "
                              f"(stages: {', '.join(body) or 'none'}), so features_only cannot serve it; read its "
                              "stages with cnnkit.transfer.stage_outputs instead.")
        self.out_indices = _normalise_indices(out_indices, maps, name)
        self._stage_names = [maps[i] for i in self.out_indices]
        module_of = {s.name: _module_path(s) for s in model_stages(model)}
        self.feature_info = FeatureInfo([
            {"num_chs": int(small[n].shape[1]), "reduction": _reduction(small[n], large.get(n), height),
             "module": module_of[n], "stage": n, "index": i}
            for n, i in zip(self._stage_names, self.out_indices)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # Stages are asked for on each call, so they follow any module the user has swapped in since.
        stages = model_stages(self.model)
        positions = [next(i for i, s in enumerate(stages) if s.name == n) for n in self._stage_names]
        outputs = run_stages(self.model, stages, x, set(positions))
        return [outputs[i] for i in positions]

    def _probe(self, channels: int, size: int) -> dict[str, torch.Tensor]:
        """Every candidate stage's output for one (channels, size, size) input, in eval mode: on ``meta`` tensors
        (shapes only) where the model's operations allow it, else on real zeros."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                try:
                    meta_state = {n: torch.empty_like(t, device="meta") for n, t in
                                  [*self.named_parameters(), *self.named_buffers()]}
                    outputs = torch.func.functional_call(self, meta_state, (torch.zeros(1, channels, size, size,
                                                                                        device="meta"),))
                except (NotImplementedError, RuntimeError):
                    device = next(self.parameters()).device
                    outputs = self(torch.zeros(1, channels, size, size, device=device))
        except (RuntimeError, ValueError) as error:  # ValueError: cnnkit's ShapeError, a size the model refuses
            raise CnnkitError(f"{type(self.model).__name__} did not run on a {channels}x{size}x{size} input while "
                              f"measuring its feature maps ({error}); pass an input_size it accepts.") from error
        finally:
            self.model.train(was_training)
        return dict(zip(self._stage_names, outputs))


def _is_map(output) -> bool:
    return isinstance(output, torch.Tensor) and output.ndim == 4


def _module_path(stage) -> str:
    """The module a stage's output comes from, where one module is the whole stage; else the stage's name."""
    if stage.output_module:
        return stage.output_module
    return stage.prefixes[0].rstrip(".") if len(stage.prefixes) == 1 else stage.name


def _reduction(small: torch.Tensor, large: torch.Tensor | None, height: int) -> int:
    growth = 0 if large is None else int(large.shape[2]) - int(small.shape[2])
    if growth > 0 and _SIZE_STEP % growth == 0:
        return _SIZE_STEP // growth
    return max(1, round(height / int(small.shape[2])))  # a map that does not grow with its input (pooled)


def _normalise_indices(out_indices: Sequence[int] | None, maps: list[str], name: str) -> tuple[int, ...]:
    count = len(maps)
    if out_indices is None:
        return tuple(range(count))
    if isinstance(out_indices, int):
        out_indices = (out_indices,)
    listing = ", ".join(f"{i}={n}" for i, n in enumerate(maps))
    chosen = []
    for index in out_indices:
        if isinstance(index, bool) or not isinstance(index, int) or not -count <= index < count:
            raise ConfigError(f"out_indices={tuple(out_indices)!r}: {index!r} is not a feature stage of {name}, "
                              f"which has {count} ({listing}); give integers 0..{count - 1}, or -1 for the last.")
        chosen.append(index % count)
    if len(set(chosen)) != len(chosen):
        raise ConfigError(f"out_indices={tuple(out_indices)!r} names a stage of {name} twice ({listing}).")
    return tuple(sorted(chosen))


def features_only(model: nn.Module, name: str, task: str, input_size: Sequence[int],
                  out_indices: Sequence[int] | None) -> FeatureExtractor:
    """``create_model(name, features_only=True)``: the classifier ``model`` as a backbone of feature maps."""
    if task != "classification":
        raise ConfigError(f"features_only=True: {name} is a {task} model, not a classifier, so it has no backbone "
                          "of feature stages below a classifier. Build it without features_only and read its "
                          "stages with cnnkit.transfer.stage_outputs(model, x, names).")
    return FeatureExtractor(model, input_size, out_indices, name)


set_backbone_builder(features_only)

__all__ = ["FeatureExtractor", "FeatureInfo", "features_only"]
