"""Learned image compression: Ballé et al.'s GDN transforms with a factorized entropy model (ICLR 2017, 2018),
trained through the one loop, writing real files with an ANS entropy coder (constriction's).

    model = create_model("compress_factorized", channels=64, latent_channels=96)
    Trainer(model, load_dataset("cifar10"), config, task=CompressionTask(lmbda=0.01)).fit()
    data = compress_image(model, image)          # bytes of a .cnk file; image: (C, H, W) uint8
    image = decompress(model, data)              # (C, H, W) uint8

    model = create_model("compress_hyperprior", channels=64, latent_channels=96)    # Ballé et al. 2018
    Trainer(model, load_photos("cbsd432"), config, task=CompressionTask(0.01, crop=256)).fit()

Modules: ``gdn`` (GDN/IGDN), ``entropy`` (the factorized density and its coding tables), ``model`` (the
registered factorized-prior architecture), ``hyperprior`` (the scale hyperprior and its Gaussian tables),
``bitstream`` (the file format, coded with ``constriction``), ``task`` (training, random crops), ``photos``
(CBSD432/CBSD68/Kodak24 as uint8 tensors), ``bdrate`` (Bjøntegaard deltas between rate-distortion curves).
"""

from .bitstream import (Header, compress_image, decode_latent, decompress, decompress_latent, encode_latent,
                        read_header)
from .entropy import CodingTables, FactorizedEntropyModel
from .gdn import GDN, IGDN
from .hyperprior import GaussianConditional, ScaleHyperpriorCompressor
from .model import CompressionOutput, FactorizedPriorCompressor
from .photos import load_photo_folder, load_photos
from .task import CompressionTask, bits_per_pixel, random_crops

__all__ = ["GDN", "IGDN", "CodingTables", "CompressionOutput", "CompressionTask", "FactorizedEntropyModel",
           "FactorizedPriorCompressor", "GaussianConditional", "Header", "ScaleHyperpriorCompressor",
           "bits_per_pixel", "compress_image", "decode_latent", "decompress", "decompress_latent", "encode_latent",
           "load_photo_folder", "load_photos", "random_crops", "read_header"]
