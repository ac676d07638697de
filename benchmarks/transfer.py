"""Does transfer learning pay? ImageNet-pretrained EfficientNet-Lite0 -> CIFAR-10 with 100 labelled images per
class, against training from scratch on the same 1,000 images; and MNIST -> Fashion-MNIST stage by stage.

    CNNKIT_DATA=/work/shared/datasets PYTHONPATH=src python benchmarks/transfer.py            # everything
    ... benchmarks/transfer.py --steps cache probe head two-phase                             # some steps

Protocol (issue 9): 1,000 training images (the first 100 of each class in a seeded permutation of the
training set), evaluated on the full 10,000-image test set (the lossy JPEG copy when that is what is present).
Inputs are resized to the 224 px the backbone was trained at and normalised as it expects.

What is cached. The pretrained base's outputs at every stage are computed once (one pass over the 1,000 training
images, their mirror images, and the test set) and stored in the cnnkit cache dir. A frozen base in eval mode is
a fixed function, so training the layers above a frozen stage on its cached outputs is the same computation as
training the whole model with that stage frozen (augmentation: the cached mirror images). ``head`` and
``two-phase`` run that way, through the one Trainer; ``full`` and the scratch baselines train on images.

Each figure is appended to benchmarks/results.jsonl (one JSON object per figure) and printed.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cnnkit import TrainConfig, Trainer, create_model, load_dataset
from cnnkit.data.augment import random_crop, random_flip
from cnnkit.data.catalog import cache_dir
from cnnkit.train.metrics import topk_correct
from cnnkit.weights import average_state_dicts
from cnnkit.transfer import (FeatureDataset, extract_features, feature_bundle, fit_linear_probe, format_probe_table,
                             freeze, hold_batchnorm_statistics, pool_features, replace_head, stage_outputs, stages,
                             train_on_features, transfer_preprocess, unfreeze, upper_stages)

sys.path.insert(0, str(Path(__file__).parent))
from record import record as shared_record  # noqa: E402

BACKBONE, TAG, INPUT_SIZE = "efficientnet_lite0", "imagenet", 224
MULTI_STAGE = "stage7+stage8+head"  # the probe on the top three stages' pooled features together
MAP_STAGES = ("stage7",)  # spatial outputs kept for fine-tuning the stages above them
STEPS = ("cache", "probe", "head", "two-phase", "full", "tta", "soup", "ensemble", "scratch-same", "scratch-small",
         "mnist-fashion")


# --------------------------------------------------------------------------------------------- recording
def record(benchmark: str, variant: str, accuracy: float, seconds: float, **extra) -> None:
    """One accuracy figure (with its wall time) in results.jsonl, through the shared recorder."""
    shared_record(benchmark, variant, "accuracy", round(accuracy, 2), seconds=round(seconds, 1), **extra)


# --------------------------------------------------------------------------------------------- data
def few_shot_indices(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    chosen = [order[labels[order] == c][:per_class] for c in range(int(labels.max()) + 1)]
    return torch.cat(chosen).sort().values


def cifar_few_shot(per_class: int, seed: int):
    bundle = load_dataset("cifar10")
    train = bundle.train.subset(few_shot_indices(bundle.train.labels, per_class, seed))
    data_tag = "cifar10-jpeg" if "lossy" in bundle.note else "cifar10"
    return bundle, train, data_tag


# --------------------------------------------------------------------------------------------- feature cache
def cache_folder(per_class: int, seed: int) -> Path:
    return cache_dir() / "transfer" / f"{BACKBONE}-{TAG}-cifar10-{INPUT_SIZE}px-{per_class}pc-seed{seed}-bf16"


@torch.no_grad()
def stage_features(model, images: torch.Tensor, flip: bool, batch_size: int = 50) -> dict[str, torch.Tensor]:
    """One pass: every stage's pooled output, plus the maps of MAP_STAGES (float16, to halve the cache).
    The base runs under bf16 autocast: 4x faster than fp32 here (155 against 38 images/s at 224 px), and a
    logistic regression on its pooled head features scored within 0.4 points of fp32's (2,000 test images)."""
    names = [s.name for s in stages(model)[:-1]]
    preprocess = transfer_preprocess(model)
    model.eval().to(memory_format=torch.channels_last)  # NHWC: depthwise convolutions run ~5x faster on CPU
    out: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size]
        x = preprocess(x.flip(3) if flip else x).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs = stage_outputs(model, x, names)
        for name, value in outputs.items():
            value = value.float()
            out.setdefault(f"pooled.{name}", []).append(pool_features(value))
            if name in MAP_STAGES:
                out.setdefault(f"map.{name}", []).append(value.half().contiguous())
    return {k: torch.cat(v) for k, v in out.items()}


