"""Features: the outputs of chosen stages for a batch or a whole dataset (timm's ``features_only``), and training
the top stages of a model on cached features of its frozen base."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..card import card_of, model_name, update_build_record
from ..data.augment import AugmentConfig, Preprocess
from ..data.datasets import DatasetBundle, TensorImageDataset
from ..errors import CnnkitError
from ..models.stages import run_stages
from ..progress import progress_bar
from ..train import Trainer
from .stage_groups import _stage_index, stages


def stage_outputs(model: nn.Module, x: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The outputs of the named stages for an input batch (timm's ``features_only``; ``create_model(...,
    features_only=True)`` is the module form). Chain models stop after the last stage asked for, so early stages
    cost only their own layers."""
    model_stages = stages(model)
    wanted = {_stage_index(model_stages, n) for n in names}
    outputs = run_stages(model, model_stages, x, wanted)
    return {model_stages[i].name: outputs[i] for i in sorted(wanted)}


def pool_features(x: torch.Tensor) -> torch.Tensor:
    """Global average pooling of maps (N, C, H, W) -> (N, C); vectors pass through."""
    return x.mean(dim=(2, 3)) if x.ndim == 4 else x.flatten(1)


def transfer_preprocess(model: nn.Module, image_shape=None, input_size: int | None = None, data_mean=None,
                        data_std=None, augment: dict | None = None):
    """The Preprocess a pretrained model expects: its card's input size and mean/std (the data's where the
    weights do not say)."""
    card = card_of(model)
    mean, std = card.mean or data_mean, card.std or data_std
    if mean is None:
        raise CnnkitError("the model declares no normalisation and no dataset mean/std was given.")
    size = input_size or card.crop
    # Always interpolate: zero-padding a 32x32 image into 224x224 (the loop's default for small images) would
    # show the backbone a thumbnail in a black frame.
    return Preprocess(mean, std, (size, size) if size else None, AugmentConfig.from_dict(augment),
                      resize="interpolate")


def _autocast(device: torch.device, precision: str):
    if precision not in ("fp32", "bf16"):
        raise CnnkitError(f"precision must be 'fp32' or 'bf16', not {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@torch.no_grad()
def extract_features(model: nn.Module, images, stage: str | Sequence[str] | None = None, *,
                     preprocess=None, batch_size: int = 64, pool: bool = True, flip: bool = False,
                     dtype: torch.dtype = torch.float32, channels_last: bool = True,
                     precision: str = "fp32", progress: bool = False,
                     on_batch: Callable[[int, int], None] | None = None) -> torch.Tensor | dict[str, torch.Tensor]:
    """Features of ``images`` (a uint8 (N, C, H, W) tensor, a dataset with ``.images``, or an already
    preprocessed float tensor) at one stage (a tensor) or several (a dict of tensors, one pass for all).
    ``stage`` defaults to the last stage before the classifier. ``pool`` averages maps to vectors; ``flip``
    mirrors the images first (for test-time or cached flip augmentation). ``precision="bf16"`` runs the model
    under bfloat16 autocast (on these CPUs EfficientNet-Lite0 at 224 px: 4x faster, and the linear probe on its
    features within 0.4 points of fp32's); features are returned as ``dtype``. ``on_batch(done,
    total)`` is called after each pass (a page's progress bar). The model runs in eval mode and is put back in the
    mode it was in."""
    images = getattr(images, "images", images)
    names = [stage] if isinstance(stage, str) else list(stage or [stages(model)[-2].name])
    if preprocess is None and images.dtype == torch.uint8:
        preprocess = transfer_preprocess(model)
    was_training = model.training
    model.eval()
    if channels_last:  # depthwise and 1x1 convolutions run several times faster on CPU in NHWC
        model.to(memory_format=torch.channels_last)
    collected: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    bar = None
    if progress:
        bar = progress_bar(len(images), f"features {','.join(names)}", unit="img")
    try:
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size]
            if flip:
                x = x.flip(3)
            x = preprocess(x) if preprocess is not None else x.float()
            if channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(x.device, precision):
                outputs = stage_outputs(model, x, names)
            for name, value in outputs.items():
                value = pool_features(value.float()) if pool else value
                collected[name].append(value.to(dtype).contiguous())
            if bar is not None:
                bar.update(len(x))
            if on_batch is not None:
                on_batch(start + len(x), len(images))
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    result = {n: torch.cat(v) for n, v in collected.items()}
    return result[names[0]] if isinstance(stage, str) or stage is None else result


# ------------------------------------------------------------------------------- training on cached features
class StageTail(nn.Module):
    """The stages above ``after`` of a chain model, sharing its modules: training the tail on cached outputs
    of a frozen base trains the model itself, at the cost of the top stages only."""

    def __init__(self, model: nn.Module, after: str):
        super().__init__()
        model_stages = stages(model)
        index = _stage_index(model_stages, after)
        if any(s.forward is None for s in model_stages):
            raise CnnkitError(f"{type(model).__name__} is not a chain of stages, so its top cannot run on cached "
                              "features.")
        self.body = nn.Sequential(*(s.forward for s in model_stages[index + 1:]))
        update_build_record(self, name=f"{model_name(model)} above {after}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def feature_bundle(name: str, train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                   test_labels: torch.Tensor, classes: list[str]):
    """A DatasetBundle whose "images" are cached stage outputs (maps, or pooled vectors as C x 1 x 1 maps),
    for the one training loop. The loop's preprocessing divides pixels by 255 and normalises; a mean of 0 and
    a std of 1/255 make that the identity on features."""
    def as_maps(x):
        return x[:, :, None, None] if x.ndim == 2 else x

    train = FeatureDataset(as_maps(train_features), train_labels.long(), list(classes))
    test = FeatureDataset(as_maps(test_features), test_labels.long(), list(classes))
    return DatasetBundle(name, train, test, list(classes), (0.0,), (1.0 / 255.0,), note="cached features")


@dataclasses.dataclass(repr=False)  # the split's one-line summary, not its tensors
class FeatureDataset(TensorImageDataset):
    """Cached float features (N, C, H, W) in place of uint8 images."""

    def __post_init__(self):
        if not self.images.is_floating_point() or self.images.ndim != 4:
            raise CnnkitError(f"features must be a float (N, C, H, W) tensor, got {self.images.dtype} "
                              f"{tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise CnnkitError(f"{len(self.images)} feature rows but {len(self.labels)} labels")

    def subset(self, indices) -> FeatureDataset:
        indices = torch.as_tensor(indices, dtype=torch.long)
        return FeatureDataset(self.images[indices], self.labels[indices], self.classes)


def train_on_features(model: nn.Module, after: str, bundle, config, out=None, callbacks=()):
    """A Trainer for the stages of ``model`` above ``after``, reading a ``feature_bundle`` of that stage's cached
    outputs: ``.fit()`` trains the model's own modules (shared with the tail), ``.evaluate(FeatureDataset)``
    scores it on other cached features."""
    return Trainer(StageTail(model, after), bundle, config, out=out, callbacks=callbacks)
