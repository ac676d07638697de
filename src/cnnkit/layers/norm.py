"""Normalisation layers by name (notes deck 003, "Alternative forms of normalization"): one factory for the
building blocks and the zoo's small networks, so that ``norm="group"`` swaps every batch norm of a network.

    kind      statistics over (for each ...)            paper
    batch     N, H, W          (channel)                Ioffe & Szegedy 2015
    layer     C, H, W          (sample)                 Ba, Kiros & Hinton 2016
    instance  H, W             (sample, channel)        Ulyanov, Vedaldi & Lempitsky 2017 ("Improved texture
                                                        networks"; also "Instance normalization", 2016)
    group     C/G, H, W        (sample, group of C/G)   Wu & He 2018
    none      -                                         (the convolution keeps its bias instead)

Layer and instance norm are made as ``nn.GroupNorm`` with 1 and C groups, the two ends Wu & He draw group norm
between (their Fig. 2). For convolutional maps this is the usual reading of "layer norm": statistics over the
whole (C, H, W) sample, with one learnable scale and shift per channel (``nn.LayerNorm`` would fix H and W and
learn one per pixel). For instance norm, ``nn.GroupNorm(C, C)`` computes the same numbers as
``nn.InstanceNorm2d(C, affine=True)``; one module type for the three keeps the layer types that the inspection
tools recognise (GroupNorm) the same and gives every kind a learnable scale and shift, as batch norm has.
All three normalise each sample on its own, so they act the same in training and evaluation and do not depend
on the batch: the reason group norm exists (batch norm degrades at batches of 1-4 images; Wu & He Fig. 1).
"""

from __future__ import annotations

from torch import nn

NORMS = ("batch", "group", "layer", "instance", "none")
# Wu & He's default (G = 32, their Table 3). Networks with 16-channel layers pass fewer.
DEFAULT_GROUPS = 32


def check_norm(kind: str) -> str:
    """``kind`` if it is one :func:`make_norm` builds, else a ValueError listing the kinds."""
    if kind not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, not {kind!r} "
                         "(e.g. norm='group' for group normalisation)")
    return kind


def resolve_norm(norm: str, batch_norm: bool) -> str:
    """The norm kind from the two spellings a block takes: ``batch_norm=False`` (the older switch, kept so
    existing calls and run folders rebuild) means ``norm='none'``; it contradicts any other explicit kind."""
    check_norm(norm)
    if batch_norm:
        return norm
    if norm not in ("batch", "none"):
        raise ValueError(f"batch_norm=False asks for no normalisation but norm={norm!r} asks for one; "
                         f"give norm alone (norm={norm!r}, or norm='none')")
    return "none"


def conv_bias(norm: str) -> bool:
    """Whether a convolution before this norm needs its own bias: every kind but ``none`` has a learnable
    shift that would cancel it (the mean is subtracted per channel or group)."""
    return check_norm(norm) == "none"


def make_norm(kind: str, channels: int, groups: int = DEFAULT_GROUPS) -> nn.Module:
    """The normalisation layer ``kind`` (see :data:`NORMS`) for ``channels`` maps; ``groups`` is group norm's
    G and must divide ``channels``. ``none`` gives ``nn.Identity``."""
    check_norm(kind)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "instance":
        return nn.GroupNorm(channels, channels)
    if kind == "group":
        if not isinstance(groups, int) or groups < 1 or channels % groups:
            raise ValueError(f"group norm needs a number of groups that divides the {channels} channels, got "
                             f"groups={groups!r}; use e.g. groups={_suggest_groups(channels, groups)} (or "
                             f"norm='layer' / norm='instance' for 1 or {channels} groups)")
        return nn.GroupNorm(groups, channels)
    return nn.Identity()


def _suggest_groups(channels: int, groups) -> int:
    # The largest divisor of channels not above what was asked, leaving at least two channels a group where
    # it can (one channel a group is instance norm, which has its own name).
    limit = groups if isinstance(groups, int) and groups >= 1 else DEFAULT_GROUPS
    divisors = [g for g in range(1, min(limit, channels // 2) + 1) if channels % g == 0]
    return divisors[-1] if divisors else 1


__all__ = ["DEFAULT_GROUPS", "NORMS", "check_norm", "conv_bias", "make_norm", "resolve_norm"]