def _claim(lock: Path) -> bool:
    """Take the lock file of a chunk, or return False while another live process holds it."""
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                os.kill(int(lock.read_text() or 0), 0)
                return False
            except (ProcessLookupError, ValueError):  # its owner died: the lock is stale
                lock.unlink(missing_ok=True)
                continue
            except PermissionError:
                return False
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True


SHIFTED_VIEWS = 4  # extra views of each training image for the linear probes: shifted and maybe mirrored


def shift_splits() -> list[str]:
    return [f"train_shift{k}" for k in range(SHIFTED_VIEWS)]


def shifted_views(images: torch.Tensor, view: int) -> torch.Tensor:
    """View ``view`` of every training image: shifted by up to 4 px (reflected border) and mirrored with
    probability 1/2, the training augmentation of the networks trained on images, fixed by a seed per view."""
    generator = torch.Generator().manual_seed(1000 + view)
    moved = random_crop(images.float(), 4, generator, mode="reflect")
    return random_flip(moved, generator).round().to(torch.uint8)


class FeatureCache:
    """The pretrained backbone's features of the 1,000 training images, their mirror images and the test set:
    every stage's pooled output plus the maps of MAP_STAGES (float16), in chunks of 1,000 images saved in the
    cnnkit cache dir as they finish. Built on first use; an interrupted run resumes at the next chunk, and
    benchmark processes running side by side share the work (a chunk another process is computing is waited
    for)."""

    chunk = 1000

    def __init__(self, per_class: int, seed: int):
        self.bundle, self.train_set, self.data_tag = cifar_few_shot(per_class, seed)
        # The test files are sorted by class; a seeded shuffle makes every chunk (the first one is the
        # per-epoch monitor) a sample of all ten classes.
        self.test_order = torch.randperm(len(self.bundle.test), generator=torch.Generator().manual_seed(seed))
        self.test_set = self.bundle.test.subset(self.test_order)
        self.folder = cache_folder(per_class, seed)
        self._model = None
        self._splits: dict[str, dict] = {}

    def _source(self, split: str):
        images = self.test_set if split.startswith("test") else self.train_set
        if split.startswith("train_shift"):
            return shifted_views(images.images, int(split.removeprefix("train_shift"))), images.labels, False
        return images.images, images.labels, split.endswith("_flip")

    def _chunk(self, split: str, start: int) -> dict[str, torch.Tensor] | None:
        """A chunk's features: loaded, or computed here; None while another process is computing it."""
        images, _, flip = self._source(split)
        file = self.folder / f"{split}-{start:05d}.safetensors"
        lock = file.with_suffix(".lock")
        self.folder.mkdir(parents=True, exist_ok=True)
        if not file.is_file():
            if not _claim(lock):
                return None
            try:
                if not file.is_file():
                    if self._model is None:
                        self._model = create_model(BACKBONE, pretrained=TAG)
                    t0 = time.perf_counter()
                    tensors = stage_features(self._model, images[start:start + self.chunk], flip)
                    seconds = time.perf_counter() - t0
                    save_file(tensors, str(file.with_suffix(".tmp")), metadata={"seconds": f"{seconds:.1f}"})
                    os.replace(file.with_suffix(".tmp"), file)
                    print(f"  cached {file.name}: {len(tensors['pooled.head'])} images in {seconds:.0f}s", flush=True)
            finally:
                lock.unlink(missing_ok=True)
        return load_file(str(file))

    def split(self, name: str, chunks: int | None = None) -> dict[str, torch.Tensor]:
        """The features of a split ('train', 'train_flip', 'test'), or of its first ``chunks`` chunks. Chunks
        other processes are computing are skipped at first, then waited for."""
        images, labels, _ = self._source(name)
        starts = list(range(0, len(images), self.chunk))[:chunks]
        key = f"{name}:{len(starts)}"
        if key not in self._splits:
            parts: dict[int, dict] = {}
            while len(parts) < len(starts):
                for start in starts:
                    if start not in parts and (chunk := self._chunk(name, start)) is not None:
                        parts[start] = chunk
                if len(parts) < len(starts):
                    time.sleep(10)
            out = {k: torch.cat([parts[s][k] for s in starts]) for k in parts[starts[0]]}
            out["labels"] = labels[:len(out["pooled.head"])]
            self._splits[key] = out
        return self._splits[key]

    def build(self) -> None:
        """Compute every missing chunk of every split, those no other process is computing first."""
        pending = [(split, start) for split in ("train", "train_flip", *shift_splits(), "test", "test_flip")
                   for start in range(0, len(self._source(split)[0]), self.chunk)]
        while pending:
            pending = [(split, start) for split, start in pending if self._chunk(split, start) is None]
            if pending:
                time.sleep(10)

    @property
    def predictions(self) -> Path:
        """Where the probe and fine-tuning steps leave their test predictions for the ensemble step."""
        folder = self.folder / "predictions"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def seconds(self) -> tuple[float, int]:
        """Seconds spent computing the whole cache (as its chunks recorded them) and the images it holds."""
        total, images = 0.0, 0
        for file in sorted(self.folder.glob("*.safetensors")):
            with safe_open(str(file), "pt") as f:
                total += float((f.metadata() or {}).get("seconds", "nan"))
                images += f.get_slice("pooled.head").get_shape()[0]
        return total, images


