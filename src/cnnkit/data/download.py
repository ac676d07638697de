"""Finding dataset files locally, and downloading them from mirrors when they are missing.

A download goes to a temporary file in the cache, is MD5-verified, and only then moved into place
(``os.replace`` is atomic), so an interrupted download never leaves a half file that looks complete.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import DataError
from ..progress import progress_bar
from .catalog import DatasetSpec, RemoteFile, cache_dir, data_roots


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _download(url: str, target: Path, md5: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            size = int(response.headers.get("Content-Length") or 0)
            with progress_bar(size / 1e6 or None, f"downloading {target.name}", unit="MB") as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    bar.update(len(block) / 1e6)
        got = md5sum(Path(tmp))
        if got != md5:
            raise DataError(f"{url} downloaded with MD5 {got}, expected {md5}; the mirror's copy is wrong.")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def locate(spec: DatasetSpec, file: RemoteFile, download: bool = True, verify: bool = True) -> Path:
    """The verified local path of one dataset file, downloading it into the cache if needed.

    A file in ``$CNNKIT_DATA`` with the wrong checksum is reported, never replaced (that folder belongs to
    the user); a wrong file in the cache is downloaded again.
    """
    problems = []
    for root in data_roots():
        path = root / spec.name / file.filename
        if not path.is_file():
            continue
        if not verify:
            return path
        got = md5sum(path)
        if got == file.md5:
            return path
        problems.append(f"{path} has MD5 {got}, expected {file.md5} (corrupt, truncated or a different file)")
        if root != cache_dir():
            raise DataError(problems[-1] + ". Replace it with the official file.")
    target = cache_dir() / spec.name / file.filename
    if not download:
        raise missing_error(spec, [file], problems)
    errors = []
    for mirror in spec.mirrors:
        url = mirror + file.filename.split("/")[-1]
        try:
            _download(url, target, file.md5)
            return target
        except (urllib.error.URLError, OSError, DataError) as exc:
            errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
    raise missing_error(spec, [file], problems + errors)


def missing_error(spec: DatasetSpec, files: list[RemoteFile], problems: list[str]) -> DataError:
    folders = " or ".join(str(r / spec.name) for r in data_roots())
    names = ", ".join(f.filename for f in files)
    detail = "".join(f"\n  - {p}" for p in problems)
    return DataError(
        f"Dataset {spec.name!r}: could not find or download {names}.{detail}\n"
        f"Put the official file(s) in {folders}, or set CNNKIT_DATA to a folder holding {spec.name}/{names}."
    )
