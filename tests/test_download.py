import gzip
import hashlib

import numpy as np
import pytest

from cnnkit.data.catalog import DatasetSpec, RemoteFile
from cnnkit.data.download import locate
from cnnkit.errors import DataError


def make_spec(tmp_path, payload: bytes, md5: str | None = None):
    mirror = tmp_path / "mirror"
    mirror.mkdir(exist_ok=True)
    (mirror / "file.gz").write_bytes(payload)
    md5 = md5 or hashlib.md5(payload).hexdigest()
    spec = DatasetSpec("toy", "toy", (1, 2, 2), ("a",), mirrors=(f"file://{mirror}/",),
                       files={"f": RemoteFile("file.gz", md5)})
    return spec, spec.files["f"]


def test_download_verifies_and_moves_into_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("CNNKIT_DATA", raising=False)
    payload = gzip.compress(np.arange(10, dtype=np.uint8).tobytes())
    spec, file = make_spec(tmp_path, payload)
    path = locate(spec, file)
    assert path.read_bytes() == payload
    assert not list(path.parent.glob("*.part"))  # nothing half-written is left behind


def test_wrong_checksum_from_mirror_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("CNNKIT_DATA", raising=False)
    spec, file = make_spec(tmp_path, b"payload", md5="0" * 32)
    with pytest.raises(DataError, match="MD5"):
        locate(spec, file)


def test_corrupt_cached_file_is_downloaded_again(tmp_path, monkeypatch):
    monkeypatch.delenv("CNNKIT_DATA", raising=False)
    spec, file = make_spec(tmp_path, b"good bytes")
    first = locate(spec, file)
    first.write_bytes(b"truncat")
    assert locate(spec, file).read_bytes() == b"good bytes"


def test_corrupt_user_file_is_named_and_not_replaced(tmp_path, monkeypatch):
    spec, file = make_spec(tmp_path, b"good bytes")
    user = tmp_path / "user"
    (user / "toy").mkdir(parents=True)
    (user / "toy" / "file.gz").write_bytes(b"bad")
    monkeypatch.setenv("CNNKIT_DATA", str(user))
    with pytest.raises(DataError, match=r"toy/file.gz has MD5"):
        locate(spec, file)
    assert (user / "toy" / "file.gz").read_bytes() == b"bad"


def test_no_network_error_names_files_and_folders(tmp_path, monkeypatch):
    monkeypatch.delenv("CNNKIT_DATA", raising=False)
    spec = DatasetSpec("toy", "toy", (1, 2, 2), ("a",), mirrors=(f"file://{tmp_path}/nowhere/",),
                       files={"f": RemoteFile("file.gz", "0" * 32)})
    with pytest.raises(DataError) as info:
        locate(spec, spec.files["f"])
    assert "file.gz" in str(info.value) and "CNNKIT_DATA" in str(info.value)
