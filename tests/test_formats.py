import gzip
import io
import os
import pickle
import struct
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.data.formats import (
    parse_cifar_binary,
    parse_cifar_python,
    parse_idx,
    read_cifar,
    read_idx,
    read_image,
    read_jpeg_tarball,
)
from cnnkit.errors import DataError, ImageError


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">i", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_idx_round_trip_raw_and_gzip(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    (tmp_path / "a.idx").write_bytes(idx_bytes(images))
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(idx_bytes(images)))
    assert np.array_equal(read_idx(tmp_path / "a.idx"), images)
    assert np.array_equal(read_idx(tmp_path / "a.idx.gz"), images)
    labels = np.arange(7, dtype=np.uint8)
    assert np.array_equal(parse_idx(idx_bytes(labels)), labels)


def test_idx_truncated_and_bad_magic_are_reported(tmp_path):
    data = idx_bytes(np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(DataError, match="truncated"):
        parse_idx(data[:-1], "x.idx")
    with pytest.raises(DataError, match="not an IDX file"):
        parse_idx(b"\x01\x02" + data[2:], "x.idx")
    path = tmp_path / "t.gz"
    path.write_bytes(gzip.compress(data)[:-10])
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        read_idx(path)


def cifar_records(n: int, label_bytes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    rows = [bytes([0] * (label_bytes - 1) + [int(lbl)]) + img.tobytes() for lbl, img in zip(labels, images)]
    return b"".join(rows), images, labels


def test_cifar_binary_parses_planes_and_labels():
    data, images, labels = cifar_records(4, 1)
    got_images, got_labels = parse_cifar_binary(data, 1, "b")
    assert np.array_equal(got_images, images) and np.array_equal(got_labels, labels)
    data100, images, labels = cifar_records(3, 2)
    assert np.array_equal(parse_cifar_binary(data100, 2, "b")[1], labels)
    with pytest.raises(DataError, match="whole number"):
        parse_cifar_binary(data[:-5], 1, "b")


def test_cifar_python_through_restricted_unpickler():
    rng = np.random.default_rng(1)
    batch = {b"data": rng.integers(0, 256, (6, 3072), dtype=np.uint8), b"labels": [1, 2, 3, 4, 5, 6],
             b"batch_label": b"training batch 1 of 5"}
    images, labels = parse_cifar_python(pickle.dumps(batch, protocol=2), "p")
    assert images.shape == (6, 3, 32, 32) and labels.tolist() == [1, 2, 3, 4, 5, 6]


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_code():
    with pytest.raises(DataError, match="refusing"):
        parse_cifar_python(pickle.dumps({b"data": Exploit()}), "evil")


def test_read_official_cifar_binary_tarball(tmp_path):
    path = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        def add(name, payload):
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        for i in range(1, 6):
            add(f"data_batch_{i}.bin", cifar_records(2, 1, seed=i)[0])
        add("test_batch.bin", cifar_records(3, 1, seed=9)[0])
        add("batches.meta.txt", "\n".join("abcdefghij").encode())
    data = read_cifar(path, "binary", 10)
    assert data["train"][0].shape == (10, 3, 32, 32) and data["test"][0].shape == (3, 3, 32, 32)
    assert data["classes"] == list("abcdefghij")


def test_jpeg_tarball_decodes_with_labels(tmp_path):
    path = tmp_path / "c.tar.gz"
    classes = ("cat", "dog")
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "test"):
            for c in classes:
                buf = io.BytesIO()
                Image.new("RGB", (32, 32), (200, 10, 10) if c == "cat" else (10, 10, 200)).save(buf, "JPEG")
                info = tarfile.TarInfo(f"{split}/{c}/0000.jpg")
                info.size = buf.tell()
                buf.seek(0)
                tar.addfile(info, buf)
    out = read_jpeg_tarball(path, classes)
    images, labels = out["train"]
    assert images.shape == (2, 3, 32, 32) and labels.tolist() == [0, 1]
    assert images[0, 0].mean() > 150 and images[1, 2].mean() > 150  # red cat, blue dog


def test_read_image_converts_modes_and_sizes(tmp_path):
    Image.new("RGBA", (40, 20), (255, 0, 0, 255)).save(tmp_path / "a.png")
    grey = read_image(tmp_path / "a.png", 1, (32, 32))
    assert grey.shape == (1, 32, 32) and grey.dtype == torch.uint8
    rgb = read_image(tmp_path / "a.png", 3)
    assert rgb.shape == (3, 20, 40) and rgb[0].float().mean() > 250
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ImageError, match="not a readable image"):
        read_image(tmp_path / "bad.png", 1)
    with pytest.raises(ImageError, match="no such image"):
        read_image(tmp_path / "missing.png", 1)
