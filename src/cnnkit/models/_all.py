"""Imports every model module so their @register_model decorators run. Add new model files here."""

from . import alexnet, efficientnet, googlenet, lenet, resnet, small, unet, vgg, xception  # noqa: F401
from . import dcgan, fast, pix2pix, retina  # noqa: F401
from ..compress import model as _compression  # noqa: F401  (compress_factorized)
