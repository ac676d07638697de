"""Longer runs of the parser fuzzers in tests/test_fuzz.py, and the cost of the hostile inputs of issue 24, item 1.

    python benchmarks/fuzz.py                      # both parts, 2000 examples per parser, results appended
    python benchmarks/fuzz.py --examples 20000     # longer fuzzing
    python benchmarks/fuzz.py --only bombs --baseline-src /work/main/src  # hostile inputs, before and after

Fuzzing: each parser of untrusted bytes (IDX, CIFAR binary and python batches, image files, safetensors files,
the ``.cnk`` bitstream) runs the same hypothesis properties as the CI tests, with more examples; the figures
are the examples tried and the failures found per parser (a failure: an exception that is not a CnnkitError,
or memory over the bound).

Bombs: each small hostile file runs in a fresh process, whose peak resident memory (``VmHWM``, reported by
the child as it exits) and wall time (including Python's and torch's start, about 4 s) are measured: a
20000x1 PNG posted to ``/api/photo``, a 2000x1 PNG given to
``cnnkit predict --model efficientnet_lite0 --pretrained imagenet``, a 10000x10000 PNG given to the same
command, the largest image accepted (7300x5479, 40 megapixels) given to it too, a gzip bomb read as IDX (a
small header followed by gigabytes of zeros) and a CIFAR tarball whose batch member is gigabytes of zeros.
``--baseline-src`` runs them against another checkout too, for before/after figures.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

BOMB_DIR = Path(tempfile.gettempdir()) / "cnnkit-fuzz-bombs"
GIB = 2**30


# ------------------------------------------------------------------------------------------------ the bombs
def _png(width: int, height: int, mode: str = "RGB") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _gzip_of_zeros(path: Path, header: bytes, zero_bytes: int) -> None:
    """``header`` then ``zero_bytes`` zeros, gzip-compressed in blocks (never held in memory)."""
    block = bytes(64 * 2**20)
    with gzip.open(path, "wb", compresslevel=9) as out:
        out.write(header)
        left = zero_bytes
        while left:
            out.write(block[:min(left, len(block))])
            left -= min(left, len(block))


def make_bombs() -> dict[str, Path]:
    BOMB_DIR.mkdir(exist_ok=True)
    files = {"photo_20000x1.png": lambda p: p.write_bytes(_png(20000, 1)),
             "predict_2000x1.png": lambda p: p.write_bytes(_png(2000, 1)),
             "predict_10000x10000.png": lambda p: p.write_bytes(_png(10000, 10000, "L")),
             # the largest image accepted (40 megapixels), decoded in full: the worst case that is not refused
             "predict_7300x5479.png": lambda p: p.write_bytes(_png(7300, 5479))}
    # An IDX header for 60000 28x28 images (47 MB), then 4.3 GB of zeros: a 4 MB file.
    idx_header = bytes([0, 0, 0x08, 3]) + b"".join(n.to_bytes(4, "big") for n in (60000, 28, 28))
    files["idx_bomb.gz"] = lambda p: _gzip_of_zeros(p, idx_header, 4_300_000_000)
    files["cifar_bomb.tar.gz"] = _cifar_tar_bomb
    paths = {}
    for name, make in files.items():
        path = BOMB_DIR / name
        if not path.exists():
            partial = path.with_suffix(".partial")
            make(partial)
            partial.rename(path)
        paths[name] = path
    return paths


def _cifar_tar_bomb(path: Path) -> None:
    """A CIFAR-10 binary release whose data_batch_1.bin member is 4.3 GB of zeros (1,399,283 records + 1 byte)."""
    size = 4_300_000_000

    class Zeros(io.RawIOBase):
        def __init__(self):
            self.left = size

        def readable(self):
            return True

        def readinto(self, buffer):
            n = min(len(buffer), self.left)
            buffer[:n] = bytes(n)
            self.left -= n
            return n

    with tarfile.open(path, "w:gz", compresslevel=9) as tar:
        info = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
        info.size = size
        tar.addfile(info, io.BufferedReader(Zeros(), 2**22))


BOMB_SNIPPETS = {
    "photo_20000x1.png": """
