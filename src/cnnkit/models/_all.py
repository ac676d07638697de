"""Imports every model module so their @register_model decorators run. Add new model files here."""

from . import alexnet, googlenet, lenet, resnet, vgg  # noqa: F401
