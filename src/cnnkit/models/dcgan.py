"""DCGAN: Radford, Metz, Chintala, "Unsupervised representation learning with deep convolutional generative
adversarial networks", ICLR 2016, §3 ("Approach and model architecture") and Fig. 1, scaled to 28x28 and 32x32
images (the paper's generator makes 64x64 from a 4x4x1024 projection; ours starts at 4x4 or 3x3 and has one
upsampling stage fewer). The paper's guidelines, all followed:

* no pooling: strided convolutions downsample (discriminator), fractionally-strided ones upsample (generator);
* batch norm in both networks, except the generator's output layer and the discriminator's input layer;
* no fully connected hidden layers: z enters as a 1x1 map, and the discriminator's last convolution covers its
  whole remaining map to give one logit;
* ReLU in the generator with tanh on the output, LeakyReLU (slope 0.2) in the discriminator;
* weights initialised from N(0, 0.02) (batch-norm scales from N(1, 0.02), shifts 0), z uniform in [-1, 1]^100,
  Adam with lr 0.0002 and beta1 0.5 (the training task's defaults: ``cnnkit.gan``).

    generator (w = generator_width, 64 by default)       discriminator (w = discriminator_width, 64)
    32x32        28x28        layer                         32x32       28x28       layer
    1 -> 4       1 -> 3       4x4 / 3x3 transposed, 4w, BN   32 -> 16    28 -> 14    4x4/2 conv, w, LReLU
    4 -> 8       3 -> 7       4x4/2 / 3x3/2 transp., 2w, BN   16 -> 8     14 -> 7     4x4/2 conv, 2w, BN, LReLU
    8 -> 16      7 -> 14      4x4/2 transposed, w, BN, ReLU  8 -> 4      7 -> 3      4x4/2 / 3x3/2, 4w, BN, LReLU
    16 -> 32     14 -> 28     4x4/2 transposed, C, tanh      4 -> 1      3 -> 1      4x4 / 3x3 conv, 1 logit

The registered ``dcgan`` reads images: ``model(images)`` gives the discriminator's logit per image (so the
calculator and the filter tools see a network of images), ``model.generator(z)`` or ``model.sample(n)`` makes
images in [-1, 1]. Both networks live in one module, so a checkpoint holds both and a run resumes exactly.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ShapeError
from .registry import register_model

IMAGE_SIZES = (28, 32)


def _stages(image_size: int) -> list[tuple[int, int, int]]:
    """(kernel, stride, padding) of the generator's four layers, input first; the discriminator mirrors them."""
    if image_size == 32:
        return [(4, 1, 0), (4, 2, 1), (4, 2, 1), (4, 2, 1)]
    if image_size == 28:
        return [(3, 1, 0), (3, 2, 0), (4, 2, 1), (4, 2, 1)]
    raise ShapeError(f"dcgan is laid out for {' or '.join(map(str, IMAGE_SIZES))}-pixel images, got image_size="
                     f"{image_size}; resize the images or build with image_size=28 or 32")


def dcgan_init_(module: nn.Module) -> None:
    """Radford et al. §4: "All weights were initialized from a zero-centered Normal distribution with standard
    deviation 0.02"; batch-norm scales around 1 (as in their reference code)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Sequential):
    def __init__(self, latent_dim: int = 100, out_channels: int = 1, image_size: int = 28, width: int = 64):
        super().__init__()
        stages = _stages(image_size)
        widths = [latent_dim, 4 * width, 2 * width, width, out_channels]
        for index, (kernel, stride, padding) in enumerate(stages):
            last = index == len(stages) - 1
            # no bias: batch norm's shift replaces it, and the output layer follows the reference code
            self.add_module(f"deconv{index + 1}", nn.ConvTranspose2d(widths[index], widths[index + 1], kernel, stride,
                                                                     padding, bias=False))
            if last:
                self.add_module("tanh", nn.Tanh())
            else:
                self.add_module(f"bn{index + 1}", nn.BatchNorm2d(widths[index + 1]))
                self.add_module(f"relu{index + 1}", nn.ReLU(inplace=True))
        self.latent_dim = latent_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return super().forward(z.reshape(len(z), self.latent_dim, 1, 1))


class DCGANDiscriminator(nn.Sequential):
    def __init__(self, in_channels: int = 1, image_size: int = 28, width: int = 64):
        super().__init__()
        stages = list(reversed(_stages(image_size)))  # the generator's layers, mirrored
        widths = [in_channels, width, 2 * width, 4 * width, 1]
        for index, (kernel, stride, padding) in enumerate(stages):
            last = index == len(stages) - 1
            self.add_module(f"conv{index + 1}", nn.Conv2d(widths[index], widths[index + 1], kernel, stride, padding,
                                                          bias=False))
            if last:
                break
            if index > 0:  # not on the input layer (§3)
                self.add_module(f"bn{index + 1}", nn.BatchNorm2d(widths[index + 1]))
            self.add_module(f"lrelu{index + 1}", nn.LeakyReLU(0.2, inplace=True))
        self.image_size = image_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """One real-vs-generated logit per image, shape (N,)."""
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            raise ShapeError(f"this dcgan discriminator was built for {self.image_size}x{self.image_size} images, got "
                             f"{images.shape[-2]}x{images.shape[-1]}; build it with image_size={images.shape[-1]} "
                             f"(28 or 32) or resize the images")
        return super().forward(images).flatten(1).squeeze(1)


class DCGAN(nn.Module):
    def __init__(self, in_channels: int = 1, image_size: int = 28, latent_dim: int = 100, generator_width: int = 64,
                 discriminator_width: int = 64):
        super().__init__()
        self.generator = DCGANGenerator(latent_dim, in_channels, image_size, generator_width)
        self.discriminator = DCGANDiscriminator(in_channels, image_size, discriminator_width)
        self.latent_dim, self.image_size, self.in_channels = latent_dim, image_size, in_channels
        dcgan_init_(self)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.discriminator(images)

    def latent(self, count: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """z ~ U[-1, 1]^latent_dim (Radford et al. Fig. 1), shape (count, latent_dim)."""
        device = device or next(self.parameters()).device
        return torch.rand(count, self.latent_dim, generator=generator, device=device) * 2 - 1

    @torch.no_grad()
    def sample(self, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``count`` generated images in [-1, 1] (evaluation mode: batch norm's running statistics)."""
        was_training = self.generator.training
        self.generator.eval()
        images = self.generator(self.latent(count, generator))
        self.generator.train(was_training)
        return images


@register_model(input_size=(1, 28, 28), num_classes=0, family="gan", paper="Radford et al. 2016",
                min_input_size=28, task="generation")
def dcgan(num_classes: int = 0, in_channels: int = 1, image_size: int = 28, latent_dim: int = 100,
          generator_width: int = 64, discriminator_width: int = 64) -> DCGAN:
    """DCGAN generator + discriminator for 28x28 or 32x32 images with ``in_channels`` channels. ``num_classes`` is
    accepted so generic code can pass a dataset's class count, and ignored (the GAN is unconditional)."""
    return DCGAN(in_channels, image_size, latent_dim, generator_width, discriminator_width)
