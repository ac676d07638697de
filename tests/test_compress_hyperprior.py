"""The scale hyperprior (Ballé et al. 2018), its .cnk files (format version 4), training on random crops of
photographs, resuming a compression run, and the Bjøntegaard deltas of the Kodak benchmark."""

import copy
import json
import math
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit import TrainConfig, Trainer, create_model
from cnnkit.cli import main
from cnnkit.compress import CompressionTask, compress_image, decompress, random_crops, read_header
from cnnkit.compress.bdrate import bd_psnr, bd_rate
from cnnkit.compress.bitstream import (_CRC, _FIELDS_V3, HEADER_BYTES, HEADER_BYTES_V3, MAGIC, decompress_latents,
                                       encode_conditional, encode_latent)
from cnnkit.compress.entropy import PRECISION
from cnnkit.compress.hyperprior import SCALE_LEVELS, GaussianConditional, gaussian_tables, scale_table
from cnnkit.compress.model import pad_to_multiple
from cnnkit.compress.photos import PHOTO_SETS, load_photo_folder, stack_landscape
from cnnkit.data.datasets import DatasetBundle, TensorImageDataset
from cnnkit.data.photo_sets import photo_set
from cnnkit.errors import BitstreamError, CnnkitError, DataError

from test_compress import smooth_images


def photo_bundle(count=24, height=72, width=96):
    """Smooth 'photographs' larger than the training crop."""
    images = smooth_images(count, max(height, width))[:, :, :height, :width].contiguous()
    split = TensorImageDataset(images, torch.zeros(count, dtype=torch.long), ["photo"])
    return DatasetBundle("photos", split, split.subset(range(2)), ["photo"], (0.5,) * 3, (0.25,) * 3)


@pytest.fixture(scope="module")
def hyper():
    """A small hyperprior trained for a few epochs on 64x64 crops through the Trainer."""
    torch.manual_seed(0)
    model = create_model("compress_hyperprior", channels=12, latent_channels=8)
    config = TrainConfig(epochs=6, batch_size=8, optimizer="adam", lr=5e-3, weight_decay=0, grad_clip=1.0,
                         schedule="constant", eval_batch_size=2, progress=False, num_threads=1)
    trainer = Trainer(model, photo_bundle(), config, task=CompressionTask(0.02, crop=64))
    summary = trainer.fit()
    return model.eval(), trainer, summary


# ------------------------------------------------------------------------------------------- crops


