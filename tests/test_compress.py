"""Learned image compression: GDN/IGDN, the entropy model and its coding tables, the entropy coder (constriction's),
the .cnk file and its errors, training through the one loop, and the compress/decompress commands."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit import TrainConfig, Trainer, create_model
from cnnkit.cli import main
from cnnkit.compress import (GDN, IGDN, CompressionTask, FactorizedEntropyModel, compress_image, decode_latent,
                             decompress, decompress_latent, encode_latent, read_header)
from cnnkit.compress.bitstream import HEADER_BYTES
from cnnkit.compress.entropy import PRECISION, CodingTables, quantize_pmf
from cnnkit.compress.model import pad_to_multiple
from cnnkit.data.datasets import DatasetBundle, TensorImageDataset
from cnnkit.errors import BitstreamError, ImageError


def smooth_images(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """uint8 (count, 3, size, size) images with structure a codec can learn: blurred blobs and gradients."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, size // 8, size // 8, generator=g)
    fine = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    ramp = torch.linspace(0, 0.3, size)[None, None, None, :]
    return ((fine * 0.7 + ramp).clamp(0, 1) * 255).round().to(torch.uint8)


@pytest.fixture(scope="module")
def trained():
    """A small compressor trained for a few dozen steps through the Trainer, so its densities are peaked (the
    coding tables then hold small probabilities) and its latents spread over many integers."""
    torch.manual_seed(0)
    images = smooth_images(96, 32)
    labels = torch.zeros(len(images), dtype=torch.long)
    split = TensorImageDataset(images, labels, ["image"])
    bundle = DatasetBundle("smooth", split, split.subset(range(16)), ["image"], (0.5,) * 3, (0.25,) * 3)
    model = create_model("compress_factorized", channels=12, latent_channels=8)
    config = TrainConfig(epochs=4, batch_size=8, optimizer="adam", lr=3e-3, weight_decay=0.0, grad_clip=1.0,
                         schedule="constant", progress=False, num_workers=0)
    trainer = Trainer(model, bundle, config, task=CompressionTask(lmbda=0.02))
    summary = trainer.fit()
    return model.eval(), trainer, summary


# ------------------------------------------------------------------------------------------------ GDN


def test_igdn_inverts_gdn_within_tolerance():
    torch.manual_seed(0)
    gdn, igdn = GDN(6), IGDN(6)
    with torch.no_grad():  # a general normalisation: positive off-diagonal couplings, unequal betas
        gdn.gamma_stored.copy_(torch.sqrt(0.08 * torch.eye(6) + 0.02 * torch.rand(6, 6)))
        gdn.beta_stored.copy_(torch.sqrt(0.5 + torch.rand(6)))
    igdn.load_state_dict(gdn.state_dict())  # the same beta and gamma
    x = 0.5 * torch.randn(4, 6, 8, 8)
    y = gdn(x)
    assert not torch.allclose(y, x, atol=1e-2)  # GDN really normalises
    # IGDN is Ballé 2017's one-step inverse: close for activations of this size, exact only to first order.
    assert (igdn(y) - x).abs().max() < 0.05 * x.abs().max()
    # The fixed-point iteration inverts each exactly.
    assert torch.allclose(gdn.invert(y), x, atol=1e-5)
    assert torch.allclose(igdn.invert(igdn(x)), x, atol=1e-5)


def test_gdn_parameters_stay_valid_under_gradient_steps():
    gdn = GDN(4)
    with torch.no_grad():
        gdn.beta_stored.fill_(-3.0)  # stored values below the bound still give beta >= beta_min
        gdn.gamma_stored.fill_(-1.0)
    assert (gdn.beta >= gdn.beta_min * 0.999).all() and (gdn.gamma >= 0).all()
    loss = gdn(torch.randn(2, 4, 5, 5)).pow(2).sum()
    loss.backward()
    assert torch.isfinite(gdn.beta_stored.grad).all() and gdn.beta_stored.grad.abs().sum() > 0


# -------------------------------------------------------------------------------- entropy model and coder


def test_likelihoods_of_all_integers_sum_to_one_and_tables_are_valid():
    torch.manual_seed(0)
    model = FactorizedEntropyModel(3).eval()
    values = torch.arange(-400, 401, dtype=torch.float32).view(1, 1, 1, -1).expand(1, 3, 1, -1)
    totals = model.likelihood(values).sum(-1).flatten()
    assert torch.allclose(totals, torch.ones(3), atol=1e-4)
    tables = model.coding_tables()
    for cdf in tables.cdfs:
        steps = np.diff(cdf)
        assert cdf[0] == 0 and cdf[-1] == TOTAL and (steps >= 1).all()


def test_quantized_frequencies_follow_the_probabilities():
    pmf = np.array([0.5, 0.25, 0.125, 0.125 - 1e-9, 1e-9])
    freqs = quantize_pmf(pmf)
    assert freqs.sum() == TOTAL and freqs.min() == 1
    assert np.allclose(freqs[:4] / TOTAL, pmf[:4], atol=1e-4)


