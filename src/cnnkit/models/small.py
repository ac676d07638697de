"""Small networks from the notes.

``fashion_cnn`` -- the Fashion-MNIST network the notes write in Keras (seeds 002, "A simple CNN to tackle the
Fashion-MNIST", after Géron, *Hands-on Machine Learning*, ch. 14; ~92% test accuracy):

    layer    type                 maps / units  size (28 input)  kernel  activation
    conv1    convolution, same    64            28x28            7x7     ReLU
    pool1    max-pool             64            14x14            2x2
    conv2-3  convolution, same    128           14x14            3x3     ReLU
    pool2    max-pool             128           7x7              2x2
    conv4-5  convolution, same    256           7x7              3x3     ReLU
    pool3    max-pool             256           3x3              2x2
    fc1      dense + dropout 0.5  128                                    ReLU
    fc2      dense + dropout 0.5  64                                     ReLU
    out      dense                10                                     softmax (in the loss)

1,413,834 parameters at 28x28x1 and 10 classes, as Keras reports for the listing.

``cifar_convnet4`` -- the four-layer CIFAR-10 network of Krizhevsky et al. 2012 (ImageNet classification with
deep CNNs), Fig. 1: ReLUs reach 25 % training error six times faster than tanh units in "a four-layer
convolutional neural network". The paper does not list that network; its shape here is the four-weight-layer net
of Krizhevsky's cuda-convnet, ``layers-80sec.cfg`` (three 5x5 convolutions and one fully connected layer, no
normalisation, no dropout: the figure's network had no regularisation). ``activation`` picks the non-linearity
(relu, tanh, leaky_relu, elu, sigmoid), every other layer staying the same:

    layer    type                 maps / units  size (32 input)  kernel / pool  activation
    conv1    convolution, same    32            32x32            5x5            ``activation``
    pool1    max-pool, overlap    32            16x16            3x3 stride 2
    conv2    convolution, same    32            16x16            5x5            ``activation``
    pool2    average-pool         32            8x8              3x3 stride 2
    conv3    convolution, same    64            8x8              5x5            ``activation``
    pool3    average-pool         64            4x4              3x3 stride 2
    fc       dense                10                                            softmax (in the loss)

89,578 parameters at 32x32x3 and 10 classes: 3*25*32+32 + 32*25*32+32 + 32*25*64+64 + 64*4*4*10+10.

``conv_autoencoder`` -- a convolutional autoencoder for denoising (seeds 004, "Remembering convolutional
auto-encoders" and the bottleneck-size example of Lindsey et al. 2019): strided 3x3 convolutions halve the
resolution twice, a 1x1 convolution squeezes to ``bottleneck_channels`` maps, and transposed convolutions
mirror the encoder back to the input's size and channels, ending in a sigmoid for images in [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ShapeError
from ..layers import make_activation, require_min_input_size
from .registry import register_model
from .stages import Stage, features_then_classifier, own_children


class FashionCNN(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28, drop_rate: float = 0.5):
        super().__init__()

        def conv(cin, cout, k):
            return [nn.Conv2d(cin, cout, k, padding=k // 2), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *conv(in_channels, 64, 7), nn.MaxPool2d(2),
            *conv(64, 128, 3), *conv(128, 128, 3), nn.MaxPool2d(2),
            *conv(128, 256, 3), *conv(256, 256, 3), nn.MaxPool2d(2),
        )
        self.image_size = image_size
        side = image_size // 2 // 2 // 2  # Keras' Flatten fixes the input size; three 2x2 pools
        if side < 1:
            raise ShapeError(f"fashion_cnn needs image_size >= 8 (three 2x2 max-pools), got {image_size}")
        self.classifier = nn.Sequential(
            nn.Flatten(1),
            nn.Linear(256 * side * side, 128), nn.ReLU(inplace=True), nn.Dropout(drop_rate),
            nn.Linear(128, 64), nn.ReLU(inplace=True), nn.Dropout(drop_rate),
            nn.Linear(64, num_classes),
        )
        # Keras' defaults, as the notes' Keras network starts: Glorot-uniform kernels, zero biases (PyTorch's own:
        # Kaiming-uniform with a = sqrt(5), uniform biases). A two-epoch pilot of the notes' recipe favoured them by
        # 1.8 points; after its full ten epochs the two ended within seed noise (README, the notes' 92 %).
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ShapeError(f"this fashion_cnn was built for {self.image_size}x{self.image_size} inputs, got "
                             f"{x.shape[-2]}x{x.shape[-1]}; build it with image_size={x.shape[-1]}")
        return self.classifier(self.features(x))

    def feature_stages(self) -> list[Stage]:
        return features_then_classifier(self)


class CifarConvNet4(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: int = 32, activation: str = "relu"):
        super().__init__()
        # cuda-convnet's pools cover the border (ceil), halving 32 -> 16 -> 8 -> 4; padding 1 does the same here,
        # and its average pools divide by the pixels inside the image, not the padding.
        def average_pool():
            return nn.AvgPool2d(3, 2, padding=1, count_include_pad=False)

        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5, padding=2), make_activation(activation), nn.MaxPool2d(3, 2, padding=1),
            nn.Conv2d(32, 32, 5, padding=2), make_activation(activation), average_pool(),
            nn.Conv2d(32, 64, 5, padding=2), make_activation(activation), average_pool(),
        )
        self.image_size = image_size
        side = image_size
        for _ in range(3):
            side = (side - 1) // 2 + 1
        self.classifier = nn.Sequential(nn.Flatten(1), nn.Linear(64 * side * side, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ShapeError(f"this cifar_convnet4 was built for {self.image_size}x{self.image_size} inputs (its dense "
                             f"layer is sized for them), got {x.shape[-2]}x{x.shape[-1]}; resize the images or build "
                             f"it with image_size={x.shape[-1]}")
        return self.classifier(self.features(x))

    def feature_stages(self) -> list[Stage]:
        return features_then_classifier(self)


class ConvAutoencoder(nn.Module):
    """Encoder: conv 3x3/2 (32) -> conv 3x3/2 (64) -> conv 1x1 (bottleneck); decoder mirrors it."""

    def __init__(self, in_channels: int = 1, bottleneck_channels: int = 16, widths: tuple[int, int] = (32, 64)):
        super().__init__()
        first, second = widths
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, first, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(first, second, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(second, bottleneck_channels, 1), nn.ReLU(inplace=True),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(bottleneck_channels, second, 1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(second, first, 3, stride=2, padding=1, output_padding=1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(first, in_channels, 3, stride=2, padding=1, output_padding=1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        require_min_input_size(x, 4, "conv_autoencoder")
        if x.shape[-2] % 4 or x.shape[-1] % 4:
            raise ShapeError(f"conv_autoencoder halves the size twice, so it needs sizes divisible by 4, got "
                             f"{x.shape[-2]}x{x.shape[-1]}; pad or crop (28x28 and 32x32 work)")
        return self.decoder(self.encoder(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def feature_stages(self) -> list[Stage]:
        return own_children(self, "encoder", "decoder")  # no classifier: nothing for a new head to renew


@register_model(input_size=(1, 28, 28), num_classes=10, family="small", paper="Géron 2019, ch. 14 (the notes)",
                min_input_size=8)
def fashion_cnn(num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
                drop_rate: float = 0.5) -> FashionCNN:
    """The notes' Keras Fashion-MNIST CNN; ``image_size`` fixes the flatten size (28 for MNIST, 32 for CIFAR)."""
    return FashionCNN(num_classes, in_channels, image_size, drop_rate)


@register_model(input_size=(3, 32, 32), num_classes=10, family="small", min_input_size=32,
                paper="Krizhevsky et al. 2012, Fig. 1 (cuda-convnet layers-80sec)")
def cifar_convnet4(num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                   activation: str = "relu") -> CifarConvNet4:
    """The four-layer CIFAR-10 network of the ReLU-versus-tanh figure; ``activation`` is relu, tanh, leaky_relu,
    elu or sigmoid."""
    return CifarConvNet4(num_classes, in_channels, image_size, activation)


@register_model(input_size=(1, 28, 28), num_classes=0, family="autoencoder", paper="the notes (seeds 004)",
                min_input_size=4, task="reconstruction")
def conv_autoencoder(num_classes: int = 0, in_channels: int = 1, bottleneck_channels: int = 16,
                     widths: tuple[int, int] = (32, 64)) -> ConvAutoencoder:
    """Convolutional (denoising) autoencoder. Its output has the input's ``in_channels`` maps; ``num_classes`` is
    accepted so generic code can pass a dataset's class count, and ignored (reconstruction has no classes)."""
    return ConvAutoencoder(in_channels, bottleneck_channels, tuple(widths))
