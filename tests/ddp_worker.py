"""What the distributed tests run in their worker processes; kept light (no pytest, no test fixtures), as
every worker imports it.

``rank_main`` is one rank of the equivalence runs, started by torch.multiprocessing with the environment
torchrun gives its workers. Run as a script, this is ``cnnkit train`` as torchrun runs it, with two test
adjustments set through the environment (a torchrun worker cannot be monkeypatched from the test):

  CNNKIT_TEST_SUBSET=TRAIN,TEST      train and test on the first TRAIN / TEST images of the dataset
  CNNKIT_TEST_CRASH=RANK:EPOCH:STEP  that rank dies (os._exit, like a killed process) at that training step,
                                     on torchrun's first attempt only

    torchrun --nproc-per-node 2 tests/ddp_worker.py train lenet5_relu --data mnist ...
"""

import functools
import os
import sys

import torch
from torch import nn

import cnnkit.data
from cnnkit.data.loader import InMemoryLoader

CRASH_EXIT_STATUS = 17
TRAIN_IMAGES, TEST_IMAGES = 2048, 1000
# No augmentation and no dropout: then the two ranks' batches are exactly the halves of the one process's.
SGD = dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="onecycle", progress=False,
           eval_batch_size=500, num_threads=1)
# Each: (model, options of every process, epochs to run, training images). Run "plain" stops after epoch 1 of
# 2, so that the cross-world-size resume test can continue it.
RUNS = {
    "plain": ("lenet5_relu", dict(batch_size=32, epochs=2), 1, TRAIN_IMAGES),
    # BatchNorm on MNIST's flat backgrounds amplifies float32 rounding (the ranks sum in another order) ~500x
    # within 16 steps; after 3 steps rounding is ~1e-5 while per-rank statistics would differ by ~5e-3.
    "syncbn": ("tiny_bn_net", dict(batch_size=32, epochs=1, sync_batchnorm=True, schedule="constant", lr=0.05), 1, 192),
    "accumulate": ("lenet5_relu", dict(batch_size=16, accumulate=2, epochs=1), 1, TRAIN_IMAGES),
}


def tiny_bn_net() -> nn.Module:
    """Two conv-BatchNorm-ReLU-pool stages and a linear classifier: BatchNorm, and fast."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 10))


def build(name: str) -> nn.Module:
    from cnnkit.models import create_model

    torch.manual_seed(0)
    return tiny_bn_net() if name == "tiny_bn_net" else create_model(name)


_load_dataset = cnnkit.data.load_dataset  # the real one, whatever install_test_adjustments puts in its place


@functools.lru_cache(maxsize=1)
def _mnist():
    return _load_dataset("mnist")


def mnist_subset(train_images: int = TRAIN_IMAGES, test_images: int = TEST_IMAGES):
    full = _mnist()
    return cnnkit.data.DatasetBundle(full.name, full.train.subset(range(train_images)),
                                     full.test.subset(range(test_images)), full.classes, full.mean, full.std)


def stop_after(epochs: int):
    return lambda trainer, metrics: setattr(trainer, "stop_requested", metrics["epoch"] >= epochs)


def rank_main(rank: int, world_size: int, store_port: int, root: str) -> None:
    """One rank, with the environment torchrun's agent gives its workers: the store is the parent's."""
    from cnnkit.train import TrainConfig, Trainer, distributed

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(store_port),
                      TORCHELASTIC_USE_AGENT_STORE="True")
    torch.set_num_threads(1)

    def run(label, model_name, options, epochs, train_images):  # the Trainer and its DDP wrapper end here
        trainer = Trainer(build(model_name), mnist_subset(train_images), TrainConfig(**{**SGD, **options}),
                          out=f"{root}/{label}", callbacks=[stop_after(epochs)])
        assert (trainer.rank, trainer.world_size) == (rank, world_size)
        trainer.fit()

    try:
        for label, spec in RUNS.items():
            run(label, *spec)
    finally:
        distributed.shutdown()


def install_test_adjustments() -> None:
    if "CNNKIT_TEST_SUBSET" in os.environ:
        n_train, n_test = (int(v) for v in os.environ["CNNKIT_TEST_SUBSET"].split(","))

        def load_subset(name, **kwargs):
            assert name == "mnist", name
            return mnist_subset(n_train, n_test)

        cnnkit.data.load_dataset = load_subset
    if "CNNKIT_TEST_CRASH" in os.environ and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
        rank, epoch, step = (int(v) for v in os.environ["CNNKIT_TEST_CRASH"].split(":"))
        batches = InMemoryLoader.__iter__

        def dying_batches(loader):
            for index, batch in enumerate(batches(loader), 1):
                if loader.shuffle and (loader.rank, loader.epoch, index) == (rank, epoch, step):
                    os._exit(CRASH_EXIT_STATUS)
                yield batch

        InMemoryLoader.__iter__ = dying_batches


if __name__ == "__main__":
    install_test_adjustments()
    from cnnkit.cli import main

    sys.exit(main(sys.argv[1:]))