# --------------------------------------------------------------------------------------------- steps
def step_probe(args, cache) -> None:
    """A logistic regression on each stage's pooled features, and on the top three stages' together: trained on
    the 1,000 images, their mirror images and SHIFTED_VIEWS shifted views (cross-validation folds keep the views
    of an image together), scored on the test set with its mirror images' probabilities averaged in."""
    views = [cache.split(name) for name in ("train", "train_flip", *shift_splits())]
    test, test_flip = cache.split("test"), cache.split("test_flip")
    cache_seconds, _ = cache.seconds()
    names = [k.split(".", 1)[1] for k in views[0] if k.startswith("pooled.")]
    groups = torch.arange(len(views[0]["labels"])).repeat(len(views))
    y = torch.cat([view["labels"] for view in views])

    def pooled(split: dict, stage: str) -> torch.Tensor:
        return torch.cat([split[f"pooled.{name}"] for name in stage.split("+")], 1)

    rows = []
    for name in [*names, MULTI_STAGE]:
        x = torch.cat([pooled(view, name) for view in views])
        row = fit_linear_probe(x, y, pooled(test, name), test["labels"], groups=groups,
                               test_views=[pooled(test_flip, name)])
        probabilities = row.pop("probabilities")  # saved for the ensemble step, not kept in the table
        save_file({"probabilities": probabilities}, str(cache.predictions / f"probe-{name}-test.safetensors"))
        rows.append({"stage": name, **row})
        record("transfer_cifar10_1000", f"linear-probe:{name}", row["accuracy"], row["seconds"],
               data=args.data_tag, train_images=1000, test_images=len(test["labels"]), features=row["features"],
               C=row["C"], cv_accuracy=round(row["cv_accuracy"], 2), feature_cache_seconds=round(cache_seconds, 1),
               train_views=len(views), note="logistic regression on standardised features; C by image-grouped "
                                            "3-fold CV; training views: image, mirror, shifts; test flips; bf16 base")
    print(format_probe_table(rows), flush=True)


def full_run_name(args) -> str:
    """A fine-tuning run's settings, naming its saved test predictions."""
    return (f"{args.full_size}px-{args.full_epochs}ep-lr{args.full_lr:g}-frozen-{args.full_freeze_until or 'none'}"
            f"-mixup{args.full_mixup:g}-cutmix{args.full_cutmix:g}"
            + (f"-ema{args.full_ema:g}" if args.full_ema else "")
            + (f"-seed{args.full_seed}" if args.full_seed != args.seed else ""))


