"""Generative adversarial networks through the one training loop (Goodfellow et al. 2014; the DCGAN of Radford
et al. 2016; the notes' last deck), with a sample grid every epoch and a Fréchet feature distance.

    data = load_dataset("mnist")
    model = create_model("dcgan", in_channels=1, image_size=28)
    Trainer(model, data, TrainConfig(epochs=5, **GAN_TRAINING), out="runs/dcgan-mnist", task=GANTask()).fit()
    model.sample(64)                                  # images in [-1, 1]

Each batch, :class:`GANTask` updates the discriminator on real images (label 1) and generated ones (label 0),
then the generator to make the updated discriminator say 1 (the "non-saturating" loss, Goodfellow et al. §3),
with binary cross-entropy on logits. Both networks live in the ``dcgan`` module and their parameters in the
Trainer's one Adam optimiser (lr 0.0002, beta1 0.5, as in Radford et al.), so checkpoints and resume are the
Trainer's own; see ``train/tasks.py`` for why one optimiser stepped twice is two optimisers.

The score, ``fid``: NOT the FID of Heusel et al. (2017), which uses Inception-v3 features of ImageNet and
cannot be computed offline here, but the same formula on another network's features. A Gaussian is fitted to
the penultimate-layer features (the inputs of the last linear layer) of a small classifier trained by cnnkit
on the *same* dataset, once for the real test images and once for ``fid_samples`` generated images (a fixed
set of latent vectors, generator in evaluation mode), and the Fréchet distance between the two Gaussians is
reported:  |mu_r - mu_g|^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)).  Generated images are quantised to 8 bits and
preprocessed exactly as the classifier's training images were. The default classifier is ``mnist_fast_cnn``
(28x28 images: 512 features, the ReLU'd and max-pooled 4x4x32 maps) or ``lenet5_relu`` (32x32: 84 features,
F6's ReLU outputs), trained for one epoch (seed 0) through the Trainer, saved in the run folder's
``fid_features/`` and reused on resume; give ``feature_network=`` a run folder to use another checkpoint.
Lower is better; 0 for identical distributions. Values depend on the feature network and the sample count,
so compare them only within one such setting.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .card import card_of
from .data.augment import Preprocess
from .errors import CnnkitError
from .models.registry import create_model
from .runs import load_model_checkpoint
from .train.recipes import GAN_TRAINING
from .train.tasks import Task
from .train.trainer import TrainConfig, Trainer

EVAL_SEED = 2016  # the latent vectors behind every epoch's score and sample grid


# ------------------------------------------------------------------------------------------------- pictures
def to_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] (tanh outputs) -> [0, 1]."""
    return images.detach().float().add(1).div(2).clamp(0, 1)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> uint8 [0, 255], as a saved picture would hold them."""
    return to_unit(images).mul(255).round().to(torch.uint8)


def save_grid(images: torch.Tensor, path: str | Path, columns: int | None = None, padding: int = 2,
              scale: int = 1, row_labels: list[str] | None = None) -> Path:
    """Write an (N, C, H, W) batch with values in [0, 1] (C 1 or 3) as one PNG grid, white between images,
    each image enlarged ``scale`` times (nearest neighbour). ``row_labels``: one name per row (e.g. input /
    output / target), written in a margin on the left."""
    from PIL import Image

    images = images.detach().float().cpu().clamp(0, 1)
    if scale > 1:
        images = F.interpolate(images, scale_factor=scale, mode="nearest")
    count, channels, height, width = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows, padding = math.ceil(count / columns), padding * scale
    grid = torch.ones(channels, rows * (height + padding) + padding, columns * (width + padding) + padding)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        top, left = padding + row * (height + padding), padding + column * (width + padding)
        grid[:, top:top + height, left:left + width] = image
    array = grid.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    picture = Image.fromarray(array[:, :, 0] if channels == 1 else array)
    if row_labels is not None:
        if len(row_labels) != rows:
            raise CnnkitError(f"save_grid: {len(row_labels)} row labels for a grid of {rows} rows")
        picture = _label_rows(picture, row_labels, [padding + row * (height + padding) + height / 2
                                                    for row in range(rows)])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path


def _label_rows(picture, labels: list[str], centres: list[float]):
    """The picture with a white margin on its left holding each label, vertically centred on its row."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=max(10, min(16, int(min(b - a for a, b in zip(centres, centres[1:]))
                                                               if len(centres) > 1 else 16))))
    measure = ImageDraw.Draw(picture)
    margin = 8 + max(int(measure.textlength(label, font=font)) for label in labels)
    labelled = Image.new(picture.mode, (picture.width + margin, picture.height), "white")
    labelled.paste(picture, (margin, 0))
    draw = ImageDraw.Draw(labelled)
    for label, centre in zip(labels, centres):
        draw.text((4, centre), label, fill="black", font=font, anchor="lm")
    return labelled