import tempfile
from fastapi.testclient import TestClient
from cnnkit.serve.app import create_app
client = TestClient(create_app(tempfile.mkdtemp()))
reply = client.post("/api/photo", files={"image": ("bomb.png", open(PATH, "rb").read(), "image/png")})
print("HTTP", reply.status_code, reply.text[:200])
""",
    "predict_2000x1.png": "CLI predict --model efficientnet_lite0 --pretrained imagenet PATH",
    "predict_10000x10000.png": "CLI predict --model efficientnet_lite0 --pretrained imagenet PATH",
    "predict_7300x5479.png": "CLI predict --model efficientnet_lite0 --pretrained imagenet PATH",
    "idx_bomb.gz": """
from cnnkit.data.formats import read_idx
from cnnkit.errors import CnnkitError
try:
    print("read", read_idx(PATH).shape)
except CnnkitError as exc:
    print("refused:", exc)
""",
    "cifar_bomb.tar.gz": """
from cnnkit.data.formats import read_cifar
from cnnkit.errors import CnnkitError
try:
    print("read", read_cifar(PATH, "binary", 10)["train"][0].shape)
except CnnkitError as exc:
    print("refused:", exc)
""",
}


def run_measured(command: list[str], env: dict) -> tuple[int, float, float, str]:
    """(exit status, peak resident memory in MB, wall seconds, last output line) of a child process."""
    with tempfile.TemporaryFile() as output:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        lines = output.read().decode(errors="replace").strip().splitlines()
    return child.returncode, usage.ru_maxrss / 1024, seconds, (lines[-1] if lines else "")[:160]


# Each child reports its own peak from /proc/self/status (VmHWM) when it exits: getrusage's ru_maxrss carries
# the parent's resident size over fork and exec, so a parent that has fuzzed for a while would inflate it.
PEAK_REPORTER = """
import atexit, os
def _report_peak():
    with open('/proc/self/status') as status, open(os.environ['CNNKIT_PEAK_FILE'], 'w') as out:
        out.write(next(line.split()[1] for line in status if line.startswith('VmHWM:')))
atexit.register(_report_peak)
"""


def _measure_bomb(name: str, path: Path, src: Path) -> dict:
    snippet = BOMB_SNIPPETS[name]
    if snippet.startswith("CLI "):
        argv = ["cnnkit", *snippet[4:].replace("PATH", str(path)).split()]
        snippet = f"import runpy, sys\nsys.argv = {argv!r}\nrunpy.run_module('cnnkit', run_name='__main__')\n"
    else:
        snippet = snippet.replace("PATH", repr(str(path)))
    with tempfile.NamedTemporaryFile("r") as peak_file:
        env = {**os.environ, "PYTHONPATH": str(src), "CNNKIT_PEAK_FILE": peak_file.name}
        status, peak_mb, seconds, last = run_measured([sys.executable, "-c", PEAK_REPORTER + snippet], env)
        reported = peak_file.read().strip()
    peak_mb = int(reported) / 1024 if reported else peak_mb  # killed (out of memory): ru_maxrss is all there is
    row = {"input": name, "file_bytes": path.stat().st_size, "exit": status, "peak_mb": round(peak_mb),
           "seconds": round(seconds, 2), "output": last}
    print(f"{name:26s} {row['file_bytes']:>9,d} B  exit {status:3d}  peak {peak_mb:7.0f} MB  {seconds:6.2f} s  "
          f"{last}", flush=True)
    return row


def _short_commit(src: Path) -> str:
    found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=src, capture_output=True, text=True)
    return found.stdout.strip() or str(src)


def run_bombs(src: Path, record_results: bool, names: list[str] | None = None,
              baseline_src: Path | None = None) -> list[dict]:
    """Each hostile input against ``src`` (and, when given, against ``baseline_src``: the code before a fix)."""
    paths = {name: path for name, path in make_bombs().items() if not names or name in names}
    rows = []
    for name, path in paths.items():
        row = _measure_bomb(name, path, src)
        if baseline_src is not None:
            print("  before:", end=" ")
            row["before"] = _measure_bomb(name, path, baseline_src)
        rows.append(row)
    worst = max(rows, key=lambda r: r["peak_mb"])
    print(f"worst input: {worst['input']}, peak {worst['peak_mb']} MB (goal < 1024 MB)")
    if record_results:
        from record import record

        baseline = f"code at {_short_commit(baseline_src)}" if baseline_src else None
        for row in rows:
            before = row.get("before", {})
            record("hostile_inputs", row["input"], "peak_rss_mb", row["peak_mb"], seconds=row["seconds"],
                   baseline=baseline, baseline_value=before.get("peak_mb"),
                   baseline_seconds=before.get("seconds"), file_bytes=row["file_bytes"],
                   note=row["output"][:120], baseline_note=before.get("output", "")[:120] or None)
    return rows


# ------------------------------------------------------------------------------------------------- fuzzing
def _fuzz_one(strategy, check, examples: int) -> tuple[int, dict, dict]:
    """(inputs tried, failure counts by kind, an example of each kind) of one parser's property."""
    from hypothesis import HealthCheck, Phase, given, settings

    from fuzz_properties import ParserCrash

    tried, failures, examples_of = 0, {}, {}

    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def fuzz(example):
        nonlocal tried
        tried += 1
        try:
            check(example)
        except ParserCrash as crash:
            kind = ": ".join(part.strip() for part in str(crash).split(":")[:2])
            failures[kind] = failures.get(kind, 0) + 1
            examples_of.setdefault(kind, (str(crash)[:200], repr(example)[:200]))

    fuzz()
    return tried, failures, examples_of