TOTAL = 1 << PRECISION


def test_entropy_coder_round_trips_and_costs_the_entropy():
    """Two channels with skewed tables (the last symbol, the escape, has probability 2**-16): the payload costs
    the tables' -log2 p of the symbols within a few words, and decodes back exactly."""
    rng = np.random.default_rng(0)
    freqs = np.array([40000, 20000, 5000, 500, 35, 1])
    freqs[0] += TOTAL - freqs.sum()
    cdf = np.concatenate([[0], np.cumsum(freqs)]).tolist()
    tables = CodingTables(offsets=[-2, 7], cdfs=[cdf, cdf], fingerprint=0)
    symbols = rng.choice(len(freqs) - 1, size=(2, 50, 100), p=freqs[:-1] / freqs[:-1].sum())
    symbols[0, 0, :3] = [4, 3, 4]  # the rarest symbols inside the table
    latent = torch.from_numpy(symbols + np.array(tables.offsets)[:, None, None]).float()
    data = encode_latent(latent, tables)
    assert torch.equal(decode_latent(data, tuple(latent.shape), tables), latent)
    ideal_bits = -np.log2(freqs[symbols] / TOTAL).sum()
    assert ideal_bits <= 8 * len(data) <= ideal_bits + 64


def test_payload_bytes_are_those_of_format_version_2():
    """The coded bytes of a fixed latent (two escapes among them), as .cnk version 2 wrote them with constriction
    0.5. If this fails after upgrading constriction, its coder or its quantisation of the tables changed, and
    existing files would decode to a wrong latent: bump bitstream.VERSION and refuse the old one."""
    freqs = np.array([40000, 20000, 5000, 500, 35, 1])
    freqs[0] += TOTAL - freqs.sum()
    cdf = np.concatenate([[0], np.cumsum(freqs)]).tolist()
    tables = CodingTables(offsets=[-2, 7], cdfs=[cdf, cdf], fingerprint=0)
    latent = torch.tensor([[[-2, -1, 0, 1, 2, -2, -2, -1]], [[7, 8, 9, 10, 7, 7, 40, -3]]]).float()
    data = encode_latent(latent, tables)
    assert data.hex() == "0ffffff03ec2331fe0cb1b5c9b100100"
    assert torch.equal(decode_latent(data, (2, 1, 8), tables), latent)


def test_latent_with_values_outside_the_tables_round_trips_exactly():
    torch.manual_seed(0)
    tables = FactorizedEntropyModel(4).eval().coding_tables()
    latent = torch.round(torch.randn(4, 6, 5) * 30)
    latent[0, 0, 0], latent[1, 2, 3], latent[3, 5, 4] = 5000, -123456789, 2.0**40  # escaped values
    back = decode_latent(encode_latent(latent, tables), tuple(latent.shape), tables)
    assert torch.equal(back, latent)


# -------------------------------------------------------------------------------------- the .cnk file


def test_training_through_the_loop_lowers_the_rate_distortion_loss(trained):
    model, trainer, summary = trained
    history = trainer.history
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert {"train_bpp", "train_psnr", "val_bpp", "val_psnr"} <= set(history[-1])
    assert summary["task"] == {"name": "compression", "lmbda": 0.02}
    assert history[-1]["val_psnr"] > history[0]["val_psnr"] + 1


def test_bitstream_round_trips_the_quantised_latent_exactly(trained):
    model, _, _ = trained
    image = smooth_images(1, 48, seed=5)[0][:, :45, :38]  # not a multiple of 16: padded, cropped back
    data = compress_image(model, image)
    header, latent = decompress_latent(model, data)
    expected = model.quantized_latent(pad_to_multiple(image.float()[None] / 255))[0]
    assert latent.abs().max() >= 2  # a real range of integers, not all zeros
    assert torch.equal(latent, expected)
    assert (header.channels, header.height, header.width, header.latent_shape) == (3, 45, 38, (8, 3, 3))
    decoded = decompress(model, data)
    assert decoded.shape == image.shape and decoded.dtype == torch.uint8
    with torch.no_grad():
        direct = model.synthesis(expected[None])[0, :, :45, :38].clamp(0, 1)
    assert torch.equal(decoded, (direct * 255).round().to(torch.uint8))


def test_estimated_rate_matches_the_real_file_size(trained):
    model, _, _ = trained
    image = smooth_images(1, 384, seed=3)[0]
    with torch.no_grad():
        likelihoods = model(image.float()[None] / 255).likelihoods
    estimated_bits = -torch.log2(likelihoods).sum().item()
    data = compress_image(model, image)
    payload_bits = 8 * (len(data) - HEADER_BYTES)
    assert estimated_bits > 10 * 8 * HEADER_BYTES  # the header's fixed 28 bytes are a small share of the file
    assert abs(payload_bits - estimated_bits) < 0.02 * estimated_bits, (payload_bits, estimated_bits)
    assert abs(8 * len(data) - estimated_bits) < 0.05 * estimated_bits, (8 * len(data), estimated_bits)