def step_ensemble(args, cache) -> None:
    """Every full fine-tuning run saved so far (each ``full`` step with other settings leaves its test logits),
    together: the mean of their predicted class probabilities, equal weights, nothing fitted on the test set;
    then the same with the multi-stage linear probe added."""
    runs = sorted(cache.predictions.glob("full-*.safetensors"))
    probe_file = cache.predictions / f"probe-{MULTI_STAGE}-test.safetensors"
    if not runs:
        raise SystemExit("ensemble: no saved fine-tuning predictions; run --steps full first (with other settings "
                         "for more members)")
    labels = cache.split("test")["labels"]
    tuned, seconds = 0, 0.0
    for file in runs:  # each run's logits and (in the file's metadata) its training seconds, in one read
        with safe_open(str(file), "pt") as f:
            tuned = tuned + f.get_tensor("logits").softmax(1)
            seconds += float((f.metadata() or {}).get("seconds", "nan"))
    members = [file.stem.removeprefix("full-") for file in runs]
    candidates = [(f"ensemble: {len(runs)} fine-tuned networks", tuned, members)]
    if probe_file.is_file():
        probe = load_file(str(probe_file))["probabilities"]
        candidates.append((f"ensemble: {len(runs)} fine-tuned networks + linear probe", tuned + probe,
                           [*members, f"probe {MULTI_STAGE}"]))
    for variant, probabilities, names in candidates:
        record("transfer_cifar10_1000", variant, hits(probabilities, labels), seconds, data=args.data_tag,
               train_images=1000, test_images=len(labels), members=names,
               note="mean of the members' test probabilities, equal weights; seconds: the fine-tuning runs' summed")


def tail_config(args, epochs: int, lr: float) -> TrainConfig:
    return TrainConfig(epochs=epochs, lr=lr, batch_size=64, optimizer="sgd", momentum=0.9, nesterov=True,
                       weight_decay=5e-4, schedule="cosine", warmup_epochs=0.5, label_smoothing=0.1,
                       seed=args.seed, progress=False, eval_batch_size=500)


def pretrained_with_new_head(args):
    """The pretrained base with a new 10-class head, the head's initial weights drawn from --seed (so that every
    fine-tuning run, whatever its --full-seed, starts from the same point: what a model soup needs)."""
    model = create_model(BACKBONE, pretrained=TAG)
    torch.manual_seed(args.seed)
    replace_head(model, 10)
    return model


def cached_training(args, cache, model, after: str, key: str, epochs: int, lr: float) -> tuple[float, float]:
    """Train the stages of ``model`` above ``after`` on the cached ``key`` features of the training images and
    their mirror images, validating each epoch on the first 1,000 cached test images (watched, never used to
    choose anything); returns the accuracy on the whole cached test set and the seconds taken."""
    train, train_flip, monitor = cache.split("train"), cache.split("train_flip"), cache.split("test", chunks=1)
    bundle = feature_bundle(f"cifar10 {key}", torch.cat([train[key], train_flip[key]]),
                            torch.cat([train["labels"], train_flip["labels"]]), monitor[key], monitor["labels"],
                            [str(c) for c in range(10)])
    start = time.perf_counter()
    trainer = train_on_features(model, after, bundle, tail_config(args, epochs, lr))
    trainer.fit()
    seconds = time.perf_counter() - start
    test = cache.split("test")  # the whole test set, waited for (not timed) if another process is caching it
    whole = test[key] if test[key].ndim == 4 else test[key][:, :, None, None]
    start = time.perf_counter()
    accuracy = trainer.evaluate(FeatureDataset(whole, test["labels"], bundle.classes))["acc"]
    return accuracy, seconds + time.perf_counter() - start


def head_phase(args, cache, model) -> tuple[float, float]:
    """Phase 1: only the new classifier, on the cached pooled head features (flips included)."""
    freeze(model)
    return cached_training(args, cache, model, "head", "pooled.head", args.head_epochs, args.lr)


def step_head(args, cache) -> None:
    model = pretrained_with_new_head(args)
    accuracy, seconds = head_phase(args, cache, model)
    record("transfer_cifar10_1000", "head-only", accuracy, seconds, data=args.data_tag, train_images=1000,
           epochs=args.head_epochs, lr=args.lr, note="base frozen (BN in eval), cached head features, flips cached")


def step_two_phase(args, cache) -> None:
    model = pretrained_with_new_head(args)
    head_accuracy, head_seconds = head_phase(args, cache, model)
    boundary = "stage7"
    thawed = unfreeze(model, from_=upper_stages(model, args.top_stages)[0])
    model.to(memory_format=torch.channels_last)
    # The notes' recipe: after the head has converged, continue with the top stages at 0.1x the learning rate.
    accuracy, seconds = cached_training(args, cache, model, boundary, f"map.{boundary}", args.finetune_epochs,
                                        args.lr * 0.1)
    record("transfer_cifar10_1000", f"two-phase (top {args.top_stages} stages)", accuracy,
           head_seconds + seconds, data=args.data_tag, train_images=1000, head_accuracy=round(head_accuracy, 2),
           phase2_seconds=round(seconds, 1), unfrozen=thawed, head_epochs=args.head_epochs,
           finetune_epochs=args.finetune_epochs, lr=args.lr, finetune_lr=args.lr * 0.1,
           note=f"phase 2 trains the stages above {boundary} on its cached maps (flips cached)")


