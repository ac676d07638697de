"""Batch loaders that yield (uint8 images, int64 labels) on the target device.

In-memory datasets: the whole uint8 tensor is moved to the device once; each epoch draws a permutation from
a generator seeded by (seed, epoch), so the order is reproducible, a resumed run sees the same batches, and
distributed ranks take disjoint interleaved shards of the same permutation (every sample once per epoch).
Image folders: a torch DataLoader with worker processes decodes files; the same batched augmentation follows.
"""

from __future__ import annotations

import math

import torch

from .datasets import FolderImageDataset, TensorImageDataset


def epoch_generator(seed: int, epoch: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator whose state depends only on (seed, epoch): the basis of exact resume."""
    g = torch.Generator(device=device)
    g.manual_seed((int(seed) * 1_000_003 + int(epoch) * 7919) % (2**63))
    return g


class InMemoryLoader:
    def __init__(self, dataset: TensorImageDataset, batch_size: int, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1):
        self.images = dataset.images.to(device)
        self.labels = dataset.labels.to(device)
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.device, self.rank, self.world_size = torch.device(device), rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, generator=epoch_generator(self.seed, self.epoch))
        else:
            order = torch.arange(n)
        return order[self.rank:: self.world_size].to(self.device)

    def __len__(self) -> int:
        n = len(range(self.rank, len(self.labels), self.world_size))
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        indices = self._indices()
        for b in range(len(self)):
            idx = indices[b * self.batch_size:(b + 1) * self.batch_size]
            yield self.images[idx], self.labels[idx]


class FolderLoader:
    """Streams an image folder through ``torch.utils.data.DataLoader`` workers."""

    def __init__(self, dataset: FolderImageDataset, batch_size: int, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1,
                 num_workers: int = 2):
        self.dataset, self.device, self.seed = dataset, torch.device(device), seed
        if world_size > 1:
            self.sampler = torch.utils.data.DistributedSampler(dataset, world_size, rank, shuffle=shuffle, seed=seed,
                                                               drop_last=drop_last)
        elif shuffle:
            self.sampler = torch.utils.data.RandomSampler(dataset, generator=epoch_generator(seed, 0))
        else:
            self.sampler = torch.utils.data.SequentialSampler(dataset)
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=self.sampler,
                                                  drop_last=drop_last, num_workers=num_workers,
                                                  pin_memory=self.device.type == "cuda",
                                                  persistent_workers=num_workers > 0)

    def set_epoch(self, epoch: int) -> None:
        if isinstance(self.sampler, torch.utils.data.DistributedSampler):
            self.sampler.set_epoch(epoch)
        elif isinstance(self.sampler, torch.utils.data.RandomSampler):
            self.sampler.generator = epoch_generator(self.seed, epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, labels in self.loader:
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)


def make_loader(dataset, batch_size: int, **kwargs):
    if isinstance(dataset, TensorImageDataset):
        kwargs.pop("num_workers", None)
        return InMemoryLoader(dataset, batch_size, **kwargs)
    return FolderLoader(dataset, batch_size, **kwargs)