def test_random_crops_are_windows_of_their_own_image_some_mirrored():
    images = torch.arange(5 * 2 * 9 * 11, dtype=torch.int32).reshape(5, 2, 9, 11).to(torch.uint8)
    images = (torch.rand(5, 2, 9, 11, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    crops = random_crops(images, 4, torch.Generator().manual_seed(0))
    assert crops.shape == (5, 2, 4, 4) and crops.dtype == torch.uint8
    mirrored = 0
    for image, crop in zip(images, crops):
        windows = image.unfold(1, 4, 1).unfold(2, 4, 1)  # (C, rows, cols, 4, 4): every window
        plain = [(r, c) for r in range(6) for c in range(8) if torch.equal(windows[:, r, c], crop)]
        flipped = [(r, c) for r in range(6) for c in range(8) if torch.equal(windows[:, r, c].flip(-1), crop)]
        assert plain or flipped
        mirrored += bool(flipped) and not plain
    draws = random_crops(images.repeat(40, 1, 1, 1), 4, torch.Generator().manual_seed(2))
    assert len({tuple(crop.flatten().tolist()) for crop in draws}) > 100  # positions and flips vary
    with pytest.raises(CnnkitError, match="does not fit 11x9"):
        random_crops(images, 10)


def test_photos_of_both_orientations_stack_and_mixed_sizes_are_refused():
    landscape, portrait = torch.zeros(3, 4, 6, dtype=torch.uint8), torch.ones(3, 6, 4, dtype=torch.uint8)
    stacked = stack_landscape([landscape, portrait], "test")
    assert stacked.shape == (2, 3, 4, 6) and torch.equal(stacked[1], portrait.transpose(1, 2))
    with pytest.raises(DataError, match="mixes image sizes"):
        stack_landscape([landscape, torch.zeros(3, 5, 6, dtype=torch.uint8)], "test")



def test_the_codec_reads_its_photo_sets_through_the_one_table_of_photo_sets(tmp_path, monkeypatch):
    """The codec's names (cbsd432, cbsd68, kodak24) are rows of cnnkit.data.photo_sets, all colour; a partial copy
    of Kodak24 is refused by the table's count check, and an unknown name lists the known ones."""
    assert {name: photo_set(table_name).channels for name, table_name in PHOTO_SETS.items()} == {
        "cbsd432": 3, "cbsd68": 3, "kodak24": 3}
    (tmp_path / "kodak24").mkdir()
    for index in range(3):
        Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(tmp_path / "kodak24" / f"kodim{index:02d}.png")
    monkeypatch.setenv("CNNKIT_DATA", str(tmp_path))
    with pytest.raises(DataError, match="holds 3 .png images, expected 24"):
        load_photo_folder("kodak24")
    with pytest.raises(DataError, match="known: cbsd432, cbsd68, kodak24"):
        load_photo_folder("kodak")


# ------------------------------------------------------------------------------------------- the model


def test_hyperprior_trains_on_crops_and_its_side_information_is_counted(hyper):
    model, trainer, summary = hyper
    history = trainer.history
    assert history[-1]["train_loss"] < 0.6 * history[0]["train_loss"]
    assert history[-1]["val_psnr"] > history[0]["val_psnr"] + 1
    assert summary["task"] == {"name": "compression", "lmbda": 0.02, "crop": 64}
    x = pad_to_multiple(smooth_images(1, 64, seed=9).float() / 255, 64)
    with torch.no_grad():
        out = model(x)
    assert out.hyper_likelihoods.shape == (1, 12, 1, 1) and out.likelihoods.shape == (1, 8, 4, 4)
    side_bits = -torch.log2(out.hyper_likelihoods).sum().item()
    task = CompressionTask(0.02)
    total = task.metrics(out, x)["bpp"].item() * x.shape[-1] * x.shape[-2]
    assert total == pytest.approx(-torch.log2(out.likelihoods).sum().item() + side_bits, rel=1e-5)


def test_gaussian_tables_are_valid_and_widen_with_the_scale():
    tables = gaussian_tables()
    assert len(tables.cdfs) == SCALE_LEVELS == len(scale_table())
    widths = [len(cdf) for cdf in tables.cdfs]
    assert widths == sorted(widths) and widths[0] < 10 < 1000 < widths[-1]
    for cdf, offset in zip(tables.cdfs, tables.offsets):
        freqs = np.diff(cdf)
        assert cdf[-1] == 1 << PRECISION and freqs.min() >= 1 and offset == -((len(cdf) - 2) // 2)
    # The table of scale s holds the box-convolved Gaussian: P(0) = 2 Phi(1/(2s)) - 1.
    k = 20
    p0 = math.erf(0.5 / scale_table()[k] / math.sqrt(2))
    assert np.diff(tables.cdfs[k])[-tables.offsets[k]] / (1 << PRECISION) == pytest.approx(p0, rel=1e-3)
    assert tables.fingerprint == gaussian_tables().fingerprint != 0


# ------------------------------------------------------------------------------------------- the file


def test_hyperprior_file_decodes_to_the_models_quantised_reconstruction_exactly(hyper):
    model, _, _ = hyper
    image = smooth_images(1, 96, seed=4)[0][:, :70, :90]  # not a multiple of 64: padded, cropped back
    data = compress_image(model, image)
    header = read_header(data)
    assert (header.model, header.channels, header.height, header.width) == ("hyperprior", 3, 70, 90)
    assert header.latent_shape == (8, 8, 8) and 0 < header.side_bytes < header.payload_bytes
    assert len(data) == HEADER_BYTES_V3 + header.payload_bytes
    _, latent, side = decompress_latents(model, data)
    y, z = model.quantized_latents(pad_to_multiple(image.float()[None] / 255, 64))
    assert torch.equal(latent, y[0]) and torch.equal(side, z[0]) and side.abs().max() >= 1
    with torch.no_grad():
        direct = model(pad_to_multiple(image.float()[None] / 255, 64)).reconstruction
    expected = (direct[0, :, :70, :90].clamp(0, 1) * 255).round().to(torch.uint8)
    assert torch.equal(decompress(model, data), expected)


def test_hyperprior_file_costs_what_the_model_estimates(hyper):
    model, _, _ = hyper
    image = smooth_images(1, 256, seed=3)[0]
    x = image.float()[None] / 255
    with torch.no_grad():
        out = model(x)
    estimated = -(torch.log2(out.likelihoods).sum() + torch.log2(out.hyper_likelihoods).sum()).item()
    coded = 8 * (len(compress_image(model, image)) - HEADER_BYTES_V3)
    # Rounding sigma up to the next table scale costs a little; the two coders' final words a few bytes.
    assert estimated * 0.9 < coded < estimated * 1.1 + 96


def _factorized():
    torch.manual_seed(0)
    return create_model("compress_factorized", channels=12, latent_channels=8).eval()


def test_files_of_one_codec_are_refused_by_the_other(hyper):
    model, _, _ = hyper
    image = smooth_images(1, 64, seed=1)[0]
    factorized = _factorized()
    with pytest.raises(BitstreamError, match="written by a compress_factorized codec, but this checkpoint is a "
                                             "compress_hyperprior"):
        decompress(model, compress_image(factorized, image))
    with pytest.raises(BitstreamError, match="written by a compress_hyperprior codec"):
        decompress(factorized, compress_image(model, image))
    assert len(compress_image(factorized, image)) - HEADER_BYTES == read_header(
        compress_image(factorized, image)).payload_bytes  # factorized files stay version 2


def _rewrite(data: bytes, **changes) -> bytes:
    fields = list(_FIELDS_V3.unpack_from(data))
    names = ["magic", "version", "channels", "height", "width", "latent", "lh", "lw", "print", "length", "kind",
             "side"]
    for name, value in changes.items():
        fields[names.index(name)] = value
    head = _FIELDS_V3.pack(*fields)
    payload = data[HEADER_BYTES_V3:]
    return head + _CRC.pack(zlib.crc32(payload, zlib.crc32(head))) + payload


def test_damaged_hyperprior_files_are_refused_with_the_reason(hyper):
    model, _, _ = hyper
    data = compress_image(model, smooth_images(1, 64, seed=2)[0])
    cases = {"unknown codec": (_rewrite(data, kind=7), "codec number 7"),
             "side information longer than the payload": (_rewrite(data, side=1 << 20), "side information"),
             "latent of another size": (_rewrite(data, lh=1), "inconsistent header"),
             "other model": (_rewrite(data, print=1), "another model"),
             "truncated": (data[:-4], "truncated"),
             "short header": (data[:HEADER_BYTES_V3 - 1], f"shorter than the {HEADER_BYTES_V3}-byte header")}
    for bad, message in cases.values():
        with pytest.raises(BitstreamError, match=message):
            decompress(model, bad)
    side = read_header(data).side_bytes
    flipped = bytearray(data)
    flipped[HEADER_BYTES_V3 + side - 1] ^= 0x40  # a flipped bit in the side information, CRC recomputed
    with pytest.raises(BitstreamError):
        decompress(model, _rewrite(bytes(flipped)))
    assert struct.unpack_from(">B", data, 4)[0] == 4


def test_coding_tables_are_chosen_from_float64_scales_whatever_the_models_layout(hyper):
    model, _, _ = hyper
    z = torch.round(torch.randn(1, 12, 6, 5) * 3)
    seen = []
    hook = model.hyper_synthesis[-1].register_forward_hook(lambda module, args, out: seen.append(out))
    try:
        indexes = model.scale_indexes(z)
    finally:
        hook.remove()
    assert (seen[0].dtype, seen[0].device.type) == (torch.float64, "cpu")
    reference = copy.deepcopy(model.hyper_synthesis).double()  # an independent float64 computation
    with torch.no_grad():
        expected = GaussianConditional.scale_indexes(reference(z.double()))
    assert torch.equal(indexes, expected) and len(indexes.unique()) > 3
    # The encoder's model in another memory layout (another float32 convolution) picks the same tables.
    other = copy.deepcopy(model).to(memory_format=torch.channels_last)
    assert torch.equal(other.scale_indexes(z.contiguous(memory_format=torch.channels_last)), indexes)
    assert model.hyper_synthesis[0].weight.dtype == torch.float32  # the model itself is left as it was


def test_version_3_files_float32_scales_are_still_read(hyper):
    model, _, _ = hyper
    image = smooth_images(1, 64, seed=5)[0]
    x = pad_to_multiple(image.float()[None] / 255, 64)
    y, z = (v[0] for v in model.quantized_latents(x))
    tables = model.entropy_model.coding_tables()
    side = encode_latent(z, tables)
    payload = side + encode_conditional(y, model.scale_indexes(z[None], float64=False)[0], gaussian_tables())
    fields = _FIELDS_V3.pack(MAGIC, 3, 3, 64, 64, *y.shape, read_header(compress_image(model, image)).fingerprint,
                             len(payload), 1, len(side))
    old = fields + _CRC.pack(zlib.crc32(payload, zlib.crc32(fields))) + payload
    assert read_header(old).version == 3
    _, latent, _ = decompress_latents(model, old)
    assert torch.equal(latent, y)
    assert torch.equal(decompress(model, old), decompress(model, compress_image(model, image)))


# ------------------------------------------------------------------------------------------- resume


def test_compress_command_trains_on_photos_and_resume_extends_the_budget(tmp_path, monkeypatch, capsys):
    import cnnkit.cli.compress as command

    monkeypatch.setattr(command, "_load_training_data", lambda name: photo_bundle(16))
    out = tmp_path / "hp"
    common = ["--threads", "1", "--no-progress", "--batch-size", "8"]
    assert main(["compress", "--train", "--model", "hyperprior", "--data", "cbsd432", "--crop", "64", "--channels", "8",
          "--latent-channels", "8", "--epochs", "1", "--out", str(out), *common]) == 0
    assert json.loads((out / "checkpoint.json").read_text())["task"] == {"name": "compression", "lmbda": 0.01,
                                                                         "crop": 64}
    first = (out / "metrics.csv").read_text().splitlines()
    runtime = ["--threads", "1", "--no-progress"]
    assert main(["compress", "--train", "--resume", str(out), "--epochs", "3", *runtime]) == 0
    lines = (out / "metrics.csv").read_text().splitlines()
    assert len(lines) == len(first) + 2 and lines[1] == first[1]  # epochs 2 and 3 appended after epoch 1
    capsys.readouterr()
    assert main(["compress", "--train", "--resume", str(out), "--epochs", "2", *runtime]) == 2
    assert "already trained for 3 epochs" in capsys.readouterr().err
    assert main(["compress", "--train", "--resume", str(out), "--epochs", "5", "--lambda", "0.1", *common]) == 2
    assert "--lambda, --batch-size cannot change" in capsys.readouterr().err
    image = tmp_path / "photo.png"
    from PIL import Image

    Image.fromarray(smooth_images(1, 64, seed=7)[0].permute(1, 2, 0).numpy()).save(image)
    assert main(["compress", str(out), str(image), "-o", str(tmp_path / "photo.cnk")]) == 0
    assert main(["decompress", str(out), str(tmp_path / "photo.cnk"), "-o", str(tmp_path / "back.png")]) == 0
    assert np.asarray(Image.open(tmp_path / "back.png")).shape == (64, 64, 3)


# ------------------------------------------------------------------------------------------- BD-rate


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_bd_rate_of_a_curve_against_itself_shifted_by_a_known_factor(method):
    rate = np.array([0.2, 0.4, 0.7, 1.1, 1.6])
    psnr = 24 + 6 * np.log2(rate / 0.2) ** 0.9  # a concave RD curve
    for factor in (0.8, 1.25):
        assert bd_rate(rate, psnr, rate * factor, psnr, method) == pytest.approx((factor - 1) * 100, abs=1e-6)
    assert bd_psnr(rate, psnr, rate, psnr + 1.5, method) == pytest.approx(1.5, abs=1e-9)
    assert bd_rate(rate, psnr, rate, psnr, method) == pytest.approx(0, abs=1e-9)
    # More PSNR at every rate means fewer bits at every PSNR.
    assert bd_rate(rate, psnr, rate, psnr + 1, method) < 0 < bd_psnr(rate, psnr, rate, psnr + 1, method)
    assert bd_rate(rate[:3], psnr[:3], rate[:3] * 1.1, psnr[:3], method) == pytest.approx(10, abs=1e-6)
    with pytest.raises(CnnkitError, match="do not overlap"):
        bd_rate(rate, psnr, rate, psnr + 40, method)
    with pytest.raises(CnnkitError, match="at least 3"):
        bd_rate(rate, psnr, rate[:2], psnr[:2], method)


# The Kodak figures of a 30-minute hyperprior beside Pillow's JPEG (benchmarks/kodak_rd.py, 2026-12-07): the learned
# curve is below JPEG's at every rate it reaches, and nearly flat above 0.6 bpp.
JPEG_RATE = np.array([0.141, 0.256, 0.359, 0.449, 0.610, 0.743, 0.869, 1.005, 1.213, 1.549, 2.315])
JPEG_PSNR = np.array([23.85, 26.67, 28.14, 29.14, 30.49, 31.42, 32.17, 32.91, 33.92, 35.37, 38.03])
FLAT_RATE, FLAT_PSNR = np.array([0.333, 0.595, 0.987]), np.array([27.14, 29.19, 29.28])


def test_bd_rate_of_a_curve_below_the_anchor_everywhere_says_it_costs_bits():
    below = np.interp(np.log(FLAT_RATE), np.log(JPEG_RATE), JPEG_PSNR) - FLAT_PSNR
    assert np.all(below > 0.5)  # JPEG is ahead at each of the three points
    assert bd_rate(JPEG_RATE, JPEG_PSNR, FLAT_RATE, FLAT_PSNR) > 0 > bd_psnr(JPEG_RATE, JPEG_PSNR, FLAT_RATE,
                                                                            FLAT_PSNR)
    # Bjøntegaard's single polynomial swings between the flat curve's points: the wrong sign, kept as a warning.
    assert bd_rate(JPEG_RATE, JPEG_PSNR, FLAT_RATE, FLAT_PSNR, method="cubic") < -50
    with pytest.raises(CnnkitError, match="unknown Bjøntegaard method 'akima'"):
        bd_rate(JPEG_RATE, JPEG_PSNR, FLAT_RATE, FLAT_PSNR, method="akima")
    with pytest.raises(CnnkitError, match="repeats a value"):
        bd_rate(JPEG_RATE, JPEG_PSNR, FLAT_RATE, np.array([27.14, 29.19, 29.19]))


def test_bd_figures_match_the_bjontegaard_package():
    """An independent implementation (the `bjontegaard` package, piecewise cubic as JVET computes it)."""
    reference = pytest.importorskip("bjontegaard")
    rate = np.array([0.2, 0.4, 0.7, 1.1, 1.6])
    curves = [(rate, 24 + 6 * np.log2(rate / 0.2) ** 0.9, rate * 0.9, 24.3 + 6.5 * np.log2(rate / 0.2) ** 0.85),
              (JPEG_RATE, JPEG_PSNR, FLAT_RATE, FLAT_PSNR)]
    for anchor_rate, anchor_psnr, test_rate, test_psnr in curves:
        options = dict(method="pchip", require_matching_points=False, min_overlap=0)
        expected_rate = reference.bd_rate(anchor_rate, anchor_psnr, test_rate, test_psnr, **options)
        expected_psnr = reference.bd_psnr(anchor_rate, anchor_psnr, test_rate, test_psnr, **options)
        assert bd_rate(anchor_rate, anchor_psnr, test_rate, test_psnr) == pytest.approx(expected_rate, rel=1e-9)
        assert bd_psnr(anchor_rate, anchor_psnr, test_rate, test_psnr) == pytest.approx(expected_psnr, abs=1e-9)


def test_bd_figures_refuse_a_curve_whose_psnr_falls_as_the_rate_rises():
    # The Kodak curve of stop 45: the λ 0.015 codec trained 60 min, its neighbours 30 min; PSNR falls from the
    # middle point to the last. pchip gave "+79.81 %" for it before this check.
    mixed_rate, mixed_psnr = np.array([0.2885, 0.6753, 0.9793]), np.array([27.216, 30.058, 29.061])
    for function in (bd_rate, bd_psnr):
        for method in ("pchip", "cubic"):
            with pytest.raises(CnnkitError, match="does not rise with its rate"):
                function(JPEG_RATE, JPEG_PSNR, mixed_rate, mixed_psnr, method)