def monitored(bundle, train, monitor: int, seed: int):
    """A bundle that trains on ``train`` and validates each epoch on a fixed slice of the test set; the figure
    reported is a separate evaluation on the whole test set."""
    from cnnkit.data.datasets import DatasetBundle

    pick = torch.randperm(len(bundle.test), generator=torch.Generator().manual_seed(seed))[:monitor]
    return DatasetBundle(bundle.name, train, bundle.test.subset(pick), bundle.classes, bundle.mean, bundle.std,
                         bundle.note)


def full_config(args, **changes) -> TrainConfig:
    """Full fine-tuning: the base at a small rate, the new head (already trained) at head_lr_multiplier x it;
    shifts of up to 1/8 of the image (4 px of the 32 px original) and mirror images; bf16 (1.6x faster training
    here); test-time flips."""
    return TrainConfig(epochs=args.full_epochs, lr=args.full_lr, batch_size=32, optimizer="sgd", nesterov=True,
                       weight_decay=5e-4, schedule="cosine", warmup_epochs=args.full_warmup,
                       label_smoothing=0.1, mixup=args.full_mixup, cutmix=args.full_cutmix, ema=args.full_ema,
                       input_size=args.full_size, resize="interpolate", precision=args.full_precision, tta_flip=True,
                       lr_multipliers={"_fc.": args.full_head_multiplier},
                       augment={"flip": True, "crop": args.full_size // 8, "crop_mode": "reflect"},
                       channels_last=True, seed=args.full_seed, progress=False, eval_batch_size=100, **changes)


def step_full(args, cache) -> None:
    bundle, train, data_tag = cache.bundle, cache.train_set, cache.data_tag
    model = pretrained_with_new_head(args)
    head_accuracy, head_seconds = head_phase(args, cache, model)  # a converged head first: see the notes
    unfreeze(model)
    if args.full_bn_eval:
        hold_batchnorm_statistics(model)
    if args.full_freeze_until:  # the lowest stages stay as pretrained: 1.4x (stage3) to 2x (stage4) faster steps
        freeze(model, until=args.full_freeze_until)
    start = time.perf_counter()
    trainer = Trainer(model, monitored(bundle, train, 500, args.seed), full_config(args))
    trainer.fit()
    final = trainer.evaluate(bundle.test, keep_logits=True)
    seconds = time.perf_counter() - start
    # The test logits, in the cache's (shuffled) test order, for the ensemble step.
    save_file({"logits": final["logits"][cache.test_order].contiguous()},
              str(cache.predictions / f"full-{full_run_name(args)}.safetensors"),
              metadata={"seconds": f"{head_seconds + seconds:.1f}", "accuracy": f"{final['acc']:.2f}"})
    # The fine-tuned weights too, to score other test-time views later without training again.
    models = cache.folder / "models"
    models.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(models / f"{full_run_name(args)}.safetensors"))
    record("transfer_cifar10_1000", "full fine-tuning", final["acc"], head_seconds + seconds, data=data_tag,
           train_images=1000, test_images=final["images"], input_size=args.full_size, epochs=args.full_epochs,
           lr=args.full_lr, head_lr_multiplier=args.full_head_multiplier, precision=args.full_precision,
           head_accuracy=round(head_accuracy, 2), bn_statistics="held (eval)" if args.full_bn_eval else "updated",
           frozen_until=args.full_freeze_until, warmup_epochs=args.full_warmup, mixup=args.full_mixup,
           cutmix=args.full_cutmix, ema=args.full_ema, full_seed=args.full_seed,
           note=f"{'the stages above ' + args.full_freeze_until if args.full_freeze_until else 'all layers'} "
                "trainable after the cached head phase; shifts (reflect) and flips; test-time flips")