# ----------------------------------------------------------------------------------------- Fréchet distance
def gaussian_fit(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, in float64."""
    features = features.double()
    mean = features.mean(0)
    centred = features - mean
    return mean, centred.T @ centred / max(len(features) - 1, 1)


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(mean1: torch.Tensor, cov1: torch.Tensor, mean2: torch.Tensor, cov2: torch.Tensor) -> float:
    """Fréchet (2-Wasserstein) distance between N(mean1, cov1) and N(mean2, cov2):
    |m1 - m2|^2 + Tr(C1 + C2 - 2 (C1 C2)^(1/2)), with Tr (C1 C2)^(1/2) = Tr (C1^(1/2) C2 C1^(1/2))^(1/2), a
    symmetric form whose eigenvalues are real and non-negative (no complex square roots to discard)."""
    root = _psd_sqrt(cov1.double())
    cross = torch.linalg.eigvalsh(root @ cov2.double() @ root).clamp_min(0).sqrt().sum()
    diff = mean1.double() - mean2.double()
    value = diff @ diff + torch.trace(cov1.double()) + torch.trace(cov2.double()) - 2 * cross
    return max(float(value), 0.0)


def _last_linear(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise CnnkitError(f"{type(model).__name__} has no linear layer whose inputs could serve as features; "
                          "use a classifier such as mnist_fast_cnn or lenet5_relu for the Fréchet distance")
    return linears[-1]


class FeatureNetwork:
    """Penultimate-layer features of a cnnkit classifier: the inputs of its last linear layer, for uint8
    images preprocessed as in the classifier's training."""

    def __init__(self, model: nn.Module, preprocess: Preprocess, description: str):
        self.model, self.preprocess, self.description = model.eval(), preprocess, description

    @classmethod
    def from_checkpoint(cls, path: str | Path, device="cpu") -> FeatureNetwork:
        model, meta = load_model_checkpoint(path, device)
        preprocess = card_of(model).preprocess()
        acc = meta.get("metrics", {}).get("val_acc")
        return cls(model, preprocess, f"{meta['model']['name']} from {path}"
                   + (f" ({acc:.2f}% test accuracy)" if acc is not None else ""))

    @classmethod
    def train(cls, data, out: str | Path | None = None, device: str = "auto", seed: int = 0) -> FeatureNetwork:
        """One epoch of ``mnist_fast_cnn`` (28x28 images) or ``lenet5_relu`` (other sizes) through the Trainer."""
        channels, height, width = data.image_shape
        name = "mnist_fast_cnn" if (height, width) == (28, 28) else "lenet5_relu"
        # Training needs gradients even when the caller evaluates under no_grad (the GAN task's evaluate does:
        # the network is first needed there, after the first epoch).
        with torch.random.fork_rng(), torch.enable_grad():  # the GAN's own random streams continue undisturbed
            torch.manual_seed(seed)
            model = create_model(name, num_classes=len(data.classes), in_channels=channels)
            config = TrainConfig(epochs=1, batch_size=256, optimizer="sgd", nesterov=True, lr=0.2 if name ==
                                 "mnist_fast_cnn" else 0.05, label_smoothing=0.1, schedule="onecycle",
                                 channels_last=True, eval_batch_size=2000, seed=seed, device=device, progress=False)
            trainer = Trainer(model, data, config, out=out, overwrite=True)  # retrained only when not usable
            summary = trainer.fit()
        return cls(trainer.model, trainer.preprocess, f"{name} trained 1 epoch on {data.name} "
                   f"({summary['test_acc']:.2f}% test accuracy)")

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        device = next(self.model.parameters()).device
        captured = []
        hook = _last_linear(self.model).register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0]))
        try:
            for start in range(0, len(images), batch_size):
                self.model(self.preprocess(images[start:start + batch_size].to(device)))
        finally:
            hook.remove()
        return torch.cat([c.flatten(1).double().cpu() for c in captured])