def test_corrupt_truncated_and_foreign_files_are_refused(trained):
    model, _, _ = trained
    data = compress_image(model, smooth_images(1, 32)[0])
    cases = {
        "wrong magic": (b"GIF8" + data[4:], "not a cnnkit compressed image"),
        "empty": (b"", "not a cnnkit compressed image"),
        "truncated header": (data[:20], "truncated"),
        "truncated payload": (data[:-3], "truncated"),
        "extra bytes": (data + b"\0", "extra bytes"),
        "flipped payload bit": (data[:-1] + bytes([data[-1] ^ 0x10]), "CRC-32"),
        "flipped header bit": (data[:7] + bytes([data[7] ^ 1]) + data[8:], "CRC-32"),
        "future version": (data[:4] + b"\x07" + data[5:], "version 7"),
        "version 1": (data[:4] + b"\x01" + data[5:], "version 1 .*pure-Python range coder.* compress the image again"),
    }
    for broken, message in cases.values():
        with pytest.raises(BitstreamError, match=message):
            decompress(model, broken)
    other = create_model("compress_factorized", channels=12, latent_channels=8)  # same shapes, other weights
    with pytest.raises(BitstreamError, match="another model"):
        decompress(other, data)
    with pytest.raises(BitstreamError, match="checkpoint that compressed it"):
        decompress(create_model("compress_factorized", channels=12, latent_channels=6), data)


def test_payload_corruption_is_caught_by_the_coder_itself(trained):
    model, _, _ = trained
    image = smooth_images(1, 64)[0]
    header, latent = decompress_latent(model, compress_image(model, image))
    tables = model.entropy_model.coding_tables()
    payload = encode_latent(latent, tables)
    with pytest.raises(BitstreamError):
        decode_latent(payload[:-2], header.latent_shape, tables)
    with pytest.raises(BitstreamError):
        decode_latent(payload + b"\x00\x00", header.latent_shape, tables)
    for broken in (payload[:-4], payload[4:], payload + b"\x01\x00\x00\x00", payload + b"\x00" * 4):
        with pytest.raises(BitstreamError):  # whole words missing or left over: a wrong final state, or no state
            decode_latent(broken, header.latent_shape, tables)


def test_bad_images_are_refused(trained):
    model, _, _ = trained
    with pytest.raises(ImageError, match="1 channel"):
        compress_image(model, torch.zeros(1, 32, 32, dtype=torch.uint8))
    with pytest.raises(ImageError, match=r"\[0, 1\]"):
        compress_image(model, torch.full((3, 16, 16), 2.0))


def test_compress_and_decompress_commands(trained, tmp_path, capsys):
    model, trainer, _ = trained
    from cnnkit.train.checkpoint import save_model_checkpoint

    run = tmp_path / "run"
    save_model_checkpoint(run, model, trainer.checkpoint_meta())
    Image.fromarray(smooth_images(1, 40)[0].permute(1, 2, 0).numpy()).save(tmp_path / "in.png")
    assert main(["compress", str(run), str(tmp_path / "in.png"), "-o", str(tmp_path / "in.cnk")]) == 0
    assert "bpp" in capsys.readouterr().out
    assert read_header((tmp_path / "in.cnk").read_bytes()).height == 40
    assert main(["decompress", str(run), str(tmp_path / "in.cnk"), "-o", str(tmp_path / "out.png")]) == 0
    assert Image.open(tmp_path / "out.png").size == (40, 40)

    (tmp_path / "bad.cnk").write_bytes((tmp_path / "in.cnk").read_bytes()[:-5])
    assert main(["decompress", str(run), str(tmp_path / "bad.cnk"), "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "truncated" in err and "Traceback" not in err
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    assert main(["compress", str(run), str(tmp_path / "bad.png"), "-o", str(tmp_path / "x.cnk")]) == 2
    assert "not a readable image" in capsys.readouterr().err
    classifier = tmp_path / "classifier"
    save_model_checkpoint(classifier, create_model("lenet5"), {**trainer.checkpoint_meta(),
                                                             "task": {"name": "classification"},
                                                             "image_shape": [1, 32, 32],  # what lenet5 reads
                                                             "classes": [str(i) for i in range(10)],
                                                             "preprocess": {"mean": [0.5], "std": [0.5]}})
    assert main(["compress", str(classifier), str(tmp_path / "in.png"), "-o", str(tmp_path / "x.cnk")]) == 2
    assert "not a compressor" in capsys.readouterr().err
    assert json.loads((run / "checkpoint.json").read_text())["task"]["lmbda"] == 0.02
    assert dataclasses.is_dataclass(read_header((tmp_path / "in.cnk").read_bytes()))