def step_tta(args, cache) -> None:
    """The full fine-tuning run with these settings (its saved weights), scored again with more test-time
    views: each image and its mirror image, and both moved by --tta-shift input pixels up, down, left and right
    (reflect-padded as in training): ten views averaged instead of two."""
    if args.tta_shift <= 0:
        raise SystemExit(f"tta: --tta-shift must be a positive number of pixels, not {args.tta_shift}")
    weights = cache.folder / "models" / f"{full_run_name(args)}.safetensors"
    if not weights.is_file():
        raise SystemExit(f"tta: no saved weights {weights}; run --steps full with the same settings first")
    model = pretrained_with_new_head(args)
    model.load_state_dict(load_file(str(weights)))
    trainer = Trainer(model, cache.bundle, full_config(args, tta_shift=args.tta_shift))
    start = time.perf_counter()
    final = trainer.evaluate(cache.bundle.test)
    seconds = time.perf_counter() - start
    with safe_open(str(cache.predictions / f"full-{full_run_name(args)}.safetensors"), "pt") as f:
        trained = float(f.metadata()["seconds"])
    record("transfer_cifar10_1000", "full fine-tuning, 10 test-time views", final["acc"], trained + seconds,
           data=args.data_tag, train_images=1000, test_images=final["images"], run=full_run_name(args),
           tta_shift=args.tta_shift, evaluation_seconds=round(seconds, 1),
           note="the saved run's weights; views: image and mirror, each also shifted up/down/left/right (reflect); "
                "seconds: the run's training plus this evaluation")


def step_soup(args, cache) -> None:
    """One network from several fine-tuning runs: the uniform average of the weights of every saved run with
    this --full-size and --full-freeze-until (a "model soup", Wortsman et al. 2022). They all start from the
    same pretrained base and the same trained head, and batch-norm statistics stay the pretrained ones, so their
    weights can be averaged directly; the soup costs one network at test time (unlike an ensemble). With
    --soup-sizes its views are also taken with the images enlarged to those sizes (multi-scale testing), and the
    record says what each size and each set of sizes scores."""
    prefix = f"{args.full_size}px-"
    frozen = f"-frozen-{args.full_freeze_until or 'none'}-"
    ingredients = sorted(file for file in (cache.folder / "models").glob(f"{prefix}*.safetensors")
                         if frozen in file.stem)
    if len(ingredients) < 2:
        raise SystemExit(f"soup: {len(ingredients)} saved run(s) at {args.full_size} px with the stages up to "
                         f"{args.full_freeze_until or 'none'} frozen; run --steps full with other seeds "
                         "(--full-seed) or settings first")
    model = pretrained_with_new_head(args)
    model.load_state_dict(average_state_dicts([load_file(str(file)) for file in ingredients]))
    trained = 0.0
    for file in ingredients:
        with safe_open(str(cache.predictions / f"full-{file.stem}.safetensors"), "pt") as f:
            trained += float(f.metadata()["seconds"])
    views = {"tta_shift": args.tta_shift} if args.soup_views == 10 else {}
    sizes = [args.full_size, *args.soup_sizes]
    labels = cache.bundle.test.labels
    logits, seconds = {}, {}
    for size in sizes:  # each input size's views apart, to report what every scale and set of scales scores
        start = time.perf_counter()
        config = full_config(argparse.Namespace(**{**vars(args), "full_size": size}), **views)
        logits[size] = Trainer(model, cache.bundle, config).evaluate(cache.bundle.test, keep_logits=True)["logits"]
        seconds[size] = time.perf_counter() - start
    # Every size has as many views, so the mean of the sizes' means is the mean over all views: what
    # TrainConfig(tta_sizes=...) computes in one evaluation.
    accuracy = hits(torch.stack(list(logits.values())).mean(0), labels)
    described = f"{args.soup_views * len(sizes)} test-time views" + (
        f" at {'/'.join(map(str, sizes))} px" if args.soup_sizes else "")
    record("transfer_cifar10_1000", f"model soup: {len(ingredients)} fine-tuned networks averaged"
           + (f", {described}" if views or args.soup_sizes else ""), accuracy, trained + sum(seconds.values()),
           data=args.data_tag, train_images=1000, test_images=len(labels),
           members=[file.stem for file in ingredients], evaluation_seconds=round(sum(seconds.values()), 1),
           views=args.soup_views, input_sizes=sizes, **scale_analysis(logits, labels, args.full_size),
           note="uniform average of the runs' weights, one network; seconds: the runs' training plus this evaluation")