# ----------------------------------------------------------------------------------------------------- task
class GANTask(Task):
    """Unconditional GAN training for a model with ``generator``, ``discriminator`` and ``latent()`` (``dcgan``).

    Real images are scaled to [-1, 1] (the generator's tanh range). Per-epoch metrics: ``loss`` is the
    generator's loss, ``d_loss`` the discriminator's (real + generated), ``d_real`` and ``d_fake`` its mean
    probability of "real" on real and on generated images; the evaluation metric is ``fid`` (see the module
    docstring). ``end_epoch`` writes ``samples/epoch_NNN.png``: ``grid`` x ``grid`` samples of fixed latent
    vectors, so the pictures of successive epochs compare."""

    name = "gan"
    runs_own_step = True  # train_step: a discriminator update, then a generator update
    higher_is_better = ()  # fid falls as the samples improve

    def __init__(self, feature_network: FeatureNetwork | str | Path | None = None, fid_samples: int = 5000,
                 grid: int = 8):
        """``fid_samples``: generated images behind each epoch's Fréchet distance; 0 skips the score (and the
        feature network's training), e.g. for a quick look at the samples."""
        self.feature_source, self.fid_samples, self.grid = feature_network, fid_samples, grid
        self._features: FeatureNetwork | None = feature_network if isinstance(feature_network, FeatureNetwork) else None
        self._real_stats: dict = {}

    def prepare(self, trainer, images, labels, train=False, generator=None):
        return images.float().div_(127.5).sub_(1), labels

    def train_step(self, trainer, real, labels, generator):
        model, optimizer = trainer.model, trainer.optimizer
        generator_net, discriminator = model.generator, model.discriminator
        count = len(real)
        ones = torch.ones(count, device=real.device)
        zeros = torch.zeros(count, device=real.device)
        z = model.latent(count, generator)
        # Discriminator: real -> 1, generated -> 0 (the generated batch is detached: no generator gradients).
        with trainer.autocast():
            fake = generator_net(z)
            real_logits, fake_logits = discriminator(real).float(), discriminator(fake.detach()).float()
        d_loss = (F.binary_cross_entropy_with_logits(real_logits, ones)
                  + F.binary_cross_entropy_with_logits(fake_logits, zeros))
        self._step(trainer, d_loss, discriminator)
        # Generator: make the updated discriminator say "real". The discriminator's parameters are frozen for
        # this backward pass, so only the generator's get gradients and only they move in the optimiser step.
        discriminator.requires_grad_(False)
        try:
            with trainer.autocast():
                g_logits = discriminator(fake).float()
            g_loss = F.binary_cross_entropy_with_logits(g_logits, ones)
            self._step(trainer, g_loss, generator_net)
        finally:
            discriminator.requires_grad_(True)
        optimizer.zero_grad(set_to_none=True)
        return g_loss.detach(), {"d_loss": d_loss.detach() * count, "d_real": real_logits.detach().sigmoid().sum(),
                                 "d_fake": fake_logits.detach().sigmoid().sum()}

    @staticmethod
    def _step(trainer, loss: torch.Tensor, network: nn.Module) -> None:
        """Backward and one optimiser step for the parameters that got gradients (``network``'s)."""
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if trainer.config.grad_clip:
            nn.utils.clip_grad_norm_(network.parameters(), trainer.config.grad_clip)
        trainer.optimizer.step()

    def summarize(self, sums, count):
        return {key: value.item() / max(count, 1) for key, value in sums.items()}

    def describe(self) -> dict:
        return {"name": self.name, "loss": "non-saturating BCE", "fid_samples": self.fid_samples,
                "fid_features": self._features.description if self._features else None}

    # --------------------------------------------------------------------------------------- evaluation
    def features(self, trainer) -> FeatureNetwork:
        """The feature network: given, or the run folder's ``fid_features`` (a resumed run), or trained now."""
        if self._features is None:
            source = self.feature_source
            saved = trainer.out / "fid_features" if trainer.out else None
            if source is None and saved is not None and (saved / "checkpoint.json").is_file():
                source = saved
            if source is not None:
                self._features = FeatureNetwork.from_checkpoint(source, trainer.device)
            else:
                trainer.log(f"training the feature network for the Fréchet distance (1 epoch on {trainer.data.name})")
                self._features = FeatureNetwork.train(trainer.data, saved, str(trainer.device), trainer.config.seed)
            trainer.log(f"Fréchet distance on features of {self._features.description}")
        return self._features

    def fixed_latent(self, model, count: int) -> torch.Tensor:
        device = next(model.parameters()).device
        return model.latent(count, torch.Generator(device=device).manual_seed(EVAL_SEED), device)

    @torch.no_grad()
    def generate(self, model, count: int, batch_size: int = 1000) -> torch.Tensor:
        """``count`` uint8 samples from the fixed latent vectors, generator in evaluation mode."""
        was_training = model.generator.training
        model.generator.eval()
        z = self.fixed_latent(model, count)
        images = torch.cat([to_uint8(model.generator(z[i:i + batch_size])) for i in range(0, count, batch_size)])
        model.generator.train(was_training)
        return images

    @torch.no_grad()
    def evaluate(self, trainer, dataset, **options) -> dict:
        if not self.fid_samples:  # asked for no score: no feature network is trained, nothing is generated
            return {"images": 0}
        if not hasattr(dataset, "images"):
            raise CnnkitError("the Fréchet distance needs an in-memory dataset (mnist, fashion-mnist, cifar10, "
                              "cifar100), not an image folder")
        features = self.features(trainer)
        key = (id(dataset), len(dataset))
        if key not in self._real_stats:
            self._real_stats[key] = gaussian_fit(features(dataset.images))
        count = self.fid_samples
        fake_stats = gaussian_fit(features(self.generate(trainer.model, count)))
        return {"fid": frechet_distance(*self._real_stats[key], *fake_stats), "images": count}

    def end_epoch(self, trainer, metrics) -> None:
        if trainer.out:
            samples = self.generate(trainer.model, self.grid**2)
            save_grid(samples.float() / 255, trainer.out / "samples" / f"epoch_{metrics['epoch']:03d}.png",
                      columns=self.grid, scale=2)


def sample_grid(model, path: str | Path, count: int = 64, seed: int = 0) -> Path:
    """Write ``count`` samples of a trained GAN as a square PNG grid."""
    images = model.sample(count, torch.Generator(device=next(model.parameters()).device).manual_seed(seed))
    return save_grid(to_unit(images), path, columns=math.ceil(math.sqrt(count)), scale=2)


__all__ = ["GANTask", "GAN_TRAINING", "FeatureNetwork", "frechet_distance", "gaussian_fit", "sample_grid",
           "save_grid", "to_uint8", "to_unit"]