def run_fuzz(examples: int, record_results: bool) -> list[dict]:
    """Each parser's property on ``examples`` generated inputs; crashes are collected, not raised, so one run
    counts them all (grouped by the parser and exception type that failed)."""
    import resource
    import warnings

    import torch

    import fuzz_properties
    from fuzz_properties import PARSERS

    warnings.simplefilter("ignore")  # Pillow's notes on corrupt TIFF tags, thousands of them
    torch.set_num_threads(1)  # the codec's tiny convolutions: one thread is 100x faster on a busy machine
    rows = []
    for name, (strategy, check) in PARSERS.items():
        fuzz_properties.TALLY.clear()
        start = time.perf_counter()
        tried, failures, examples_of = _fuzz_one(strategy, check, examples)
        seconds = time.perf_counter() - start
        outcomes = {f"{parser} {kind}": count for (parser, kind), count in sorted(fuzz_properties.TALLY.items())}
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        row = {"parser": name, "tried": tried, "failures": sum(failures.values()), "kinds": failures,
               "outcomes": outcomes, "seconds": round(seconds, 1), "peak_mb": round(peak)}
        rows.append(row)
        print(f"{name:14s} tried {tried:6d}  failures {row['failures']:4d}  {seconds:7.1f} s  process peak "
              f"{peak:6.0f} MB  {outcomes}", flush=True)
        for kind, (message, example) in examples_of.items():
            print(f"    {failures[kind]} x {message}\n      e.g. {example}")
        if record_results:
            from record import record

            record("fuzz", name, "failures", row["failures"], examples=tried, seconds=row["seconds"],
                   outcomes=outcomes, failure_kinds=failures or None, peak_rss_mb=row["peak_mb"])
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=2000, help="hypothesis examples per parser")
    parser.add_argument("--only", choices=["fuzz", "bombs"], help="run one part")
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the cnnkit source the bombs run against")
    parser.add_argument("--baseline-src", type=Path, help="also run the hostile inputs against this source "
                        "(the code before the fix), recorded as the baseline")
    parser.add_argument("--inputs", nargs="+", choices=sorted(BOMB_SNIPPETS), help="only these hostile inputs")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to results.jsonl")
    args = parser.parse_args(argv)
    if args.only != "bombs":
        run_fuzz(args.examples, not args.no_record)
    if args.only != "fuzz":
        run_bombs(args.src.resolve(), not args.no_record, args.inputs,
                  args.baseline_src.resolve() if args.baseline_src else None)


if __name__ == "__main__":
    main()