def hits(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in %, counted as the Trainer counts it (ties in bf16 logits broken the same way)."""
    return 100.0 * topk_correct(scores, labels, (1,))[1] / len(labels)


def scale_analysis(logits: dict[int, torch.Tensor], labels: torch.Tensor, trained_size: int) -> dict:
    """What each input size scores alone and each set of sizes (with the training size) together; and, since
    the test set is the only held-out data, an honest figure for choosing the set: split the test set in two
    at random, choose the best set on one half and score it on the other, both ways (five splits)."""
    if len(logits) < 2:
        return {}
    extra = [size for size in logits if size != trained_size]
    choices = [(trained_size, *chosen) for r in range(len(extra) + 1) for chosen in itertools.combinations(extra, r)]

    def score(sizes, rows):
        return hits(torch.stack([logits[size][rows] for size in sizes]).mean(0), labels[rows])

    everything = torch.arange(len(labels))
    cross = []
    for split in range(5):
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(100 + split))
        halves = (order[:len(order) // 2], order[len(order) // 2:])
        # Each image is scored once, by the set chosen on the other half: the mean of the halves' figures.
        cross.append(round(sum(score(max(choices, key=lambda c: score(c, halves[1 - i])), halves[i])
                               for i in (0, 1)) / 2, 2))
    return {"per_size": {str(size): round(score((size,), everything), 2) for size in logits},
            "per_set": {"/".join(map(str, c)): round(score(c, everything), 2) for c in choices},
            "set_chosen_on_other_half": cross}


def scratch(args, name: str, model_name: str, epochs: int, lr: float, augment: dict, **model_args) -> None:
    bundle, train, data_tag = cifar_few_shot(args.per_class, args.seed)
    torch.manual_seed(args.seed)
    model = create_model(model_name, num_classes=10, **model_args)
    config = TrainConfig(epochs=epochs, lr=lr, batch_size=64, optimizer="sgd", nesterov=True, weight_decay=5e-4,
                         schedule="onecycle", label_smoothing=0.1, augment=augment, channels_last=True,
                         seed=args.seed, progress=False, eval_batch_size=1000)
    start = time.perf_counter()
    trainer = Trainer(model, monitored(bundle, train, 1000, args.seed), config)
    trainer.fit()
    final = trainer.evaluate(bundle.test)
    record("transfer_cifar10_1000", name, final["acc"], time.perf_counter() - start, data=data_tag, train_images=1000,
           test_images=final["images"], model=model_name, input_size=32, epochs=epochs, lr=lr, augment=augment)


def step_scratch_same(args, cache) -> None:
    scratch(args, "scratch: efficientnet_lite0", BACKBONE, args.scratch_epochs, args.scratch_lr,
            {"flip": True, "crop": 4, "crop_mode": "reflect"})


def step_scratch_small(args, cache) -> None:
    scratch(args, "scratch: resnet20 + augmentation", "resnet20", args.scratch_epochs, args.scratch_lr,
            {"flip": True, "crop": 4, "crop_mode": "reflect", "cutout": 8})


def step_mnist_fashion(args, cache) -> None:
    """A small CNN trained on all of MNIST, transferred to Fashion-MNIST with 1,000 labels: a linear probe on
    each stage (which stages transfer?), then fine-tuning against training from scratch."""
    source, target = load_dataset("mnist"), load_dataset("fashion-mnist")
    config = TrainConfig(epochs=2, lr=0.05, batch_size=128, schedule="onecycle", seed=args.seed, progress=False)
    torch.manual_seed(args.seed)
    pretrained = create_model("lenet5_relu", num_classes=10)
    start = time.perf_counter()
    Trainer(pretrained, source, config).fit()
    pretrain_seconds = time.perf_counter() - start
    few = target.train.subset(few_shot_indices(target.train.labels, args.per_class, args.seed))
    names = [s.name for s in stages(pretrained)[:-1]]
    random_init = create_model("lenet5_relu", num_classes=10)
    for label, model in (("mnist-pretrained", pretrained), ("random-init", random_init)):
        preprocess = transfer_preprocess(model, data_mean=target.mean, data_std=target.std)
        start = time.perf_counter()
        train_x = extract_features(model, few, names, preprocess=preprocess, channels_last=False)
        test_x = extract_features(model, target.test, names, preprocess=preprocess, channels_last=False)
        for name in names:
            row = fit_linear_probe(train_x[name], few.labels, test_x[name], target.test.labels)
            record("transfer_mnist_to_fashion_1000", f"linear-probe:{label}:{name}", row["accuracy"],
                   time.perf_counter() - start, data="fashion-mnist", train_images=len(few), features=row["features"],
                   source="mnist" if label == "mnist-pretrained" else None, pretrain_seconds=round(pretrain_seconds, 1))
    tune = TrainConfig(epochs=30, lr=0.05, batch_size=64, schedule="onecycle", seed=args.seed, progress=False,
                       augment={"crop": 2})
    for label, model in (("fine-tune all (from mnist)", pretrained),
                         ("scratch", create_model("lenet5_relu", num_classes=10))):
        if label.startswith("fine-tune"):
            replace_head(model, 10)
        start = time.perf_counter()
        summary = Trainer(model, monitored(target, few, 2000, args.seed), tune).fit()
        final = Trainer(model, target, TrainConfig(progress=False)).evaluate(target.test)
        record("transfer_mnist_to_fashion_1000", label, final["acc"], time.perf_counter() - start,
               data="fashion-mnist", train_images=len(few), epochs=tune.epochs,
               monitor_acc=round(summary["test_acc"], 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--head-epochs", type=int, default=30)
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--top-stages", type=int, choices=(2,), default=2,
                        help="stages unfrozen in phase 2 besides the classifier: stage8 + head (cached stage7 maps)")
    # Full fine-tuning defaults: the best single network measured (third session, 83.94 %): 160 px (a probe on
    # the pooled head features scored 74.85 % at 160 px, 74.60 % at 224, 72.60 % at 128, 2,000 test images), so
    # 50 epochs cost what 25 do at 224; mixup 0.2 / CutMix 1.0 (without them the training set is memorised by
    # epoch 12); stem to stage3 frozen (1.4x faster steps); lr 3e-3 after a one-epoch warm-up.
    parser.add_argument("--full-epochs", type=int, default=50)
    parser.add_argument("--full-size", type=int, default=160)
    parser.add_argument("--full-head-multiplier", type=float, default=10.0,
                        help="the new head's learning rate as a multiple of the base's in full fine-tuning")
    parser.add_argument("--full-precision", choices=("fp32", "bf16"), default="bf16")
    parser.add_argument("--full-freeze-until", default="stage3", help="keep the stages up to this one frozen "
                                                                      "('' for none)")
    parser.add_argument("--full-mixup", type=float, default=0.2, help="mixup alpha in full fine-tuning (0: off)")
    parser.add_argument("--full-cutmix", type=float, default=1.0, help="CutMix alpha in full fine-tuning (0: off)")
    parser.add_argument("--full-ema", type=float, default=0.0, help="decay of the weights' moving average, "
                        "validated and kept (0: off)")
    parser.add_argument("--full-warmup", type=float, default=1.0, help="epochs of linear learning-rate warm-up")
    # 0.005 (0.1x the head's) with batch-norm statistics updating wrecked the pretrained features within one
    # epoch (first session). With the statistics held and the head at 10x: 0.0005 for 8 epochs gave 79.84 %,
    # 0.0015 for 10 epochs 82.08 % (second session), 0.003 for 20 epochs with stage3 and below frozen 83.41 %.
    parser.add_argument("--full-lr", type=float, default=0.003)
    parser.add_argument("--full-seed", type=int, default=None, help="seed of the fine-tuning run alone (batch order, "
                        "augmentation, mixup); the training images and the head phase follow --seed (default: it)")
    parser.add_argument("--tta-shift", type=int, default=10, help="input pixels the tta step moves each view by")
    parser.add_argument("--soup-views", type=int, choices=(2, 10), default=2,
                        help="test-time views of the soup step: flips, or flips and --tta-shift shifts")
    parser.add_argument("--soup-sizes", type=int, nargs="*", default=[], metavar="PX",
                        help="input sizes the soup's views are also taken at, besides --full-size (multi-scale "
                             "testing: e.g. 128 192 224, 4x, 6x and 7x the 32 px images)")
    parser.add_argument("--full-bn-eval", action=argparse.BooleanOptionalAction, default=True,
                        help="keep BN running statistics fixed during full fine-tuning (default)")
    parser.add_argument("--scratch-epochs", type=int, default=60)
    parser.add_argument("--scratch-lr", type=float, default=0.1)
    # One thread: on a shared CPU, two threads that wait for each other at every operation were measured 2x
    # (convolutions) to 20x (the linear head) slower than one.
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.full_seed is None:
        args.full_seed = args.seed
    torch.set_num_threads(args.threads)
    cache = FeatureCache(args.per_class, args.seed)
    args.data_tag = cache.data_tag
    for step in args.steps:
        if step == "cache":
            cache.build()
            seconds, images = cache.seconds()
            print(f"feature cache: {images} images through {BACKBONE} in {seconds:.0f}s ({cache.folder})", flush=True)
        else:
            globals()[f"step_{step.replace('-', '_')}"](args, cache)


if __name__ == "__main__":
    main()
