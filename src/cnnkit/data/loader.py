"""Batch loaders that yield (uint8 images, int64 labels) on the target device.

In-memory datasets: the whole uint8 tensor is moved to the device once; each epoch draws a permutation from
a generator seeded by (seed, epoch), so the order is reproducible, a resumed run sees the same batches, and
distributed ranks take disjoint interleaved shards of the same permutation (every sample once per epoch).
Interleaving makes rank r's batch b the r-th stripe of positions [b*W*B, (b+1)*W*B) of the permutation, so W
ranks with batch B see, step for step, exactly the samples of one process with batch W*B.
Image folders: a torch DataLoader with worker processes decodes files; the same batched augmentation follows.
"""

from __future__ import annotations

import math

import torch

from .datasets import FolderImageDataset, TensorImageDataset


def epoch_generator(seed: int, epoch: int, device: torch.device | str = "cpu", stream: int = 0) -> torch.Generator:
    """A generator whose state depends only on (seed, epoch): the basis of exact resume. ``stream`` gives
    distributed ranks their own draws (augmentation, dropout) for their different samples; the shuffling
    permutation uses stream 0 on every rank, since all ranks must agree on it."""
    g = torch.Generator(device=device)
    g.manual_seed((int(seed) * 1_000_003 + int(epoch) * 7919 + int(stream) * 104_729) % (2**63))
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

    def _usable(self) -> int:
        """How many samples of the permutation an epoch uses. Every rank must run the same number of steps
        (DDP all-reduces at each one), and a rank must never get an empty batch: when the last global batch
        has fewer samples than there are ranks, those few (< world_size) are left out of this epoch; the
        permutation changes every epoch, so it is never the same ones."""
        n, global_batch = len(self.labels), self.batch_size * self.world_size
        tail = n % global_batch
        if self.drop_last:
            return n - tail
        if self.shuffle and 0 < tail < self.world_size:
            return n - tail
        return n

    def _indices(self) -> torch.Tensor:
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, generator=epoch_generator(self.seed, self.epoch))
        else:
            order = torch.arange(n)
        return order[:self._usable()][self.rank:: self.world_size].to(self.device)

    def __len__(self) -> int:
        return math.ceil(self._usable() / (self.batch_size * self.world_size))

    def global_batch_size(self, index: int) -> int:
        """Samples in batch ``index`` summed over all ranks: a rank's loss is weighted by its share of them,
        so DDP's average of the ranks' gradients is the gradient of the mean loss over the global batch even
        when the last batch is split unevenly."""
        global_batch = self.batch_size * self.world_size
        return min(global_batch, self._usable() - index * global_batch)

    def __iter__(self):
        indices = self._indices()
        for b in range(len(self)):
            idx = indices[b * self.batch_size:(b + 1) * self.batch_size]
            if len(idx):  # an unshuffled (evaluation) shard may end a batch earlier than the others
                yield self.images[idx], self.labels[idx]


class FolderLoader:
    """Streams an image folder through ``torch.utils.data.DataLoader`` workers."""

    def __init__(self, dataset: FolderImageDataset, batch_size: int, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1,
                 num_workers: int = 2):
        self.dataset, self.device, self.seed = dataset, torch.device(device), seed
        self.batch_size, self.world_size = batch_size, world_size
        if world_size > 1 and shuffle:
            # DistributedSampler pads the shards to equal length with a few repeated samples, so every rank
            # runs the same number of steps.
            self.sampler = torch.utils.data.DistributedSampler(dataset, world_size, rank, shuffle=shuffle, seed=seed,
                                                               drop_last=drop_last)
        elif world_size > 1:
            # Evaluation must not count padded repeats: plain interleaved shards, possibly one sample shorter.
            self.sampler = range(rank, len(dataset), world_size)
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

    def global_batch_size(self, index: int) -> int:
        """Padded shards are equally long, so batch ``index`` has the same size on every rank."""
        local = len(self.sampler) - index * self.batch_size
        return min(self.batch_size, local) * self.world_size

    def __iter__(self):
        for images, labels in self.loader:
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)


def make_loader(dataset, batch_size: int, **kwargs):
    if isinstance(dataset, TensorImageDataset):
        kwargs.pop("num_workers", None)
        return InMemoryLoader(dataset, batch_size, **kwargs)
    return FolderLoader(dataset, batch_size, **kwargs)
